package pipeline

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/infergate/infergate/drift"
	"github.com/infergate/infergate/retrain/outbox"
)

func TestReceiver(t *testing.T) {
	fx := newFixture(t)
	s, url := fx.open()
	now := time.Now()
	valid := driftEvent(t, time.Time{})
	validBody, _ := json.Marshal(valid)

	f := func(name string, body []byte, signature string, wantCode int, wantText string) {
		t.Helper()
		code, answer := post(t, url, body, signature)
		if code != wantCode || !strings.Contains(answer, wantText) {
			t.Errorf("%s: status %d %s, want %d with %q", name, code, strings.TrimSpace(answer), wantCode, wantText)
		}
	}
	sign := func(body []byte) string { return outbox.Sign([]byte(testSecret), now, body) }
	f("valid", validBody, sign(validBody), http.StatusAccepted, `"status": "queued"`)
	f("replay", validBody, sign(validBody), http.StatusOK, `"status": "queued"`)
	f("missing signature", validBody, "", http.StatusUnauthorized, "missing infergate-signature")
	f("wrong secret", validBody, outbox.Sign([]byte("guess"), now, validBody), http.StatusUnauthorized, "bad signature")
	f("malformed signature", validBody, "v1=abc", http.StatusUnauthorized, "malformed")
	stale := driftEvent(t, time.Time{})
	staleBody, _ := json.Marshal(stale)
	f("stale", staleBody, outbox.Sign([]byte(testSecret), now.Add(-6*time.Minute), staleBody), http.StatusUnauthorized, "stale")
	// Once run 1 has started, the next drift event queues another.
	waitRun(t, s, "1", func(r Run) bool { return r.Outcome != Queued })
	f("stale then fresh", staleBody, sign(staleBody), http.StatusAccepted, `"run": "2"`)
	f("malformed body", []byte("{not json"), sign([]byte("{not json")), http.StatusBadRequest, "cannot decode the CloudEvent")
	noSpec := []byte(`{"specversion":"0.3","id":"x","source":"s","type":"t"}`)
	f("not CloudEvents 1.0", noSpec, sign(noSpec), http.StatusBadRequest, "specversion")

	other, _ := outbox.NewEvent("/infergate/gateway", outbox.TypeCanaryPromoted, "demo/1", nil)
	otherBody, _ := json.Marshal(other)
	f("other type", otherBody, sign(otherBody), http.StatusAccepted, "starts no run")
	f("other type replayed", otherBody, sign(otherBody), http.StatusOK, "starts no run")
	unknown, _ := outbox.NewEvent("/infergate/gateway", outbox.TypeDriftDetected, "iris/4", nil)
	unknownBody, _ := json.Marshal(unknown)
	f("unknown model", unknownBody, sign(unknownBody), http.StatusAccepted, `no pipeline is configured for model \"iris\"`)
	anonymous, _ := outbox.NewEvent("/infergate/gateway", outbox.TypeDriftDetected, "", map[string]any{"window": map[string]any{}})
	anonymousBody, _ := json.Marshal(anonymous)
	f("no model", anonymousBody, sign(anonymousBody), http.StatusBadRequest, "must name its model")
	fromData, _ := outbox.NewEvent("/infergate/gateway", outbox.TypeDriftDetected, "", map[string]any{"model": "demo", "version": "1"})
	fromDataBody, _ := json.Marshal(fromData)
	f("model in data", fromDataBody, sign(fromDataBody), http.StatusAccepted, `"status": "`)

	// Nothing was captured, so the run fails on its data.
	r := waitRun(t, s, "1", finished)
	if r.Outcome != Failed || !strings.Contains(r.Reason, "not enough labeled data") || r.Trigger != valid.ID || r.DriftVersion != "1" {
		t.Fatalf("run 1: %+v", r)
	}
	if len(r.Steps) != 1 || r.Steps[0].Name != "data" || r.Steps[0].Error == "" || r.Metrics == nil || r.Metrics.BaseVersion != "1" {
		t.Fatalf("run 1 steps: %+v, metrics %+v", r.Steps, r.Metrics)
	}
	resp, err := http.Get(url + "/runs/1")
	if err != nil {
		t.Fatal(err)
	}
	var got Run
	json.NewDecoder(resp.Body).Decode(&got)
	resp.Body.Close()
	if resp.StatusCode != 200 || got.ID != "1" || got.Outcome != r.Outcome {
		t.Fatalf("GET /runs/1: %d %+v", resp.StatusCode, got)
	}
	for path, want := range map[string]int{"/runs/99": 404, "/runs/x": 404, "/runs?limit=x": 400, "/runs?model=demo&limit=1": 200} {
		resp, err := http.Get(url + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s: %d, want %d", path, resp.StatusCode, want)
		}
	}
	runs, err := s.Runs("", 0)
	if err != nil || len(runs) < 1 || runs[len(runs)-1].ID != "1" {
		t.Fatalf("runs: %v %+v", err, runs)
	}
}

// TestRunSucceeds retrains the demo model on captured traffic of a shifted
// concept: the candidate beats version 1, is published as version 2 and
// canaried, and retrain.succeeded is delivered.
func TestRunSucceeds(t *testing.T) {
	// Folders another process left (one killed while it published) are
	// not this run's.
	before, _ := filepath.Glob(filepath.Join(os.TempDir(), "infergate-publish-demo-*"))
	fx := newFixture(t)
	fx.model(func(m *ModelConfig) { m.LabelWait = time.Minute })
	s, url := fx.open()
	since := time.Now().Add(-time.Hour)
	ev := driftEvent(t, since)
	a := send(t, url, ev, http.StatusAccepted)
	// The run waits for labeled rows, which arrive after the event.
	waitRun(t, s, a.Run, func(r Run) bool {
		return len(r.Steps) == 1 && len(r.Steps[0].Log) == 2 && strings.HasPrefix(r.Steps[0].Log[1], "waiting for labeled captured rows: 0 since")
	})
	fx.captureShifted(11, shiftedRows, since)
	r := waitRun(t, s, a.Run, finished)
	if r.Outcome != Succeeded || r.Candidate != "2" {
		t.Fatalf("run: %s %q: %+v", r.Outcome, r.Reason, r)
	}
	var names []string
	for _, st := range r.Steps {
		names = append(names, st.Name)
		if st.Error != "" || len(st.Log) == 0 || st.Duration <= 0 {
			t.Errorf("step %+v", st)
		}
	}
	if !slices.Equal(names, []string{"data", "train", "validate", "publish", "canary"}) {
		t.Fatalf("steps %v", names)
	}
	m := r.Metrics
	t.Logf("metrics: %+v", *m)
	if m.RecentRowsByReplica["gateway-a"] != shiftedRows || len(m.RecentRowsByReplica) != 1 {
		t.Fatalf("recent rows by replica %v, want gateway-a=%d", m.RecentRowsByReplica, shiftedRows)
	}
	if m.RecentRows != shiftedRows || m.RecentAccuracy < m.BaseRecentAccuracy+0.2 || m.BaseHoldoutAccuracy-m.HoldoutAccuracy > 0.03 || m.LatencyP99 <= 0 {
		t.Fatalf("metrics %+v", *m)
	}

	dir := fx.fetch(2)
	ref, err := drift.LoadReference(filepath.Join(dir, drift.ReferenceFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(ref.Features) != 8 || ref.Features[utilization].Name != "utilization" || len(ref.Predictions) != 1 || ref.Predictions[0].Name != "output[1]" || ref.Rows != m.RecentRows {
		// The profile is of the recent rows, the traffic the candidate serves.
		t.Fatalf("reference: %d features, prediction %s, rows %d, want 8, output[1], %d", len(ref.Features), ref.Predictions[0].Name, ref.Rows, m.RecentRows)
	}
	var published struct {
		Version        string  `json:"version"`
		RecentAccuracy float64 `json:"recent_accuracy"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "metrics.json"))
	if err != nil || json.Unmarshal(b, &published) != nil || published.Version != "2" || published.RecentAccuracy != m.RecentAccuracy {
		t.Fatalf("metrics.json: %v %s", err, b)
	}
	if _, err := os.Stat(filepath.Join(dir, "model.onnx")); err != nil {
		t.Fatal(err)
	}
	left, _ := filepath.Glob(filepath.Join(os.TempDir(), "infergate-publish-demo-*"))
	if left = slices.DeleteFunc(left, func(p string) bool { return slices.Contains(before, p) }); len(left) > 0 {
		t.Fatalf("left behind: %v", left)
	}

	calls, canary := fx.gateway.snapshot()
	// The run reads the routing, keeps traffic on version 1 before
	// publishing (the split was empty), reloads, waits and starts the canary.
	if len(calls) < 4 || calls[0] != "GET /admin/models/demo/routing" || calls[1] != "PUT /admin/models/demo/routing" ||
		calls[2] != "POST /admin/reload" || calls[len(calls)-1] != "POST /admin/models/demo/canary" {
		t.Fatalf("gateway calls %v", calls)
	}
	fx.gateway.mu.Lock()
	pinned := string(fx.gateway.routing)
	fx.gateway.mu.Unlock()
	if !strings.Contains(pinned, `"split":{"1":1}`) || !strings.Contains(pinned, `"shadow_max_in_flight":64`) {
		t.Fatalf("routing put %s, want the split pinned to version 1 and the rest kept", pinned)
	}
	var body map[string]any
	if json.Unmarshal(canary, &body) != nil || body["version"] != "2" || body["interval"] != "1s" {
		t.Fatalf("canary body %s", canary)
	}

	events := fx.events.wait(t, 1)
	var data eventData
	json.Unmarshal(events[0].Data, &data)
	if events[0].Type != outbox.TypeRetrainSucceeded || events[0].Subject != "demo/2" || data.Run != r.ID || data.Version != "2" ||
		data.Trigger != ev.ID || data.Metrics == nil || data.Metrics.RecentAccuracy != m.RecentAccuracy {
		t.Fatalf("event %+v, data %+v", events[0], data)
	}
	if r := waitRun(t, s, a.Run, func(r Run) bool { return r.Notified }); r.EventID != events[0].ID {
		t.Fatalf("event id %q, run records %q", events[0].ID, r.EventID)
	}
}

// TestRunFails fails runs at validation and at data selection: nothing is
// published or canaried, and retrain.failed tells why.
func TestRunFails(t *testing.T) {
	f := func(name string, change func(*ModelConfig), wantReason string) {
		t.Run(name, func(t *testing.T) {
			fx := newFixture(t)
			fx.model(change)
			since := time.Now().Add(-time.Hour)
			fx.captureShifted(12, 300, since)
			s, url := fx.open()
			a := send(t, url, driftEvent(t, since), http.StatusAccepted)
			r := waitRun(t, s, a.Run, finished)
			if r.Outcome != Failed || !strings.Contains(r.Reason, wantReason) || r.Candidate != "" {
				t.Fatalf("run: %s %q, want failed with %q", r.Outcome, r.Reason, wantReason)
			}
			if last := r.Steps[len(r.Steps)-1]; last.Error == "" {
				t.Fatalf("the last step %+v has no error", last)
			}
			if versions := fx.versions(); !slices.Equal(versions, []string{"1"}) {
				t.Fatalf("the model store holds versions %v", versions)
			}
			if calls, _ := fx.gateway.snapshot(); len(calls) > 1 || len(calls) == 1 && calls[0] != "GET /admin/models/demo/routing" {
				t.Fatalf("the gateway was asked more than the routing: %v", calls)
			}
			events := fx.events.wait(t, 1)
			var data eventData
			json.Unmarshal(events[0].Data, &data)
			if events[0].Type != outbox.TypeRetrainFailed || events[0].Subject != "demo/1" || data.Reason != r.Reason || data.Outcome != Failed {
				t.Fatalf("event %+v, data %+v", events[0], data)
			}
		})
	}
	f("latency", func(m *ModelConfig) { m.Validate.MaxLatencyP99 = time.Nanosecond }, "exceeds max_latency_p99 1ns")
	f("not enough data", func(m *ModelConfig) { m.MinRows = 301 }, "not enough labeled data: 300 labeled captured rows since")
	f("no improvement", func(m *ModelConfig) { m.Validate.MinImprovement = 0.99 }, "by more than min_improvement 0.99")
}

// TestRestart reopens a store that a crash left with a running and a
// queued run: the running one is marked failed (and told), the queued one
// runs, and every run is still there after another restart.
func TestRestart(t *testing.T) {
	fx := newFixture(t)
	started := time.Now().Add(-time.Minute).UTC()
	fx.seed(
		Run{Model: "demo", Trigger: "a", Outcome: Succeeded, Notified: true, Candidate: "2", Steps: []Step{}},
		Run{Model: "demo", Trigger: "b", Outcome: Running, Started: started, Steps: []Step{{Name: "data"}, {Name: "train"}}},
		Run{Model: "demo", Trigger: "c", Outcome: Queued, Steps: []Step{}},
	)
	if err := fx.store().putSeen("c", seenEvent{At: time.Now(), Answer: `{"status": "queued", "run": "3"}`}); err != nil {
		t.Fatal(err)
	}

	s, url := fx.open()
	r := waitRun(t, s, "2", finished)
	if r.Outcome != Failed || r.Reason != "interrupted: the retrain service stopped during the train step" {
		t.Fatalf("run 2: %+v", r)
	}
	events := fx.events.wait(t, 1)
	if events[0].Type != outbox.TypeRetrainFailed || !strings.Contains(string(events[0].Data), `"run":"2"`) {
		t.Fatalf("event %+v %s", events[0], events[0].Data)
	}
	r = waitRun(t, s, "3", finished)
	if r.Outcome != Failed || !strings.Contains(r.Reason, "not enough labeled data") {
		t.Fatalf("run 3: %+v", r)
	}
	if a := send(t, url, outbox.Event{ID: "c", Source: "/x", Type: outbox.TypeDriftDetected, Subject: "demo/1"}, http.StatusOK); a.Run != "3" {
		t.Fatalf("event c again: %+v, want the first answer", a)
	}
	fx.events.wait(t, 2)
	// The receiver holds the second event before the outbox has its
	// answer: closing then hands the delivery back, and the reopened
	// service delivers it again (at least once). Wait for the outbox to
	// record it, so that a third event is an outcome told again.
	waitDelivered(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	runs, err := ListRuns(fx.engine.Conn)
	if err != nil {
		t.Fatal(err)
	}
	var outcomes []string
	for _, r := range runs {
		outcomes = append(outcomes, r.ID+":"+r.Outcome)
	}
	if !slices.Equal(outcomes, []string{"3:failed", "2:failed", "1:succeeded"}) {
		t.Fatalf("after a restart: %v", outcomes)
	}
	fx.open()
	time.Sleep(200 * time.Millisecond)
	if events := fx.events.wait(t, 2); len(events) != 2 {
		t.Fatalf("outcomes told again after a restart: %+v", events)
	}
}

// gatedCommand is a training command that waits for the file gate, then
// offers the current version as the candidate (which validation refuses:
// it is no better). It gives up once the gate's folder is gone, so that
// one a killed service left behind ends with the test.
func gatedCommand(t *testing.T, gate string) []string {
	model, err := filepath.Abs("../../configs/models/demo/1/model.onnx")
	if err != nil {
		t.Fatal(err)
	}
	return []string{"sh", "-c", `echo "rows: $(($(wc -l < "$INFERGATE_DATA_DIR/train.csv") - 1)) features: $INFERGATE_FEATURES"
while [ ! -e "` + gate + `" ]; do [ -d "` + filepath.Dir(gate) + `" ] || exit 1; sleep 0.02; done
cp "` + model + `" "$INFERGATE_OUTPUT_DIR/model.onnx"`}
}

// TestOneRunAtATime sends three events while a run trains: the second
// queues a run, the third is coalesced into it, and it starts only when
// the first has finished.
func TestOneRunAtATime(t *testing.T) {
	fx := newFixture(t)
	gate := filepath.Join(t.TempDir(), "gate")
	fx.model(func(m *ModelConfig) { m.Train = TrainConfig{Command: gatedCommand(t, gate)} })
	since := time.Now().Add(-time.Hour)
	fx.captureShifted(13, 200, since)
	s, url := fx.open()

	first := send(t, url, driftEvent(t, since), http.StatusAccepted)
	waitRun(t, s, first.Run, func(r Run) bool { return len(r.Steps) == 2 && r.Steps[1].Name == "train" })
	second := send(t, url, driftEvent(t, since), http.StatusAccepted)
	third := driftEvent(t, since)
	coalesced := send(t, url, third, http.StatusAccepted)
	if first.Status != "queued" || second.Status != "queued" || second.Run == first.Run || coalesced.Status != "coalesced" || coalesced.Run != second.Run {
		t.Fatalf("answers %+v %+v %+v", first, second, coalesced)
	}
	if r, _ := s.Run(second.Run); r.Outcome != Queued || !slices.Equal(r.Coalesced, []string{third.ID}) {
		t.Fatalf("second run %+v", r)
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	r1 := waitRun(t, s, first.Run, finished)
	r2 := waitRun(t, s, second.Run, finished)
	if r1.Outcome != Failed || !strings.Contains(r1.Reason, "does not beat version 1's") || r2.Started.Before(r1.Finished) {
		t.Fatalf("runs %+v\n%+v", r1, r2)
	}
	log := strings.Join(r1.Steps[1].Log, "\n")
	if !strings.Contains(log, "| rows: 640 features: age,income,tenure_months,balance,num_products,credit_score,late_payments,utilization") {
		t.Fatalf("train log:\n%s", log)
	}
}

// TestShutdownInterrupts stops the service while a command trains: the
// command is killed and the run recorded as failed.
func TestShutdownInterrupts(t *testing.T) {
	fx := newFixture(t)
	fx.model(func(m *ModelConfig) {
		m.Train = TrainConfig{Command: gatedCommand(t, filepath.Join(t.TempDir(), "never"))}
	})
	since := time.Now().Add(-time.Hour)
	fx.captureShifted(14, 150, since)
	s, url := fx.open()
	a := send(t, url, driftEvent(t, since), http.StatusAccepted)
	waitRun(t, s, a.Run, func(r Run) bool { return len(r.Steps) == 2 })
	start := time.Now()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 4*time.Second {
		t.Fatalf("Close took %s", took)
	}
	runs, err := ListRuns(fx.engine.Conn)
	if err != nil || len(runs) != 1 {
		t.Fatal(err, runs)
	}
	if r := runs[0]; r.Outcome != Failed || !strings.HasPrefix(r.Reason, "interrupted: the retrain service stopped during the train step") {
		t.Fatalf("run %+v", r)
	}
}

// TestInterruptedRunIsDoneAgain restarts after a crash during a run, with
// nothing else queued: the run is recorded as interrupted and a new one,
// for the same event, runs in its place; also when the crash came during
// the restart's own recovery, after it had queued the new run and before
// it recorded the interruption: then no second one is queued.
func TestInterruptedRunIsDoneAgain(t *testing.T) {
	f := func(name string, seeded ...Run) {
		t.Run(name, func(t *testing.T) {
			fx := newFixture(t)
			fx.seed(seeded...)
			s, _ := fx.open()
			if r := waitRun(t, s, "1", finished); r.Outcome != Failed || !strings.Contains(r.Reason, "interrupted") {
				t.Fatalf("run 1: %+v", r)
			}
			r := waitRun(t, s, "2", finished)
			if r.RetryOf != "1" || r.Trigger != "x" || len(r.Steps) == 0 {
				t.Fatalf("run 2: %+v, want a retry of run 1 for event x that ran", r)
			}
			fx.events.wait(t, 2)
			if runs, err := s.Runs("", 0); err != nil || len(runs) != 2 {
				t.Fatalf("runs %+v (%v), want the interrupted one and its retry", runs, err)
			}
		})
	}
	running := Run{Model: "demo", Trigger: "x", Outcome: Running, Started: time.Now().UTC(), Steps: []Step{{Name: "validate"}}}
	f("crash during the run", running)
	f("crash during the recovery", running, Run{Model: "demo", Trigger: "x", RetryOf: "1", Outcome: Queued, Steps: []Step{}})
}
