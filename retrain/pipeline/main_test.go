package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/infergate/infergate/retrain/capture"
	"github.com/infergate/infergate/retrain/engine/enginetest"
	"github.com/infergate/infergate/retrain/modelstore"
	"github.com/infergate/infergate/retrain/outbox"
	"github.com/infergate/infergate/retrain/trainer"
	"github.com/infergate/infergate/runtime"
	"go.uber.org/goleak"
)

// leakCheck fails a passing run whose goroutines outlive its tests.
func leakCheck(code int) int {
	if err := goleak.Find(); code == 0 && err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return code
}

// testEnv is the process's ONNX Runtime environment for these tests.
var testEnv *runtime.Environment

// TestMain opens ONNX Runtime for the tests and fails the run when
// goroutines outlive them: a Service must stop every one on Shutdown.
func TestMain(m *testing.M) {
	var err error
	if testEnv, err = runtime.NewEnvironment(runtime.Config{Providers: []string{runtime.ProviderCPU}, IntraOpThreads: 1}, slog.New(slog.DiscardHandler)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	testEnv.Close()
	os.Exit(leakCheck(code))
}

const (
	testSecret     = "webhook-secret"
	testToken      = "admin-token"
	testOutSecret  = "outgoing-secret"
	utilization    = 7 // trainer.Synthetic's feature index
	creditScore    = 5
	shiftedRows    = 1000
	driftEventType = outbox.TypeDriftDetected
)

// fixture is an engine, a model repository holding the demo model's
// version 1, a capture folder, a fake gateway and a webhook receiver, and a
// config over them.
type fixture struct {
	t       *testing.T
	engine  *enginetest.Engine
	models  *modelstore.Store // the engine's model store
	cfg     Config
	gateway *fakeGateway
	events  *receiver
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	t.Setenv("TEST_WEBHOOK_SECRET", testSecret)
	t.Setenv("TEST_ADMIN_TOKEN", testToken)
	t.Setenv("TEST_OUT_SECRET", testOutSecret)
	root := t.TempDir()
	f := &fixture{t: t, engine: enginetest.Start(t), events: newReceiver(t)}
	var err error
	if f.models, err = modelstore.Open(context.Background(), f.engine.Conn); err != nil {
		t.Fatal(err)
	}
	// Version 1 is the demo model, as a gateway that started on the
	// demo's repository published it.
	f.publish(1, demoVersion)
	f.gateway = newFakeGateway(t, func(model string, version int64) bool {
		_, err := f.models.Manifest(context.Background(), model, version)
		return err == nil
	})
	f.cfg = Config{
		StateDir: filepath.Join(root, "retrain-state"), SecretEnv: "TEST_WEBHOOK_SECRET",
		Gateway: GatewayConfig{URL: f.gateway.url, TokenEnv: "TEST_ADMIN_TOKEN", ReadyTimeout: 10 * time.Second},
		Models: map[string]ModelConfig{"demo": {
			TrainingData: BuiltinDemo, TrainingShare: 0.75, MinRows: 100, LabelWait: time.Millisecond,
			Validate: ValidateConfig{MaxRegression: 0.03, MaxLatencyP99: time.Second, BenchmarkRuns: 50},
			Canary:   map[string]any{"interval": "1s", "step_weights": []any{20, 50}},
		}},
		Webhooks: []outbox.Target{{Name: "ci", URL: f.events.srv.URL, SecretEnv: "TEST_OUT_SECRET", BackoffBase: 10 * time.Millisecond}},
	}.WithDefaults()
	return f
}

// model returns the config of the demo model, to change and set back.
func (f *fixture) model(change func(*ModelConfig)) {
	mc := f.cfg.Models["demo"]
	change(&mc)
	f.cfg.Models["demo"] = mc.WithDefaults()
}

// open opens a Service on f's config and engine and serves its API;
// Cleanup closes both.
func (f *fixture) open() (*Service, string) {
	f.t.Helper()
	s, err := Open(Options{Config: f.cfg, Engine: f.engine.Conn, Env: testEnv, Log: testLog(f.t)})
	if err != nil {
		f.t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	f.t.Cleanup(func() { srv.Close(); s.Close() })
	return s, srv.URL
}

// store returns the run store of f's engine, as a Service opens it.
func (f *fixture) store() *store {
	f.t.Helper()
	st, err := openStore(f.engine.Conn)
	if err != nil {
		f.t.Fatal(err)
	}
	return st
}

// seed stores runs as a Service that stopped (or crashed) left them, with
// ids from 1 on; it returns them as stored.
func (f *fixture) seed(runs ...Run) []Run {
	f.t.Helper()
	st := f.store()
	for i := range runs {
		if err := st.newRun(&runs[i]); err != nil {
			f.t.Fatal(err)
		}
	}
	return runs
}

func testLog(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, nil)).With("test", t.Name())
	}
	return slog.New(slog.DiscardHandler)
}

// captureShifted captures n rows of the shifted concept for the demo model
// at times from t0 on, and labels them: utilization moved up by 2, into a
// region the demo model never saw, where the label is credit_score < 650.
// The demo model calls nearly all of them defaults.
func (f *fixture) captureShifted(seed uint64, n int, t0 time.Time) {
	f.t.Helper()
	w, err := capture.Open(f.engine.Conn, "demo", capture.Config{Sample: 1, BufferSize: 100000}, capture.Options{Replica: "gateway-a"})
	if err != nil {
		f.t.Fatal(err)
	}
	var labels []capture.Label
	for i, x := range trainer.Synthetic(seed, n).X {
		x[utilization] += 2
		label := 0
		if x[creditScore] < 650 {
			label = 1
		}
		id := fmt.Sprintf("%d-%d", seed, i)
		w.Write(capture.Record{ID: id, Time: t0.Add(time.Duration(i) * time.Millisecond), Version: "1",
			Inputs: map[string]capture.Tensor{"input": {Datatype: "FP32", Shape: []int64{1, 8}, Data: x}}})
		labels = append(labels, capture.Label{ID: id, Label: json.RawMessage(fmt.Sprint(label))})
	}
	if err := w.Close(); err != nil {
		f.t.Fatal(err)
	}
	l, err := capture.OpenLabels(f.engine.Conn, capture.LabelsConfig{}, capture.Options{})
	if err != nil {
		f.t.Fatal(err)
	}
	if err := l.RecordLabels("demo", labels); err != nil {
		f.t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		f.t.Fatal(err)
	}
}

// driftEvent returns a signed-ready drift.detected event of the demo model
// whose window began at since.
func driftEvent(t *testing.T, since time.Time) outbox.Event {
	t.Helper()
	ev, err := outbox.NewEvent("/infergate/gateway", driftEventType, "demo/1", map[string]any{
		"type": "drift.detected", "model": "demo", "version": "1", "window": map[string]any{"start": since, "rows": 500},
	})
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// post sends body to the service's webhook signed with secret at ts and
// returns the status and the answer.
func post(t *testing.T, url string, body []byte, signature string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url+"/webhook", bytes.NewReader(body))
	req.Header.Set("Content-Type", outbox.ContentType)
	if signature != "" {
		req.Header.Set(outbox.SignatureHeader, signature)
	}
	req.Close = true
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(answer)
}

// send posts ev signed now with the test secret; want is the status.
func send(t *testing.T, url string, ev outbox.Event, want int) acceptance {
	t.Helper()
	body, _ := json.Marshal(ev)
	code, answer := post(t, url, body, outbox.Sign([]byte(testSecret), time.Now(), body))
	if code != want {
		t.Fatalf("event %s: status %d, want %d: %s", ev.ID, code, want, answer)
	}
	var a acceptance
	json.Unmarshal([]byte(answer), &a)
	return a
}

// waitRun waits until run id satisfies done and returns it.
func waitRun(t *testing.T, s *Service, id string, done func(Run) bool) Run {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		r, err := s.Run(id)
		if err == nil && done(r) {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("run %s: still %+v (%v)", id, r, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func finished(r Run) bool { return r.Outcome == Succeeded || r.Outcome == Failed }

// fakeGateway answers the admin and readiness calls of a run as the
// gateway does, and records them. It serves real HTTP on loopback, and can
// go away and come back on the same address, as a gateway that restarts.
type fakeGateway struct {
	t       *testing.T
	url     string
	addr    string
	handler http.Handler
	served  sync.WaitGroup // the Serve goroutines
	mu      sync.Mutex
	srv     *http.Server // guarded by mu: nil while down
	closed  bool         // guarded by mu: the test has ended
	// crashOn is a call ("METHOD path") at which the gateway goes down
	// without answering, for restartAfter (for good when 0: see up).
	crashOn      string        // guarded by mu
	restartAfter time.Duration // guarded by mu
	restart      *time.Timer   // guarded by mu
	calls        []string      // guarded by mu: "METHOD path"
	canary       []byte        // guarded by mu: the last POST canary
	routing      []byte        // guarded by mu: the last PUT routing
	reloaded     bool          // guarded by mu
	// running is the version of the canary the routing shows, as the
	// gateway's: set by every POST canary, which starts it afresh (counted
	// in canaryStarts), cleared by PUT routing.
	running      string // guarded by mu
	canaryStarts int    // guarded by mu
	// refused maps a call to the status the gateway answers it with.
	refused map[string]int // guarded by mu
	// loseAnswerOn is a call the gateway makes and then closes the
	// connection without answering it, once.
	loseAnswerOn string // guarded by mu
}

// demoVersion is the folder of the demo model's version 1.
const demoVersion = "../../configs/models/demo/1"

// publish publishes the files of dir as version of the demo model.
func (f *fixture) publish(version int64, dir string) {
	f.t.Helper()
	if _, err := f.models.Publish(context.Background(), "demo", version, dir); err != nil {
		f.t.Fatal(err)
	}
}

// fetch fetches version of the demo model from the store into a
// temporary folder and returns the folder.
func (f *fixture) fetch(version int64) string {
	f.t.Helper()
	dir := filepath.Join(f.t.TempDir(), strconv.FormatInt(version, 10))
	if _, err := f.models.Fetch(context.Background(), "demo", version, dir); err != nil {
		f.t.Fatal(err)
	}
	return dir
}

// newFakeGateway returns a gateway that serves the versions that
// published says are, once reloaded.
func newFakeGateway(t *testing.T, published func(model string, version int64) bool) *fakeGateway {
	g := &fakeGateway{t: t, addr: "127.0.0.1:0"}
	g.handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		g.mu.Lock()
		defer g.mu.Unlock()
		call := r.Method + " " + r.URL.Path
		g.calls = append(g.calls, call)
		if call == g.crashOn {
			g.crashOn = ""
			if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
				conn.Close()
			}
			g.downLocked()
			if g.restartAfter > 0 {
				g.restart = time.AfterFunc(g.restartAfter, g.up)
			}
			return
		}
		code, answer := http.StatusOK, ""
		switch parts := strings.Split(r.URL.Path, "/"); {
		case r.Header.Get("Authorization") != "Bearer "+testToken:
			code, answer = http.StatusUnauthorized, `{"error":"missing or wrong bearer token"}`
		case g.refused[call] != 0:
			code, answer = g.refused[call], `{"error":"refused by the test"}`
		case r.Method == http.MethodPost && r.URL.Path == "/admin/reload":
			g.reloaded = true
		case r.Method == http.MethodGet && len(parts) == 7 && parts[5] != "" && parts[6] == "ready":
			v, _ := strconv.ParseInt(parts[5], 10, 64)
			if !published(parts[3], v) || !g.reloaded {
				code, answer = http.StatusNotFound, `{"error":"unknown version"}`
			}
		case r.Method == http.MethodPost && r.URL.Path == "/admin/models/demo/canary":
			var c struct {
				Version string `json:"version"`
			}
			json.Unmarshal(body, &c)
			g.canary, g.running = body, c.Version
			g.canaryStarts++
		case r.Method == http.MethodGet && r.URL.Path == "/admin/models/demo/routing":
			canary := ""
			if g.running != "" {
				canary = `,"canary":{"phase":"progressing","config":{"version":"` + g.running + `"}}`
			}
			answer = `{"model_name":"demo","source":"config","config":{"shadow_max_in_flight":64},"effective_split":{"1":1}` + canary + `}`
		case r.Method == http.MethodPut && r.URL.Path == "/admin/models/demo/routing":
			g.routing, g.running = body, ""
		default:
			code, answer = http.StatusNotFound, `{"error":"no such endpoint"}`
		}
		if call == g.loseAnswerOn {
			g.loseAnswerOn = ""
			if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
				conn.Close()
			}
			return
		}
		w.WriteHeader(code)
		w.Write([]byte(answer))
	})
	g.up()
	t.Cleanup(func() {
		g.mu.Lock()
		g.closed = true
		if g.restart != nil {
			g.restart.Stop()
		}
		g.downLocked()
		g.mu.Unlock()
		g.served.Wait()
	})
	return g
}

// up starts serving on the gateway's address, unless it serves already.
func (g *fakeGateway) up() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed || g.srv != nil {
		return
	}
	ln, err := net.Listen("tcp", g.addr)
	if err != nil {
		g.t.Errorf("the fake gateway cannot listen again: %v", err)
		return
	}
	g.addr, g.url = ln.Addr().String(), "http://"+ln.Addr().String()
	g.srv = &http.Server{Handler: g.handler}
	g.served.Add(1)
	go func(srv *http.Server) {
		defer g.served.Done()
		srv.Serve(ln)
	}(g.srv)
}

// downLocked closes the listener and every connection. It needs g.mu.
func (g *fakeGateway) downLocked() {
	if g.srv != nil {
		g.srv.Close()
		g.srv = nil
	}
}

// crash makes the gateway go down at call, for restartAfter (0: until up).
func (g *fakeGateway) crash(call string, restartAfter time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.crashOn, g.restartAfter = call, restartAfter
}

// refuse makes the gateway answer call with code from now on.
func (g *fakeGateway) refuse(call string, code int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.refused == nil {
		g.refused = map[string]int{}
	}
	g.refused[call] = code
}

func (g *fakeGateway) snapshot() ([]string, []byte) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.calls...), g.canary
}

// receiver is a webhook target that verifies signatures and keeps events.
type receiver struct {
	srv    *httptest.Server
	mu     sync.Mutex
	events []outbox.Event // guarded by mu
}

func newReceiver(t *testing.T) *receiver {
	rc := &receiver{}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ev, code, err := outbox.Receive(r, []byte(testOutSecret), time.Now(), 0, 1<<20)
		if err != nil {
			http.Error(w, err.Error(), code)
			return
		}
		rc.mu.Lock()
		rc.events = append(rc.events, ev)
		rc.mu.Unlock()
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

// waitDelivered waits until s's outbox has nothing pending: every event
// a receiver got is recorded as delivered, and is not delivered again
// after s closes.
func waitDelivered(t *testing.T, s *Service) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if n, err := s.outbox.Pending(); err == nil && n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("deliveries still pending after 30s")
		}
	}
}

// wait waits for n events and returns them.
func (rc *receiver) wait(t *testing.T, n int) []outbox.Event {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		rc.mu.Lock()
		events := append([]outbox.Event(nil), rc.events...)
		rc.mu.Unlock()
		if len(events) >= n {
			return events
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d events received, want %d: %+v", len(events), n, events)
		}
	}
}
