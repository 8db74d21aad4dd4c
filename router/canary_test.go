package router

import (
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

// healthy is an interval in which the canary does as well as the primary.
var healthy = Snapshot{
	Canary:           Stats{Requests: 100, Errors: 0, P99: 10 * time.Millisecond},
	Primary:          Stats{Requests: 900, Errors: 1, P99: 10 * time.Millisecond},
	AgreementSamples: 90,
	Agreed:           90,
}

func newCanary(t *testing.T, c CanaryConfig) *Canary {
	t.Helper()
	c.Version = "2"
	c = c.WithDefaults()
	if err := c.Validate("canary"); err != nil {
		t.Fatalf("invalid canary config: %v", err)
	}
	canary := &Canary{Config: c}
	if tr := canary.Start(t0); tr.Kind != KindStarted {
		t.Fatalf("Start: got %v, want started", tr)
	}
	return canary
}

// run evaluates one snapshot per interval until the canary stops
// progressing or n intervals pass, and returns the transitions.
func run(c *Canary, n int, s Snapshot) []Transition {
	var trs []Transition
	for i := 1; i <= n && c.Phase == PhaseProgressing; i++ {
		trs = append(trs, c.Evaluate(t0.Add(time.Duration(i)*c.Config.Interval), s))
	}
	return trs
}

func kinds(trs []Transition) []Kind {
	var ks []Kind
	for _, tr := range trs {
		ks = append(ks, tr.Kind)
	}
	return ks
}

func TestCanaryHealthyIsPromotedAfterItsSteps(t *testing.T) {
	f := func(cfg CanaryConfig, wantWeights []int) {
		t.Helper()
		c := newCanary(t, cfg)
		weights := []int{c.Weight}
		trs := run(c, 100, healthy)
		for _, tr := range trs[:len(trs)-1] {
			if tr.Kind != KindAdvanced {
				t.Fatalf("got %v, want advanced", tr)
			}
			weights = append(weights, tr.Weight)
		}
		if !slices.Equal(weights, wantWeights) {
			t.Fatalf("got weights %v, want %v", weights, wantWeights)
		}
		last := trs[len(trs)-1]
		if last.Kind != KindPromoted || last.Weight != 100 || c.Phase != PhasePromoted || c.Weight != 100 {
			t.Fatalf("got %v and phase %s at weight %d, want promoted at 100", last, c.Phase, c.Weight)
		}
	}
	f(CanaryConfig{}, []int{10, 20, 30, 40, 50})
	f(CanaryConfig{StepWeight: 20, MaxWeight: 50}, []int{20, 40, 50})
	f(CanaryConfig{StepWeight: 25, MaxWeight: 100}, []int{25, 50, 75, 100})
	f(CanaryConfig{StepWeights: []int{1, 5, 25, 50}}, []int{1, 5, 25, 50})
	f(CanaryConfig{StepWeights: []int{30}}, []int{30})
	f(CanaryConfig{MinAgreement: 0.95, MaxAccuracyDrop: 0.05}, []int{10, 20, 30, 40, 50})
}

func TestCanaryFaultyIsRolledBackWithinThreshold(t *testing.T) {
	f := func(cfg CanaryConfig, s Snapshot, wantReason string) {
		t.Helper()
		c := newCanary(t, cfg)
		trs := run(c, c.Config.Threshold, s)
		want := slices.Repeat([]Kind{KindFailed}, c.Config.Threshold-1)
		if ks := kinds(trs); !slices.Equal(ks, append(want, KindRolledBack)) {
			t.Fatalf("got %v, want %d failures then rolledback", ks, c.Config.Threshold-1)
		}
		last := trs[len(trs)-1]
		if c.Phase != PhaseRolledBack || c.Weight != 0 || last.Weight != 0 || last.FailedChecks != c.Config.Threshold {
			t.Fatalf("got %v and phase %s at weight %d, want rolled back at 0", last, c.Phase, c.Weight)
		}
		for _, tr := range trs {
			if !strings.Contains(tr.Reason, wantReason) {
				t.Fatalf("reason %q does not contain %q", tr.Reason, wantReason)
			}
		}
	}
	failing := healthy
	failing.Canary.Errors = 8
	f(CanaryConfig{}, failing, "error rate 8.00% (8 of 100) is above max_error_rate 1.00%")
	f(CanaryConfig{Threshold: 2}, failing, "error rate 8.00%")

	disagrees := healthy
	disagrees.Agreed = 72
	f(CanaryConfig{MinAgreement: 0.95}, disagrees, "agreement 80.00% (72 of 90) is below min_agreement 95.00%")

	slow := healthy
	slow.Canary.P99 = 30 * time.Millisecond
	f(CanaryConfig{Threshold: 3}, slow, "p99 latency 30ms is 3.00 times the primary's 10ms, above max_latency_ratio 1.50")

	worse := healthy
	worse.Canary.Labeled, worse.Canary.Correct = 50, 40
	worse.Primary.Labeled, worse.Primary.Correct = 500, 450
	f(CanaryConfig{MaxAccuracyDrop: 0.05}, worse, "accuracy 80.00% is 10.00 points below the primary's 90.00%, more than max_accuracy_drop 0.05")

	// Every failed check is named.
	both := failing
	both.Canary.P99 = 30 * time.Millisecond
	f(CanaryConfig{}, both, "max_error_rate 1.00%; p99 latency 30ms")
}

func TestCanaryChecksThatPass(t *testing.T) {
	f := func(cfg CanaryConfig, s Snapshot) {
		t.Helper()
		c := newCanary(t, cfg)
		if tr := c.Evaluate(t0.Add(c.Config.Interval), s); tr.Kind != KindAdvanced {
			t.Fatalf("got %v, want advanced", tr)
		}
	}
	atLimits := healthy
	atLimits.Canary.Errors = 1                  // exactly max_error_rate
	atLimits.Canary.P99 = 15 * time.Millisecond // exactly max_latency_ratio
	f(CanaryConfig{}, atLimits)

	noPrimaryLatency := healthy
	noPrimaryLatency.Primary = Stats{}
	f(CanaryConfig{}, noPrimaryLatency)

	// The accuracy check needs labels; without them it does not hold.
	fewLabels := healthy
	fewLabels.Canary.Labeled, fewLabels.Canary.Correct = 5, 0
	f(CanaryConfig{MaxAccuracyDrop: 0.01}, fewLabels)

	// Agreement is not judged unless asked for.
	f(CanaryConfig{}, Snapshot{Canary: healthy.Canary, Primary: healthy.Primary})
}

func TestCanaryHoldsWithoutEnoughTraffic(t *testing.T) {
	f := func(cfg CanaryConfig, s Snapshot, wantReason string) {
		t.Helper()
		c := newCanary(t, cfg)
		trs := run(c, 20, s)
		for _, tr := range trs {
			if tr.Kind != KindHeld || tr.Weight != 10 || tr.FailedChecks != 0 || tr.Reason != wantReason {
				t.Fatalf("got %v, want held at weight 10 with no failures because %q", tr, wantReason)
			}
		}
		if c.Phase != PhaseProgressing || c.Weight != 10 || c.Reason != wantReason {
			t.Fatalf("got phase %s at weight %d (%q), want progressing at 10", c.Phase, c.Weight, c.Reason)
		}
	}
	quiet := healthy
	quiet.Canary.Requests, quiet.Canary.Errors = 19, 19
	f(CanaryConfig{}, quiet, "canary served 19 requests, fewer than min_requests 20")
	f(CanaryConfig{MinRequests: 200}, healthy, "canary served 100 requests, fewer than min_requests 200")

	unsampled := healthy
	unsampled.AgreementSamples, unsampled.Agreed = 3, 0
	f(CanaryConfig{MinAgreement: 0.9}, unsampled, "only 3 agreement samples, fewer than min_requests 20")

	// A failed check outweighs one that cannot be judged.
	c := newCanary(t, CanaryConfig{MinAgreement: 0.9})
	unsampled.Canary.Errors = 50
	if tr := c.Evaluate(t0.Add(time.Minute), unsampled); tr.Kind != KindFailed || !strings.Contains(tr.Reason, "error rate") {
		t.Fatalf("got %v, want failed on the error rate", tr)
	}
}

// TestCanaryStartsHoldingOnce checks that of a run of held and failed
// analyses only the first starts holding, and that holding survives the
// JSON round trip a restart makes, so that an event per run, not per
// interval, follows.
func TestCanaryStartsHoldingOnce(t *testing.T) {
	c := newCanary(t, CanaryConfig{Threshold: 10})
	quiet, bad := healthy, healthy
	quiet.Canary.Requests = 3
	bad.Canary.Errors = 50
	type step struct {
		kind    Kind
		from    int
		weight  int
		started bool
	}
	var got []step
	for i, s := range []Snapshot{quiet, quiet, bad, quiet, healthy, bad, healthy, quiet} {
		tr := c.Evaluate(t0.Add(time.Duration(i+1)*time.Minute), s)
		if tr.Measured == nil || *tr.Measured != s {
			t.Fatalf("analysis %d: measured %+v, want the snapshot judged", i, tr.Measured)
		}
		got = append(got, step{tr.Kind, tr.From, tr.Weight, tr.StartedHolding})
		// The gateway stores the canary after every analysis and reads it
		// back after a restart.
		data, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		*c = Canary{}
		if err := json.Unmarshal(data, c); err != nil {
			t.Fatal(err)
		}
	}
	want := []step{
		{KindHeld, 10, 10, true}, {KindHeld, 10, 10, false}, {KindFailed, 10, 10, false}, {KindHeld, 10, 10, false},
		{KindAdvanced, 10, 20, false}, {KindFailed, 20, 20, true}, {KindAdvanced, 20, 30, false}, {KindHeld, 30, 30, true},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got  %v\nwant %v", got, want)
	}
}

func TestCanaryEvaluateWaitsForTheInterval(t *testing.T) {
	c := newCanary(t, CanaryConfig{Interval: 30 * time.Second})
	f := func(at time.Duration, want Kind, wantWeight int) {
		t.Helper()
		if tr := c.Evaluate(t0.Add(at), healthy); tr.Kind != want || c.Weight != wantWeight {
			t.Fatalf("at %s: got %v at weight %d, want %q at %d", at, tr, c.Weight, want, wantWeight)
		}
	}
	f(0, KindNone, 10)
	f(29*time.Second, KindNone, 10)
	f(30*time.Second, KindAdvanced, 20)
	f(59*time.Second, KindNone, 20)
	f(75*time.Second, KindAdvanced, 30)
	f(104*time.Second, KindNone, 30) // the interval counts from the last analysis, at 75s
	f(-time.Hour, KindNone, 30)      // a clock stepped back waits too
	f(105*time.Second, KindAdvanced, 40)
}

func TestCanaryFailuresAddUp(t *testing.T) {
	c := newCanary(t, CanaryConfig{Threshold: 3})
	bad := healthy
	bad.Canary.Errors = 50
	// Failures are not forgiven by passes in between, as in Flagger.
	var trs []Transition
	for i, s := range []Snapshot{bad, healthy, bad, healthy, bad} {
		trs = append(trs, c.Evaluate(t0.Add(time.Duration(i+1)*time.Minute), s))
	}
	want := []Kind{KindFailed, KindAdvanced, KindFailed, KindAdvanced, KindRolledBack}
	if ks := kinds(trs); !slices.Equal(ks, want) {
		t.Fatalf("got %v, want %v", ks, want)
	}
	if !strings.HasPrefix(trs[4].Reason, "3 failed checks reached threshold 3; last: error rate 50.00%") {
		t.Fatalf("got rollback reason %q", trs[4].Reason)
	}
}

func TestCanaryManualPromoteAndRollback(t *testing.T) {
	c := newCanary(t, CanaryConfig{})
	run(c, 2, healthy)
	tr, err := c.Promote(t0.Add(time.Hour))
	if err != nil || tr.Kind != KindPromoted || c.Phase != PhasePromoted || c.Weight != 100 || !c.LastTransition.Equal(t0.Add(time.Hour)) {
		t.Fatalf("Promote: got %v, %v and phase %s at weight %d", tr, err, c.Phase, c.Weight)
	}
	if _, err := c.Promote(t0.Add(time.Hour)); !errors.Is(err, ErrNotProgressing) {
		t.Fatalf("a second Promote: got %v, want %v", err, ErrNotProgressing)
	}
	if _, err := c.Rollback(t0.Add(time.Hour), "too late"); !errors.Is(err, ErrNotProgressing) {
		t.Fatalf("Rollback after Promote: got %v, want %v", err, ErrNotProgressing)
	}
	if tr := c.Evaluate(t0.Add(2*time.Hour), healthy); tr.Kind != KindNone {
		t.Fatalf("Evaluate after Promote: got %v, want no change", tr)
	}

	c = newCanary(t, CanaryConfig{})
	tr, err = c.Rollback(t0.Add(time.Minute), "rolled back by admin: bad outputs")
	if err != nil || tr.Kind != KindRolledBack || tr.Reason != "rolled back by admin: bad outputs" || c.Phase != PhaseRolledBack || c.Weight != 0 {
		t.Fatalf("Rollback: got %v, %v and phase %s at weight %d", tr, err, c.Phase, c.Weight)
	}
	if tr := c.Start(t0.Add(time.Hour)); tr.Kind != KindStarted || c.Weight != 10 || c.FailedChecks != 0 || c.Phase != PhaseProgressing {
		t.Fatalf("a restart: got %v and phase %s at weight %d", tr, c.Phase, c.Weight)
	}

	var never Canary
	if _, err := never.Promote(t0); !errors.Is(err, ErrNotProgressing) {
		t.Fatalf("Promote before Start: got %v, want %v", err, ErrNotProgressing)
	}
}

func TestCanaryJSONRoundTrip(t *testing.T) {
	c := newCanary(t, CanaryConfig{StepWeights: []int{5, 50}, MinAgreement: 0.9})
	bad := healthy
	bad.Canary.Errors = 50
	run(c, 1, bad)
	data, err := json.Marshal(c)
	if err != nil {
		t.Fatalf("cannot encode canary: %v", err)
	}
	var got Canary
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatalf("cannot decode canary: %v", err)
	}
	if !reflect.DeepEqual(&got, c) {
		t.Fatalf("round trip changed the canary:\ngot  %+v\nwant %+v", got, *c)
	}
	// The restored canary carries on where the old one stopped.
	if tr := got.Evaluate(t0.Add(2*time.Minute), healthy); tr.Kind != KindAdvanced || tr.Weight != 50 || tr.FailedChecks != 1 {
		t.Fatalf("restored canary: got %v, want advanced to 50 with 1 failed check", tr)
	}
}

func TestCanaryApply(t *testing.T) {
	f := func(c *Canary, base Config, wantSplit map[string]int, wantShadows []Shadow) {
		t.Helper()
		got := c.Apply(base)
		if !reflect.DeepEqual(got.Split, wantSplit) || !slices.Equal(got.Shadow, wantShadows) {
			t.Fatalf("got split %v and shadows %v, want %v and %v", got.Split, got.Shadow, wantSplit, wantShadows)
		}
		if _, err := NewTable(got); err != nil {
			t.Fatalf("cannot build a table from the applied config: %v", err)
		}
	}
	one := Config{Split: map[string]int{"1": 100}}
	two := Config{Split: map[string]int{"1": 3, "3": 1, "2": 0}, Shadow: []Shadow{{"4", 5}}}
	at := func(phase Phase, weight int, cfg CanaryConfig) *Canary {
		cfg.Version = "2"
		return &Canary{Config: cfg.WithDefaults(), Phase: phase, Weight: weight}
	}

	f(&Canary{}, one, one.Split, nil)
	f(at(PhaseProgressing, 10, CanaryConfig{}), one, map[string]int{"1": 9, "2": 1}, nil)
	f(at(PhaseProgressing, 50, CanaryConfig{}), one, map[string]int{"1": 1, "2": 1}, nil)
	f(at(PhasePromoted, 100, CanaryConfig{}), one, map[string]int{"1": 0, "2": 1}, nil)
	f(at(PhaseRolledBack, 0, CanaryConfig{}), one, map[string]int{"1": 1, "2": 0}, nil)
	f(at(PhaseProgressing, 20, CanaryConfig{}), two, map[string]int{"1": 3, "3": 1, "2": 1}, two.Shadow)
	f(at(PhaseProgressing, 20, CanaryConfig{MinAgreement: 0.9}), two, map[string]int{"1": 3, "3": 1, "2": 1}, []Shadow{{"4", 5}, {"2", 10}})
	f(at(PhaseRolledBack, 0, CanaryConfig{MinAgreement: 0.9}), two, map[string]int{"1": 3, "3": 1, "2": 0}, two.Shadow)

	big := Config{Split: map[string]int{"1": maxSplitWeight, "3": maxSplitWeight - 1}}
	f(at(PhaseProgressing, 10, CanaryConfig{}), big, map[string]int{"1": 9 * maxSplitWeight, "3": 9 * (maxSplitWeight - 1), "2": 2*maxSplitWeight - 1}, nil)

	// Apply must not write through to the base config's shadows.
	if len(two.Shadow) != 1 || two.Split["2"] != 0 {
		t.Fatalf("Apply changed its base: %+v", two)
	}

	// The shares the table routes by follow the canary's weight.
	tbl := mustTable(t, at(PhaseProgressing, 30, CanaryConfig{}).Apply(Config{Split: map[string]int{"1": 7, "3": 3}}))
	counts := make([]int, tbl.Len())
	for i := range requests {
		counts[tbl.Pick(userKey(i), 0)]++
	}
	checkShares(t, tbl, counts, requests)
	if w := 100 * tbl.Weight(tbl.Index("2")) / (tbl.Weight(0) + tbl.Weight(1) + tbl.Weight(2)); w != 30 {
		t.Fatalf("the canary got %d%% of the weight, want 30%%", w)
	}
}

func TestTransitionString(t *testing.T) {
	f := func(tr Transition, want string) {
		t.Helper()
		if got := tr.String(); got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
	f(Transition{}, "no change")
	f(Transition{Kind: KindFailed, Weight: 20, FailedChecks: 2, Reason: "error rate 5.00% (5 of 100) is above max_error_rate 1.00%"},
		"failed at weight 20 (2 failed checks): error rate 5.00% (5 of 100) is above max_error_rate 1.00%")
}
