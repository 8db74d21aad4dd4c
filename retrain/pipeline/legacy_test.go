package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/infergate/infergate/retrain/legacy"
	"github.com/infergate/infergate/retrain/outbox"
)

// The fixture's events (see retrain/legacy/testdata/README.md): run 2's
// retrain.failed with a pending delivery to "ci", and run 1's
// retrain.succeeded whose delivery to "chat" was dead-lettered.
const (
	legacyFailedEvent    = "7f6e5d4c-3b2a-4190-8f7e-6d5c4b3a2918"
	legacySucceededEvent = "e3b5d6f0-1a2b-4c3d-8e9f-0a1b2c3d4e5f"
)

// legacyClock is a clock that began when the fixture was written, so that
// its seen events are within keepSeen whenever the test runs.
func legacyClock() func() time.Time {
	offset := time.Until(time.Date(2026, 12, 6, 3, 48, 0, 0, time.UTC))
	return func() time.Time { return time.Now().Add(offset) }
}

// legacyFixture is a fixture whose state_dir holds the fixture's
// retrain.db, with the webhook targets the fixture's service had.
func legacyFixture(t *testing.T) *fixture {
	t.Helper()
	fx := newFixture(t)
	fx.cfg.Webhooks = []outbox.Target{
		{Name: "chat", URL: fx.events.srv.URL, SecretEnv: "TEST_OUT_SECRET", Events: []string{"retrain.succeeded"}, BackoffBase: 10 * time.Millisecond},
		{Name: "ci", URL: fx.events.srv.URL, SecretEnv: "TEST_OUT_SECRET", Events: []string{"retrain.failed"}, BackoffBase: 10 * time.Millisecond},
	}
	data, err := os.ReadFile("../legacy/testdata/" + legacyFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(fx.cfg.StateDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(fx.cfg.StateDir, legacyFile), data, 0o644); err != nil {
		t.Fatal(err)
	}
	return fx
}

// openLegacy opens a Service on fx on clock and serves its API, as
// fixture.open does.
func (fx *fixture) openLegacy(clock func() time.Time) (*Service, string) {
	fx.t.Helper()
	s, err := Open(Options{Config: fx.cfg, Engine: fx.engine.Conn, Env: testEnv, Log: testLog(fx.t), Now: clock})
	if err != nil {
		fx.t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	fx.t.Cleanup(func() { srv.Close(); s.Close() })
	return s, srv.URL
}

// imported returns the renamed state files of fx, and whether retrain.db
// is still there.
func (fx *fixture) imported() ([]string, bool) {
	fx.t.Helper()
	renamed, err := filepath.Glob(filepath.Join(fx.cfg.StateDir, legacyFile+".imported-*"))
	if err != nil {
		fx.t.Fatal(err)
	}
	_, err = os.Stat(filepath.Join(fx.cfg.StateDir, legacyFile))
	return renamed, err == nil
}

// TestLegacyStateImported opens a Service on a state_dir that holds the
// bbolt file of the retrain service before the engine: its runs, the last
// run id, the seen events with their answers, the pending delivery and
// the dead letter are in the engine, the file is renamed, and the next
// Open imports nothing again.
func TestLegacyStateImported(t *testing.T) {
	fx := legacyFixture(t)
	clock := legacyClock()
	s, url := fx.openLegacy(clock)

	r1, err := s.Run("1")
	if err != nil {
		t.Fatal(err)
	}
	if r1.Outcome != Succeeded || r1.Candidate != "2" || r1.Metrics == nil || r1.Metrics.LatencyP50 != Duration(41*time.Microsecond) ||
		len(r1.Steps) != 5 || r1.Steps[1].Duration != Duration(80*time.Second) || r1.EventID != legacySucceededEvent || !r1.Notified ||
		!slices.Equal(r1.Coalesced, []string{"5b0e6a0c-2c5d-4a8e-8d0c-0b9b3e7f4d21"}) {
		t.Fatalf("run 1: %+v", r1)
	}
	if r2, err := s.Run("2"); err != nil || r2.Outcome != Failed || !r2.Transient || r2.EventID != legacyFailedEvent || !r2.Notified {
		t.Fatalf("run 2: %+v (%v)", r2, err)
	}
	// Run 3 was queued for a model no longer configured: recover ends it,
	// as it would have ended its own.
	if r3, err := s.Run("3"); err != nil || r3.Outcome != Failed || !strings.Contains(r3.Reason, `model "fraud" is no longer configured`) {
		t.Fatalf("run 3: %+v (%v)", r3, err)
	}
	if e, err := fx.store().runs.Get(context.Background(), sequenceKey); err != nil || string(e.Value()) != "3" {
		t.Fatalf("the last run id: %v (%v), want 3", e, err)
	}

	// A re-delivery of an event accepted before gets the first answer.
	f := func(id, wantAnswer string) {
		t.Helper()
		ev := driftEvent(t, time.Time{})
		ev.ID = id
		body, _ := json.Marshal(ev)
		code, answer := post(t, url, body, outbox.Sign([]byte(testSecret), clock(), body))
		if code != 200 || answer != wantAnswer {
			t.Fatalf("re-delivery of %s: %d %q, want 200 %q", id, code, answer, wantAnswer)
		}
	}
	f("seen-001-xxxxxxxxxxxxxxxxxxxxxxxx", `{"status": "accepted", "run": "2"}`+"\n")
	f("seen-059-xxxxxxxxxxxxxxxxxxxxxxxx", `{"status": "accepted", "run": "3"}`+"\n")
	f("legacy-seen", legacyAnswer)
	keys, err := fx.store().seen.Keys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 62 { // and run 3's trigger, which recover records
		t.Fatalf("%d seen events, want the fixture's 61 and run 3's trigger", len(keys))
	}
	if runs, err := s.Runs("", 0); err != nil || len(runs) != 3 {
		t.Fatalf("runs %+v (%v): a re-delivery queued one", runs, err)
	}

	// The pending delivery goes out; the dead letter is the outbox's.
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}
	delivered := func(id string) int {
		fx.events.mu.Lock()
		defer fx.events.mu.Unlock()
		return len(slices.DeleteFunc(slices.Clone(fx.events.events), func(e outbox.Event) bool { return e.ID != id }))
	}
	waitFor("the pending delivery", func() bool { return delivered(legacyFailedEvent) == 1 })
	if n := delivered(legacySucceededEvent); n != 0 {
		t.Fatalf("the dead-lettered event was delivered %d times", n)
	}
	dead, err := s.outbox.DeadLetters()
	if err != nil {
		t.Fatal(err)
	}
	if len(dead) != 1 || dead[0].EventID != legacySucceededEvent || dead[0].Target != "chat" || dead[0].Attempts != 1 ||
		dead[0].Subject != "demo/2" || !strings.Contains(dead[0].LastError, "502") {
		t.Fatalf("dead letters %+v, want the fixture's one", dead)
	}
	renamed, still := fx.imported()
	if len(renamed) != 1 || still {
		t.Fatalf("after the import: renamed %v, %s still there: %v", renamed, legacyFile, still)
	}

	// The next Open imports nothing: the pending delivery goes out once.
	waitFor("every delivery", func() bool { n, _ := s.outbox.Pending(); return n == 0 })
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, _ = fx.openLegacy(clock)
	if again, still := fx.imported(); !slices.Equal(again, renamed) || still {
		t.Fatalf("after a second Open: renamed %v, %s there: %v", again, legacyFile, still)
	}
	if dead, err := s.outbox.DeadLetters(); err != nil || len(dead) != 1 {
		t.Fatalf("dead letters after a second Open: %+v (%v)", dead, err)
	}
	if n := delivered(legacyFailedEvent); n != 1 {
		t.Fatalf("the pending delivery went out %d times", n)
	}
}

// TestLegacyDamagedFileStopsOpen: a damaged state file stops Open with an
// error that names it and says how to recover, and stays where it is.
func TestLegacyDamagedFileStopsOpen(t *testing.T) {
	fx := legacyFixture(t)
	path := filepath.Join(fx.cfg.StateDir, legacyFile)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Cut before the end of its pages (at 49152 bytes).
	if err := os.WriteFile(path, data[:16384], 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := Open(Options{Config: fx.cfg, Engine: fx.engine.Conn, Env: testEnv, Log: testLog(t)})
	if err == nil {
		s.Close()
		t.Fatal("the service opened on a damaged state file")
	}
	if !errors.Is(err, legacy.ErrDamaged) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "move it aside") {
		t.Fatalf("got %v, want the damage error naming %s and how to recover", err, path)
	}
	if renamed, still := fx.imported(); len(renamed) != 0 || !still {
		t.Fatalf("after a failed import: renamed %v, %s there: %v", renamed, legacyFile, still)
	}
}

// TestImportRaisesTheSequence: the last run id is raised to the file's,
// never lowered, and is the highest stored run's when it was never
// written.
func TestImportRaisesTheSequence(t *testing.T) {
	fx := newFixture(t)
	st := fx.store()
	f := func(raise uint64, want string) {
		t.Helper()
		if err := st.raiseSequence(raise); err != nil {
			t.Fatal(err)
		}
		e, err := st.runs.Get(context.Background(), sequenceKey)
		if err != nil || string(e.Value()) != want {
			t.Fatalf("after raising to %d: %v (%v), want %s", raise, e, err, want)
		}
	}
	if err := st.raiseSequence(0); err != nil {
		t.Fatal(err)
	}
	if _, err := st.runs.Get(context.Background(), sequenceKey); err == nil {
		t.Fatal("an empty store got a last run id")
	}
	fx.seed(Run{Model: "demo", Outcome: Queued, Steps: []Step{}}, Run{Model: "demo", Outcome: Queued, Steps: []Step{}})
	if err := st.runs.Delete(context.Background(), sequenceKey); err != nil {
		t.Fatal(err)
	}
	f(1, "2")
	f(7, "7")
	f(3, "7")
	f(9, "9")
	r := Run{Model: "demo", Outcome: Queued, Steps: []Step{}}
	if err := st.newRun(&r); err != nil || r.ID != "10" {
		t.Fatalf("the next run got id %q (%v), want 10", r.ID, err)
	}
}
