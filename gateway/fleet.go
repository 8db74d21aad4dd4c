package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/nats-io/nats.go"

	"github.com/infergate/infergate/drift"
	"github.com/infergate/infergate/retrain/engine"
	"github.com/infergate/infergate/router"
)

// reportSubject is where each replica reports, once per report interval,
// under reportSubject.<replica>; a follower sends its drift counts to
// driftSubject.<replica>, one message per version.
const (
	reportSubject = "infergate.fleet.report"
	driftSubject  = "infergate.fleet.drift"
)

// maxReport bounds a report this replica takes in: its canary counts are a
// few hundred bytes per version.
const maxReport = 1 << 20

// fleet is a replica's view of the others: their reports (heartbeat,
// routing revision, and while a canary runs its counters), the counters the
// leader has merged since its last analysis, and this replica's own
// reports. The control plane's lock guards it; a nil fleet (a gateway
// without an engine) is alone.
type fleet struct {
	cp      *controlPlane
	nc      *nats.Conn
	subs    []*nats.Subscription
	members map[string]*member
	// remote holds, per model and version, the counters the leader took in
	// since its last analysis.
	remote     map[string]map[string]*remoteCounts
	lastReport time.Time
}

// member is what a replica last reported.
type member struct {
	Replica  string    `json:"replica"`
	Leader   string    `json:"leader"`
	LastSeen time.Time `json:"last_heartbeat"`
	Revision uint64    `json:"routing_revision"`
	Present  bool      `json:"present"`
	// revision is the gauge of its routing revision.
	revision *metrics.Gauge
}

// report is what a replica sends once per report interval.
type report struct {
	Replica string    `json:"replica"`
	Leader  string    `json:"leader"`
	Sent    time.Time `json:"sent"`
	// Revision is the newest revision of the control state it applied.
	Revision uint64 `json:"revision"`
	// Canary holds, while a model's canary runs, the counts of the
	// model's versions since the last report (followers only).
	Canary []versionCounts `json:"canary,omitempty"`
}

// versionCounts are a version's canary counters over one report interval.
type versionCounts struct {
	Model            string                 `json:"model"`
	Version          string                 `json:"version"`
	Requests         int64                  `json:"requests"`
	Errors           int64                  `json:"errors"`
	Buckets          [intervalBuckets]int64 `json:"latency_buckets"`
	Labeled          int64                  `json:"labeled"`
	Correct          int64                  `json:"correct"`
	AgreementSamples int64                  `json:"agreement_samples"`
	Agreed           int64                  `json:"agreed"`
}

// remoteCounts are the counters of one version merged from reports.
type remoteCounts struct {
	intervalSnapshot
	agreementSamples, agreed int64
}

// newFleet subscribes to the fleet's reports.
func newFleet(conn *engine.Conn, cp *controlPlane) *fleet {
	f := &fleet{cp: cp, nc: conn.NC, members: make(map[string]*member), remote: make(map[string]map[string]*remoteCounts)}
	for subject, handle := range map[string]nats.MsgHandler{reportSubject + ".*": f.receive, driftSubject + ".*": f.receiveDrift} {
		sub, err := conn.NC.Subscribe(subject, handle)
		if err != nil {
			cp.log.Error("cannot subscribe to the fleet's reports; this replica sees no other", "subject", subject, "error", err)
			continue
		}
		f.subs = append(f.subs, sub)
	}
	return f
}

// close ends the subscriptions.
func (f *fleet) close() {
	for _, sub := range f.subs {
		sub.Unsubscribe()
	}
}

// receive takes in a replica's report: its heartbeat, and, on the
// leader, its canary counts.
func (f *fleet) receive(msg *nats.Msg) {
	if len(msg.Data) > maxReport {
		return
	}
	var rep report
	if err := json.Unmarshal(msg.Data, &rep); err != nil || !engine.ValidToken(rep.Replica) {
		f.cp.log.Warn("ignoring a malformed fleet report", "subject", msg.Subject, "error", err)
		return
	}
	cp := f.cp
	cp.mu.Lock()
	defer cp.mu.Unlock()
	now := cp.now()
	m := f.members[rep.Replica]
	if m == nil {
		m = &member{Replica: rep.Replica,
			revision: metrics.GetOrCreateGauge(fmt.Sprintf(`infergate_cluster_routing_revision{replica=%q}`, rep.Replica), nil)}
		f.members[rep.Replica] = m
		if rep.Replica != cp.cluster.Replica {
			cp.log.Info("a replica joined the fleet", "joined", rep.Replica, "it_sees_leading", rep.Leader)
		}
	}
	m.Leader, m.LastSeen, m.Revision = rep.Leader, now, rep.Revision
	m.revision.Set(float64(rep.Revision))
	if !cp.leading || rep.Replica == cp.cluster.Replica {
		return
	}
	for _, c := range rep.Canary {
		if r := cp.routes[c.Model]; r == nil || r.canary == nil || r.canary.Phase != router.PhaseProgressing {
			continue // no canary here to judge them by (yet, or any more)
		}
		byVersion := f.remote[c.Model]
		if byVersion == nil {
			byVersion = make(map[string]*remoteCounts)
			f.remote[c.Model] = byVersion
		}
		rc := byVersion[c.Version]
		if rc == nil {
			rc = new(remoteCounts)
			byVersion[c.Version] = rc
		}
		snap := intervalSnapshot{requests: c.Requests, errors: c.Errors, buckets: c.Buckets, labeled: c.Labeled, correct: c.Correct}
		rc.add(&snap)
		rc.agreementSamples += c.AgreementSamples
		rc.agreed += c.Agreed
	}
}

// reportLocked returns this replica's report when one is due at now: its
// heartbeat and, on a follower, the counts of the versions of every model
// whose canary runs, which it takes (they go to the leader). It needs the
// lock.
func (f *fleet) reportLocked(now time.Time) []byte {
	cp := f.cp
	if now.Sub(f.lastReport) < cp.cluster.ReportInterval {
		return nil
	}
	f.lastReport = now
	rep := report{Replica: cp.cluster.Replica, Leader: cp.leaderName(), Sent: now, Revision: cp.lastSeq}
	if f.shipping() {
		for name, r := range cp.routes {
			r.mu.Lock()
			running := r.canary != nil && r.canary.Phase == router.PhaseProgressing
			r.mu.Unlock()
			rt := r.table.Load()
			if !running || rt == nil {
				continue
			}
			for _, v := range rt.versions {
				st := v.interval.take()
				vc := versionCounts{Model: name, Version: v.name, Requests: st.requests, Errors: st.errors,
					Buckets: st.buckets, Labeled: st.labeled, Correct: st.correct}
				if sh := v.shadow.Load(); sh != nil {
					vc.AgreementSamples, vc.Agreed = sh.takeAgreement()
				}
				rep.Canary = append(rep.Canary, vc)
			}
		}
	}
	present := 0
	for name, m := range f.members {
		if m.Present = now.Sub(m.LastSeen) <= cp.cluster.Grace; m.Present {
			present++
		}
		if now.Sub(m.LastSeen) > forgetAfter*cp.cluster.Grace {
			// Gone for good (a pod replaced, say): no longer listed,
			// reported missing, or a series of its own.
			delete(f.members, name)
			metrics.UnregisterMetric(fmt.Sprintf(`infergate_cluster_routing_revision{replica=%q}`, name))
		}
	}
	clusterReplicas.Set(float64(present))
	data, _ := json.Marshal(rep)
	return data
}

// shipping reports whether this replica sends its counts: while another
// replica leads. With no leader known (or this replica about to lead
// again) they stay where they are, for whoever leads to judge.
func (f *fleet) shipping() bool {
	cp := f.cp
	return !cp.leading && cp.lease.leader != "" && cp.lease.leader != cp.cluster.Replica
}

// publish sends a report and a follower's drift counts; what is lost is
// counted as missing by the leader.
func (f *fleet) publish(data []byte, counts []drift.Counts) {
	if !f.nc.IsConnected() {
		return // not buffered for later: a late report is a wrong one
	}
	err := f.nc.Publish(reportSubject+"."+f.cp.cluster.Replica, data)
	for i := range counts {
		if err != nil {
			break
		}
		var c []byte
		if c, err = json.Marshal(&counts[i]); err == nil {
			err = f.nc.Publish(driftSubject+"."+f.cp.cluster.Replica, c)
		}
	}
	if err != nil && f.nc.IsConnected() {
		f.cp.log.Warn("cannot send this replica's report", "error", err)
	}
}

// driftCounts takes what every drift monitor of this follower counted
// since the last report. It needs the lock (for the serving state's
// stability against a reload).
func (f *fleet) driftCounts() []drift.Counts {
	var out []drift.Counts
	st := f.cp.serving.Load()
	if st == nil {
		return nil // starting
	}
	for _, m := range st.models {
		for _, v := range m.versions {
			if v.drift == nil {
				continue
			}
			if c, ok := v.drift.monitor.TakeCounts(); ok {
				out = append(out, c)
			}
		}
	}
	return out
}

// receiveDrift merges a follower's drift counts into the leader's monitor
// of that version; a follower ignores them, and counts of a version not
// loaded here are dropped.
func (f *fleet) receiveDrift(msg *nats.Msg) {
	var c drift.Counts
	if err := json.Unmarshal(msg.Data, &c); err != nil {
		f.cp.log.Warn("ignoring malformed drift counts", "subject", msg.Subject, "error", err)
		return
	}
	m := f.cp.serving.Load().model(c.Model)
	if m == nil {
		return
	}
	v := m.version([]byte(c.Version))
	if v == nil || v.drift == nil {
		return
	}
	if err := v.drift.monitor.MergeCounts(c); err != nil && !errors.Is(err, drift.ErrNotLeading) {
		f.cp.log.Warn("drift counts refused", "from", strings.TrimPrefix(msg.Subject, driftSubject+"."),
			"model", c.Model, "version", c.Version, "error", err)
	}
}

// forgetAfter is how many grace periods a silent replica stays listed.
const forgetAfter = 20

// newestRevision returns the newest control revision a present replica
// reported at now.
func (f *fleet) newestRevision(now time.Time) uint64 {
	var newest uint64
	for _, m := range f.members {
		if now.Sub(m.LastSeen) <= f.cp.cluster.Grace {
			newest = max(newest, m.Revision)
		}
	}
	return newest
}

// take returns and forgets the counters merged for model's version.
func (f *fleet) take(model, version string) remoteCounts {
	if f == nil {
		return remoteCounts{}
	}
	rc := f.remote[model][version]
	if rc == nil {
		return remoteCounts{}
	}
	delete(f.remote[model], version)
	return *rc
}

// forgetModel drops the counters merged for model: its canary started
// afresh.
func (f *fleet) forgetModel(model string) {
	if f != nil {
		delete(f.remote, model)
	}
}

// forget drops every merged counter: a new leader starts afresh.
func (f *fleet) forget() {
	if f != nil {
		clear(f.remote)
	}
}

// presence returns the other replicas that reported within the grace
// period at now, and those that did not.
func (f *fleet) presence(now time.Time) (reporting, missing []string) {
	if f == nil {
		return nil, nil
	}
	for name, m := range f.members {
		if name == f.cp.cluster.Replica {
			continue
		}
		if now.Sub(m.LastSeen) <= f.cp.cluster.Grace {
			reporting = append(reporting, name)
		} else {
			missing = append(missing, name)
		}
	}
	slices.Sort(reporting)
	slices.Sort(missing)
	return reporting, missing
}

// clusterReport is GET /admin/cluster's answer.
type clusterReport struct {
	Replica  string    `json:"replica"`
	Leader   string    `json:"leader"`
	Leading  bool      `json:"leading"`
	LeaseTTL string    `json:"lease_ttl"`
	Engine   string    `json:"engine"`
	Revision uint64    `json:"routing_revision"`
	Replicas []*member `json:"replicas"`
}

// reportLocked returns the fleet as this replica sees it. It needs the lock.
func (cp *controlPlane) clusterReportLocked() clusterReport {
	rep := clusterReport{Replica: cp.cluster.Replica, Leader: cp.leaderName(), Leading: cp.leading,
		LeaseTTL: cp.cluster.LeaseTTL.String(), Engine: "none (stateless)", Revision: cp.lastSeq, Replicas: []*member{}}
	if cp.fleet == nil {
		return rep
	}
	rep.Engine = cp.fleet.nc.ConnectedUrlRedacted()
	if rep.Engine == "" {
		rep.Engine = "disconnected"
	}
	now := cp.now()
	for _, m := range cp.fleet.members {
		c := *m
		c.Present = now.Sub(m.LastSeen) <= cp.cluster.Grace
		rep.Replicas = append(rep.Replicas, &c)
	}
	slices.SortFunc(rep.Replicas, func(a, b *member) int {
		if a.Replica < b.Replica {
			return -1
		}
		return 1
	})
	return rep
}
