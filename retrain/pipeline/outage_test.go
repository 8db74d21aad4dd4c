package pipeline

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
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

// versions returns the versions of the demo model in the model store.
func (fx *fixture) versions() []string {
	fx.t.Helper()
	versions, err := fx.models.Versions(context.Background(), "demo")
	if err != nil {
		fx.t.Fatal(err)
	}
	var names []string
	for _, v := range versions {
		names = append(names, strconv.FormatInt(v, 10))
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
// with no other step than data, and trains nothing; unless the run failed
// for good, or recorded that the gateway acknowledged the canary (which
// the gateway's routing no longer shows), or runs took the version up
// maxResumes times already, or a newer version is in the model store.
func TestUncanariedVersionOnRestart(t *testing.T) {
	f := func(name string, runs []Run, versions []string, wantRuns int) {
		t.Run(name, func(t *testing.T) {
			fx := newFixture(t)
			for _, v := range versions {
				n, _ := strconv.ParseInt(v, 10, 64)
				fx.publish(n, demoVersion)
			}
			fx.seed(slices.Clone(runs)...)
			s, _ := fx.open()
			stored, err := s.Runs("", 0)
			if err != nil || len(stored) != wantRuns {
				t.Fatalf("runs %+v (%v), want %d", stored, err, wantRuns)
			}
			if wantRuns == len(runs) {
				if calls, _ := fx.gateway.snapshot(); len(calls) != 0 {
					t.Fatalf("calls to the gateway %v, want none", calls)
				}
				return
			}
			r := waitRun(t, s, "2", finished)
			if r.Outcome != Succeeded || r.Candidate != "2" || r.RetryOf != "1" || r.Trigger != "x" || r.Metrics == nil || r.Metrics.BaseVersion != "1" || r.CanaryStarted.IsZero() {
				t.Fatalf("run 2: %+v, want the canary of version 2 started for event x", r)
			}
			if names := stepNames(t, r); !slices.Equal(names, []string{"data", "canary"}) ||
				!strings.Contains(r.Steps[0].Log[0], "version 2, last tried by run 1, never got its canary") ||
				!strings.Contains(r.Steps[0].Log[0], "(take-up 1 of 3)") || r.ResumedFrom != "1" {
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
	failed := func(reason string, transient bool) Run {
		return Run{Model: "demo", Trigger: "x", Outcome: Failed, Started: started, Finished: started, Notified: true,
			Reason: reason, Transient: transient, Candidate: "2", Metrics: metrics, Steps: append(made, Step{Name: "canary", Error: reason})}
	}
	unreachable := failed("cannot reload the gateway: connection refused (gave up after 9 attempts in 2m0s)", true)
	f("stopped before the canary", []Run{{Model: "demo", Trigger: "x", Outcome: Running, Started: started,
		Candidate: "2", Metrics: metrics, Steps: made}}, []string{"2"}, 2)
	f("gateway unreachable", []Run{unreachable}, []string{"2"}, 2)
	f("a newer version since", []Run{unreachable}, []string{"2", "3"}, 1)
	f("canary refused", []Run{failed("cannot start the canary of version 2: the gateway answered 400 Bad Request", false)}, []string{"2"}, 1)
	f("never ready", []Run{failed("version 2 is not ready on the gateway after 2m0s (gateway.ready_timeout): the gateway answered 404 Not Found", false)}, []string{"2"}, 1)
	acknowledged := failed("interrupted: the retrain service stopped during the canary step", true)
	acknowledged.CanaryStarted = started
	f("canary acknowledged, then a crash", []Run{acknowledged}, []string{"2"}, 1)
	crashed := Run{Model: "demo", Trigger: "x", Outcome: Running, Started: started, Candidate: "2", Metrics: metrics,
		Steps: append(made, Step{Name: "canary"}), CanaryStarted: started}
	f("canary acknowledged, running at the crash", []Run{crashed}, []string{"2"}, 1)
	takenUp := []Run{unreachable}
	for i := range maxResumes {
		r := unreachable
		r.ResumedFrom = strconv.Itoa(i + 1)
		takenUp = append(takenUp, r)
	}
	f("taken up enough", takenUp, []string{"2"}, 1+maxResumes)
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
	if last := r.Steps[len(r.Steps)-1]; r.Outcome != Failed || r.Candidate != "2" || last.Name != "canary" || !r.Transient ||
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

// TestUncanariedVersionTakenUpAtMostMaxResumes keeps the gateway
// answering 503 to the reload: the version the first run published is
// taken up by the next drift runs and by a restart, maxResumes runs in
// all, and then the next drift run trains a new version.
func TestUncanariedVersionTakenUpAtMostMaxResumes(t *testing.T) {
	fx := newFixture(t)
	fx.cfg.Gateway.ReadyTimeout = 500 * time.Millisecond
	since := time.Now().Add(-time.Hour)
	fx.captureShifted(23, shiftedRows, since)
	fx.gateway.refuse("POST /admin/reload", http.StatusServiceUnavailable)
	s, url := fx.open()
	drift := func(want []string) Run {
		t.Helper()
		a := send(t, url, driftEvent(t, since), http.StatusAccepted)
		return checkRun(t, waitRun(t, s, a.Run, finished), want)
	}
	made := []string{"data", "train", "validate", "publish", "canary"}
	if r := drift(made); r.Candidate != "2" || r.ResumedFrom != "" {
		t.Fatalf("run 1: %+v", r)
	}
	takeUp := []string{"data", "canary"}
	second := drift(takeUp)
	if second.Candidate != "2" || second.ResumedFrom == "" {
		t.Fatalf("run 2: %+v, want version 2 taken up", second)
	}
	// A restart queues the second take-up; the third is the last one, and
	// a restart after it queues nothing. (Run ids are not dense: an id
	// that lost a race for the model's queue is not used.)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, url = fx.open()
	third := checkRun(t, waitRun(t, s, retryOf(t, s, second.ID), finished), takeUp)
	if third.Candidate != "2" || third.ResumedFrom != second.ID {
		t.Fatalf("run 3: %+v, want version 2 taken up after the restart", third)
	}
	if r := drift(takeUp); r.Candidate != "2" || r.ResumedFrom != third.ID {
		t.Fatalf("run 4: %+v, want version 2 taken up", r)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, url = fx.open()
	if runs, err := s.Runs("", 0); err != nil || len(runs) != 4 {
		t.Fatalf("runs %+v (%v), want none queued after %d take-ups", runs, err, maxResumes)
	}
	a := send(t, url, driftEvent(t, since), http.StatusAccepted)
	if r := waitRun(t, s, a.Run, finished); !trainedAnew(r) {
		t.Fatalf("run 5: %+v, want a new version trained", r)
	}
}

// retryOf waits for the run that does run id again and returns its id.
func retryOf(t *testing.T, s *Service, id string) string {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		runs, err := s.Runs("", 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range runs {
			if r.RetryOf == id {
				return r.ID
			}
		}
	}
	t.Fatalf("no run does run %s again", id)
	return ""
}

// trainedAnew says whether r trained a candidate (whether validation
// let it through or not) rather than take up a version published before.
func trainedAnew(r Run) bool {
	return len(r.Steps) > 1 && r.Steps[1].Name == "train" && r.ResumedFrom == "" && r.Candidate != "2"
}

// checkRun fails the test unless r failed in its canary step for a reason
// that may pass, after the steps want.
func checkRun(t *testing.T, r Run, want []string) Run {
	t.Helper()
	var names []string
	for _, st := range r.Steps {
		names = append(names, st.Name)
	}
	if r.Outcome != Failed || !r.Transient || !slices.Equal(names, want) || !strings.Contains(r.Reason, "cannot reload the gateway") {
		t.Fatalf("run %s: %s %q (transient %v), steps %v; want failed for a reason that may pass, steps %v", r.ID, r.Outcome, r.Reason, r.Transient, names, want)
	}
	return r
}

// TestCanaryFailedForGood fails a run's canary step for a reason that
// will not pass: the gateway refuses the canary section, or the version
// never becomes ready. The version is not taken up: the next drift run
// trains a new candidate.
func TestCanaryFailedForGood(t *testing.T) {
	f := func(name, call string, code int, wantReason string) {
		t.Run(name, func(t *testing.T) {
			fx := newFixture(t)
			fx.cfg.Gateway.ReadyTimeout = time.Second
			since := time.Now().Add(-time.Hour)
			fx.captureShifted(24, shiftedRows, since)
			fx.gateway.refuse(call, code)
			s, url := fx.open()
			a := send(t, url, driftEvent(t, since), http.StatusAccepted)
			r := waitRun(t, s, a.Run, finished)
			if r.Outcome != Failed || r.Transient || r.Candidate != "2" || !strings.Contains(r.Reason, wantReason) {
				t.Fatalf("run 1: %s %q (transient %v), candidate %q; want failed for good with %q", r.Outcome, r.Reason, r.Transient, r.Candidate, wantReason)
			}
			fx.gateway.refuse(call, 0)
			a = send(t, url, driftEvent(t, since), http.StatusAccepted)
			r = waitRun(t, s, a.Run, finished)
			if !trainedAnew(r) {
				t.Fatalf("run 2: %+v, want a new version trained", r)
			}
		})
	}
	f("canary refused", "POST /admin/models/demo/canary", http.StatusBadRequest, "the gateway answered 400 Bad Request")
	f("never ready", "GET /v2/models/demo/versions/2/ready", http.StatusNotFound, "is not ready on the gateway")
}

// TestCanaryStartAnswerLost has the gateway start the canary and lose its
// answer: the run sees the canary in the gateway's routing, records it as
// started and succeeds, without a second POST that would restart it.
func TestCanaryStartAnswerLost(t *testing.T) {
	fx := newFixture(t)
	since := time.Now().Add(-time.Hour)
	fx.captureShifted(25, shiftedRows, since)
	fx.gateway.mu.Lock()
	fx.gateway.loseAnswerOn = "POST /admin/models/demo/canary"
	fx.gateway.mu.Unlock()
	s, url := fx.open()
	a := send(t, url, driftEvent(t, since), http.StatusAccepted)
	r := waitRun(t, s, a.Run, finished)
	if stepNames(t, r); r.Outcome != Succeeded || r.Candidate != "2" || r.CanaryStarted.IsZero() {
		t.Fatalf("run: %s %q, candidate %q, canary started %v; want succeeded with the canary of version 2 started", r.Outcome, r.Reason, r.Candidate, r.CanaryStarted)
	}
	calls, _ := fx.gateway.snapshot()
	fx.gateway.mu.Lock()
	starts := fx.gateway.canaryStarts
	fx.gateway.mu.Unlock()
	if starts != 1 || !slices.Contains(calls, "GET /admin/models/demo/routing") {
		t.Fatalf("the canary started %d times, want once; calls %v", starts, calls)
	}
	if log := strings.Join(r.Steps[len(r.Steps)-1].Log, "\n"); !strings.Contains(log, "took effect, its answer lost") {
		t.Fatalf("canary step log:\n%s", log)
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
