package router

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// ErrNotProgressing is returned by Canary.Promote and Canary.Rollback for a
// canary that is not running: never started, promoted or rolled back.
var ErrNotProgressing = errors.New("router: canary is not progressing")

// Phase is where a canary stands.
type Phase string

// The phases of a canary; the zero Phase is a canary never started.
const (
	PhaseProgressing Phase = "progressing"
	PhasePromoted    Phase = "promoted"
	PhaseRolledBack  Phase = "rolledback"
)

// Kind names what a Canary call did. Started, Promoted and RolledBack match
// the event types canary.started, canary.promoted and canary.rolledback.
type Kind string

// The kinds of Transition. KindNone means nothing happened, for example an
// Evaluate call before the interval has passed.
const (
	KindNone       Kind = ""
	KindStarted    Kind = "started"
	KindAdvanced   Kind = "advanced"
	KindHeld       Kind = "held"
	KindFailed     Kind = "failed"
	KindPromoted   Kind = "promoted"
	KindRolledBack Kind = "rolledback"
)

// Transition is the outcome of one Canary call, worth one log line (and,
// for some kinds, one event).
type Transition struct {
	Kind Kind `json:"kind"`
	// From and Weight are the canary's weight before and after the call,
	// in percent.
	From   int `json:"from_weight"`
	Weight int `json:"weight"`
	// FailedChecks counts the failed analyses so far.
	FailedChecks int `json:"failed_checks"`
	// Reason says why, naming the check and its numbers where one decided.
	Reason string `json:"reason,omitempty"`
	// StartedHolding is set on a held or failed analysis that is the first
	// since the canary started or last advanced: the one that began
	// holding its weight.
	StartedHolding bool `json:"started_holding,omitempty"`
	// Measured is the snapshot an Evaluate call judged; nil for the other
	// calls, which judge none.
	Measured *Snapshot `json:"measured,omitempty"`
}

// String describes t for a log line.
func (t Transition) String() string {
	if t.Kind == KindNone {
		return "no change"
	}
	return fmt.Sprintf("%s at weight %d (%d failed checks): %s", t.Kind, t.Weight, t.FailedChecks, t.Reason)
}

// Stats are one version's metrics over the last interval.
type Stats struct {
	Requests int64         `json:"requests"`
	Errors   int64         `json:"errors"`
	P99      time.Duration `json:"p99"`
	// Labeled counts the requests whose ground truth arrived by feedback,
	// and Correct those of them the version predicted right.
	Labeled int64 `json:"labeled"`
	Correct int64 `json:"correct"`
}

// Snapshot is what the gateway measured over the last interval: the
// canary's metrics, the primary's (the split's other versions together),
// and the agreement of the primary's requests mirrored to the canary.
type Snapshot struct {
	Canary  Stats `json:"canary"`
	Primary Stats `json:"primary"`
	// AgreementSamples counts the mirrored requests compared, and Agreed
	// those on which both versions chose the same top class.
	AgreementSamples int64 `json:"agreement_samples"`
	Agreed           int64 `json:"agreed"`
}

// Canary is the state of one model's canary analysis: plain fields that
// round-trip through encoding/json, so the gateway can persist it and pick
// up where it was after a restart. Set Config, then call Start. A Canary is
// not safe for concurrent use.
type Canary struct {
	Config CanaryConfig `json:"config"`
	Phase  Phase        `json:"phase"`
	// Weight is the canary's share of the traffic, in percent: 0 once
	// rolled back, 100 once promoted.
	Weight int `json:"weight"`
	// Step is the index of Weight in the schedule of step weights.
	Step         int       `json:"step"`
	FailedChecks int       `json:"failed_checks"`
	StartedAt    time.Time `json:"started_at"`
	// LastEvaluation is when the last analysis ran; the next runs one
	// Interval later.
	LastEvaluation time.Time `json:"last_evaluation"`
	// LastTransition is when Phase, Weight or FailedChecks last changed.
	LastTransition time.Time `json:"last_transition"`
	// Reason says why the last analysis or transition came out as it did.
	Reason string `json:"reason,omitempty"`
	// Holding is set while analyses keep the weight where it is (too little
	// traffic, or failed checks), from the first such analysis until the
	// weight moves.
	Holding bool `json:"holding,omitempty"`
}

// Start (re)starts the analysis at the first step weight. c.Config must
// have passed Validate.
func (c *Canary) Start(now time.Time) Transition {
	weight, _ := c.Config.weightAt(0)
	*c = Canary{Config: c.Config, Phase: PhaseProgressing, Weight: weight, StartedAt: now, LastEvaluation: now}
	return c.transition(now, KindStarted, 0, fmt.Sprintf("canary %s started", c.Config.Version))
}

// Evaluate runs one analysis over s, the metrics since the last one. Before
// Interval has passed since then, or when the canary is not progressing, it
// returns KindNone and changes nothing, so the gateway may call it on any
// tick; after any other result it should start a fresh Snapshot.
//
// Passed checks advance the weight to the next step, or promote from the
// last; a failed check holds the weight and counts, and Threshold failures
// roll back; too little traffic to judge holds without counting. Of a run
// of held and failed analyses only the first has StartedHolding set.
func (c *Canary) Evaluate(now time.Time, s Snapshot) Transition {
	if c.Phase != PhaseProgressing || now.Sub(c.LastEvaluation) < c.Config.Interval {
		return Transition{Kind: KindNone, From: c.Weight, Weight: c.Weight, FailedChecks: c.FailedChecks}
	}
	c.LastEvaluation = now
	verdict, reason := c.Config.analyse(s)
	_, last := c.Config.weightAt(c.Step)
	var tr Transition
	switch {
	case verdict == KindHeld:
		c.Reason = reason
		tr = c.hold(KindHeld, reason)
	case verdict == KindFailed:
		c.FailedChecks++
		if c.FailedChecks >= c.Config.Threshold {
			tr = c.rollback(now, fmt.Sprintf("%d failed checks reached threshold %d; last: %s", c.FailedChecks, c.Config.Threshold, reason))
			break
		}
		c.LastTransition, c.Reason = now, reason
		tr = c.hold(KindFailed, reason)
	case last:
		tr = c.promote(now, fmt.Sprintf("checks passed at max_weight %d", c.Weight))
	default:
		from := c.Weight
		c.Step++
		c.Weight, _ = c.Config.weightAt(c.Step)
		tr = c.transition(now, KindAdvanced, from, fmt.Sprintf("checks passed; weight %d -> %d", from, c.Weight))
	}
	tr.Measured = &s
	return tr
}

// Promote makes the canary the primary at once, as the admin API asks.
func (c *Canary) Promote(now time.Time) (Transition, error) {
	if c.Phase != PhaseProgressing {
		return Transition{}, ErrNotProgressing
	}
	return c.promote(now, "promoted by an operator"), nil
}

// Rollback sends the canary's traffic back to the primary at once, as the
// admin API asks; reason says who and why.
func (c *Canary) Rollback(now time.Time, reason string) (Transition, error) {
	if c.Phase != PhaseProgressing {
		return Transition{}, ErrNotProgressing
	}
	return c.rollback(now, reason), nil
}

// Apply returns the routing that base becomes under the canary, to build
// the Table from: the canary version takes Weight percent and base's other
// versions share the rest in their proportions. While it progresses with
// MinAgreement set, the canary is also a shadow at AgreementPercent, so
// that the gateway can measure agreement. A canary never started leaves
// base as it is. base.Split must not be empty (the gateway fills it).
func (c *Canary) Apply(base Config) Config {
	if c.Phase == "" {
		return base
	}
	v := c.Config.Version
	others := 0
	for name, w := range base.Split {
		if name != v {
			others += w
		}
	}
	// Scaling both sides keeps the shares exact in integers; dividing by
	// the common divisor keeps them readable in logs (9/1, not 9000/1000).
	split := make(map[string]int, len(base.Split)+1)
	for name, w := range base.Split {
		split[name] = w * (100 - c.Weight)
	}
	split[v] = others * c.Weight
	g := 0
	for _, w := range split {
		g = gcd(g, w)
	}
	for name := range split {
		split[name] /= max(g, 1)
	}
	base.Split = split
	if c.Phase == PhaseProgressing && c.Config.MinAgreement > 0 &&
		!slices.ContainsFunc(base.Shadow, func(s Shadow) bool { return s.Version == v }) {
		base.Shadow = append(slices.Clip(base.Shadow), Shadow{Version: v, Percent: c.Config.AgreementPercent})
	}
	return base
}

// The statuses of a Check.
const (
	CheckPassed  = "passed"
	CheckFailed  = "failed"
	CheckSkipped = "skipped"
)

// Check is one check of a canary analysis: what it measured, what it was
// held to, and its status: passed, failed, or skipped (not judged: too
// little traffic, or nothing to compare with). Detail says what was
// measured; Reason, on a failed check and on a skipped one that holds the
// canary, says why in a sentence.
type Check struct {
	Name      string  `json:"name"`
	Measured  float64 `json:"measured"`
	Threshold float64 `json:"threshold"`
	Status    string  `json:"status"`
	Detail    string  `json:"detail,omitempty"`
	Reason    string  `json:"reason,omitempty"`
}

// Checks returns the checks of an analysis of s under c, in order:
// min_requests first (too few canary requests judge nothing else), then
// max_error_rate, max_latency_ratio (skipped while the primary served
// nothing), max_accuracy_drop (when set; skipped on too few labels) and
// min_agreement (when set; too few samples hold the canary).
func (c *CanaryConfig) Checks(s Snapshot) []Check {
	status := func(ok bool) string {
		if ok {
			return CheckPassed
		}
		return CheckFailed
	}
	enough := s.Canary.Requests >= int64(c.MinRequests)
	checks := []Check{{Name: "min_requests", Measured: float64(s.Canary.Requests), Threshold: float64(c.MinRequests),
		Status: status(enough), Detail: "canary requests in the interval"}}
	skip := func(name string, threshold float64, detail, reason string) {
		checks = append(checks, Check{Name: name, Threshold: threshold, Status: CheckSkipped, Detail: detail, Reason: reason})
	}
	if !enough {
		checks[0].Reason = fmt.Sprintf("canary served %d requests, fewer than min_requests %d", s.Canary.Requests, c.MinRequests)
		skip("max_error_rate", c.MaxErrorRate, "too few canary requests", "")
		skip("max_latency_ratio", c.MaxLatencyRatio, "too few canary requests", "")
		return checks
	}
	rate := ratio(s.Canary.Errors, s.Canary.Requests)
	errCheck := Check{Name: "max_error_rate", Measured: rate, Threshold: c.MaxErrorRate, Status: status(rate <= c.MaxErrorRate),
		Detail: fmt.Sprintf("%d errors of %d requests", s.Canary.Errors, s.Canary.Requests)}
	if errCheck.Status == CheckFailed {
		errCheck.Reason = fmt.Sprintf("error rate %.2f%% (%d of %d) is above max_error_rate %.2f%%",
			100*rate, s.Canary.Errors, s.Canary.Requests, 100*c.MaxErrorRate)
	}
	checks = append(checks, errCheck)
	if p := s.Primary.P99; p > 0 {
		r := float64(s.Canary.P99) / float64(p)
		lat := Check{Name: "max_latency_ratio", Measured: r, Threshold: c.MaxLatencyRatio,
			Status: status(float64(s.Canary.P99) <= c.MaxLatencyRatio*float64(p)), Detail: fmt.Sprintf("p99 %s against the primary's %s", s.Canary.P99, p)}
		if lat.Status == CheckFailed {
			lat.Reason = fmt.Sprintf("p99 latency %s is %.2f times the primary's %s, above max_latency_ratio %.2f",
				s.Canary.P99, r, p, c.MaxLatencyRatio)
		}
		checks = append(checks, lat)
	} else {
		skip("max_latency_ratio", c.MaxLatencyRatio, "the primary served no requests", "")
	}
	if c.MaxAccuracyDrop > 0 {
		if min(s.Canary.Labeled, s.Primary.Labeled) >= int64(c.MinRequests) {
			canary, primary := ratio(s.Canary.Correct, s.Canary.Labeled), ratio(s.Primary.Correct, s.Primary.Labeled)
			acc := Check{Name: "max_accuracy_drop", Measured: primary - canary, Threshold: c.MaxAccuracyDrop, Status: status(primary-canary <= c.MaxAccuracyDrop),
				Detail: fmt.Sprintf("%d and %d labeled requests (canary, primary)", s.Canary.Labeled, s.Primary.Labeled)}
			if acc.Status == CheckFailed {
				acc.Reason = fmt.Sprintf("accuracy %.2f%% is %.2f points below the primary's %.2f%%, more than max_accuracy_drop %.2f",
					100*canary, 100*(primary-canary), 100*primary, c.MaxAccuracyDrop)
			}
			checks = append(checks, acc)
		} else {
			skip("max_accuracy_drop", c.MaxAccuracyDrop, "too few labeled requests", "")
		}
	}
	if c.MinAgreement > 0 {
		if s.AgreementSamples >= int64(c.MinRequests) {
			a := ratio(s.Agreed, s.AgreementSamples)
			agr := Check{Name: "min_agreement", Measured: a, Threshold: c.MinAgreement, Status: status(a >= c.MinAgreement),
				Detail: fmt.Sprintf("%d of %d samples agreed", s.Agreed, s.AgreementSamples)}
			if agr.Status == CheckFailed {
				agr.Reason = fmt.Sprintf("agreement %.2f%% (%d of %d) is below min_agreement %.2f%%",
					100*a, s.Agreed, s.AgreementSamples, 100*c.MinAgreement)
			}
			checks = append(checks, agr)
		} else {
			skip("min_agreement", c.MinAgreement, "too few agreement samples",
				fmt.Sprintf("only %d agreement samples, fewer than min_requests %d", s.AgreementSamples, c.MinRequests))
		}
	}
	return checks
}

// analyse judges one interval's snapshot: KindNone when every check
// passes, KindHeld when there is too little traffic to judge, KindFailed
// when a check fails. All failed checks are named, since an operator
// fixing one wants to know of the others.
func (c *CanaryConfig) analyse(s Snapshot) (Kind, string) {
	checks := c.Checks(s)
	if checks[0].Status == CheckFailed {
		return KindHeld, checks[0].Reason
	}
	var failed []string
	held := ""
	for _, ch := range checks[1:] {
		switch {
		case ch.Status == CheckFailed:
			failed = append(failed, ch.Reason)
		case ch.Reason != "":
			held = ch.Reason
		}
	}
	// Evidence of a fault outweighs a check that could not be judged.
	switch {
	case len(failed) > 0:
		return KindFailed, strings.Join(failed, "; ")
	case held != "":
		return KindHeld, held
	}
	return KindNone, ""
}

func (c *Canary) promote(now time.Time, reason string) Transition {
	from := c.Weight
	c.Phase, c.Weight = PhasePromoted, 100
	return c.transition(now, KindPromoted, from, reason)
}

func (c *Canary) rollback(now time.Time, reason string) Transition {
	from := c.Weight
	c.Phase, c.Weight = PhaseRolledBack, 0
	return c.transition(now, KindRolledBack, from, reason)
}

// transition records a change of c's weight or phase from weight from,
// made at now, and describes it.
func (c *Canary) transition(now time.Time, kind Kind, from int, reason string) Transition {
	c.LastTransition, c.Reason, c.Holding = now, reason, false
	return Transition{Kind: kind, From: from, Weight: c.Weight, FailedChecks: c.FailedChecks, Reason: reason}
}

// hold describes an analysis of kind that kept c's weight; the first of a
// run of them starts holding.
func (c *Canary) hold(kind Kind, reason string) Transition {
	tr := Transition{Kind: kind, From: c.Weight, Weight: c.Weight, FailedChecks: c.FailedChecks, Reason: reason, StartedHolding: !c.Holding}
	c.Holding = true
	return tr
}

func ratio(n, d int64) float64 {
	if d == 0 {
		return 0
	}
	return float64(n) / float64(d)
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}
