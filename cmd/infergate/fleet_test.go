package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/infergate/infergate/drift"
	"github.com/infergate/infergate/retrain/engine"
	"github.com/infergate/infergate/retrain/engine/natscluster"
	"github.com/infergate/infergate/retrain/outbox"
	"github.com/infergate/infergate/retrain/trainer"
	"github.com/infergate/infergate/router"
)

// The fleet's settings: three replicas on a three-server NATS cluster,
// with a lease short enough that failovers fit the test's time.
const (
	fleetLeaseTTL       = 2 * time.Second
	fleetReportInterval = 250 * time.Millisecond
	fleetTokenEnv       = "INFERGATE_TEST_FLEET_TOKEN"
	fleetToken          = "fleet-t0ken"
	fleetSecretEnv      = "INFERGATE_TEST_FLEET_SECRET"
	fleetSecret         = "fleet-secret"
	// fleetFailing is the replica whose version 3 fails every request of
	// the load; it starts last, so it does not lead at first.
	fleetFailing = "r3"
	// fleetPollEvery is how often the routing and the cluster are polled.
	fleetPollEvery = 5 * time.Millisecond
	// fleetRate is the load's requests per second over the whole fleet.
	fleetRate = 300
)

// fleetDriftEvery is the drift window of model demo: by time, so that in
// a fleet windows are aligned to the clock and window k covers the same
// span of traffic on the leader as on the baseline replica of sub-test f.
const fleetDriftEvery = 2 * time.Second

// fleetConfig is a replica's config: model ab (versions 1, 2 and 3, all
// loaded; the model store synced or not) split to version 1, model demo whose version 1 is monitored for
// drift over windows of fleetDriftEvery, the engine (its streams kept on
// the number of servers given), and a signed webhook.
const fleetConfig = `listen: %s
repository: models
model_store: {sync: %t}
admin: {token_env: %s}
cluster: {nats_url: %q, token_env: %s, stream_replicas: %d, replica: %s, lease_ttl: %s, report_interval: %s}
webhooks:
  - {name: hook, url: %q, secret_env: %s, timeout: 1s, backoff_base: 50ms, backoff_max: 200ms, max_attempts: 1000}
models:
  ab:
    version_policy: {all: true}
    routing:
      split: {"1": 1}
  demo:
    # A clean window drifts with chance false_alarm_rate (0.05 by default);
    # the test wants every window before the shift clean, the fleet's as
    # the baseline's, so the rate is one in a thousand (the shift still
    # shows in every shifted feature).
    drift: {window: {every: %s}, false_alarm_rate: 0.001}
`

// fleetBound returns d, a time bound that holds without the race detector,
// or three times d under it.
func fleetBound(d time.Duration) time.Duration {
	if raceEnabled {
		return 3 * d
	}
	return d
}

// TestFleet runs the gateway as a fleet: three `infergate serve` processes
// sharing their state through three clustered nats-server processes, under
// a steady load spread round robin over them. Each sub-test changes or
// breaks something and checks what every replica serves, what the webhook
// receiver got and which requests failed; the numbers measured are logged
// as one table at the end.
func TestFleet(t *testing.T) {
	began := time.Now()
	f := startFleet(t)
	f.numbers.add("fleet started (3 NATS servers, 3 replicas)", time.Since(began).Round(time.Millisecond).String())

	load := f.startLoad(t)
	defer load.stop()
	subtests := []struct {
		name string
		run  func(*testing.T, *fleet)
	}{
		{"a_admin_change_and_canary_propagate", testFleetPropagation},
		{"b_canary_judged_on_fleet_counts", testFleetCanaryRollback},
		{"c_paused_leader_writes_nothing", testFleetPausedLeader},
		{"d_leader_killed_mid_canary", testFleetLeaderKilled},
		{"e_nats_server_killed_under_load", testFleetNATSKilled},
		{"f_drift_spread_over_the_fleet", testFleetDrift},
	}
	for _, st := range subtests {
		start := time.Now()
		load.setPhase(st.name[:1])
		before := load.unexpectedCount()
		t.Run(st.name, func(t *testing.T) {
			defer func() { // after a t.Fatal too
				if n := load.unexpectedCount() - before; n > 0 {
					t.Errorf("%d client requests failed unexpectedly:\n%s", n, strings.Join(load.unexpectedSince(before), "\n"))
				}
			}()
			st.run(t, f)
		})
		f.numbers.add("duration of "+st.name, time.Since(start).Round(time.Millisecond).String())
	}
	load.stop()
	for _, r := range f.replicas {
		c := load.counts(r.name)
		f.numbers.add("load on "+r.name, fmt.Sprintf("ok %d, failed in flight on a killed replica %d, failed on the failing canary %d, failed otherwise %d",
			c.ok, c.inFlightOnKill, c.canaryFailures, c.unexpected))
	}
	f.numbers.add("admin changes answered 409 and retried", fmt.Sprint(f.conflicts.Load()))
	f.numbers.add("total", time.Since(began).Round(time.Millisecond).String())
	if raceEnabled {
		f.numbers.add("time bounds", "scaled by 3 (race detector)")
	}
	t.Logf("fleet measurements:\n%s", &f.numbers)
	if t.Failed() {
		// Whole logs with -artifacts; their tails in any case.
		dir := t.ArtifactDir()
		for _, r := range f.replicas {
			os.WriteFile(filepath.Join(dir, r.name+".log"), []byte(r.logs.String()), 0o644)
			t.Logf("log tail of replica %s (the whole log: %s):\n%s", r.name, filepath.Join(dir, r.name+".log"), lastLines(r.logs.String(), 40))
		}
	}
}

// testFleetPropagation (a): admin changes made on one replica, and a
// canary's steps made by the leader, reach every replica within a second.
func testFleetPropagation(t *testing.T, f *fleet) {
	w := f.watchRouting()
	defer w.stop()
	var samples []time.Duration
	byReplica := map[string][]time.Duration{}
	sample := func(r *fleetReplica, d time.Duration) {
		d = max(d, 0) // seen before the origin was: it polled later
		samples = append(samples, d)
		byReplica[r.name] = append(byReplica[r.name], d)
	}
	// Admin changes, each on another replica, each waited for everywhere.
	splits := []map[string]int{{"1": 3, "2": 1}, {"1": 1, "2": 3}, {"1": 2, "2": 1}, {"1": 1, "2": 2}, {"1": 1, "2": 1}}
	for i, split := range splits {
		writer := f.replicas[i%len(f.replicas)]
		sent := time.Now()
		rv, answered := f.change(t, writer, http.MethodPut, "models/ab/routing", router.Config{Split: split})
		want := splitKey(rv.Effective)
		w.waitAll(t, "split "+want, f.live(), func(s servedState) bool { return s.split == want })
		for _, r := range f.live() {
			if r != writer {
				// From the writer's answer: it serves the change from then.
				at, _ := w.firstAt(r.name, sent, func(s servedState) bool { return s.split == want })
				sample(r, at.Sub(answered))
			}
		}
	}
	admin := len(samples)

	// A canary started on a follower: the start is that replica's write,
	// the steps the leader's.
	leader := f.leader(t)
	starter := f.follower(leader)
	_, ours := f.startCanary(t, starter, router.CanaryConfig{
		Version: "2", StepWeight: 10, MaxWeight: 50, Interval: 250 * time.Millisecond, MinRequests: 1, MaxLatencyRatio: 1000})
	w.waitAll(t, "the canary promoted", f.live(), func(s servedState) bool { return ours(s) && s.phase == router.PhasePromoted })
	steps := w.sequence(leader.name, ours)
	if len(steps) != 6 {
		t.Errorf("the leader served %d states of the canary, want 6 (started at 10, 20, 30, 40, 50, promoted): %q", len(steps), steps)
	}
	rank := make(map[string]int, len(steps))
	for i, k := range steps {
		rank[k] = i
	}
	for i, k := range steps {
		origin := leader
		if i == 0 {
			origin = starter
		}
		from, ok := w.firstAt(origin.name, time.Time{}, func(s servedState) bool { return ours(s) && s.key() == k })
		if !ok {
			t.Errorf("replica %s that made step %q never served it", origin.name, k)
			continue
		}
		for _, r := range f.live() {
			if r == origin {
				continue
			}
			at, ok := w.firstAt(r.name, time.Time{}, func(s servedState) bool {
				j, known := rank[s.key()]
				return ours(s) && known && j >= i
			})
			if !ok {
				t.Errorf("replica %s never served step %q or a later one", r.name, k)
				continue
			}
			sample(r, at.Sub(from))
		}
	}
	p50, p99, top := fleetPercentiles(samples)
	f.numbers.add("a: propagation to the other replicas", fmt.Sprintf("p50 %s, p99 %s, max %s over %d samples (%d from 5 admin changes, %d from %d canary states; polled every %s)",
		p50, p99, top, len(samples), admin, len(samples)-admin, len(steps), fleetPollEvery))
	for _, r := range f.replicas {
		p50, p99, top := fleetPercentiles(byReplica[r.name])
		f.numbers.add("a: propagation to "+r.name, fmt.Sprintf("p50 %s, p99 %s, max %s over %d samples", p50, p99, top, len(byReplica[r.name])))
	}
	if bound := fleetBound(time.Second); p99 >= bound {
		t.Errorf("p99 propagation %s, want under %s", p99, bound)
	}
}

// testFleetCanaryRollback (b): a canary whose version fails only on one
// follower's traffic is rolled back by the leader, which judges it on the
// counts the followers report.
func testFleetCanaryRollback(t *testing.T, f *fleet) {
	w := f.watchRouting()
	defer w.stop()
	leader := f.leader(t)
	if leader.name == fleetFailing {
		t.Fatalf("replica %s leads: the failing canary must fail on a follower's traffic only", leader.name)
	}
	f.setSplit(t, w, leader, map[string]int{"1": 1})
	began := time.Now()
	start, ours := f.startCanary(t, leader, router.CanaryConfig{
		Version: "3", StepWeight: 30, MaxWeight: 60, Interval: 400 * time.Millisecond, Threshold: 2, MinRequests: 3, MaxLatencyRatio: 1000})
	w.waitAll(t, "the canary rolled back", f.live(), func(s servedState) bool { return ours(s) && s.phase == router.PhaseRolledBack })
	rolledBack := time.Since(began)
	e := f.hook.wait(t, "canary.rolledback of version 3", func(e *fleetEvent) bool {
		return e.Type == outbox.TypeCanaryRolledBack && e.Step.StartedAt.Equal(start)
	})
	st := e.Step
	if st.Replica != leader.name || st.Leader != leader.name || st.Checks == nil || st.Checks.Canary.Errors == 0 ||
		!slices.Contains(st.Reporting, fleetFailing) {
		t.Errorf("canary.rolledback: want it decided by the leader %s on errors that replica %s reported; got %+v", leader.name, fleetFailing, st)
	}
	if st.Checks != nil {
		f.numbers.add("b: failing canary rolled back on every replica", fmt.Sprintf("%s after its start by leader %s; last analysis: %d errors in %d canary requests, replicas reporting %v; %s",
			rolledBack.Round(time.Millisecond), leader.name, st.Checks.Canary.Errors, st.Checks.Canary.Requests, st.Reporting, st.Reason))
	}
	if c := f.load.counts(fleetFailing); c.canaryFailures == 0 {
		t.Errorf("no request failed on version 3 of replica %s: the canary never failed there", fleetFailing)
	}
}

// testFleetPausedLeader (c): a leader paused past its lease loses it to
// another replica, and once it runs again it writes no routing, takes no
// lease and emits no event.
func testFleetPausedLeader(t *testing.T, f *fleet) {
	w := f.watchRouting()
	defer w.stop()
	old := f.leader(t)
	f.setSplit(t, w, old, map[string]int{"1": 1})
	start, ours := f.startCanary(t, f.follower(old), router.CanaryConfig{
		Version: "2", StepWeight: 5, MaxWeight: 95, Interval: 300 * time.Millisecond, MinRequests: 1, MaxLatencyRatio: 1000})
	w.waitAll(t, "a step of the leader", []*fleetReplica{old}, func(s servedState) bool { return ours(s) && s.weight >= 10 })

	old.down.Store(true)
	stopAt := time.Now()
	if err := old.proc.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	next, takeover := f.waitNewLeader(t, old, stopAt)
	if bound := fleetBound(fleetLeaseTTL + time.Second); takeover > bound {
		t.Errorf("%s took the lease %s after %s was paused, want within lease_ttl + 1s (%s)", next.name, takeover, old.name, bound)
	}
	// The one fixed wait: the pause itself, twice the lease.
	time.Sleep(time.Until(stopAt.Add(2 * fleetLeaseTTL)))
	contAt := time.Now()
	if err := old.proc.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	old.down.Store(false)
	var steppedDown time.Duration
	fleetPoll(t, fleetBound(5*time.Second), "the paused leader to follow "+next.name, func() bool {
		c, err := f.cluster(old)
		steppedDown = time.Since(contAt)
		return err == nil && !c.Leading && c.Leader == next.name
	})
	// The new leader carries the canary on: two steps after the old one
	// woke, during which the old one would have written if it were to.
	wake := w.latest(next.name).weight
	w.waitAll(t, "two steps of the new leader", []*fleetReplica{next}, func(s servedState) bool { return ours(s) && s.weight >= wake+10 })
	f.change(t, next, http.MethodPost, "models/ab/canary/rollback", nil)
	w.waitAll(t, "the canary rolled back", f.live(), func(s servedState) bool { return ours(s) && s.phase == router.PhaseRolledBack })
	f.hook.wait(t, "canary.rolledback", func(e *fleetEvent) bool {
		return e.Type == outbox.TypeCanaryRolledBack && e.Step.StartedAt.Equal(start)
	})

	// The lease ended with the first change of the leader key after the
	// pause: its expiry, or the new leader's write.
	writes := f.control.since(time.Time{})
	var lost uint64
	for _, c := range writes {
		if c.key == "leader" && c.at.After(stopAt) && (!c.put || c.replica != old.name) {
			lost = c.rev
			break
		}
	}
	if lost == 0 {
		t.Fatalf("the control bucket shows no change of the leader key after the pause: %v", writes)
	}
	// A record names its writer and who led then; one naming the paused
	// replica past the lease's end is a write it must not make, or one
	// another replica made in its name.
	var after []string
	for i, c := range writes {
		if c.rev <= lost || !c.put || c.replica != old.name {
			continue
		}
		what := c.String()
		if prev, ok := previousWrite(writes[:i], c.key); ok && strippedOf(c.value, prev.value) {
			what += fmt.Sprintf("; it is revision %d again without its events (the rewrite done once a record's events are in the outbox), kept in the name of the replica that wrote revision %d", prev.rev, prev.rev)
		}
		if strings.Contains(old.logs.String(), fmt.Sprintf("revision=%d written_by=%s", c.rev, old.name)) {
			what += fmt.Sprintf("; %s itself applied it as another replica's change", old.name)
		}
		after = append(after, what)
	}
	if len(after) > 0 {
		var around []string
		for _, c := range writes {
			if c.rev+5 >= lost && c.rev <= lost+10 {
				around = append(around, c.String())
			}
		}
		t.Errorf("the control bucket holds records naming replica %s, paused at %s and woken at %s, as writer after its lease ended at revision %d:\n%s\nthe bucket's changes then:\n%s",
			old.name, stopAt.Format(time.StampMilli), contAt.Format(time.StampMilli), lost, strings.Join(after, "\n"), strings.Join(around, "\n"))
	}
	var late []string
	for _, e := range f.hook.all() {
		if e.Step.Replica == old.name && !e.Time.Before(stopAt) {
			late = append(late, fmt.Sprintf("%s %s at %s (replica %s, leader %s)", e.ID, e.Type, e.Time.Format(time.StampMilli), e.Step.Replica, e.Step.Leader))
		}
	}
	if len(late) > 0 {
		t.Errorf("replica %s emitted events after it was paused at %s:\n%s", old.name, stopAt.Format(time.StampMilli), strings.Join(late, "\n"))
	}
	f.numbers.add("c: leader paused for 2 x lease_ttl", fmt.Sprintf("%s lost the lease to %s after %s; on waking it followed after %s; its writes after revision %d: %d, its events after the pause: %d",
		old.name, next.name, takeover.Round(time.Millisecond), steppedDown.Round(time.Millisecond), lost, len(after), len(late)))
}

// testFleetLeaderKilled (d): a leader killed in the middle of a canary is
// replaced within lease_ttl + 1s, the canary goes on from its stored step,
// every event arrives, and only the requests in flight on the killed
// replica fail. The killed replica then starts again and serves what the
// fleet stored.
func testFleetLeaderKilled(t *testing.T, f *fleet) {
	w := f.watchRouting()
	defer w.stop()
	old := f.leader(t)
	f.setSplit(t, w, old, map[string]int{"1": 1})
	start, ours := f.startCanary(t, f.follower(old), router.CanaryConfig{
		Version: "2", StepWeight: 20, MaxWeight: 80, Interval: time.Second, MinRequests: 1, MaxLatencyRatio: 1000})
	w.waitAll(t, "weight 40", []*fleetReplica{old}, func(s servedState) bool { return ours(s) && s.weight >= 40 })
	atKill := w.latest(old.name).weight

	old.killed.Store(true)
	old.down.Store(true)
	killAt := time.Now()
	old.proc.kill()
	next, failover := f.waitNewLeader(t, old, killAt)
	if bound := fleetBound(fleetLeaseTTL + time.Second); failover > bound {
		t.Errorf("a new leader after %s, want within lease_ttl + 1s (%s)", failover, bound)
	}
	w.waitAll(t, "the canary promoted", f.live(), func(s servedState) bool { return ours(s) && s.phase == router.PhasePromoted })
	for _, r := range f.live() {
		var weights []int
		prev := 0
		for _, s := range w.states(r.name) {
			if !ours(s) {
				continue
			}
			weights = append(weights, s.weight)
			if s.weight < prev || s.at.After(killAt) && s.weight < atKill {
				t.Errorf("replica %s served the canary at weight %d after %d (killed at %d): %v", r.name, s.weight, prev, atKill, weights)
				break
			}
			prev = s.weight
		}
	}
	// Every step's event, at least once: started, 40, 60, 80, promoted.
	var got []*fleetEvent
	f.hook.waitAll(t, "the canary's five events", func(all []*fleetEvent) bool {
		got = got[:0]
		steps := map[string]bool{}
		for _, e := range all {
			if e.Step.StartedAt.Equal(start) {
				got = append(got, e)
				steps[fmt.Sprintf("%s %d", e.Step.Step, e.Step.WeightAfter)] = true
			}
		}
		return steps["started 20"] && steps["advanced 40"] && steps["advanced 60"] && steps["advanced 80"] && steps["promoted 100"]
	})
	deliveries := 0
	for _, e := range got {
		deliveries += e.Deliveries
	}
	c := f.load.counts(old.name)
	f.numbers.add("d: leader killed at canary weight "+fmt.Sprint(atKill), fmt.Sprintf("%s led after %s (bound %s); %d events of the canary in %d deliveries; %d requests failed in flight on %s",
		next.name, failover.Round(time.Millisecond), fleetBound(fleetLeaseTTL+time.Second), len(got), deliveries, c.inFlightOnKill, old.name))

	began := time.Now()
	f.start(t, old)
	old.killed.Store(false)
	old.down.Store(false)
	want := w.latest(next.name).key()
	w.waitAll(t, "the fleet's routing on the restarted replica", []*fleetReplica{old}, func(s servedState) bool { return s.key() == want })
	f.numbers.add("d: killed replica restarted", fmt.Sprintf("serving the fleet's routing (%s) %s after its start", want, time.Since(began).Round(time.Millisecond)))
}

// testFleetNATSKilled (e): the NATS server that leads the control bucket's
// stream, killed under load, fails no client request, and the fleet's
// state goes on changing: the canary's steps continue and reach every
// replica, each with its event, and an admin change made after the kill
// succeeds and propagates.
func testFleetNATSKilled(t *testing.T, f *fleet) {
	w := f.watchRouting()
	defer w.stop()
	leader := f.leader(t)
	server := f.streamLeader(t, "KV_infergate_control")
	f.setSplit(t, w, leader, map[string]int{"1": 1})
	start, ours := f.startCanary(t, leader, router.CanaryConfig{
		Version: "2", StepWeight: 10, MaxWeight: 50, Interval: 400 * time.Millisecond, MinRequests: 1, MaxLatencyRatio: 1000})
	promoted := func(s servedState) bool { return ours(s) && s.phase == router.PhasePromoted }
	w.waitAll(t, "weight 20", []*fleetReplica{leader}, func(s servedState) bool { return ours(s) && s.weight >= 20 })
	atKill := w.latest(leader.name).weight
	killAt := time.Now()
	f.nats.Kill(server)
	// What the engine itself takes: until the stream has a leader again.
	var elected time.Duration
	fleetPoll(t, fleetBound(15*time.Second), "new leader of the control stream", func() bool {
		i, err := f.streamLeaderIndex("KV_infergate_control")
		elected = time.Since(killAt)
		return err == nil && i != server
	})

	// The promotion, served first by whoever leads then, reaches every
	// replica within the bound of a failover, lease_ttl + 1s.
	var first *fleetReplica
	var promotedAt time.Time
	deadline := time.Now().Add(fleetBound(15 * time.Second))
	for first == nil {
		for _, r := range f.live() {
			if at, ok := w.firstAt(r.name, killAt, promoted); ok && (first == nil || at.Before(promotedAt)) {
				first, promotedAt = r, at
			}
		}
		if first == nil && time.Now().After(deadline) {
			var views []string
			for _, r := range f.live() {
				c, err := f.cluster(r)
				views = append(views, fmt.Sprintf("%s serves %q, leader %q, leading %t (%v)", r.name, w.latest(r.name).key(), c.Leader, c.Leading, err))
			}
			t.Fatalf("no replica served the canary's promotion %s after NATS server %s was killed at weight %d: %s",
				time.Since(killAt).Round(time.Millisecond), f.nats.Name(server), atKill, strings.Join(views, "; "))
		}
		time.Sleep(fleetPollEvery)
	}
	bound := fleetBound(fleetLeaseTTL + time.Second)
	if behind := w.await(f.live(), promotedAt.Add(bound), promoted); behind != nil {
		t.Errorf("%s served the canary's promotion %s after NATS server %s was killed, but not every replica %s later: %s",
			first.name, promotedAt.Sub(killAt).Round(time.Millisecond), f.nats.Name(server), bound, strings.Join(behind, "; "))
	}
	// Once the engine takes writes again, a leader, the same or a new one
	// within lease_ttl, makes the step that is due at its next interval.
	var stepped time.Time // the first step after the kill, on any replica
	for _, r := range f.live() {
		if at, ok := w.firstAt(r.name, killAt, func(s servedState) bool { return ours(s) && s.weight > atKill }); ok && (stepped.IsZero() || at.Before(stepped)) {
			stepped = at
		}
	}
	if bound := elected + fleetBound(fleetLeaseTTL+400*time.Millisecond+time.Second); stepped.Sub(killAt) > bound {
		t.Errorf("the canary's next step came %s after NATS server %s was killed and %s after its stream had a new leader; want within lease_ttl + interval + 1s of that (%s after the kill)",
			stepped.Sub(killAt).Round(time.Millisecond), f.nats.Name(server), (stepped.Sub(killAt) - elected).Round(time.Millisecond), bound.Round(time.Millisecond))
	}
	var reached []string
	for _, r := range f.live() {
		if at, ok := w.firstAt(r.name, killAt, promoted); ok {
			reached = append(reached, fmt.Sprintf("%s %s", r.name, at.Sub(killAt).Round(time.Millisecond)))
		} else {
			reached = append(reached, r.name+" never")
		}
	}

	// An admin change on the replica that is surely current.
	sent := time.Now()
	rv, answered := f.change(t, first, http.MethodPut, "models/ab/routing", router.Config{Split: map[string]int{"1": 1, "2": 3}})
	want := splitKey(rv.Effective)
	spread := "every replica within " + fleetBound(time.Second).String()
	if behind := w.await(f.live(), answered.Add(fleetBound(time.Second)), func(s servedState) bool { return s.split == want }); behind != nil {
		spread = "NOT every replica within " + fleetBound(time.Second).String()
		t.Errorf("an admin change on %s after the kill did not reach every replica within %s: %s", first.name, fleetBound(time.Second), strings.Join(behind, "; "))
	}

	// Every step's event, at least once.
	wantSteps := []string{"started 10", "advanced 20", "advanced 30", "advanced 40", "advanced 50", "promoted 100"}
	var missing []string
	f.hook.await(fleetBound(10*time.Second), func(all []*fleetEvent) bool {
		got := map[string]bool{}
		for _, e := range all {
			if e.Step.StartedAt.Equal(start) {
				got[fmt.Sprintf("%s %d", e.Step.Step, e.Step.WeightAfter)] = true
			}
		}
		missing = missing[:0]
		for _, s := range wantSteps {
			if !got[s] {
				missing = append(missing, s)
			}
		}
		return len(missing) == 0
	})
	if len(missing) > 0 {
		t.Errorf("events of the canary never delivered: %q", missing)
	}
	f.numbers.add("e: NATS server "+f.nats.Name(server)+" (the control stream's leader) killed at canary weight "+fmt.Sprint(atKill),
		fmt.Sprintf("stream re-led after %s; next canary step served %s after the kill; promotion served after the kill by %s; admin change on %s answered in %s, %s; canary events missing: %d",
			elected.Round(time.Millisecond), stepped.Sub(killAt).Round(time.Millisecond), strings.Join(reached, ", "), first.name, answered.Sub(sent).Round(time.Millisecond), spread, len(missing)))
}

// The drift traffic of sub-test f: a request of fleetDriftBatch rows every
// fleetDriftTick to the fleet (and the same rows to the baseline), first
// fleetDriftNormal whole windows of it unshifted.
const (
	fleetDriftBatch = 100
	fleetDriftTick  = 100 * time.Millisecond
	// fleetDriftNormal is the number of whole windows of traffic from the
	// training distribution before the shift; none may raise a decision.
	fleetDriftNormal = 2
	// fleetDriftPoll is how often the drift reports are polled.
	fleetDriftPoll = 20 * time.Millisecond
	// fleetBaseTokenEnv hands the baseline its own NATS server's token.
	fleetBaseTokenEnv = "INFERGATE_TEST_FLEET_BASE_TOKEN"
)

// testFleetDrift (f): a drift shift whose traffic is spread over the three
// replicas is detected on the merged windows within one window of when a
// single replica seeing all of it would. The baseline is that replica: a
// fourth `infergate serve` of the same config on a NATS server of its
// own, so a fleet of one, whose windows are aligned to the same clock.
// Both get the same rows at the same time, the fleet's round robin over
// its replicas, in requests of 100: fleetDriftNormal whole windows from
// the training distribution, then, from a window's start on, rows shifted
// by half a standard deviation in four of the eight features. The fleet's
// windows must hold as many rows as the baseline's (the followers' counts
// reached the leader: judged on the leader's own third, the shift would
// be detected as soon), no window before the shift may drift, and the
// fleet's drift.detected must come from the leader, at a window at most
// one away from the baseline's, and not before two shifted windows.
func testFleetDrift(t *testing.T, f *fleet) {
	if live := f.live(); len(live) != len(f.replicas) {
		t.Fatalf("%d of %d replicas live: the drift traffic goes to all three", len(live), len(f.replicas))
	}
	began := time.Now()
	base, hook := f.startBaseline(t)
	f.numbers.add("f: baseline started (1 NATS server, 1 replica)", time.Since(began).Round(time.Millisecond).String())
	leader := f.leader(t)
	w := f.watchDrift(base)
	defer w.stop()
	fleetPoll(t, fleetBound(5*time.Second), "drift monitors of demo/1 leading on "+leader.name+" and the baseline, following on the other replicas", func() bool {
		return w.roles(leader, base)
	})

	ref, err := drift.LoadReference("../../configs/models/demo/1/" + drift.ReferenceFile)
	if err != nil {
		t.Fatal(err)
	}
	// Rows beyond the 4000 the demo model was trained on: fresh draws from
	// the training distribution, used in turn.
	rows := trainer.Synthetic(1, 4000+40000).X[4000:]
	shift := make([]float64, 8)
	for j := range 4 {
		shift[j] = 0.5 * ref.Features[j].Std
	}
	first := fleetDriftSlot(time.Now()) + 1 // the first whole window of the traffic
	s := first + fleetDriftNormal           // the first shifted window
	shiftAt := fleetDriftSlotStart(s)
	traffic := f.sendDrift(base, rows, shift, shiftAt)
	defer traffic.stop()

	// Both decisions, each as first seen here.
	var fleetDetected, baseDetected *fleetEvent
	var fleetSeen, baseSeen time.Time
	deadline := shiftAt.Add(fleetBound(6 * fleetDriftEvery))
	for fleetDetected == nil || baseDetected == nil {
		if fleetDetected == nil {
			if fleetDetected = driftDetected(f.hook); fleetDetected != nil {
				fleetSeen = time.Now()
			}
		}
		if baseDetected == nil {
			if baseDetected = driftDetected(hook); baseDetected != nil {
				baseSeen = time.Now()
			}
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(fleetPollEvery)
	}
	traffic.stop()
	sent := traffic.summary()
	f.numbers.add("f: drift traffic", sent.String())
	if sent.failed > 0 {
		t.Errorf("%d drift requests failed:\n%s", sent.failed, strings.Join(sent.errors, "\n"))
	}
	last := s + 5
	if fleetDetected == nil || baseDetected == nil {
		var missing []string
		if fleetDetected == nil {
			missing = append(missing, "the fleet's")
		}
		if baseDetected == nil {
			missing = append(missing, "the baseline's")
		}
		t.Fatalf("no drift.detected of demo/1 from %s %s after the shift began at window %d (%s); %s\nthe windows judged (fleet | baseline):\n%s",
			strings.Join(missing, " nor "), time.Since(shiftAt).Round(time.Millisecond), s, shiftAt.Format(time.StampMilli), sent, w.table(first-1, last))
	}
	fleetDecision, err := decodeDecision(fleetDetected)
	if err != nil {
		t.Fatal(err)
	}
	baseDecision, err := decodeDecision(baseDetected)
	if err != nil {
		t.Fatal(err)
	}
	fw, bw := fleetDecision.Window, baseDecision.Window
	last = max(fw.Seq, bw.Seq)
	// The windows closed by the time the later decision was taken.
	fleetPoll(t, fleetBound(2*time.Second), fmt.Sprintf("report of windows %d to %d from the fleet's leader and the baseline", first, last), func() bool {
		return w.complete(first, last)
	})
	table := w.table(first-1, last)

	switch {
	case fleetDetected.Replica != fleetDetected.Leader || !slices.ContainsFunc(f.replicas, func(r *fleetReplica) bool { return r.name == fleetDetected.Replica }):
		t.Errorf("drift.detected of demo/1 made by %q under leader %q: want the fleet's leader to decide", fleetDetected.Replica, fleetDetected.Leader)
	case !w.led(fleetDetected.Replica, fw.Seq):
		t.Errorf("drift.detected of demo/1 made by %s, whose monitor did not report leading when window %d closed", fleetDetected.Replica, fw.Seq)
	}
	// Two drifted windows in a row decide: the earliest that can be
	// decided on shifted traffic is the second shifted window.
	for _, d := range []struct {
		who string
		w   drift.WindowResult
	}{{"the fleet", fw}, {"the baseline", bw}} {
		if d.w.Seq < s+1 {
			t.Errorf("%s detected drift at window %d (start %s), before the second window of the shift, which began at window %d (%s): a decision on traffic before the shift\n%s",
				d.who, d.w.Seq, d.w.Start.Format(time.StampMilli), s, shiftAt.Format(time.StampMilli), table)
		}
		var shifted []string
		for _, fr := range d.w.Features[:min(len(d.w.Features), 4)] {
			if !fr.Drifted {
				shifted = append(shifted, fr.Name)
			}
		}
		if !d.w.Drifted || len(shifted) > 0 || len(d.w.Features) < 4 {
			t.Errorf("%s decided on window %d: drifted %t, share %.2f; shifted features not drifted: %q", d.who, d.w.Seq, d.w.Drifted, d.w.Share, shifted)
		}
	}
	if diff := fw.Seq - bw.Seq; diff < -1 || diff > 1 {
		t.Errorf("the fleet detected drift at window %d (start %s), the baseline at window %d (start %s): %d windows apart, want at most 1\n%s",
			fw.Seq, fw.Start.Format(time.StampMilli), bw.Seq, bw.Start.Format(time.StampMilli), diff, table)
	}
	if p := w.normalProblems(first, s); len(p) > 0 {
		t.Errorf("the windows of traffic from the training distribution were not all judged clean: %s\n%s", strings.Join(p, "; "), table)
	}
	// The fleet's windows are the merged ones when they hold the rows the
	// baseline's hold; a follower's counts arriving after a window closed
	// go into the next, so only the sum over consecutive windows is close.
	fleetRows, baseRows := w.rows(first, last)
	ratio := float64(fleetRows) / float64(max(baseRows, 1))
	if ratio < 0.85 || ratio > 1.15 {
		t.Errorf("the fleet's leader judged %d rows in windows %d to %d, the baseline %d (ratio %.2f, want 0.85 to 1.15): the followers' counts did not all reach the leader\n%s",
			fleetRows, first, last, baseRows, ratio, table)
	}
	if n := countDriftEvents(f.hook); n != 1 {
		t.Errorf("the fleet's receiver got %d drift events of demo/1, want one drift.detected", n)
	}

	f.numbers.add(fmt.Sprintf("f: drift shift from window %d (%s)", s, shiftAt.Format(time.StampMilli)),
		fmt.Sprintf("fleet detected at window %d by leader %s (%d rows, share %.2f), a window that ended %s and an event received %s after the shift began; baseline at window %d (%d rows, share %.2f), ended %s and received %s after; fleet - baseline: %d windows",
			fw.Seq, fleetDetected.Replica, fw.Rows, fw.Share, fleetDecision.Time.Sub(shiftAt).Round(time.Millisecond), fleetSeen.Sub(shiftAt).Round(time.Millisecond),
			bw.Seq, bw.Rows, bw.Share, baseDecision.Time.Sub(shiftAt).Round(time.Millisecond), baseSeen.Sub(shiftAt).Round(time.Millisecond), fw.Seq-bw.Seq))
	f.numbers.add("f: rows judged per window, fleet/baseline", fmt.Sprintf("%s; in all %d/%d (ratio %.3f)", w.rowsByWindow(first, last), fleetRows, baseRows, ratio))
}

// startBaseline starts the baseline of sub-test f: a replica of the
// fleet's config on a NATS server of its own (a fleet of one, whose drift
// windows are aligned to the clock as the fleet's are), sending its
// events to a receiver of its own. Both end with t.
func (f *fleet) startBaseline(t *testing.T) (*fleetReplica, *fleetHook) {
	t.Helper()
	nats := natscluster.Start(t, 1)
	t.Setenv(fleetBaseTokenEnv, nats.Token())
	hook := &fleetHook{byID: map[string]*fleetEvent{}}
	receiver := httptest.NewServer(hook)
	t.Cleanup(receiver.Close)
	base := f.newReplica(t, "base", nats.URLs(), fleetBaseTokenEnv, 1, receiver.URL+"/hook")
	f.launch(t, base)
	t.Cleanup(func() {
		base.proc.kill() // before its NATS server and its receiver
		if t.Failed() {
			t.Logf("log tail of the baseline:\n%s", lastLines(base.logs.String(), 40))
		}
	})
	f.waitUp(t, base)
	return base, hook
}

// fleetDriftSlot returns the number of the drift window that holds at:
// aligned windows are numbered by their start over fleetDriftEvery.
func fleetDriftSlot(at time.Time) int64 { return at.UnixNano() / int64(fleetDriftEvery) }

// fleetDriftSlotStart returns when drift window k starts.
func fleetDriftSlotStart(k int64) time.Time { return time.Unix(0, k*int64(fleetDriftEvery)) }

// driftDetected returns the first drift.detected of demo/1 that h received, or nil.
func driftDetected(h *fleetHook) *fleetEvent {
	for _, e := range h.all() {
		if e.Type == outbox.TypeDriftDetected && e.Subject == "demo/1" {
			return e
		}
	}
	return nil
}

// countDriftEvents returns how many drift events of demo/1 h received.
func countDriftEvents(h *fleetHook) int {
	n := 0
	for _, e := range h.all() {
		if (e.Type == outbox.TypeDriftDetected || e.Type == outbox.TypeDriftResolved) && e.Subject == "demo/1" {
			n++
		}
	}
	return n
}

// decodeDecision returns the drift decision that event e carries.
func decodeDecision(e *fleetEvent) (drift.Decision, error) {
	var d drift.Decision
	if err := json.Unmarshal(e.Data, &d); err != nil {
		return d, fmt.Errorf("cannot decode the decision of event %s from %s: %w", e.ID, e.Replica, err)
	}
	return d, nil
}

// driftTraffic sends the demo model a request of fleetDriftBatch rows every
// fleetDriftTick, to the fleet's replicas round robin and the same rows
// to the baseline; the rows sent from the shift on are shifted. mu guards
// sent.
type driftTraffic struct {
	client *http.Client
	done   chan struct{}
	once   sync.Once
	wg     sync.WaitGroup
	mu     sync.Mutex
	sent   driftSent
}

// driftSent is what driftTraffic sent: requests of rows from the training
// distribution and shifted ones (each to a replica of the fleet and to the
// baseline), when the shift was due and when its first request went, and
// the requests that failed, the first 20 of them described.
type driftSent struct {
	normal, shifted       int
	shiftAt, firstShifted time.Time
	failed                int
	errors                []string
}

func (s driftSent) String() string {
	return fmt.Sprintf("%d requests of %d rows from the training distribution, then %d shifted ones (the first %s after its window began), each to r1, r2, r3 in turn and to the baseline, one every %s; %d failed",
		s.normal, fleetDriftBatch, s.shifted, s.firstShifted.Sub(s.shiftAt).Round(time.Millisecond), fleetDriftTick, s.failed)
}

// sendDrift starts sending rows, in turn, shifted by shift from shiftAt on;
// it sends until stop.
func (f *fleet) sendDrift(base *fleetReplica, rows [][]float32, shift []float64, shiftAt time.Time) *driftTraffic {
	d := &driftTraffic{
		client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4}},
		done:   make(chan struct{}), sent: driftSent{shiftAt: shiftAt},
	}
	none := make([]float64, len(shift))
	batches := len(rows) / fleetDriftBatch
	d.wg.Go(func() {
		tick := time.NewTicker(fleetDriftTick)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-d.done:
				return
			case <-tick.C:
			}
			at := time.Now()
			shifted := !at.Before(shiftAt)
			by := none
			if shifted {
				by = shift
			}
			from := i % batches * fleetDriftBatch
			body := fleetDriftBody(rows[from:from+fleetDriftBatch], by)
			var errs []string
			for _, r := range []*fleetReplica{f.replicas[i%len(f.replicas)], base} {
				if err := d.post(r, body); err != nil {
					errs = append(errs, fmt.Sprintf("%s sent %s: %v", r.name, at.Format(time.StampMilli), err))
				}
			}
			d.mu.Lock()
			if shifted {
				if d.sent.shifted == 0 {
					d.sent.firstShifted = at
				}
				d.sent.shifted++
			} else {
				d.sent.normal++
			}
			d.sent.failed += len(errs)
			for _, e := range errs {
				if len(d.sent.errors) < 20 {
					d.sent.errors = append(d.sent.errors, e)
				}
			}
			d.mu.Unlock()
		}
	})
	return d
}

// post sends body to the demo model on r.
func (d *driftTraffic) post(r *fleetReplica, body []byte) error {
	resp, err := d.client.Post("http://"+r.addr+"/v2/models/demo/infer", "application/json", bytes.NewReader(body))
	if err != nil {
		return err
	}
	msg, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("status %d: %.200s", resp.StatusCode, msg)
	}
	return err
}

// summary returns what was sent so far.
func (d *driftTraffic) summary() driftSent {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.sent
	s.errors = slices.Clone(s.errors)
	return s
}

// stop stops sending and waits for the requests in flight.
func (d *driftTraffic) stop() {
	d.once.Do(func() {
		close(d.done)
		d.wg.Wait()
		d.client.CloseIdleConnections()
	})
}

// fleetDriftBody returns an infer request of the demo model for rows, with
// shift[j] added to feature j.
func fleetDriftBody(rows [][]float32, shift []float64) []byte {
	b := fmt.Appendf(nil, `{"inputs":[{"name":"input","datatype":"FP32","shape":[%d,%d],"data":[`, len(rows), len(shift))
	for i, row := range rows {
		for j, x := range row {
			if i+j > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendFloat(b, float64(x)+shift[j], 'g', -1, 32)
		}
	}
	return append(b, "]}]}"...)
}

// driftWatch polls the drift report of demo/1 on the fleet's replicas and
// on the baseline every fleetDriftPoll, and keeps the last closed window
// each leading monitor reported, by window number. mu guards the rest.
type driftWatch struct {
	fleetPoller
	f    *fleet
	base *fleetReplica
	mu   sync.Mutex
	// leading says whether each process's monitor led at its last answer,
	// failed is its last error.
	leading map[string]bool
	failed  map[string]error
	// fleet holds the windows judged by the fleet's leader, judgedBy who
	// that was; baseline holds the baseline's.
	fleet, baseline map[int64]drift.WindowResult
	judgedBy        map[int64]string
}

// watchDrift starts polling the fleet's replicas and base.
func (f *fleet) watchDrift(base *fleetReplica) *driftWatch {
	w := &driftWatch{
		f: f, base: base, leading: map[string]bool{}, failed: map[string]error{},
		fleet: map[int64]drift.WindowResult{}, baseline: map[int64]drift.WindowResult{}, judgedBy: map[int64]string{},
	}
	w.start(append(slices.Clone(f.replicas), base), fleetDriftPoll, w.poll)
	return w
}

// poll reads r's drift report once.
func (w *driftWatch) poll(r *fleetReplica) {
	var rep drift.Report
	resp, err := w.f.admin.Get("http://" + r.addr + "/v2/models/demo/versions/1/drift")
	if err == nil {
		err = json.NewDecoder(resp.Body).Decode(&rep)
		resp.Body.Close()
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.failed[r.name] = err
	if err == nil {
		w.leading[r.name] = rep.Leading
		if rep.Leading && rep.Last != nil {
			if r == w.base {
				w.baseline[rep.Last.Seq] = *rep.Last
			} else {
				w.fleet[rep.Last.Seq], w.judgedBy[rep.Last.Seq] = *rep.Last, r.name
			}
		}
	}
}

// roles reports whether the monitors of leader and base lead and those of
// the fleet's other replicas follow.
func (w *driftWatch) roles(leader, base *fleetReplica) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, r := range append(slices.Clone(w.f.replicas), base) {
		leading, answered := w.leading[r.name]
		if !answered || leading != (r == leader || r == base) {
			return false
		}
	}
	return true
}

// complete reports whether windows first to last of the fleet and of the
// baseline were all seen judged.
func (w *driftWatch) complete(first, last int64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for k := first; k <= last; k++ {
		if _, ok := w.fleet[k]; !ok {
			return false
		}
		if _, ok := w.baseline[k]; !ok {
			return false
		}
	}
	return true
}

// led reports whether replica name judged the fleet's window k.
func (w *driftWatch) led(name string, k int64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.judgedBy[k] == name
}

// normalProblems describes the windows first to before-1, of traffic from
// the training distribution, that either judged drifted or did not judge.
func (w *driftWatch) normalProblems(first, before int64) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for k := first; k < before; k++ {
		for _, side := range []struct {
			who string
			m   map[int64]drift.WindowResult
		}{{"the fleet", w.fleet}, {"the baseline", w.baseline}} {
			switch r, ok := side.m[k]; {
			case !ok:
				out = append(out, fmt.Sprintf("window %d of %s never seen judged", k, side.who))
			case !r.Judged:
				out = append(out, fmt.Sprintf("window %d of %s not judged (%d rows)", k, side.who, r.Rows))
			case r.Drifted:
				out = append(out, fmt.Sprintf("window %d of %s drifted (share %.2f)", k, side.who, r.Share))
			}
		}
	}
	return out
}

// rows returns the rows of windows first to last, the fleet's and the
// baseline's.
func (w *driftWatch) rows(first, last int64) (fleet, baseline int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for k := first; k <= last; k++ {
		fleet += w.fleet[k].Rows
		baseline += w.baseline[k].Rows
	}
	return fleet, baseline
}

// rowsByWindow writes the rows of windows first to last as
// "k: fleet/baseline".
func (w *driftWatch) rowsByWindow(first, last int64) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var parts []string
	for k := first; k <= last; k++ {
		parts = append(parts, fmt.Sprintf("%d: %d/%d", k, w.fleet[k].Rows, w.baseline[k].Rows))
	}
	return strings.Join(parts, ", ")
}

// table describes windows from to to of the fleet and of the baseline,
// and each monitor's role as last polled.
func (w *driftWatch) table(from, to int64) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	cell := func(m map[int64]drift.WindowResult, k int64) string {
		r, ok := m[k]
		if !ok {
			return "not seen"
		}
		return fmt.Sprintf("%d rows, judged %t, share %.2f, drifted %t", r.Rows, r.Judged, r.Share, r.Drifted)
	}
	var b strings.Builder
	for k := from; k <= to; k++ {
		fmt.Fprintf(&b, "  window %d (from %s): fleet (leader %s) %s | baseline %s\n",
			k, fleetDriftSlotStart(k).Format(time.StampMilli), w.judgedBy[k], cell(w.fleet, k), cell(w.baseline, k))
	}
	for _, name := range slices.Sorted(maps.Keys(w.failed)) {
		fmt.Fprintf(&b, "  %s: leading %t, last poll error %v\n", name, w.leading[name], w.failed[name])
	}
	return b.String()
}

// previousWrite returns the last put of key among writes.
func previousWrite(writes []controlWrite, key string) (controlWrite, bool) {
	for i := len(writes) - 1; i >= 0; i-- {
		if writes[i].key == key && writes[i].put {
			return writes[i], true
		}
	}
	return controlWrite{}, false
}

// strippedOf reports whether the record value is the record prev with its
// events taken out, and nothing else changed.
func strippedOf(value, prev []byte) bool {
	var a, b map[string]json.RawMessage
	if json.Unmarshal(value, &a) != nil || json.Unmarshal(prev, &b) != nil || len(b["events"]) == 0 {
		return false
	}
	delete(a, "events")
	delete(b, "events")
	return maps.EqualFunc(a, b, func(x, y json.RawMessage) bool { return bytes.Equal(x, y) })
}

// streamLeader returns the index of the NATS server that leads stream.
func (f *fleet) streamLeader(t *testing.T, stream string) int {
	t.Helper()
	i, err := f.streamLeaderIndex(stream)
	if err != nil {
		t.Fatal(err)
	}
	return i
}

// streamLeaderIndex returns the index of the NATS server that leads stream,
// asking the engine.
func (f *fleet) streamLeaderIndex(stream string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	s, err := f.control.conn.JS.Stream(ctx, stream)
	if err != nil {
		return -1, fmt.Errorf("cannot find stream %s: %w", stream, err)
	}
	info := s.CachedInfo()
	if info.Cluster == nil {
		return -1, fmt.Errorf("stream %s has no cluster", stream)
	}
	i := f.nats.Index(info.Cluster.Leader)
	if i < 0 {
		return -1, fmt.Errorf("stream %s is led by %q, none of the cluster's servers", stream, info.Cluster.Leader)
	}
	return i, nil
}

// fleet is the test's fleet: the NATS cluster, the replicas, the webhook
// receiver, the control bucket's writes as watched, and the load.
type fleet struct {
	nats     *natscluster.Cluster
	replicas []*fleetReplica
	hook     *fleetHook
	control  *controlWatch
	load     *fleetLoad
	// admin is the client of the admin API; load has its own.
	admin     *http.Client
	conflicts atomic.Int64
	numbers   fleetNumbers
	// cleanup is the whole test's: a replica started by a sub-test
	// outlives it.
	cleanup func(func())
	// model and reference are the files of the demo model's version 1:
	// every version of ab but the failing one is that model too.
	model, reference []byte
}

// fleetReplica is one `infergate serve` process. Its name, files and
// address are fixed; proc is the test goroutine's; down and killed tell
// the load and the pollers to leave it alone.
type fleetReplica struct {
	name, root, addr string
	proc             *fleetProcess
	logs             *syncBuffer
	// down is set while the replica is paused or killed: no request goes
	// to it. killed is set while it is killed: a request to it that fails
	// was in flight.
	down, killed atomic.Bool
}

// fleetProcess is a started replica process; exited is closed once it
// has exited, with err its exit status.
type fleetProcess struct {
	cmd    *exec.Cmd
	exited chan struct{}
	err    error
}

// kill sends the process SIGKILL and waits until it has exited.
func (p *fleetProcess) kill() {
	p.cmd.Process.Kill()
	<-p.exited
}

// startFleet starts the NATS cluster, the webhook receiver, replica r1
// (which leads, alone) and then r2 and r3, and waits until every replica
// sees the three.
func startFleet(t *testing.T) *fleet {
	f := &fleet{
		nats:    natscluster.Start(t, 3),
		hook:    &fleetHook{byID: map[string]*fleetEvent{}},
		admin:   &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 8}},
		cleanup: t.Cleanup,
	}
	var err error
	if f.model, err = os.ReadFile("../../configs/models/demo/1/model.onnx"); err != nil {
		t.Fatal(err)
	}
	if f.reference, err = os.ReadFile("../../configs/models/demo/1/" + drift.ReferenceFile); err != nil {
		t.Fatal(err)
	}
	engineCfg := f.nats.EngineConfig(t) // sets natscluster.TokenEnv for the replicas too
	receiver := httptest.NewServer(f.hook)
	t.Cleanup(receiver.Close) // after the replicas are gone: cleanups run last first
	for i := range 3 {
		r := f.newReplica(t, fmt.Sprintf("r%d", i+1), engineCfg.NATSURL, natscluster.TokenEnv, engineCfg.StreamReplicas, receiver.URL+"/hook")
		f.replicas = append(f.replicas, r)
	}
	r1 := f.replicas[0]
	f.start(t, r1)
	fleetPoll(t, fleetBound(10*time.Second), "r1 to lead", func() bool {
		c, err := f.cluster(r1)
		return err == nil && c.Leading
	})
	if f.control, err = watchControl(engineCfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.close)
	for _, r := range f.replicas[1:] {
		f.launch(t, r)
	}
	for _, r := range f.replicas[1:] {
		f.waitUp(t, r)
	}
	fleetPoll(t, fleetBound(10*time.Second), "every replica to see the three", func() bool {
		for _, r := range f.replicas {
			c, err := f.cluster(r)
			if err != nil || c.Leader != r1.name || len(c.Replicas) != 3 {
				return false
			}
		}
		return true
	})
	return f
}

// newReplica writes the repository and the config of a replica called
// name, of the fleet whose NATS servers natsURL lists (their token in the
// environment variable tokenEnv, streams kept on streamReplicas of them),
// sending its events to hookURL, and returns it, not started. Version 3
// of model ab is the failing model on fleetFailing.
func (f *fleet) newReplica(t *testing.T, name, natsURL, tokenEnv string, streamReplicas int, hookURL string) *fleetReplica {
	t.Helper()
	r := &fleetReplica{name: name, root: t.TempDir(), addr: freeAddr(t), logs: new(syncBuffer)}
	files := map[string][]byte{
		"ab/1/model.onnx": f.model, "ab/2/model.onnx": f.model, "ab/3/model.onnx": f.model,
		"demo/1/model.onnx": f.model, "demo/1/" + drift.ReferenceFile: f.reference,
	}
	if name == fleetFailing {
		files["ab/3/model.onnx"] = failingModel()
	}
	for path, data := range files {
		path = filepath.Join(r.root, "models", filepath.FromSlash(path))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The failing replica serves its own folder: the store would give it
	// the others' version 3.
	cfg := fmt.Sprintf(fleetConfig, r.addr, name != fleetFailing, fleetTokenEnv, natsURL, tokenEnv, streamReplicas, r.name,
		fleetLeaseTTL, fleetReportInterval, hookURL, fleetSecretEnv, fleetDriftEvery)
	if err := os.WriteFile(filepath.Join(r.root, "infergate.yaml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return r
}

// start starts replica r and waits until it is ready.
func (f *fleet) start(t *testing.T, r *fleetReplica) {
	t.Helper()
	f.launch(t, r)
	f.waitUp(t, r)
}

// launch starts replica r's process; it is killed when the whole test ends.
func (f *fleet) launch(t *testing.T, r *fleetReplica) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "serve", "--config", filepath.Join(r.root, "infergate.yaml"))
	cmd.Env = append(os.Environ(), "INFERGATE_TEST_MAIN=1", fleetTokenEnv+"="+fleetToken, fleetSecretEnv+"="+fleetSecret)
	fmt.Fprintf(r.logs, "--- started at %s\n", time.Now().Format(time.StampMilli))
	cmd.Stderr = r.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &fleetProcess{cmd: cmd, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	r.proc = p
	f.cleanup(func() { p.kill() })
}

// waitUp waits until replica r is ready, failing t at once should its
// process exit first.
func (f *fleet) waitUp(t *testing.T, r *fleetReplica) {
	t.Helper()
	deadline := time.Now().Add(fleetBound(30 * time.Second))
	for {
		select {
		case <-r.proc.exited:
			t.Fatalf("replica %s exited before it was ready: %v\n%s", r.name, r.proc.err, r.logs)
		default:
		}
		if resp, err := f.admin.Get("http://" + r.addr + "/v2/health/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica %s not ready after %s:\n%s", r.name, fleetBound(30*time.Second), r.logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// close ends the control watch and the admin client's connections; the
// processes end with the test too.
func (f *fleet) close() {
	f.control.stop()
	f.admin.CloseIdleConnections()
}

// live returns the replicas not paused or killed.
func (f *fleet) live() []*fleetReplica {
	var out []*fleetReplica
	for _, r := range f.replicas {
		if !r.down.Load() {
			out = append(out, r)
		}
	}
	return out
}

// follower returns a live replica other than leader.
func (f *fleet) follower(leader *fleetReplica) *fleetReplica {
	for _, r := range f.live() {
		if r != leader {
			return r
		}
	}
	panic("BUG: no live follower")
}

// adminCall sends an admin request to r and returns its status and body.
func (f *fleet) adminCall(r *fleetReplica, method, path string, body any) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "http://"+r.addr+"/admin/"+path, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+fleetToken)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := f.admin.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	return resp.StatusCode, out, err
}

// change makes an admin change on r and returns the routing it answers
// with and when; a 409 (another replica's change had not reached r yet)
// is tried again. Anything but 200 fails t.
func (f *fleet) change(t *testing.T, r *fleetReplica, method, path string, body any) (fleetRouting, time.Time) {
	t.Helper()
	deadline := time.Now().Add(fleetBound(5 * time.Second))
	for {
		code, out, err := f.adminCall(r, method, path, body)
		if code == http.StatusConflict && time.Now().Before(deadline) {
			f.conflicts.Add(1)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		answered := time.Now()
		if err != nil || code != http.StatusOK {
			t.Fatalf("%s /admin/%s on %s: status %d, %v: %s", method, path, r.name, code, err, out)
		}
		var rv fleetRouting
		if err := json.Unmarshal(out, &rv); err != nil {
			t.Fatalf("%s /admin/%s on %s: cannot decode %s: %v", method, path, r.name, out, err)
		}
		return rv, answered
	}
}

// startCanary starts a canary with cfg on r and returns when it started
// and what matches the states of this canary.
func (f *fleet) startCanary(t *testing.T, r *fleetReplica, cfg router.CanaryConfig) (start time.Time, ours func(servedState) bool) {
	t.Helper()
	rv, _ := f.change(t, r, http.MethodPost, "models/ab/canary", cfg)
	start = rv.Canary.StartedAt
	return start, func(s servedState) bool { return s.started.Equal(start) }
}

// setSplit sets the split on writer and waits until every live replica
// serves it.
func (f *fleet) setSplit(t *testing.T, w *routingWatch, writer *fleetReplica, split map[string]int) {
	t.Helper()
	rv, _ := f.change(t, writer, http.MethodPut, "models/ab/routing", router.Config{Split: split})
	want := splitKey(rv.Effective)
	w.waitAll(t, "split "+want, f.live(), func(s servedState) bool { return s.split == want && s.phase == "" })
}

// fleetRouting is what GET /admin/models/ab/routing answers, in part.
type fleetRouting struct {
	Effective map[string]int `json:"effective_split"`
	Canary    *router.Canary `json:"canary"`
}

// routing returns what replica r serves.
func (f *fleet) routing(r *fleetReplica) (fleetRouting, error) {
	return adminGet[fleetRouting](f, r, "models/ab/routing")
}

// adminGet returns what GET /admin/<path> answers on r, decoded.
func adminGet[T any](f *fleet, r *fleetReplica, path string) (T, error) {
	var v T
	code, out, err := f.adminCall(r, http.MethodGet, path, nil)
	if err == nil && code != http.StatusOK {
		err = fmt.Errorf("status %d: %s", code, out)
	}
	if err == nil {
		err = json.Unmarshal(out, &v)
	}
	return v, err
}

// fleetClusterView is what GET /admin/cluster answers, in part.
type fleetClusterView struct {
	Replica  string `json:"replica"`
	Leader   string `json:"leader"`
	Leading  bool   `json:"leading"`
	Engine   string `json:"engine"`
	Replicas []struct {
		Replica string `json:"replica"`
		Present bool   `json:"present"`
	} `json:"replicas"`
}

// cluster returns the fleet as replica r sees it.
func (f *fleet) cluster(r *fleetReplica) (fleetClusterView, error) {
	return adminGet[fleetClusterView](f, r, "cluster")
}

// leader returns the live replica that leads, once exactly one says so
// and every other live replica names it.
func (f *fleet) leader(t *testing.T) *fleetReplica {
	t.Helper()
	var leader *fleetReplica
	var views []string
	found := false
	defer func() {
		if !found {
			t.Logf("the replicas' last views of the fleet: %s", strings.Join(views, "; "))
		}
	}()
	fleetPoll(t, fleetBound(10*time.Second), "one leader that every replica names", func() bool {
		leader, views = nil, views[:0]
		var named []string
		for _, r := range f.live() {
			c, err := f.cluster(r)
			views = append(views, fmt.Sprintf("%s: %+v %v", r.name, c, err))
			if err != nil {
				return false
			}
			if c.Leading {
				if leader != nil {
					return false
				}
				leader = r
			}
			named = append(named, c.Leader)
		}
		return leader != nil && !slices.ContainsFunc(named, func(n string) bool { return n != leader.name })
	})
	found = true
	return leader
}

// waitNewLeader waits until a live replica other than old says it leads,
// and returns it with how long after since that was.
func (f *fleet) waitNewLeader(t *testing.T, old *fleetReplica, since time.Time) (*fleetReplica, time.Duration) {
	t.Helper()
	var next *fleetReplica
	var took time.Duration
	fleetPoll(t, fleetBound(10*time.Second), "a new leader", func() bool {
		for _, r := range f.live() {
			if r == old {
				continue
			}
			if c, err := f.cluster(r); err == nil && c.Leading {
				next, took = r, time.Since(since)
				return true
			}
		}
		return false
	})
	return next, took
}

// fleetPoll calls cond every fleetPollEvery until it holds, failing t after
// timeout with what it waited for.
func fleetPoll(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s after %s", what, timeout)
		}
		time.Sleep(fleetPollEvery)
	}
}

// servedState is what a replica served when a poll found it changed: the
// effective split, and the canary's phase, weight and start.
type servedState struct {
	at      time.Time
	split   string
	phase   router.Phase
	weight  int
	started time.Time
}

// key names what is served, whichever replica serves it.
func (s servedState) key() string {
	return fmt.Sprintf("%s %s %d", s.split, s.phase, s.weight)
}

// splitKey writes a split in version order: "1:9,2:1".
func splitKey(split map[string]int) string {
	var parts []string
	for _, v := range slices.Sorted(maps.Keys(split)) {
		parts = append(parts, fmt.Sprintf("%s:%d", v, split[v]))
	}
	return strings.Join(parts, ",")
}

// routingWatch polls every replica's routing every fleetPollEvery and keeps
// each change it sees. mu guards seen.
type routingWatch struct {
	fleetPoller
	f    *fleet
	mu   sync.Mutex
	seen map[string][]servedState
	// polled is when each replica last answered, failed its last error.
	polled map[string]time.Time
	failed map[string]error
}

// watchRouting starts polling every replica that is not killed.
func (f *fleet) watchRouting() *routingWatch {
	w := &routingWatch{f: f, seen: map[string][]servedState{}, polled: map[string]time.Time{}, failed: map[string]error{}}
	w.start(f.replicas, fleetPollEvery, w.poll)
	return w
}

// poll reads r's routing once, unless r is killed.
func (w *routingWatch) poll(r *fleetReplica) {
	if r.killed.Load() {
		return
	}
	rv, err := w.f.routing(r)
	s := servedState{at: time.Now(), split: splitKey(rv.Effective)}
	if c := rv.Canary; c != nil {
		s.phase, s.weight, s.started = c.Phase, c.Weight, c.StartedAt
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		w.failed[r.name] = err
		return
	}
	w.polled[r.name], w.failed[r.name] = s.at, nil
	if seen := w.seen[r.name]; len(seen) == 0 || seen[len(seen)-1].key() != s.key() || !seen[len(seen)-1].started.Equal(s.started) {
		w.seen[r.name] = append(seen, s)
	}
}

// fleetPoller calls a poll function for each of some replicas on a ticker
// of its own, in a goroutine per replica, until stop.
type fleetPoller struct {
	done chan struct{}
	wg   sync.WaitGroup
}

// start starts polling each of rs every interval.
func (p *fleetPoller) start(rs []*fleetReplica, every time.Duration, poll func(r *fleetReplica)) {
	p.done = make(chan struct{})
	for _, r := range rs {
		p.wg.Go(func() {
			tick := time.NewTicker(every)
			defer tick.Stop()
			for {
				select {
				case <-p.done:
					return
				case <-tick.C:
				}
				poll(r)
			}
		})
	}
}

// stop stops polling and waits for the polls in flight.
func (p *fleetPoller) stop() {
	close(p.done)
	p.wg.Wait()
}

// states returns what replica name served, change by change.
func (w *routingWatch) states(name string) []servedState {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.seen[name])
}

// latest returns what replica name served at the last change seen.
func (w *routingWatch) latest(name string) servedState {
	w.mu.Lock()
	defer w.mu.Unlock()
	seen := w.seen[name]
	if len(seen) == 0 {
		return servedState{}
	}
	return seen[len(seen)-1]
}

// firstAt returns when replica name was first seen serving what match
// accepts, at or after since.
func (w *routingWatch) firstAt(name string, since time.Time, match func(servedState) bool) (time.Time, bool) {
	for _, s := range w.states(name) {
		if !s.at.Before(since) && match(s) {
			return s.at, true
		}
	}
	return time.Time{}, false
}

// sequence returns the keys of what replica name served that match
// accepts, in order.
func (w *routingWatch) sequence(name string, match func(servedState) bool) []string {
	var keys []string
	for _, s := range w.states(name) {
		if match(s) && (len(keys) == 0 || keys[len(keys)-1] != s.key()) {
			keys = append(keys, s.key())
		}
	}
	return keys
}

// waitAll waits until every replica of rs serves what match accepts.
func (w *routingWatch) waitAll(t *testing.T, what string, rs []*fleetReplica, match func(servedState) bool) {
	t.Helper()
	if behind := w.await(rs, time.Now().Add(fleetBound(15*time.Second)), match); behind != nil {
		t.Fatalf("waiting for %s: %s", what, strings.Join(behind, "; "))
	}
}

// await waits until every replica of rs serves what match accepts, or
// until deadline; then it returns what those behind serve.
func (w *routingWatch) await(rs []*fleetReplica, deadline time.Time, match func(servedState) bool) (behind []string) {
	for {
		behind = behind[:0]
		for _, r := range rs {
			if s := w.latest(r.name); !match(s) {
				w.mu.Lock()
				polled, failed := w.polled[r.name], w.failed[r.name]
				w.mu.Unlock()
				behind = append(behind, fmt.Sprintf("%s serves %q (canary started %s; last answer %s, last error %v)",
					r.name, s.key(), s.started.Format(time.StampMilli), polled.Format(time.StampMilli), failed))
			}
		}
		if len(behind) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return behind
		}
		time.Sleep(fleetPollEvery)
	}
}

// fleetPercentiles returns the median, the 99th percentile (nearest rank) and
// the maximum of ds, to a tenth of a millisecond.
func fleetPercentiles(ds []time.Duration) (p50, p99, top time.Duration) {
	if len(ds) == 0 {
		return 0, 0, 0
	}
	s := slices.Sorted(slices.Values(ds))
	rank := func(q float64) time.Duration {
		return s[max(int(math.Ceil(q*float64(len(s))))-1, 0)].Round(100 * time.Microsecond)
	}
	return rank(0.5), rank(0.99), rank(1)
}

// fleetHook is the webhook receiver: it checks each delivery's signature
// and keeps each event once, counting its deliveries. mu guards the rest.
type fleetHook struct {
	mu    sync.Mutex
	byID  map[string]*fleetEvent
	order []*fleetEvent
}

// fleetEvent is an event as received, with its canary step decoded.
type fleetEvent struct {
	outbox.Event
	Step       fleetStep
	Deliveries int
}

// fleetStep is the data of a canary event, in part.
type fleetStep struct {
	Step        string       `json:"step"`
	Version     string       `json:"version"`
	Phase       router.Phase `json:"phase"`
	WeightAfter int          `json:"weight_after"`
	Reason      string       `json:"reason"`
	Checks      *struct {
		Canary struct {
			Requests int64 `json:"requests"`
			Errors   int64 `json:"errors"`
		} `json:"canary"`
	} `json:"checks"`
	StartedAt time.Time `json:"started_at"`
	Replica   string    `json:"replica"`
	Leader    string    `json:"leader"`
	Reporting []string  `json:"replicas_reporting"`
}

func (h *fleetHook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	e, code, err := outbox.Receive(r, []byte(fleetSecret), time.Now(), time.Minute, 1<<20)
	if err != nil {
		http.Error(w, err.Error(), code)
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if got := h.byID[e.ID]; got != nil {
		got.Deliveries++
		return
	}
	fe := &fleetEvent{Event: e, Deliveries: 1}
	json.Unmarshal(e.Data, &fe.Step) // a drift event has no step: left zero
	h.byID[e.ID] = fe
	h.order = append(h.order, fe)
}

// all returns the events received, once each, in the order they first
// arrived.
func (h *fleetHook) all() []*fleetEvent {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]*fleetEvent, len(h.order))
	for i, e := range h.order {
		c := *e
		out[i] = &c
	}
	return out
}

// wait waits until an event that match accepts has arrived, and returns it.
func (h *fleetHook) wait(t *testing.T, what string, match func(*fleetEvent) bool) *fleetEvent {
	t.Helper()
	var found *fleetEvent
	h.waitAll(t, what, func(all []*fleetEvent) bool {
		for _, e := range all {
			if match(e) {
				found = e
				return true
			}
		}
		return false
	})
	return found
}

// waitAll waits until done accepts the events received.
func (h *fleetHook) waitAll(t *testing.T, what string, done func([]*fleetEvent) bool) {
	t.Helper()
	if !h.await(fleetBound(15*time.Second), done) {
		var got []string
		for _, e := range h.all() {
			got = append(got, fmt.Sprintf("%s %s %d by %s", e.Type, e.Step.Step, e.Step.WeightAfter, e.Step.Replica))
		}
		t.Fatalf("%s never arrived; the receiver got %q", what, got)
	}
}

// await waits until done accepts the events received, at most timeout,
// and reports whether it did.
func (h *fleetHook) await(timeout time.Duration, done func([]*fleetEvent) bool) bool {
	deadline := time.Now().Add(timeout)
	for !done(h.all()) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(fleetPollEvery)
	}
	return true
}

// controlWatch keeps every change of the control bucket with when the
// test saw it. mu guards writes.
type controlWatch struct {
	conn    *engine.Conn
	watcher jetstream.KeyWatcher
	done    sync.WaitGroup
	mu      sync.Mutex
	writes  []controlWrite
}

// controlWrite is one change of the control bucket: a key's revision, and
// for a put the replica that wrote it and who led then.
type controlWrite struct {
	at              time.Time
	key             string
	rev             uint64
	put             bool
	replica, leader string
	value           []byte
}

func (c controlWrite) String() string {
	return fmt.Sprintf("revision %d %s put=%t by %s (leader %s) seen at %s", c.rev, c.key, c.put, c.replica, c.leader, c.at.Format(time.StampMilli))
}

// watchControl starts watching the gateway's control bucket from the test.
func watchControl(cfg engine.Config) (*controlWatch, error) {
	conn, err := engine.Connect(cfg, "", "infergate fleet test", slog.New(slog.DiscardHandler))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	kv, err := conn.JS.KeyValue(ctx, "infergate_control")
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("cannot open the control bucket: %w", err)
	}
	w, err := kv.WatchAll(context.Background())
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("cannot watch the control bucket: %w", err)
	}
	c := &controlWatch{conn: conn, watcher: w}
	c.done.Go(func() {
		for e := range w.Updates() {
			if e == nil {
				continue
			}
			cw := controlWrite{at: time.Now(), key: e.Key(), rev: e.Revision(), put: e.Operation() == jetstream.KeyValuePut, value: e.Value()}
			var who struct{ Replica, Leader string }
			if cw.put && json.Unmarshal(e.Value(), &who) == nil {
				cw.replica, cw.leader = who.Replica, who.Leader
			}
			c.mu.Lock()
			c.writes = append(c.writes, cw)
			c.mu.Unlock()
		}
	})
	return c, nil
}

// since returns the changes seen at or after from.
func (c *controlWatch) since(from time.Time) []controlWrite {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []controlWrite
	for _, w := range c.writes {
		if !w.at.Before(from) {
			out = append(out, w)
		}
	}
	return out
}

func (c *controlWatch) stop() {
	c.watcher.Stop()
	c.done.Wait()
	c.conn.Close()
}

// fleetLoad sends README's infer request to the fleet at fleetRate,
// round robin over the replicas that are not down, and sorts the answers:
// a failure on a killed replica was in flight there; a 500 of version 3 on
// fleetFailing is the failing canary's; any other failure is unexpected.
type fleetLoad struct {
	f      *fleet
	body   []byte
	client *http.Client
	done   chan struct{}
	once   sync.Once
	wg     sync.WaitGroup
	next   atomic.Uint64

	// mu guards the fields below.
	mu         sync.Mutex
	phase      string
	byReplica  map[string]*fleetCounts
	unexpected []string
}

// fleetCounts are one replica's answers.
type fleetCounts struct {
	ok, inFlightOnKill, canaryFailures, unexpected int
}

// startLoad starts the load; it runs until stop.
func (f *fleet) startLoad(t *testing.T) *fleetLoad {
	l := &fleetLoad{
		f: f, body: []byte(readmeCurlBody(t)), done: make(chan struct{}), byReplica: map[string]*fleetCounts{},
		client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 32}},
	}
	for _, r := range f.replicas {
		l.byReplica[r.name] = new(fleetCounts)
	}
	f.load = l
	tokens := make(chan struct{}, 64)
	l.wg.Go(func() {
		tick := time.NewTicker(time.Second / fleetRate)
		defer tick.Stop()
		for {
			select {
			case <-l.done:
				return
			case <-tick.C:
				select {
				case tokens <- struct{}{}:
				default: // every worker waits on a paused replica
				}
			}
		}
	})
	for range 24 {
		l.wg.Go(func() {
			for {
				select {
				case <-l.done:
					return
				case <-tokens:
				}
				if r := l.pick(); r != nil {
					l.send(r)
				}
			}
		})
	}
	return l
}

// pick returns the next replica that is not down, round robin.
func (l *fleetLoad) pick() *fleetReplica {
	n := len(l.f.replicas)
	first := int(l.next.Add(1) % uint64(n))
	for i := range n {
		if r := l.f.replicas[(first+i)%n]; !r.down.Load() {
			return r
		}
	}
	return nil
}

// send sends one request to r and counts its answer.
func (l *fleetLoad) send(r *fleetReplica) {
	sent := time.Now()
	resp, err := l.client.Post("http://"+r.addr+"/v2/models/ab/infer", "application/json", bytes.NewReader(l.body))
	var code int
	var msg []byte
	if err == nil {
		msg, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		code = resp.StatusCode
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.byReplica[r.name]
	switch {
	case err == nil && code == http.StatusOK:
		c.ok++
	case r.killed.Load():
		c.inFlightOnKill++
	case err == nil && code == http.StatusInternalServerError && r.name == fleetFailing && bytes.Contains(msg, []byte("version 3")):
		c.canaryFailures++
	default:
		c.unexpected++
		l.unexpected = append(l.unexpected, fmt.Sprintf("[%s] %s sent %s: status %d, error %v: %.200s",
			l.phase, r.name, sent.Format(time.StampMilli), code, err, msg))
	}
}

func (l *fleetLoad) setPhase(p string) {
	l.mu.Lock()
	l.phase = p
	l.mu.Unlock()
}

func (l *fleetLoad) counts(name string) fleetCounts {
	l.mu.Lock()
	defer l.mu.Unlock()
	return *l.byReplica[name]
}

func (l *fleetLoad) unexpectedCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.unexpected)
}

// unexpectedSince returns the unexpected failures after the first n, at
// most 20 of them.
func (l *fleetLoad) unexpectedSince(n int) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.unexpected[n:]
	return slices.Clone(out[:min(len(out), 20)])
}

// stop stops the load and waits for the requests in flight.
func (l *fleetLoad) stop() {
	l.once.Do(func() {
		close(l.done)
		l.wg.Wait()
		l.client.CloseIdleConnections()
	})
}

// fleetNumbers collects the measurements the test logs at its end. mu
// guards rows.
type fleetNumbers struct {
	mu   sync.Mutex
	rows [][2]string
}

func (n *fleetNumbers) add(what, value string) {
	n.mu.Lock()
	n.rows = append(n.rows, [2]string{what, value})
	n.mu.Unlock()
}

func (n *fleetNumbers) String() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	width := 0
	for _, r := range n.rows {
		width = max(width, len(r[0]))
	}
	var b strings.Builder
	for _, r := range n.rows {
		fmt.Fprintf(&b, "  %-*s  %s\n", width, r[0], r[1])
	}
	return b.String()
}

// lastLines returns the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(len(lines)-n, 0):], "\n")
}

// failingModel returns an ONNX model that loads, and passes its warm-up
// (an input of zeros), but fails every request whose features are not
// whole numbers in -8..7, as README's are not: input "input" FP32
// [batch, 8], output "output" = GatherElements(input, Cast(input to INT64),
// axis 1), whose indices, the features themselves, are out of range. ONNX
// Runtime refuses such indices at run time, so the gateway answers 500:
// an error of the version, as the canary analysis counts errors.
func failingModel() []byte {
	field := func(b []byte, num protowire.Number, value []byte) []byte {
		b = protowire.AppendTag(b, num, protowire.BytesType)
		return protowire.AppendBytes(b, value)
	}
	str := func(b []byte, num protowire.Number, s string) []byte { return field(b, num, []byte(s)) }
	varint := func(b []byte, num protowire.Number, v uint64) []byte {
		b = protowire.AppendTag(b, num, protowire.VarintType)
		return protowire.AppendVarint(b, v)
	}
	// Field numbers and enums from onnx.proto.
	const fp32, int64Type, attrInt = 1, 7, 2
	valueInfo := func(name string) []byte { // FP32 [batch, 8]
		shape := field(nil, 1, str(nil, 2, "batch"))
		shape = field(shape, 1, varint(nil, 1, 8))
		tensorType := field(varint(nil, 1, fp32), 2, shape)
		return field(str(nil, 1, name), 2, field(nil, 1, tensorType))
	}
	node := func(op string, inputs []string, output, attr string, value int64) []byte {
		var n []byte
		for _, in := range inputs {
			n = str(n, 1, in)
		}
		n = str(str(n, 2, output), 4, op)
		return field(n, 5, varint(varint(str(nil, 1, attr), 3, uint64(value)), 20, attrInt))
	}
	var graph []byte
	graph = field(graph, 1, node("Cast", []string{"input"}, "indices", "to", int64Type))
	graph = field(graph, 1, node("GatherElements", []string{"input", "indices"}, "output", "axis", 1))
	graph = str(graph, 2, "failing")
	graph = field(graph, 11, valueInfo("input"))
	graph = field(graph, 12, valueInfo("output"))
	model := varint(nil, 1, 8) // ir_version
	model = field(model, 7, graph)
	return field(model, 8, varint(nil, 2, 17)) // opset_import: the default domain at 17
}
