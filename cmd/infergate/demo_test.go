package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// TestDemoLoop runs `infergate demo` headless: drift, webhook, retrain,
// canary and promotion, with the accuracy on the shifted traffic back
// close to where it was before the shift.
func TestDemoLoop(t *testing.T) {
	var out bytes.Buffer
	o := demoOptions{
		work: t.TempDir(), listen: "127.0.0.1:0", rate: 400, shiftAfter: 6 * time.Second, recovery: 6 * time.Second,
		labelDelay: 500 * time.Millisecond, canaryEvery: 2 * time.Second, timeout: 3 * time.Minute, statusEvery: 2 * time.Second,
		gatewayConfig: "../../configs/demo.yaml", retrainConfig: "../../configs/retrain.yaml", model: "../../configs/models/demo",
	}
	res, err := runDemo(context.Background(), o, &out)
	t.Logf("the demo printed:\n%s", out.String())
	if err != nil {
		t.Fatal(err)
	}
	if res.promoted != "2" {
		t.Fatalf("promoted version %q, want 2", res.promoted)
	}
	if res.shifted > res.before-0.1 || res.after < res.before-0.08 {
		t.Fatalf("accuracy %.3f before the shift, %.3f after it, %.3f after the promotion", res.before, res.shifted, res.after)
	}
	for _, want := range []string{"drift.detected", "webhook verified", "step train done", "published version 2", "promoted", "loop closed"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the demo never printed %q", want)
		}
	}
}

// TestDemoLoopThreeReplicas runs `infergate demo --replicas 3`: three
// gateway processes on one engine, traffic and labels spread over them,
// the leader killed with SIGKILL in the middle of the canary. Another
// replica takes over, every replica loads the retrained version, and the
// loop closes.
func TestDemoLoopThreeReplicas(t *testing.T) {
	// The replicas are this test binary, which acts as infergate when asked.
	t.Setenv("INFERGATE_TEST_MAIN", "1")
	var out bytes.Buffer
	o := demoOptions{
		work: t.TempDir(), listen: "127.0.0.1:0", rate: 400, shiftAfter: 6 * time.Second, recovery: 6 * time.Second,
		labelDelay: 500 * time.Millisecond, canaryEvery: 2 * time.Second, timeout: 3 * time.Minute, statusEvery: 2 * time.Second,
		gatewayConfig: "../../configs/demo.yaml", retrainConfig: "../../configs/retrain.yaml", model: "../../configs/models/demo",
		replicas: 3,
	}
	res, err := runDemo(context.Background(), o, &out)
	t.Logf("the demo printed:\n%s", out.String())
	if err != nil {
		t.Fatal(err)
	}
	if res.promoted != "2" {
		t.Fatalf("promoted version %q, want 2", res.promoted)
	}
	// The shifted rule is harder to learn than the first one: candidates
	// trained on a few thousand rows score 0.82 to 0.87 on it, against
	// 0.91 for version 1 before the shift, and the measure after the
	// promotion includes the seconds v1 still answers. Recovery is
	// getting back most of what the shift took (about 0.2).
	if res.after < res.before-0.08 {
		t.Fatalf("accuracy %.3f before the shift, %.3f after the promotion", res.before, res.after)
	}
	printed := out.String()
	for _, want := range []string{"3 gateway replicas", "SIGKILL to gateway-", "leads now", "restarted and ready", "published version 2", "loop closed"} {
		if !strings.Contains(printed, want) {
			t.Errorf("the demo never printed %q", want)
		}
	}
	for _, r := range []string{"gateway-1", "gateway-2", "gateway-3"} {
		if !strings.Contains(printed, r+" gateway  version 2 of demo loaded") && !strings.Contains(printed, r+" gateway version 2 of demo loaded") {
			t.Errorf("%s never said it loaded version 2", r)
		}
	}
}
