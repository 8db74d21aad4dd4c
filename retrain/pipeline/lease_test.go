package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/infergate/infergate/retrain/engine"
	"github.com/infergate/infergate/retrain/outbox"
)

// testTTL is the lease TTL of the tests of several services: the engine
// expires keys by the second.
const testTTL = time.Second

// connect returns a connection of its own to f's engine, as another
// process on it has; Cleanup closes it.
func (f *fixture) connect() *engine.Conn {
	f.t.Helper()
	conn, err := engine.Connect(engine.Config{}, f.engine.Dir, "another-process", slog.New(slog.DiscardHandler))
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(conn.Close)
	return conn
}

// openOn opens a Service on f's config, on conn (f's connection when nil)
// with leases of ttl, and serves its API; Cleanup closes both.
func (f *fixture) openOn(conn *engine.Conn, ttl time.Duration) (*Service, string) {
	f.t.Helper()
	if conn == nil {
		conn = f.engine.Conn
	}
	s, err := Open(Options{Config: f.cfg, Engine: conn, Env: testEnv, Log: testLog(f.t), LeaseTTL: ttl})
	if err != nil {
		f.t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	f.t.Cleanup(func() { srv.Close(); s.Close() })
	return s, srv.URL
}

// openWithTTL opens a Service on f's connection with leases of ttl.
func (f *fixture) openWithTTL(ttl time.Duration) (*Service, string) {
	f.t.Helper()
	return f.openOn(nil, ttl)
}

// runningMonitor reads the runs of the engine until stopped and fails the
// test when it sees two runs of one model running at once.
func runningMonitor(t *testing.T, conn *engine.Conn) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
			}
			runs, err := ListRuns(conn)
			if err != nil {
				continue
			}
			running := map[string][]string{}
			for _, r := range runs {
				if r.Outcome == Running {
					running[r.Model] = append(running[r.Model], r.ID)
				}
			}
			for model, ids := range running {
				if len(ids) > 1 {
					t.Errorf("runs %v of model %s are running at once", ids, model)
				}
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// TestLease takes one model's lease from two holders on one engine: one
// holds it at a time, renewals keep it past its TTL, a release hands it
// over at once, and a holder cut off from the engine knows it lost the
// lease before the engine lets another take it.
func TestLease(t *testing.T) {
	fx := newFixture(t)
	st := fx.store()
	log := slog.New(slog.DiscardHandler)
	a := newLease(st.queues, fx.engine.JS, "demo model", "a", testTTL, log)
	b := newLease(st.queues, fx.engine.JS, "demo model", "b", testTTL, log)
	acquire := func(l *lease, want bool) {
		t.Helper()
		ok, err := l.acquire(context.Background())
		if err != nil || ok != want {
			t.Fatalf("%s acquires: %v (%v), want %v", l.holder, ok, err, want)
		}
	}
	acquire(a, true)
	acquire(b, false)
	ctx := a.context()
	for deadline := time.Now().Add(3 * testTTL); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if !a.holds() || ctx.Err() != nil {
			t.Fatal("a lost a lease it renews")
		}
		acquire(b, false)
	}
	e, err := st.queues.Get(context.Background(), "=ZGVtbyBtb2RlbA.lease")
	var rec leaseRecord
	if err == nil {
		err = json.Unmarshal(e.Value(), &rec)
	}
	if err != nil || rec.Holder != "a" {
		t.Fatalf("the lease key says %+v (%v), want holder a", rec, err)
	}
	a.release()
	if a.holds() || ctx.Err() == nil {
		t.Fatal("a holds a lease it released")
	}
	acquire(b, true)

	// b's connection goes: it stops holding the lease, and a takes it
	// only once the engine expired the key.
	conn := fx.connect()
	c := newLease(st.queues, fx.engine.JS, "other", "c", testTTL, log)
	cst, err := openStore(conn)
	if err != nil {
		t.Fatal(err)
	}
	cut := newLease(cst.queues, conn.JS, "other", "cut", testTTL, log)
	acquire(cut, true)
	cutCtx := cut.context()
	conn.Close()
	start := time.Now()
	<-cutCtx.Done()
	lostAfter := time.Since(start)
	if !errors.Is(context.Cause(cutCtx), errLeaseLost) || cut.holds() {
		t.Fatalf("cut off: %v, holds %v", context.Cause(cutCtx), cut.holds())
	}
	for {
		ok, err := c.acquire(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			break
		}
		if time.Since(start) > 5*testTTL {
			t.Fatal("the lease of a holder cut off never ran out")
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("cut off: lost the lease after %s, taken by another after %s", lostAfter.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	cut.release()
	c.release()
	b.release()
}

// TestOneRunPerModelAcrossServices runs two services on one engine, each
// with its own connection, as two processes: the events of one model that
// either receives go to one queue, a run of the model runs in one of them
// at a time, and an event delivered to both, one after the other or at
// once, is in one run, once.
func TestOneRunPerModelAcrossServices(t *testing.T) {
	fx := newFixture(t)
	gate := filepath.Join(t.TempDir(), "gate")
	fx.model(func(m *ModelConfig) { m.Train = TrainConfig{Command: gatedCommand(t, gate)} })
	since := time.Now().Add(-time.Hour)
	fx.captureShifted(41, 200, since)
	a, urlA := fx.openOn(fx.connect(), testTTL)
	b, urlB := fx.openOn(fx.connect(), testTTL)
	stop := runningMonitor(t, fx.engine.Conn)
	defer stop()

	first := driftEvent(t, since)
	if got := send(t, urlA, first, http.StatusAccepted); got.Status != "queued" || got.Run != "1" {
		t.Fatalf("first event: %+v", got)
	}
	waitRun(t, a, "1", func(r Run) bool { return len(r.Steps) == 2 && r.Steps[1].Name == "train" })
	redeliver(t, urlB, first, answerOf(t, "queued", "1"))
	if got := send(t, urlB, driftEvent(t, since), http.StatusAccepted); got.Status != "queued" || got.Run != "2" {
		t.Fatalf("second event, to the other service: %+v", got)
	}
	if got := send(t, urlA, driftEvent(t, since), http.StatusAccepted); got.Status != "coalesced" || got.Run != "2" {
		t.Fatalf("third event: %+v", got)
	}
	// Events each sent to both at once: one answer, the same from both,
	// and each event coalesced once.
	var both []string
	for range 8 {
		ev := driftEvent(t, since)
		body, _ := json.Marshal(ev)
		var wg sync.WaitGroup
		answers := make([]string, 2)
		codes := make([]int, 2)
		for i, url := range []string{urlA, urlB} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				codes[i], answers[i] = post(t, url, body, outbox.Sign([]byte(testSecret), time.Now(), body))
			}()
		}
		wg.Wait()
		want := answerOf(t, "coalesced", "2")
		for i := range answers {
			if answers[i] != want || codes[i] != http.StatusAccepted && codes[i] != http.StatusOK {
				t.Fatalf("event %s sent to both: %d %q and %d %q, want %q from both", ev.ID, codes[0], answers[0], codes[1], answers[1], want)
			}
		}
		both = append(both, ev.ID)
	}
	// The service that does not hold the lease does not start run 2 while
	// run 1 trains.
	time.Sleep(3 * testTTL / 2)
	if r, _ := b.Run("2"); r.Outcome != Queued {
		t.Fatalf("run 2 started while run 1 runs: %+v", r)
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitRun(t, a, "1", finished)
	r := waitRun(t, b, "2", finished)
	if len(r.Coalesced) != 1+len(both) || !slices.Equal(r.Coalesced[1:], both) || len(r.Steps) < 2 || r.Steps[1].Error != "" {
		t.Fatalf("run 2: %+v, want the third event and those sent to both coalesced, each once, and trained", r)
	}
	if runs, err := a.Runs("", 0); err != nil || len(runs) != 2 {
		t.Fatalf("runs %+v (%v), want 2", runs, err)
	}
	fx.events.wait(t, 2)

	// With nothing queued, both may store a run for one event: one names
	// it in the queue, the other's goes.
	for range 4 {
		body, _ := json.Marshal(driftEvent(t, since))
		var wg sync.WaitGroup
		answers := make([]acceptance, 2)
		for i, url := range []string{urlA, urlB} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, answer := post(t, url, body, outbox.Sign([]byte(testSecret), time.Now(), body))
				json.Unmarshal([]byte(answer), &answers[i])
			}()
		}
		wg.Wait()
		if answers[0] != answers[1] || answers[0].Status != "queued" {
			t.Fatalf("an event sent to both: %+v and %+v, want one run queued", answers[0], answers[1])
		}
		waitRun(t, a, answers[0].Run, finished)
	}
	if runs, err := a.Runs("", 0); err != nil || len(runs) != 6 {
		t.Fatalf("%d runs %+v (%v), want 6: one per event sent to both", len(runs), runs, err)
	}
	if e, err := fx.store().runs.Get(context.Background(), sequenceKey); err == nil {
		t.Logf("run ids handed out: %s, for 6 runs", e.Value())
	}
}

// TestRunTakenUpWhenItsHolderIsCutOff cuts a service off the engine while
// it runs a run: it loses the model's lease within the TTL, and another
// service on the engine takes the run up once the engine let the lease
// run out: it records the run as interrupted and does it again. The
// service cut off records nothing over it.
func TestRunTakenUpWhenItsHolderIsCutOff(t *testing.T) {
	fx := newFixture(t)
	gate := filepath.Join(t.TempDir(), "gate")
	fx.model(func(m *ModelConfig) { m.Train = TrainConfig{Command: gatedCommand(t, gate)} })
	since := time.Now().Add(-time.Hour)
	fx.captureShifted(43, 200, since)
	conn := fx.connect()
	a, urlA := fx.openOn(conn, testTTL)
	stop := runningMonitor(t, fx.engine.Conn)
	defer stop()

	ev := driftEvent(t, since)
	send(t, urlA, ev, http.StatusAccepted)
	waitRun(t, a, "1", func(r Run) bool { return len(r.Steps) == 2 && r.Steps[1].Name == "train" })
	b, _ := fx.openWithTTL(testTTL) // the lease is a's
	w := a.workers["demo"]
	ctx := w.runContext()
	conn.Close()
	<-ctx.Done()
	if !errors.Is(context.Cause(ctx), errLeaseLost) {
		t.Fatalf("the run's context: %v, want the lease lost", context.Cause(ctx))
	}
	r := waitRun(t, b, "1", finished)
	if r.Outcome != Failed || r.Reason != "interrupted: the retrain service stopped during the train step" {
		t.Fatalf("run 1: %+v, want it interrupted in its train step", r)
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	r = waitRun(t, b, "2", finished)
	if r.RetryOf != "1" || r.Trigger != ev.ID || len(r.Steps) < 2 || r.Steps[1].Error != "" {
		t.Fatalf("run 2: %+v, want run 1 done again, trained", r)
	}
	a.Close() // its run ends, and its outcome is not recorded
	if r, _ := b.Run("1"); r.Reason != "interrupted: the retrain service stopped during the train step" {
		t.Fatalf("run 1 after the service cut off stopped: %+v", r)
	}
	if runs, err := b.Runs("", 0); err != nil || len(runs) != 2 || !slices.ContainsFunc(runs, func(r Run) bool { return r.ID == "2" }) {
		t.Fatalf("runs %+v (%v), want 1 and 2", runs, err)
	}
}

// TestLostLeaseStopsTheRunBeforeTheCanary cuts a service off the engine
// while its run waits for the gateway to load the published candidate: it
// loses the model's lease and the run stops there, without asking the
// gateway for the canary. Another service takes the run up once the lease
// ran out and starts the candidate's canary, once.
func TestLostLeaseStopsTheRunBeforeTheCanary(t *testing.T) {
	fx := newFixture(t)
	since := time.Now().Add(-time.Hour)
	fx.captureShifted(47, shiftedRows, since)
	ready := "GET /v2/models/demo/versions/2/ready"
	fx.gateway.refuse(ready, http.StatusServiceUnavailable)
	conn := fx.connect()
	a, urlA := fx.openOn(conn, testTTL)
	send(t, urlA, driftEvent(t, since), http.StatusAccepted)
	waitRun(t, a, "1", func(r Run) bool { return len(r.Steps) == 5 && r.Steps[4].Name == "canary" })
	b, _ := fx.openWithTTL(testTTL) // the lease is a's
	ctx := a.workers["demo"].runContext()
	conn.Close()
	<-ctx.Done()
	fx.gateway.refuse(ready, 0)
	r := waitRun(t, b, "2", finished)
	if r.Outcome != Succeeded || r.RetryOf != "1" || r.ResumedFrom != "1" || r.Candidate != "2" || r.CanaryStarted.IsZero() {
		t.Fatalf("run 2: %+v, want it to start the canary of run 1's version 2", r)
	}
	if r, _ := b.Run("1"); r.Reason != "interrupted: the retrain service stopped during the canary step" {
		t.Fatalf("run 1: %+v, want it interrupted in its canary step", r)
	}
	a.Close()
	fx.gateway.mu.Lock()
	starts := fx.gateway.canaryStarts
	fx.gateway.mu.Unlock()
	if starts != 1 {
		t.Fatalf("%d canary starts, want 1: the service that lost the lease asked too", starts)
	}
}

// TestLeaseAdoptsARenewalItMissed writes the lease key behind its holder's
// back with the holder's own value, as a renewal that the engine applied
// after the holder's client gave up waiting: the holder keeps the lease and
// renews on from that revision. A write naming another holder still takes
// the lease from it.
func TestLeaseAdoptsARenewalItMissed(t *testing.T) {
	fx := newFixture(t)
	st := fx.store()
	ctx := context.Background()
	a := newLease(st.queues, fx.engine.JS, "demo", "a", testTTL, slog.New(slog.DiscardHandler))
	if ok, err := a.acquire(ctx); !ok || err != nil {
		t.Fatalf("a acquires: %v, %v", ok, err)
	}
	defer a.release()
	held := a.context()
	behind := func(holder string) uint64 {
		t.Helper()
		data, _ := json.Marshal(leaseRecord{Holder: holder, Since: time.Now().UTC()})
		ack, err := fx.engine.JS.PublishMsg(ctx, &nats.Msg{Subject: a.subject, Data: data}, jetstream.WithMsgTTL(testTTL))
		if err != nil {
			t.Fatal(err)
		}
		return ack.Sequence
	}
	missed := behind("a")
	// The keeper renews every third of the TTL: wait for a renewal past
	// the write it missed.
	for deadline := time.Now().Add(3 * testTTL); ; time.Sleep(20 * time.Millisecond) {
		if held.Err() != nil || !a.holds() {
			t.Fatalf("a lost its lease over a write of its own: %v", context.Cause(held))
		}
		a.mu.Lock()
		rev := a.rev
		a.mu.Unlock()
		if rev > missed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a never renewed past the revision %d it missed (at %d)", missed, rev)
		}
	}
	e, err := st.queues.Get(ctx, "demo.lease")
	var rec leaseRecord
	if err == nil {
		err = json.Unmarshal(e.Value(), &rec)
	}
	if err != nil || rec.Holder != "a" || e.Revision() <= missed {
		t.Fatalf("the lease key after the adoption: %+v (%v)", rec, err)
	}

	behind("b")
	select {
	case <-held.Done():
	case <-time.After(3 * testTTL):
		t.Fatal("a kept a lease whose key names b")
	}
	if !errors.Is(context.Cause(held), errLeaseLost) || a.holds() {
		t.Fatalf("after b wrote the key: %v, holds %v", context.Cause(held), a.holds())
	}
}
