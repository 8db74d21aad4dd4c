package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/infergate/infergate/retrain/legacy"
	"github.com/infergate/infergate/retrain/outbox"
	"github.com/infergate/infergate/router"
)

// The fixture's events (see retrain/legacy/testdata/README.md): the drift
// event with a pending delivery to "ci", and the canary event whose
// delivery to "audit" was dead-lettered.
const (
	legacyDriftEvent  = "02bfb54a-ec85-4368-9030-8a878e415e91"
	legacyCanaryEvent = "a7458571-d94b-4e7c-b185-7c878c2c681f"
)

// legacyConfig serves what the fixture's gateway served: model "ab"
// (versions 1 to 3, routing {"1": 1} in the file) and "demo" with its
// reference, on a state_dir that holds the fixture's infergate.db, with
// the fixture's two webhook targets delivering to receiver.
func legacyConfig(t *testing.T, receiver *eventReceiver) Config {
	t.Helper()
	cfg := abConfig(t, router.Config{Split: map[string]int{"1": 1}})
	for _, name := range []string{"model.onnx", "reference.json"} {
		copyFile(t, filepath.Join("../configs/models/demo/1", name), filepath.Join(cfg.Repository, "demo", "1", name))
	}
	cfg.Models["demo"] = ModelConfig{Batching: batcher16}
	cfg.Webhooks = []outbox.Target{
		{Name: "audit", URL: receiver.url, SecretEnv: webhookSecretEnv, Events: []string{"canary.started"}, BackoffBase: time.Millisecond},
		{Name: "ci", URL: receiver.url, SecretEnv: webhookSecretEnv, Events: []string{"drift.detected"}, BackoffBase: time.Millisecond},
	}
	copyFile(t, "../retrain/legacy/testdata/"+legacyFile, filepath.Join(cfg.StateDir, legacyFile))
	return cfg
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// legacyClock is a clock that began when the fixture was written, so that
// the imported canary's next analysis is an hour away whenever the test
// runs.
func legacyClock() func() time.Time {
	offset := time.Until(time.Date(2026, 12, 6, 3, 47, 0, 0, time.UTC))
	return func() time.Time { return time.Now().Add(offset) }
}

// importedFiles returns the renamed state files in dir, and whether
// infergate.db is still there.
func importedFiles(t *testing.T, dir string) ([]string, bool) {
	t.Helper()
	renamed, err := filepath.Glob(filepath.Join(dir, legacyFile+".imported-*"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = os.Stat(filepath.Join(dir, legacyFile))
	return renamed, err == nil
}

// webhooksOf returns what GET /admin/webhooks answers.
func webhooksOf(t *testing.T, url string) (pending int, dead []outbox.DeadLetter) {
	t.Helper()
	code, body := admin(t, "GET", url, "webhooks", "")
	if code != 200 {
		t.Fatalf("webhooks: %d %s", code, body)
	}
	var got struct {
		Pending     int                 `json:"pending"`
		DeadLetters []outbox.DeadLetter `json:"dead_letters"`
	}
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatal(err)
	}
	return got.Pending, got.DeadLetters
}

// deliveredOf returns how often receiver got event id.
func deliveredOf(receiver *eventReceiver, id string) int {
	n := 0
	for _, e := range receiver.events() {
		if e.ID == id {
			n++
		}
	}
	return n
}

// TestLegacyStateImported starts a gateway on a state_dir that holds the
// bbolt file of the gateway before the engine: its routing, drift state,
// pending delivery and dead letter are in effect, the file is renamed, and
// the next start imports nothing again, not even when the file comes back.
func TestLegacyStateImported(t *testing.T) {
	receiver := newEventReceiver(t)
	cfg := legacyConfig(t, receiver)
	clock := legacyClock()
	srv, url := startServerWith(t, Options{Config: cfg, Now: clock})

	rep := routingOf(t, url)
	if rep.Source != "admin" || rep.Config.StickyHeader != "x-user" || rep.Config.Split["1"] != 1 || rep.Config.Split["3"] != 3 {
		t.Fatalf("the admin routing of ab is not in effect: %+v", rep)
	}
	if c := rep.Canary; c == nil || c.Config.Version != "2" || c.Phase != router.PhaseProgressing || c.Weight != 10 ||
		c.Config.Interval != time.Hour || rep.Effective["2"] == 0 {
		t.Fatalf("the canary of ab/2 is not in effect: %+v", rep)
	}
	code, _, body := call(t, "GET", url+"/v2/models/demo/versions/1/drift", nil)
	if code != 200 || !strings.Contains(string(body), `"drifted":true`) {
		t.Fatalf("demo/1's drift state is not loaded: %d %s", code, body)
	}
	srv.cp.mu.Lock()
	st := srv.cp.driftStateLocked("demo", "1")
	srv.cp.mu.Unlock()
	if st == nil || !st.Drifted || st.Reason != "features" || !st.CooldownUntil.Equal(time.Date(2026, 12, 6, 3, 56, 47, 300086410, time.UTC)) {
		t.Fatalf("demo/1's drift state: %+v", st)
	}

	waitLegacy(t, "the pending delivery", func() bool { return deliveredOf(receiver, legacyDriftEvent) == 1 })
	for _, e := range receiver.events() {
		if e.ID != legacyDriftEvent {
			t.Fatalf("the receiver got %s (%s) too; only the pending delivery should go out", e.ID, e.Type)
		}
		if e.Type != outbox.TypeDriftDetected || e.Subject != "demo/1" || !strings.Contains(string(e.Data), `"drift_share":0.5`) {
			t.Fatalf("the delivered event is not the stored one: %+v", e)
		}
	}
	waitLegacy(t, "its acknowledgement", func() bool { p, _ := webhooksOf(t, url); return p == 0 })
	_, dead := webhooksOf(t, url)
	if len(dead) != 1 {
		t.Fatalf("dead letters %+v, want the fixture's one", dead)
	}
	if dl := dead[0]; dl.EventID != legacyCanaryEvent || dl.Target != "audit" || dl.EventType != outbox.TypeCanaryStarted ||
		dl.Subject != "ab/2" || dl.Attempts != 1 || !strings.Contains(dl.LastError, "503") ||
		!dl.DeadAt.Equal(time.Date(2026, 12, 6, 3, 46, 47, 279796922, time.UTC)) || !strings.Contains(string(dl.Event), legacyCanaryEvent) {
		t.Fatalf("dead letter %+v", dl)
	}
	renamed, still := importedFiles(t, cfg.StateDir)
	if len(renamed) != 1 || still {
		t.Fatalf("after the import: renamed %v, %s still there: %v", renamed, legacyFile, still)
	}
	if got, want := mustRead(t, renamed[0]), mustRead(t, "../retrain/legacy/testdata/"+legacyFile); string(got) != string(want) {
		t.Fatal("the renamed file is not the imported one")
	}

	// A change since, then a second start: nothing is imported again.
	if code, body := admin(t, "POST", url, "models/ab/canary/rollback", ""); code != 200 {
		t.Fatalf("rollback: %d %s", code, body)
	}
	srv.Shutdown(context.Background())
	srv, url = startServerWith(t, Options{Config: cfg, Now: clock})
	if c := routingOf(t, url).Canary; c == nil || c.Phase != router.PhaseRolledBack {
		t.Fatalf("after a second start the canary is %+v, want rolled back", c)
	}
	if again, still := importedFiles(t, cfg.StateDir); !slices.Equal(again, renamed) || still {
		t.Fatalf("after a second start: renamed %v, %s there: %v", again, legacyFile, still)
	}

	// The file put back is imported again, as after a crash before the
	// rename: the bucket's newer state wins, and what the outbox holds is
	// not stored twice.
	stream, err := testEngine(t, cfg.StateDir).JS.Stream(context.Background(), "infergate_outbox_gateway")
	if err != nil {
		t.Fatal(err)
	}
	before := stream.CachedInfo().State.LastSeq
	srv.Shutdown(context.Background())
	copyFile(t, "../retrain/legacy/testdata/"+legacyFile, filepath.Join(cfg.StateDir, legacyFile))
	_, url = startServerWith(t, Options{Config: cfg, Now: clock})
	if c := routingOf(t, url).Canary; c == nil || c.Phase != router.PhaseRolledBack {
		t.Fatalf("after the file came back the canary is %+v, want rolled back still", c)
	}
	info, err := stream.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.LastSeq != before {
		t.Fatalf("the outbox's stream went from sequence %d to %d: an event imported twice", before, info.State.LastSeq)
	}
	if _, again := webhooksOf(t, url); len(again) != 1 || again[0].Attempts != 1 || again[0].LastError != dead[0].LastError {
		t.Fatalf("dead letters after the file came back: %+v", again)
	}
	if renamed, still := importedFiles(t, cfg.StateDir); len(renamed) != 2 || still {
		t.Fatalf("after the file came back: renamed %v, %s there: %v", renamed, legacyFile, still)
	}
	if n := deliveredOf(receiver, legacyDriftEvent); n != 1 {
		t.Fatalf("the pending delivery went out %d times", n)
	}
}

// TestLegacyDamagedFileStopsTheStart: a damaged state file stops the
// start with an error that names it and says how to recover, and stays
// where it is.
func TestLegacyDamagedFileStopsTheStart(t *testing.T) {
	receiver := newEventReceiver(t)
	cfg := legacyConfig(t, receiver)
	path := filepath.Join(cfg.StateDir, legacyFile)
	// Cut before the end of its pages (at 32768 bytes).
	if err := os.WriteFile(path, mustRead(t, path)[:16384], 0o644); err != nil {
		t.Fatal(err)
	}
	e := testEngine(t, cfg.StateDir)
	srv, err := New(Options{Config: cfg, Env: testEnv, Log: quiet, Engine: e.Conn})
	if err == nil {
		srv.Shutdown(context.Background())
		t.Fatal("the gateway started on a damaged state file")
	}
	if !errors.Is(err, legacy.ErrDamaged) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "move it aside") {
		t.Fatalf("got %v, want the damage error naming %s and how to recover", err, path)
	}
	if renamed, still := importedFiles(t, cfg.StateDir); len(renamed) != 0 || !still {
		t.Fatalf("after a failed import: renamed %v, %s there: %v", renamed, legacyFile, still)
	}
}

// TestLegacyImportWithoutWebhooks: without webhooks the outbox's
// deliveries cannot be imported, which the log line counts; the rest is
// imported, and the start goes on.
func TestLegacyImportWithoutWebhooks(t *testing.T) {
	cfg := legacyConfig(t, newEventReceiver(t))
	cfg.Webhooks = nil
	var logs logLines
	e := testEngine(t, cfg.StateDir)
	srv, err := New(Options{Config: cfg, Env: testEnv, Log: slog.New(slog.NewTextHandler(&logs, nil)), Engine: e.Conn, Now: legacyClock()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(context.Background())
	line := logs.find("imported the state file")
	for _, want := range []string{"level=WARN", "routes=2", "routes_kept=0", "drift_states=1", "events_emitted=0", "dead_letters=0",
		"deliveries_not_importable=2", "renamed_to=" + filepath.Join(cfg.StateDir, legacyFile+".imported-")} {
		if !strings.Contains(line, want) {
			t.Errorf("the import's log line %q lacks %q", line, want)
		}
	}
	if rep := srv.cp.routes["ab"].report(); rep.Source != "admin" || rep.Canary == nil || rep.Canary.Weight != 10 {
		t.Fatalf("the routing of ab: %+v", rep)
	}
}

// TestLegacyRoutingUnderAnEditedFile: as the gateway before the engine
// did, an imported routing applies only while the config file's routing
// is the one it was stored under; the file edited since wins.
func TestLegacyRoutingUnderAnEditedFile(t *testing.T) {
	cfg := legacyConfig(t, newEventReceiver(t))
	mc := cfg.Models["ab"]
	mc.Routing = router.Config{Split: map[string]int{"3": 1}}
	cfg.Models["ab"] = mc
	srv, err := New(Options{Config: cfg, Env: testEnv, Log: quiet, Engine: testEngine(t, cfg.StateDir).Conn, Now: legacyClock()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(context.Background())
	if rep := srv.cp.routes["ab"].report(); rep.Source != "config" || rep.Canary != nil || len(rep.Effective) != 1 || rep.Effective["3"] != 1 {
		t.Fatalf("the routing of ab under an edited file: %+v", rep)
	}
}

// logLines keeps a logger's output. It is safe for concurrent use.
type logLines struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// find returns the first line that holds s, or "".
func (l *logLines) find(s string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	for line := range strings.Lines(l.buf.String()) {
		if strings.Contains(line, s) {
			return line
		}
	}
	return ""
}

// TestLegacyRoutesInNanoseconds: a routing record of a version that wrote
// intervals as nanoseconds is read with them converted.
func TestLegacyRoutesInNanoseconds(t *testing.T) {
	f := func(data string, want time.Duration) {
		t.Helper()
		rec, err := decodeLegacyRoutes([]byte(data))
		if err != nil {
			t.Fatalf("%s: %v", data, err)
		}
		if rec.Canary == nil || rec.Canary.Config.Interval != want || rec.File.Canary == nil || rec.File.Canary.Interval != want {
			t.Fatalf("%s: read %+v, want interval %s", data, rec, want)
		}
	}
	f(`{"file":{"canary":{"version":"2","interval":60000000000}},"base":{},"admin":false,`+
		`"canary":{"config":{"version":"2","interval":60000000000},"phase":"progressing","weight":10}}`, time.Minute)
	f(`{"file":{"canary":{"version":"2","interval":"1h0m0s"}},"base":{},"admin":false,`+
		`"canary":{"config":{"version":"2","interval":"1h0m0s"},"phase":"progressing","weight":10}}`, time.Hour)
	if _, err := decodeLegacyRoutes([]byte(`{"file":{"split":{"1":"one"}}}`)); err == nil {
		t.Fatal("a record that cannot be read was read")
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// waitLegacy waits until cond holds, for at most 30 seconds.
func waitLegacy(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}
