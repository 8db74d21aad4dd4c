package gateway

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/infergate/infergate/retrain/capture"
)

// startCapturedDemo serves the demo model with every request captured and
// feedback open, and sends it five requests, "req-0" to "req-4".
func startCapturedDemo(t *testing.T) (*Server, string, Config) {
	t.Helper()
	cfg := testConfig(t)
	demo := cfg.Models["demo"]
	demo.Capture = capture.Config{Sample: 1}
	demo.Auth.OpenFeedback = true
	cfg.Models["demo"] = demo
	srv, url := startServer(t, cfg)
	for i := range 5 {
		body := strings.Replace(demoRequest, `"req-1"`, fmt.Sprintf(`"req-%d"`, i), 1)
		if code, _, b := call(t, "POST", url+"/v2/models/demo/infer", []byte(body)); code != 200 {
			t.Fatalf("infer: %d %s", code, b)
		}
	}
	return srv, url, cfg
}

func TestCaptureAndFeedback(t *testing.T) {
	srv, url, cfg := startCapturedDemo(t)
	f := func(body string, wantCode int, wantBody string) {
		t.Helper()
		code, _, b := call(t, "POST", url+"/v2/models/demo/feedback", []byte(body))
		if code != wantCode || !strings.Contains(string(b), wantBody) {
			t.Fatalf("feedback %s: %d %s, want %d with %q", body, code, b, wantCode, wantBody)
		}
	}
	f(`{"id": "req-0", "label": [1, 0]}`, 200, `"recorded":1`)
	f(`[{"id": "req-1", "label": [0, 0]}, {"id": "req-2", "label": [1, 1]}]`, 200, `"recorded":2`)
	f(`{"id": "req-1", "label": [1, 1]}`, 200, `"recorded":1`) // the last label wins
	f(`{"label": 1}`, 400, `id\" must be`)
	f(`{"id": "x"}`, 400, `label\" is missing`)
	f(`[]`, 400, "no labels")
	f(`{"id": `, 400, "not JSON")
	if code, _, _ := call(t, "GET", url+"/v2/models/demo/feedback", nil); code != 405 {
		t.Fatalf("GET feedback: %d, want 405", code)
	}

	// Labels score the version that answered: req-3 labeled as predicted,
	// req-4 against it.
	v := srv.serving.Load().models["demo"].versions[0]
	v.interval.take()
	p, ok := srv.serving.Load().models["demo"].predictions.Get("req-3")
	if !ok || len(p.classes) != 2 {
		t.Fatalf("no remembered prediction of req-3: %+v", p)
	}
	f(fmt.Sprintf(`{"id": "req-3", "label": [%d, %d]}`, p.classes[0], p.classes[1]), 200, "recorded")
	f(fmt.Sprintf(`{"id": "req-4", "label": [%d, %d]}`, 1-p.classes[0], 1-p.classes[1]), 200, "recorded")
	f(fmt.Sprintf(`{"id": "req-3", "label": [%d, %d]}`, p.classes[0], p.classes[1]), 200, "recorded") // counted once
	if got := v.interval.take(); got.labeled != 4 || got.correct != 2 {
		t.Fatalf("scored %d labeled rows, %d correct; want 4 and 2", got.labeled, got.correct)
	}

	srv.Shutdown(context.Background()) // flushes the capture
	examples, err := capture.ReadLabeled(context.Background(), testEngine(t, cfg.StateDir).Conn, "demo", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{}
	for _, e := range examples {
		if got := len(e.Inputs["input"]); got != 8 {
			t.Fatalf("example %s row %d has %d input values, want 8", e.ID, e.Row, got)
		}
		if e.Replica != srv.cp.cluster.Replica {
			t.Fatalf("example %s came from replica %q, want %q", e.ID, e.Replica, srv.cp.cluster.Replica)
		}
		labels[fmt.Sprintf("%s/%d", e.ID, e.Row)] = string(e.Label)
	}
	want := map[string]string{"req-0/0": "1", "req-0/1": "0", "req-1/0": "1", "req-1/1": "1", "req-2/0": "1", "req-2/1": "1"}
	for k, v := range want {
		if labels[k] != v {
			t.Errorf("label of %s: %q, want %q (all: %v)", k, labels[k], v, labels)
		}
	}
}
