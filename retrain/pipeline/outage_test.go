package pipeline

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/bbolt"
)

// stepNames returns the names of r's steps, failing the test on a step
// with an error.
func stepNames(t *testing.T, r Run) []string {
	t.Helper()
	var names []string
	for _, st := range r.Steps {
		names = append(names, st.Name)
		if st.Error != "" {
			t.Errorf("run %s, step %s: %s", r.ID, st.Name, st.Error)
		}
	}
	return names
}

// canaryVersion returns the version of the canary the gateway was asked
// to start.
func (g *fakeGateway) canaryVersion(t *testing.T) string {
	t.Helper()
	_, canary := g.snapshot()
	var body struct {
		Version string `json:"version"`
	}
	if canary != nil {
		if err := json.Unmarshal(canary, &body); err != nil {
			t.Fatalf("canary body %s: %v", canary, err)
		}
	}
	return body.Version
}

// versions returns the version folders of the demo model.
func (fx *fixture) versions() []string {
	fx.t.Helper()
	entries, err := os.ReadDir(filepath.Join(fx.cfg.Repository, "demo"))
	if err != nil {
		fx.t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// TestGatewayRestartDuringRun restarts the gateway, gone for a second,
// when the run pins the traffic before publishing, and when it asks for
// the reload that starts the canary: the run waits for it and succeeds.
func TestGatewayRestartDuringRun(t *testing.T) {
	f := func(crashOn string) {
		t.Run(strings.ReplaceAll(crashOn, "/", "_"), func(t *testing.T) {
			fx := newFixture(t)
			since := time.Now().Add(-time.Hour)
			fx.captureShifted(21, shiftedRows, since)
			fx.gateway.crash(crashOn, time.Second)
			s, url := fx.open()
			a := send(t, url, driftEvent(t, since), http.StatusAccepted)
			r := waitRun(t, s, a.Run, finished)
			if r.Outcome != Succeeded || r.Candidate != "2" {
				t.Fatalf("run: %s %q, want succeeded with version 2", r.Outcome, r.Reason)
			}
			if names := stepNames(t, r); !slices.Equal(names, []string{"data", "train", "validate", "publish", "canary"}) {
				t.Fatalf("steps %v", names)
			}
			calls, _ := fx.gateway.snapshot()
			if n := strings.Count(strings.Join(calls, "\n"), crashOn); n < 2 {
				t.Fatalf("%s made %d times, want again after the restart: %v", crashOn, n, calls)
			}
			if v := fx.gateway.canaryVersion(t); v != "2" {
				t.Fatalf("canary of version %q started, want 2", v)
			}
		})
	}
	f("PUT /admin/models/demo/routing")
	f("POST /admin/reload")
}

// TestUncanariedVersionOnRestart opens a store whose last run published
// version 2 and never canaried it: a run is queued that starts its canary,
// with no other step than data, and trains nothing.
func TestUncanariedVersionOnRestart(t *testing.T) {
	f := func(name string, published Run, versions []string, wantRuns int) {
		t.Run(name, func(t *testing.T) {
			fx := newFixture(t)
			for _, v := range versions {
				dir := filepath.Join(fx.cfg.Repository, "demo", v)
				b, err := os.ReadFile(filepath.Join(fx.cfg.Repository, "demo", "1", "model.onnx"))
				if err == nil {
					err = os.Mkdir(dir, 0o755)
				}
				if err == nil {
					err = os.WriteFile(filepath.Join(dir, "model.onnx"), b, 0o644)
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			db, err := openStore(fx.cfg.StateDir)
			if err != nil {
				t.Fatal(err)
			}
			err = db.Update(func(tx *bbolt.Tx) error { return newRun(tx, &published) })
			if err != nil || db.Close() != nil {
				t.Fatal(err)
			}
			s, _ := fx.open()
			runs, err := s.Runs("", 0)
			if err != nil || len(runs) != wantRuns {
				t.Fatalf("runs %+v (%v), want %d", runs, err, wantRuns)
			}
			if wantRuns == 1 {
				return
			}
			r := waitRun(t, s, "2", finished)
			if r.Outcome != Succeeded || r.Candidate != "2" || r.RetryOf != "1" || r.Trigger != "x" || r.Metrics == nil || r.Metrics.BaseVersion != "1" {
				t.Fatalf("run 2: %+v, want the canary of version 2 started for event x", r)
			}
			if names := stepNames(t, r); !slices.Equal(names, []string{"data", "canary"}) ||
				!strings.Contains(r.Steps[0].Log[0], "version 2, published by run 1, never got its canary") {
				t.Fatalf("steps %v: %+v", names, r.Steps)
			}
			if v := fx.gateway.canaryVersion(t); v != "2" {
				t.Fatalf("canary of version %q started, want 2", v)
			}
			fx.gateway.mu.Lock()
			pinned := string(fx.gateway.routing)
			fx.gateway.mu.Unlock()
			if !strings.Contains(pinned, `"split":{"1":1}`) {
				t.Fatalf("routing put %s, want the split pinned to version 1", pinned)
			}
			if v := fx.versions(); !slices.Equal(v, []string{"1", "2"}) {
				t.Fatalf("repository holds %v, want no version trained", v)
			}
		})
	}
	started := time.Now().Add(-time.Minute).UTC()
	made := []Step{{Name: "data"}, {Name: "train"}, {Name: "validate"}, {Name: "publish"}}
	metrics := &Metrics{BaseVersion: "1", RecentAccuracy: 0.9}
	f("stopped before the canary", Run{Model: "demo", Trigger: "x", Outcome: Running, Started: started,
		Candidate: "2", Metrics: metrics, Steps: made}, []string{"2"}, 2)
	f("canary failed", Run{Model: "demo", Trigger: "x", Outcome: Failed, Started: started, Finished: started, Notified: true,
		Reason: "cannot reload the gateway", Candidate: "2", Metrics: metrics, Steps: append(made, Step{Name: "canary", Error: "x"})}, []string{"2"}, 2)
	f("a newer version since", Run{Model: "demo", Trigger: "x", Outcome: Failed, Started: started, Finished: started, Notified: true,
		Reason: "cannot reload the gateway", Candidate: "2", Metrics: metrics, Steps: append(made, Step{Name: "canary", Error: "x"})}, []string{"2", "3"}, 1)
}

// TestUncanariedVersionOnNextRun fails a run's canary step at its
// deadline, the gateway gone: the next drift event's run starts the
// canary of the version published then, rather than training another.
func TestUncanariedVersionOnNextRun(t *testing.T) {
	fx := newFixture(t)
	fx.cfg.Gateway.ReadyTimeout = 2 * time.Second
	since := time.Now().Add(-time.Hour)
	fx.captureShifted(22, shiftedRows, since)
	fx.gateway.crash("POST /admin/reload", 0)
	s, url := fx.open()
	first := send(t, url, driftEvent(t, since), http.StatusAccepted)
	r := waitRun(t, s, first.Run, finished)
	if last := r.Steps[len(r.Steps)-1]; r.Outcome != Failed || r.Candidate != "2" || last.Name != "canary" ||
		!strings.Contains(r.Reason, "cannot reload the gateway") || !strings.Contains(r.Reason, "gave up after") {
		t.Fatalf("run 1: %s %q, candidate %q, want failed in its canary step, version 2 published", r.Outcome, r.Reason, r.Candidate)
	}

	fx.gateway.up()
	next := send(t, url, driftEvent(t, since), http.StatusAccepted)
	r = waitRun(t, s, next.Run, finished)
	if r.Outcome != Succeeded || r.Candidate != "2" || r.Metrics == nil || r.Metrics.BaseVersion != "1" {
		t.Fatalf("run 2: %s %q, candidate %q, want succeeded with version 2", r.Outcome, r.Reason, r.Candidate)
	}
	if names := stepNames(t, r); !slices.Equal(names, []string{"data", "canary"}) {
		t.Fatalf("run 2 steps %v", names)
	}
	if v := fx.gateway.canaryVersion(t); v != "2" {
		t.Fatalf("canary of version %q started, want 2", v)
	}
	if v := fx.versions(); !slices.Equal(v, []string{"1", "2"}) {
		t.Fatalf("repository holds %v", v)
	}
}

// TestGatewayCallRetries calls a gateway that answers with a sequence of
// codes: no answer, 429, 502, 503 and 504 are tried again until the
// deadline, other answers end the call at once.
func TestGatewayCallRetries(t *testing.T) {
	var (
		mu       sync.Mutex
		codes    []int // guarded by mu: the answers, the last one repeated
		attempts int   // guarded by mu
	)
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		code := codes[min(attempts, len(codes)-1)]
		attempts++
		mu.Unlock()
		w.WriteHeader(code)
		w.Write([]byte(`{"answer":` + strconv.Itoa(code) + `}`))
	}))
	t.Cleanup(gw.Close)
	fx := newFixture(t)
	fx.cfg.Gateway.URL = gw.URL
	s, _ := fx.open()

	// wantAttempts 0 means more than one.
	f := func(name string, answers []int, deadline time.Duration, wantAttempts int, wantErr string) {
		t.Run(name, func(t *testing.T) {
			mu.Lock()
			codes, attempts = answers, 0
			mu.Unlock()
			st := &runState{s: s, run: &Run{ID: "1", Model: "demo", Steps: []Step{{Name: "canary"}}}}
			ctx, cancel := context.WithTimeout(context.Background(), deadline)
			defer cancel()
			answer, err := st.call(ctx, http.MethodGet, "/admin/models/demo/routing", nil)
			mu.Lock()
			defer mu.Unlock()
			if wantAttempts == 0 && attempts < 2 || wantAttempts > 0 && attempts != wantAttempts ||
				wantErr == "" && (err != nil || string(answer) != `{"answer":200}`) ||
				wantErr != "" && (err == nil || !strings.Contains(err.Error(), wantErr)) {
				t.Fatalf("%d attempts, answer %s, error %v; want %d attempts, error with %q", attempts, answer, err, wantAttempts, wantErr)
			}
		})
	}
	long := 30 * time.Second
	f("restarting", []int{503, 502, 504, 200}, long, 4, "")
	f("too many requests", []int{429, 200}, long, 2, "")
	f("unauthorized", []int{401, 200}, long, 1, "the gateway answered 401 Unauthorized")
	f("not found", []int{404, 200}, long, 1, "404 Not Found")
	f("conflict", []int{409, 200}, long, 1, "409 Conflict")
	f("internal error", []int{500, 200}, long, 1, "500 Internal Server Error")
	f("unavailable past the deadline", []int{503}, 500*time.Millisecond, 0, "gave up after")
}
