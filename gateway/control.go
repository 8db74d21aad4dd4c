package gateway

import (
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/infergate/infergate/drift"
	"github.com/infergate/infergate/retrain/engine"
	"github.com/infergate/infergate/retrain/outbox"
	"github.com/infergate/infergate/router"
)

// controlTick is how often the control loop runs: the lease, due canary
// analyses and reports. It bounds how late after its interval an analysis
// runs.
const controlTick = 100 * time.Millisecond

var (
	clusterLeader   = metrics.NewGauge(`infergate_cluster_leader`, nil)
	clusterReplicas = metrics.NewGauge(`infergate_cluster_replicas`, nil)
)

// controlPlane owns what changes the serving state: every model's routing
// (reloads, admin changes, canary analysis), the fleet's leadership, the
// reports replicas exchange, and the events all of them produce. One lock
// guards it all; the request path reads only the routing tables it swaps
// in atomically. Its clock is injected (Options.Now).
//
// The routing lives in the engine's control bucket, one key per model: a
// change by the admin API of any replica is written by revision, a canary
// step of the leader is fenced by the bucket's newest revision (store.
// putFenced), and every replica's watch applies what the others wrote.
type controlPlane struct {
	mu  sync.Mutex
	now func() time.Time
	log *slog.Logger
	// cluster is the cluster section with its defaults.
	cluster ClusterConfig
	serving *atomic.Pointer[state]

	current Config
	routes  map[string]*routes

	// store is nil for a stateless gateway, and lease then too: it leads
	// itself.
	store *store
	lease *lease
	// leading is what the last tick found; leaderSince when it began.
	leading     bool
	leaderSince time.Time
	// revs are the routing revisions applied per model, records the
	// records they hold; lastSeq is the bucket's newest revision as the
	// watch delivered it, which fenced writes expect.
	revs    map[string]uint64
	records map[string]*routeRecord
	lastSeq uint64
	// fencedRefusals counts the fenced writes refused since the watch
	// last moved: that, or a newer revision reported by the fleet, says
	// the watch may be behind (since behindSince).
	fencedRefusals int
	behindSince    time.Time
	// drifts are the drift records by key, as stored.
	drifts  map[string]*driftRecord
	watcher jetstream.KeyWatcher
	fleet   *fleet // nil without an engine

	// outbox is nil without webhooks. eventsIn queues the events the
	// event loop hands to the outbox and to Options.Events.
	outbox   *outbox.Outbox
	eventsIn chan Event
	// emitted holds, by record key, the ids of the events the event loop
	// emitted since it last wrote that record without them; the event
	// loop owns it.
	emitted        map[string][]string
	events         chan<- Event
	driftDecisions chan<- drift.Decision
	// history keeps the canary steps, drift windows and events the
	// console looks back on (console_history.go).
	history *history

	stop       chan struct{}
	done       sync.WaitGroup
	stopEvents chan struct{}
	eventsDone chan struct{}
}

// newControlPlane returns the control plane of a server started with o,
// on o.Engine when set: it opens the control bucket, starts watching it
// and reads what it holds, so that routing can start from it. seen, when
// set, is told who leads (for the log).
func newControlPlane(o Options, serving *atomic.Pointer[state], seen *leaderSeen) (*controlPlane, error) {
	cp := &controlPlane{
		now: o.Now, log: o.Log, cluster: o.Config.Cluster.withDefaults(), serving: serving,
		current: o.Config, routes: make(map[string]*routes),
		revs: make(map[string]uint64), records: make(map[string]*routeRecord), drifts: make(map[string]*driftRecord),
		eventsIn: make(chan Event, eventQueue), emitted: make(map[string][]string), events: o.Events, driftDecisions: o.DriftDecisions,
		stop: make(chan struct{}), stopEvents: make(chan struct{}), eventsDone: make(chan struct{}),
		leading: o.Engine == nil,
	}
	if cp.now == nil {
		cp.now = time.Now
	}
	var err error
	if cp.history, err = openHistory(o.Engine, o.Config.Console, o.Log, cp.now); err != nil {
		return nil, err
	}
	go cp.eventLoop()
	if o.Engine == nil {
		clusterLeader.Set(1)
		leaseRenewedAt.Store(leadsAlone)
		return cp, nil
	}
	if cp.store, err = openStore(o.Engine); err == nil {
		cp.lease = &lease{store: cp.store, replica: cp.cluster.Replica, ttl: cp.cluster.LeaseTTL, seen: seen}
		err = cp.watch()
	}
	if err != nil {
		cp.closeEvents()
		return nil, err
	}
	cp.fleet = newFleet(o.Engine, cp)
	return cp, nil
}

// watch starts watching the control bucket and applies what it holds now
// (as starting applyLocked does) before returning; it is the watch the
// control plane follows.
func (cp *controlPlane) watch() error {
	w, entries, err := cp.store.watch(storeTimeout)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := cp.applyLocked(e, true); err != nil {
			w.Stop()
			return err
		}
	}
	cp.watcher = w
	return nil
}

// start starts the control loop and the watch's updates (the event loop
// runs from the start, which closeEvents ends).
func (cp *controlPlane) start() {
	cp.done.Go(cp.loop)
	if cp.watcher != nil {
		cp.done.Go(cp.follow)
	}
}

// loop runs the lease, due canary analyses and reports until stop.
func (cp *controlPlane) loop() {
	t := time.NewTicker(controlTick)
	defer t.Stop()
	for {
		select {
		case <-cp.stop:
			return
		case <-t.C:
			cp.tick(cp.now())
		}
	}
}

// tick does what is due at now: renewing or taking the lease, the leader's
// canary analyses, and this replica's report.
func (cp *controlPlane) tick(now time.Time) {
	cp.mu.Lock()
	var handOver []driftHandOver
	if cp.lease != nil {
		if leading := cp.lease.tick(now, cp.leaderSince, &cp.lastSeq); leading != cp.leading {
			handOver = cp.setLeadingLocked(leading, now)
		}
	}
	if cp.leading {
		st := cp.serving.Load()
		for name, r := range cp.routes {
			if m := st.models[name]; m != nil {
				cp.canaryStepLocked(r, m, now)
			}
		}
	}
	var report []byte
	if cp.fleet != nil {
		report = cp.fleet.reportLocked(now)
	}
	var counts []drift.Counts
	if report != nil && cp.fleet.shipping() {
		counts = cp.fleet.driftCounts()
	}
	cp.mu.Unlock()
	// Outside the lock: a monitor that changes roles waits for its
	// Commit, which takes the lock.
	for _, h := range handOver {
		h.monitor.SetLeading(h.leading, h.state)
	}
	if report != nil {
		cp.fleet.publish(report, counts)
	}
}

// driftHandOver is a drift monitor's change of role, with the state the
// last leader stored for a monitor that becomes leader.
type driftHandOver struct {
	monitor *drift.Monitor
	leading bool
	state   *drift.State
}

// settleLease runs the control loop's first ticks before the server
// starts, until this replica leads or knows another does, for at most a
// lease: drift monitors then start in the role they keep, rather than
// counting as followers for a moment (a slow engine may need a second try).
func (cp *controlPlane) settleLease() {
	deadline := time.Now().Add(cp.cluster.LeaseTTL)
	for {
		cp.tick(cp.now())
		if cp.lease == nil || time.Now().After(deadline) {
			return
		}
		cp.mu.Lock()
		settled := cp.leading || cp.lease.leader != "" && cp.lease.leader != cp.cluster.Replica
		cp.mu.Unlock()
		if settled {
			return
		}
		time.Sleep(controlTick)
	}
}

// follow applies the watch's updates until stop. A watch that falls
// behind (the engine's server that carried it died: nats.go notices only
// after its heartbeats are missed, some 10 s) is replaced: when the fleet
// reports revisions newer than this replica has seen, or the leader's
// fenced writes keep being refused, for watchPatience.
func (cp *controlPlane) follow() {
	check := time.NewTicker(cp.cluster.ReportInterval)
	defer check.Stop()
	cp.mu.Lock()
	w := cp.watcher
	cp.mu.Unlock()
	for {
		select {
		case <-cp.stop:
			return
		case e, ok := <-w.Updates():
			if !ok {
				w = cp.rewatchRunning(w)
				continue
			}
			if e == nil {
				continue
			}
			cp.mu.Lock()
			if err := cp.applyLocked(e, false); err != nil {
				cp.log.Error("cannot apply a change of the control state; serving on with the previous one", "key", e.Key(), "error", err)
			}
			cp.mu.Unlock()
		case <-check.C:
			if cp.watchBehind(cp.now()) {
				w = cp.rewatchRunning(w)
			}
		}
	}
}

// watchPatience is how long at least a watch may seem behind before it is
// replaced (two report intervals, when longer); rewatchTimeout bounds one
// try, so that tries follow each other while the engine elects a new
// leader for the bucket.
const (
	watchPatience  = 500 * time.Millisecond
	rewatchTimeout = 2 * time.Second
)

// watchBehind reports whether the watch has seemed behind for longer than
// watchPatience at now.
func (cp *controlPlane) watchBehind(now time.Time) bool {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if cp.fleet.newestRevision(now) <= cp.lastSeq && cp.fencedRefusals < 10 {
		cp.behindSince = time.Time{}
		return false
	}
	if cp.behindSince.IsZero() {
		cp.behindSince = now
		cp.log.Debug("the watch of the control state may be behind", "seen", cp.lastSeq, "reported", cp.fleet.newestRevision(now), "refusals", cp.fencedRefusals)
	}
	return now.Sub(cp.behindSince) >= max(watchPatience, 2*cp.cluster.ReportInterval)
}

// rewatchRunning replaces the watch w of a running replica with a new one
// and applies what changed meanwhile; it returns the watch to follow (w
// still, when no new one could be made: the next check tries again).
func (cp *controlPlane) rewatchRunning(w jetstream.KeyWatcher) jetstream.KeyWatcher {
	next, entries, err := cp.store.watch(rewatchTimeout)
	if err != nil {
		cp.log.Warn("the watch of the control state is behind and cannot be renewed yet", "error", err)
		return w
	}
	// The old watch's consumer may sit on the server that died: its Stop
	// waits for an answer that may take the engine's 5 s timeout, which
	// the new watch need not wait for.
	go w.Stop()
	cp.mu.Lock()
	defer cp.mu.Unlock()
	for _, e := range entries {
		if err := cp.applyLocked(e, false); err != nil {
			cp.log.Error("cannot apply a change of the control state; serving on with the previous one", "key", e.Key(), "error", err)
		}
	}
	cp.watcher, cp.behindSince, cp.fencedRefusals = next, time.Time{}, 0
	cp.log.Info("the watch of the control state was behind and is renewed", "revision", cp.lastSeq)
	return next
}

// applyLocked takes in one entry of the control bucket: the leader key,
// or a model's routing, which it applies unless this replica wrote it
// itself. While starting it only records what the bucket holds (routing
// starts from it), and a record that cannot be read is an error. It needs
// the lock.
func (cp *controlPlane) applyLocked(e jetstream.KeyValueEntry, starting bool) error {
	if e.Revision() > cp.lastSeq {
		cp.lastSeq, cp.fencedRefusals = e.Revision(), 0
	}
	key := e.Key()
	switch {
	case key == leaderKey:
		cp.lease.watched(e)
	case strings.HasPrefix(key, routingPrefix):
		model, ok := engine.ParseToken(key[len(routingPrefix):])
		if !ok || e.Revision() <= cp.revs[model] {
			return nil
		}
		if e.Operation() != jetstream.KeyValuePut {
			delete(cp.revs, model) // deleted by an operator: the next write creates it
			delete(cp.records, model)
			return nil
		}
		rec, err := decodeRoutes(model, e.Value())
		if err != nil {
			return err
		}
		cp.revs[model], cp.records[model] = e.Revision(), rec
		if !starting {
			cp.applyRecordLocked(model, rec, e.Revision())
		}
	case strings.HasPrefix(key, driftPrefix):
		if e.Operation() != jetstream.KeyValuePut {
			delete(cp.drifts, key)
			return nil
		}
		if stored := cp.drifts[key]; stored != nil && stored.rev >= e.Revision() {
			return nil // this replica's own write, seen already
		}
		rec := &driftRecord{rev: e.Revision()}
		if err := json.Unmarshal(e.Value(), rec); err != nil {
			// A monitor starts afresh rather than the gateway not at all.
			cp.log.Error("ignoring a stored drift state that cannot be read; that version's monitoring starts afresh", "key", key, "error", err)
			return nil
		}
		cp.drifts[key] = rec
	}
	return nil
}

// shutdown stops the control loop, the watch and the reports. The lease
// is kept until closeEvents: the drift monitors, closing after it, may
// still store a last decision.
func (cp *controlPlane) shutdown() {
	close(cp.stop)
	cp.done.Wait()
	cp.mu.Lock()
	if cp.watcher != nil {
		cp.watcher.Stop()
	}
	if cp.fleet != nil {
		cp.fleet.close()
	}
	cp.mu.Unlock()
}

// closeEvents stops the event loop, once what is queued went out, and the
// outbox, then gives the lease back, so that another replica leads at
// once rather than after the TTL.
func (cp *controlPlane) closeEvents() {
	close(cp.stopEvents)
	<-cp.eventsDone
	if cp.outbox != nil {
		cp.outbox.Close()
	}
	cp.mu.Lock()
	cp.lease.release(cp.now())
	cp.mu.Unlock()
	cp.history.close()
}

// setLeadingLocked makes this replica the leader, or a follower. A new
// leader emits again the events of every model's last change (a writer
// may have died before it did; receivers deduplicate by id) and starts
// delivering webhooks; a replica that lost the lease stops delivering at
// once. It returns the drift monitors' changes of role, for the caller to
// make once it released the lock. It needs the lock.
func (cp *controlPlane) setLeadingLocked(leading bool, now time.Time) []driftHandOver {
	cp.leading = leading
	var handOver []driftHandOver
	var models map[string]*model
	if st := cp.serving.Load(); st != nil {
		models = st.models
	}
	for _, m := range models {
		for _, v := range m.versions {
			if v.drift != nil {
				h := driftHandOver{monitor: v.drift.monitor, leading: leading}
				if leading {
					h.state = cp.driftStateLocked(m.name, v.name)
				}
				handOver = append(handOver, h)
			}
		}
	}
	if leading {
		cp.leaderSince = now
		clusterLeader.Set(1)
		cp.log.Info("this replica leads the fleet")
		for model, rec := range cp.records {
			for i := range rec.Events {
				cp.emitLocked(Event{cloud: &rec.Events[i], fenced: true, repair: true,
					key: routingKey(model), last: i == len(rec.Events)-1})
			}
		}
		for key, rec := range cp.drifts {
			for i := range rec.Events {
				cp.emitLocked(Event{cloud: &rec.Events[i], fenced: true, repair: true,
					key: key, last: i == len(rec.Events)-1})
			}
		}
		if cp.outbox != nil {
			if err := cp.outbox.Start(); err != nil {
				cp.log.Error("cannot deliver webhooks", "error", err)
			}
		}
		cp.fleet.forget()
		// The last leader's counts since its last analysis went with it:
		// a running canary's next analysis judges a whole interval from now.
		for name, r := range cp.routes {
			r.mu.Lock()
			if c := r.canary; c != nil && c.Phase == router.PhaseProgressing {
				next := *c
				next.LastEvaluation = now
				r.canary = &next
				if m := cp.serving.Load().model(name); m != nil {
					m.resetIntervals()
				}
			}
			r.mu.Unlock()
		}
		return handOver
	}
	clusterLeader.Set(0)
	cp.log.Warn("this replica no longer leads the fleet")
	if cp.outbox != nil {
		cp.outbox.Stop()
	}
	return handOver
}

// leaderName is who leads, as this replica knows it.
func (cp *controlPlane) leaderName() string {
	if cp.lease == nil {
		return cp.cluster.Replica
	}
	return cp.lease.leader
}
