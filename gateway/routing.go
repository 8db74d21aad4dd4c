package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/infergate/infergate/router"
)

// routes is one model's routing. It outlives reloads: the split, the
// canary and admin changes carry over while the versions under them change.
type routes struct {
	model string
	// table is what the request path reads; it is rebuilt, never changed.
	table atomic.Pointer[routeTable]

	// mu guards the fields below. They change only under the Server's
	// control lock too, so mu just orders them against readers.
	mu sync.Mutex
	// file is the model's routing section as the config file gives it;
	// base is the one in effect: file's, or the admin API's.
	file, base router.Config
	// admin is set while base came from the admin API.
	admin  bool
	canary *router.Canary // nil without a canary
	// rev is the revision of the stored record this routing was last
	// routed by, or written as.
	rev uint64

	// weight is the canary version's infergate_canary_weight, in its
	// version's set; nil without a canary in the table.
	weight *metrics.Gauge
}

// routeTable is a router.Table with the loaded version behind each index.
type routeTable struct {
	t        *router.Table
	versions []*version
	// sticky is the sticky header's name as configured, and stickyMD the
	// same in lower case, as gRPC metadata keys come.
	sticky, stickyMD string
	// shadowed is set when the table mirrors any traffic.
	shadowed bool
}

// route is where an unpinned request went: the table, the index it
// picked, and the random number that picked it (shadow sampling reuses it).
type route struct {
	rt     *routeTable
	picked int
	rnd    uint64
}

// pick routes an unpinned request whose sticky header value is key (nil
// without one).
func (rt *routeTable) pick(key []byte) route {
	rnd := rand.Uint64()
	return route{rt: rt, picked: rt.t.Pick(key, rnd), rnd: rnd}
}

// canaryKinds are the kinds of canary transitions, each counted by
// model and version in infergate_canary_transitions_total.
var canaryKinds = []router.Kind{router.KindStarted, router.KindAdvanced, router.KindHeld,
	router.KindFailed, router.KindPromoted, router.KindRolledBack}

// canaryTransitionSeries names the transitions counter of kind for the
// version of labels (`model="m",version="v"`).
func canaryTransitionSeries(labels string, kind router.Kind) string {
	return `infergate_canary_transitions_total{` + labels + `,kind="` + string(kind) + `"}`
}

// countCanaryTransition counts a transition of kind of model's canary
// version. The first one creates the version's counters of every kind at
// zero, so that a rate or increase sees the first rollback too; the
// version's unload removes them (versionMetrics.unregister).
func countCanaryTransition(model, version string, kind router.Kind) {
	labels := fmt.Sprintf(`model=%q,version=%q`, model, version)
	for _, k := range canaryKinds {
		metrics.GetOrCreateCounter(canaryTransitionSeries(labels, k))
	}
	metrics.GetOrCreateCounter(canaryTransitionSeries(labels, kind)).Inc()
}

func newRoutes(model string, file router.Config) *routes {
	return &routes{model: model, file: file, base: file}
}

// effective returns the config a model's table is built from: base with
// its split filled (the newest version not under test takes all) and the
// canary, if any, applied.
func effective(m *model, base router.Config, canary *router.Canary) router.Config {
	cfg := base
	if len(cfg.Split) == 0 {
		for i := len(m.versions) - 1; i >= 0; i-- {
			if canary == nil || m.versions[i].name != canary.Config.Version || i == 0 {
				cfg.Split = map[string]int{m.versions[i].name: 1}
				break
			}
		}
	}
	switch {
	case canary == nil:
	case canary.Phase == router.PhaseProgressing:
		cfg = canary.Apply(cfg)
	case canary.Phase == router.PhasePromoted:
		// The canary is the primary: whatever the base says, it serves.
		cfg.Split = map[string]int{canary.Config.Version: 1}
	}
	return cfg
}

// buildTable builds the table of m's versions for base and canary; a
// model without versions gets none, and its unpinned requests are
// answered 503. Shadow versions start their workers.
func buildTable(m *model, base router.Config, canary *router.Canary) (*routeTable, error) {
	if len(m.versions) == 0 {
		return nil, nil
	}
	cfg := effective(m, base, canary)
	t, err := router.NewTable(cfg)
	if err != nil {
		return nil, fmt.Errorf("cannot route model %q: %w", m.name, err)
	}
	rt := &routeTable{t: t, sticky: cfg.StickyHeader, stickyMD: strings.ToLower(cfg.StickyHeader), versions: make([]*version, t.Len())}
	for i := range t.Len() {
		if rt.versions[i] = m.version([]byte(t.Version(i))); rt.versions[i] == nil {
			return nil, fmt.Errorf("cannot route model %q: version %s is not loaded (loaded: %v)", m.name, t.Version(i), m.versionNames())
		}
	}
	for _, sh := range cfg.Shadow {
		rt.versions[t.Index(sh.Version)].startShadow(cfg.ShadowMaxInFlight)
		rt.shadowed = true
	}
	return rt, nil
}

// install makes rt r's table. It needs r.mu.
func (r *routes) installLocked(rt *routeTable) {
	r.table.Store(rt)
	var weight *metrics.Gauge
	if r.canary != nil {
		for _, v := range rt.versions {
			if v.name == r.canary.Config.Version {
				weight = v.metrics.set.GetOrCreateGauge(`infergate_canary_weight{`+v.metrics.labels+`}`, nil)
				weight.Set(float64(r.canary.Weight))
			}
		}
	}
	if r.weight != nil && r.weight != weight {
		r.weight.Set(0) // out of the table: rolled back, or no longer the canary
	}
	r.weight = weight
}

// rebuildLocked rebuilds r's table over m's versions. It needs r.mu.
func (r *routes) rebuildLocked(m *model) error {
	rt, err := buildTable(m, r.base, r.canary)
	if err != nil {
		return err
	}
	r.installLocked(rt)
	return nil
}

// routePlan is a model's routing as a reload or start leaves it.
type routePlan struct {
	m            *model
	file, base   router.Config
	admin        bool
	canary       *router.Canary
	started      bool // the canary was (re)started by the plan
	rt           *routeTable
	fileOverrode bool // the file changed under an admin change and won
	// dropped is a canary in progress that the plan ends: its version is
	// gone, or the routing it belonged to no longer applies.
	dropped *router.Canary
}

// routeLocked points every model of st at its routes, carrying them over
// from before (or, when starting, from the control bucket), with their
// tables built. Either every model's routing is valid and all of it is
// applied, or none is. It needs the lock.
func (cp *controlPlane) routeLocked(cfg Config, st *state, starting bool) error {
	now := cp.now()
	var plans []routePlan
	for _, name := range st.sortedNames() {
		m := st.models[name]
		p := routePlan{m: m, file: cfg.Models[name].withDefaults().Routing}
		prev := cp.routes[name]
		var rec *routeRecord
		if prev == nil && starting {
			rec = cp.records[name]
		}
		if prev != nil && cp.revs[name] > prev.rev {
			// The fleet's newer routing could not apply before (it named a
			// version this replica had not loaded yet): it applies now.
			rec = cp.records[name]
		}
		switch {
		case rec != nil && (reflect.DeepEqual(rec.File, p.file) || rec.Replica != cp.cluster.Replica):
			// What the fleet stored wins over this replica's file, unless
			// this replica wrote it under another file (it was edited).
			p.base, p.admin, p.canary = rec.Base, rec.Admin, rec.Canary
		case prev != nil && reflect.DeepEqual(prev.file, p.file):
			prev.mu.Lock()
			p.base, p.admin, p.canary = prev.base, prev.admin, prev.canary
			prev.mu.Unlock()
		default:
			p.fileOverrode = rec != nil && rec.Admin || prev != nil && prev.admin
			var was *router.Canary
			if prev != nil {
				was = prev.canary
			} else if rec != nil {
				was = rec.Canary
			}
			p.base = p.file
			p.canary, p.started = canaryOf(p.file, was, now)
		}
		var err error
		if p.rt, err = buildTable(m, p.base, p.canary); err != nil && (p.admin || p.canary != nil) && !p.started {
			// Routing carried over from the admin API, a canary or the
			// store may name a version the repository no longer holds:
			// the file's routing applies instead.
			cp.log.Warn("the routing in effect cannot apply to the versions now loaded; the config file's routing applies",
				"model", name, "error", err)
			if p.canary != nil && p.canary.Phase == router.PhaseProgressing {
				p.dropped = p.canary
			}
			p.base, p.admin = p.file, false
			p.canary, p.started = canaryOf(p.file, nil, now)
			p.rt, err = buildTable(m, p.base, p.canary)
		}
		if err != nil {
			return err
		}
		plans = append(plans, p)
	}
	for _, p := range plans {
		r := cp.routes[p.m.name]
		if r == nil {
			r = newRoutes(p.m.name, p.file)
			cp.routes[p.m.name] = r
		}
		if p.fileOverrode {
			cp.log.Warn("the config file changed the routing of a model set by the admin API; the file wins", "model", p.m.name)
		}
		var steps []transition
		if p.dropped != nil {
			tr, _ := p.dropped.Rollback(now, "its routing no longer applies to the versions loaded")
			steps = append(steps, cp.newTransition(r.model, p.dropped, tr))
		}
		if p.started {
			steps = append(steps, cp.startedTransition(r.model, p.canary))
		}
		r.mu.Lock()
		r.file, r.base, r.admin, r.canary = p.file, p.base, p.admin, p.canary
		r.installLocked(p.rt)
		p.m.routes = r
		rec := routeRecord{File: r.file, Base: r.base, Admin: r.admin, Canary: r.canary}
		if stored := cp.records[r.model]; stored == nil || !stored.sameRouting(&rec) || len(steps) > 0 {
			switch err := cp.saveRoutesLocked(r.model, rec, steps, false); {
			case errors.Is(err, errConflict):
				// Replicas starting together: the watch brings the
				// record another one stored first, which this one follows.
				cp.log.Info("another replica stored the routing first; following its record", "model", r.model)
			case err != nil:
				cp.log.Error("cannot store routing; it will not survive a restart, nor reach the other replicas", "model", r.model, "error", err)
			}
		}
		r.rev = cp.revs[r.model]
		if p.started {
			p.m.resetIntervals()
		}
		cp.logTransitions(steps)
		r.mu.Unlock()
	}
	for name := range cp.routes {
		if st.models[name] == nil {
			delete(cp.routes, name)
		}
	}
	return nil
}

// applyRecordLocked routes model by rec, which another replica stored at
// revision rev. A record naming versions this replica has not loaded is
// logged and left: the next reload routes by it. It needs the lock.
func (cp *controlPlane) applyRecordLocked(model string, rec *routeRecord, rev uint64) {
	r, m := cp.routes[model], cp.serving.Load().model(model)
	if r == nil || m == nil {
		return
	}
	rt, err := buildTable(m, rec.Base, rec.Canary)
	if err != nil {
		cp.log.Warn("the fleet's routing cannot apply to the versions loaded here; serving on with the previous routing",
			"model", model, "revision", rev, "written_by", rec.Replica, "error", err)
		return
	}
	r.mu.Lock()
	started := rec.Canary != nil && (r.canary == nil || r.canary.Config.Version != rec.Canary.Config.Version ||
		!r.canary.StartedAt.Equal(rec.Canary.StartedAt))
	r.base, r.admin, r.canary, r.rev = rec.Base, rec.Admin, rec.Canary, rev
	r.installLocked(rt)
	r.mu.Unlock()
	if started {
		m.resetIntervals()
		cp.fleet.forgetModel(model)
	}
	cp.log.Info("routing changed by the fleet", "model", model, "revision", rev, "written_by", rec.Replica, "written_under", rec.Leader)
}

// canaryOf returns the canary the routing section file asks for: was,
// when it runs the same config, else a fresh one started now (started is
// then true), or nil without one.
func canaryOf(file router.Config, was *router.Canary, now time.Time) (c *router.Canary, started bool) {
	if file.Canary == nil {
		return nil, false
	}
	want := file.Canary.WithDefaults()
	if was != nil && reflect.DeepEqual(was.Config, want) {
		return was, false
	}
	c = &router.Canary{Config: want}
	c.Start(now)
	return c, true
}

// canaryStepLocked runs one analysis of r's canary once its interval has
// passed, over the traffic since the last one, this replica's and what the
// others reported, and applies the outcome. It needs the lock and the
// lease.
func (cp *controlPlane) canaryStepLocked(r *routes, m *model, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, rt := r.canary, r.table.Load()
	if c == nil || rt == nil || c.Phase != router.PhaseProgressing || now.Sub(c.LastEvaluation) < c.Config.Interval {
		return
	}
	var snap router.Snapshot
	var primary intervalSnapshot
	for i, v := range rt.versions {
		st := v.interval.take()
		remote := cp.fleet.take(r.model, v.name)
		st.add(&remote.intervalSnapshot)
		switch {
		case v.name == c.Config.Version:
			snap.Canary = st.stats()
			if sh := v.shadow.Load(); sh != nil {
				snap.AgreementSamples, snap.Agreed = sh.takeAgreement()
			}
			snap.AgreementSamples += remote.agreementSamples
			snap.Agreed += remote.agreed
		case rt.t.Weight(i) > 0:
			primary.add(&st)
		}
	}
	snap.Primary = primary.stats()
	next := *c
	if tr := next.Evaluate(now, snap); tr.Kind != router.KindNone {
		if err := cp.commitCanaryLocked(r, m, &next, tr, r.admin, true); err != nil {
			cp.log.Error("canary step not applied; the next analysis tries again", "model", r.model, "error", err)
		}
	}
}

// commitCanaryLocked makes next, which has just done tr, r's canary, and
// routes by it; on promotion the canary becomes the split's only version,
// so that a later canary is compared with it. The change is stored first
// (fenced by the lease when the leader's analysis made it): when it cannot
// be, nothing changes. It needs r.mu and the lock.
func (cp *controlPlane) commitCanaryLocked(r *routes, m *model, next *router.Canary, tr router.Transition, admin, fenced bool) error {
	base := r.base
	if tr.Kind == router.KindPromoted {
		base.Split = map[string]int{next.Config.Version: 1}
	}
	steps := []transition{cp.newTransition(r.model, next, tr)}
	if err := cp.saveRoutesLocked(r.model, routeRecord{File: r.file, Base: base, Admin: admin, Canary: next}, steps, fenced); err != nil {
		return fmt.Errorf("cannot store the canary step of model %q: %w", r.model, err)
	}
	r.base, r.admin, r.canary = base, admin, next
	if err := r.rebuildLocked(m); err != nil {
		cp.log.Error("cannot route by canary step", "model", r.model, "error", err)
	}
	cp.logTransitions(steps)
	return nil
}

// saveRoutesLocked stores rec as model's routing with the events of steps,
// which it then queues for the event loop: a crash between the two leaves
// the events in the record, for the next leader to emit. A fenced write is
// refused once anything changed since this replica last saw the control
// state, its lease included; an unfenced one (an admin change, a reload)
// once the model's routing changed. Without a store the events just go.
// It needs the lock.
func (cp *controlPlane) saveRoutesLocked(model string, rec routeRecord, steps []transition, fenced bool) error {
	// Events of earlier changes not yet in the outbox stay in the record
	// until they are (see forgetEvents).
	var carried int
	if stored := cp.records[model]; stored != nil {
		rec.Events = slices.Clone(stored.Events)
		carried = len(rec.Events)
	}
	var queued []Event
	for i := range steps {
		e := steps[i].event
		if e == nil {
			continue
		}
		ce, err := newOutboxEvent(e.Type, e.Model, e.Version, e.Data)
		if err != nil {
			return err
		}
		ce.Replica, ce.Leader = cp.cluster.Replica, cp.leaderName()
		rec.Events = append(rec.Events, ce)
		queued = append(queued, *e)
	}
	if cp.store != nil {
		rec.Replica, rec.Leader = cp.cluster.Replica, cp.leaderName()
		data, err := json.Marshal(rec)
		if err != nil {
			return fmt.Errorf("cannot encode the routing of model %q: %w", model, err)
		}
		var rev uint64
		if fenced {
			if rev, err = cp.store.putFenced(routingKey(model), data, cp.lastSeq); errors.Is(err, errFenced) {
				cp.fencedRefusals++
			}
		} else {
			rev, err = cp.store.put(routingKey(model), data, cp.revs[model])
		}
		if err != nil {
			return err
		}
		cp.revs[model], cp.records[model] = rev, &rec
		if fenced {
			// The engine took it as the write after lastSeq: nothing came
			// between, so this replica has seen all up to it.
			cp.lastSeq = rev
		}
	}
	for i := range queued {
		queued[i].cloud, queued[i].fenced = &rec.Events[carried+i], fenced
		queued[i].key, queued[i].last = routingKey(model), i == len(queued)-1
		cp.emitLocked(queued[i])
	}
	return nil
}

// transition is a step of a model version's canary and the event it
// emits, nil for a step that emits none.
type transition struct {
	model, version string
	tr             router.Transition
	event          *Event
	// canary is the canary as the step left it.
	canary router.Canary
}

// newTransition returns tr of model's canary c, which has just done it.
func (cp *controlPlane) newTransition(model string, c *router.Canary, tr router.Transition) transition {
	st := transition{model: model, version: c.Config.Version, tr: tr, canary: *c}
	if typ := canaryEventType(tr); typ != "" {
		// The call that did tr set one of the two to its time.
		at := c.LastTransition
		if c.LastEvaluation.After(at) {
			at = c.LastEvaluation
		}
		step := newCanaryStep(c, tr)
		step.Replica, step.Leader = cp.cluster.Replica, cp.leaderName()
		if tr.Measured != nil {
			step.Reporting, step.Missing = cp.fleet.presence(cp.now())
		}
		st.event = &Event{Type: typ, Model: model, Version: st.version, Time: at, Data: step}
	}
	return st
}

// startedTransition returns the start of model's canary c.
func (cp *controlPlane) startedTransition(model string, c *router.Canary) transition {
	return cp.newTransition(model, c, router.Transition{Kind: router.KindStarted, Weight: c.Weight, Reason: c.Reason})
}

// logTransitions logs and counts canary transitions once the routing they
// changed is stored.
func (cp *controlPlane) logTransitions(steps []transition) {
	for _, st := range steps {
		cp.log.Info("canary step", "model", st.model, "version", st.version, "step", string(st.tr.Kind),
			"weight", st.tr.Weight, "failed_checks", st.tr.FailedChecks, "reason", st.tr.Reason)
		countCanaryTransition(st.model, st.version, st.tr.Kind)
	}
	cp.recordCanarySteps(steps)
}

// resetIntervals starts the canary analysis's counts of m's versions
// afresh, so that a new canary is judged on its own traffic only.
func (m *model) resetIntervals() {
	for _, v := range m.versions {
		v.interval.take()
		if sh := v.shadow.Load(); sh != nil {
			sh.takeAgreement()
		}
	}
}

// routingReport is GET /admin/models/{m}/routing's answer.
type routingReport struct {
	Model string `json:"model_name"`
	// Source says where the split came from: "config" or "admin".
	Source    string         `json:"source"`
	Config    router.Config  `json:"config"`
	Effective map[string]int `json:"effective_split"`
	Canary    *router.Canary `json:"canary,omitempty"`
}

func (r *routes) report() routingReport {
	r.mu.Lock()
	defer r.mu.Unlock()
	rep := routingReport{Model: r.model, Source: "config", Config: r.base, Effective: map[string]int{}}
	if r.admin {
		rep.Source = "admin"
	}
	if r.canary != nil {
		c := *r.canary
		rep.Canary = &c
	}
	if rt := r.table.Load(); rt != nil {
		for i := range rt.t.Len() {
			if w := rt.t.Weight(i); w > 0 {
				rep.Effective[rt.t.Version(i)] = w
			}
		}
	}
	return rep
}
