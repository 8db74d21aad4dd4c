package router

import (
	"testing"
	"time"
)

// TestChecksAgreeWithTheAnalysis: the checks (which the console's step
// history shows) say what the analysis decided: a failed check for a
// failed analysis and none otherwise, and a held analysis where too
// little traffic left a check unjudged.
func TestChecksAgreeWithTheAnalysis(t *testing.T) {
	cfg := CanaryConfig{Version: "2", StepWeights: []int{10, 50}, Interval: time.Second, Threshold: 3, MinRequests: 10,
		MaxErrorRate: 0.05, MaxLatencyRatio: 1.5, MinAgreement: 0.9, AgreementPercent: 10, MaxAccuracyDrop: 0.05}
	stats := func(requests, errors int64, p99 time.Duration, labeled, correct int64) Stats {
		return Stats{Requests: requests, Errors: errors, P99: p99, Labeled: labeled, Correct: correct}
	}
	f := func(s Snapshot, want Kind) {
		t.Helper()
		c := Canary{Config: cfg}
		start := time.Unix(0, 0)
		c.Start(start)
		tr := c.Evaluate(start.Add(time.Second), s)
		if tr.Kind == KindAdvanced {
			tr.Kind = KindNone
		}
		if tr.Kind != want {
			t.Fatalf("the analysis of %+v: %s, want %s", s, tr.Kind, want)
		}
		checks := cfg.Checks(s)
		failed, skipped := 0, 0
		for _, ch := range checks {
			switch ch.Status {
			case CheckFailed:
				failed++
			case CheckSkipped:
				skipped++
			}
		}
		switch {
		case tr.Kind == KindFailed && (failed == 0 || checks[0].Status != CheckPassed):
			t.Fatalf("a failed analysis shows checks %+v", checks)
		case tr.Kind == KindHeld && failed-boolInt(checks[0].Status == CheckFailed) != 0:
			t.Fatalf("a held analysis shows checks %+v", checks)
		case tr.Kind == KindHeld && checks[0].Status != CheckFailed && skipped == 0:
			t.Fatalf("a held analysis with enough requests shows no unjudged check: %+v", checks)
		case tr.Kind == KindNone && (failed != 0 || checks[0].Status != CheckPassed):
			t.Fatalf("a passed analysis shows checks %+v", checks)
		}
	}
	ms := time.Millisecond
	f(Snapshot{Canary: stats(100, 0, 10*ms, 50, 45), Primary: stats(900, 0, 10*ms, 50, 45), AgreementSamples: 50, Agreed: 49}, KindNone)
	f(Snapshot{Canary: stats(5, 0, 10*ms, 0, 0), Primary: stats(900, 0, 10*ms, 0, 0)}, KindHeld)
	f(Snapshot{Canary: stats(100, 10, 10*ms, 0, 0), Primary: stats(900, 0, 10*ms, 0, 0), AgreementSamples: 50, Agreed: 50}, KindFailed)
	f(Snapshot{Canary: stats(100, 0, 20*ms, 0, 0), Primary: stats(900, 0, 10*ms, 0, 0), AgreementSamples: 50, Agreed: 50}, KindFailed)
	f(Snapshot{Canary: stats(100, 0, 10*ms, 50, 30), Primary: stats(900, 0, 10*ms, 50, 45), AgreementSamples: 50, Agreed: 50}, KindFailed)
	f(Snapshot{Canary: stats(100, 0, 10*ms, 0, 0), Primary: stats(900, 0, 10*ms, 0, 0), AgreementSamples: 50, Agreed: 40}, KindFailed)
	f(Snapshot{Canary: stats(100, 0, 10*ms, 0, 0), Primary: stats(900, 0, 10*ms, 0, 0), AgreementSamples: 5, Agreed: 5}, KindHeld)
	f(Snapshot{Canary: stats(100, 0, 10*ms, 0, 0), Primary: stats(0, 0, 0, 0, 0), AgreementSamples: 50, Agreed: 50}, KindNone)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
