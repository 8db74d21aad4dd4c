package detection

import (
	"bytes"
	"context"
	"math"
	"strings"
	"testing"
	"time"
)

// TestDemoDecisions runs the benchmark on the demo's generator, without
// Python: the new defaults hold their false-alarm rate on clean windows and
// catch at least as many shifted windows as the old defaults.
func TestDemoDecisions(t *testing.T) {
	o := Options{Datasets: []string{Demo}, Sizes: []int{20, 100}, Windows: 30, NoBaseline: true, Workers: 2,
		AutoSplits: -1, MMDWindows: 1, DemoReference: 1000}
	res, err := Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	all := func(*Cell) bool { return true }
	clean := wilson(res.sum(RuleNew, all, func(s Shift) bool { return s.Kind == Clean }))
	if clean.Windows != 2*2*30 {
		t.Fatalf("clean windows: got %d, want %d", clean.Windows, 2*2*30)
	}
	// 5% with room for chance: 120 windows at 5% exceed 13% with chance about 1e-4.
	if clean.Rate > 0.13 {
		t.Errorf("new defaults flag %s of clean windows, want at most about 5%%", clean)
	}
	shifted := func(s Shift) bool { return s.Kind != Clean }
	newC, oldC := res.sum(RuleNew, all, shifted), res.sum(RuleOld, all, shifted)
	if newC.Flagged < oldC.Flagged || newC.Flagged == 0 {
		t.Errorf("shifted windows caught: new defaults %d, old defaults %d of %d; want the new ones to catch more", newC.Flagged, oldC.Flagged, newC.Windows)
	}
	// Method mmd judges the first window of each shift (2 clean), and
	// catches the one moved by 1 sd in half the features at 100 rows.
	mmd := res.sum(RuleMMD, all, func(Shift) bool { return true })
	if want := 2 * (len(Shifts) + 1); mmd.Windows != want {
		t.Errorf("method mmd judged %d windows, want %d", mmd.Windows, want)
	}
	strong := res.sum(RuleMMD, func(c *Cell) bool { return c.Rows == 100 }, func(s Shift) bool { return s == Shift{Kind: Mean, Strength: 1} })
	if strong.Windows != 1 || strong.Flagged != 1 {
		t.Errorf("method mmd caught %d of %d windows moved by 1 sd at 100 rows, want 1 of 1", strong.Flagged, strong.Windows)
	}
	if auto := res.sum(RuleAuto, all, func(Shift) bool { return true }); auto.Windows != 0 {
		t.Errorf("threshold: auto judged %d windows with AutoSplits < 0, want none", auto.Windows)
	}
	for _, c := range res.Cells {
		if c.Inconsistent != [nRules]int{} {
			t.Errorf("%s at %d rows: decisions not matching their p-values: %v", c.Dataset, c.Rows, c.Inconsistent)
		}
	}
	var md bytes.Buffer
	if err := res.WriteMarkdown(&md, Meta{Command: "test", Date: time.Now(), CPUs: 2}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(md.String(), "| 100 | demo | infergate new defaults |") {
		t.Errorf("the report has no row of the new defaults at 100 rows:\n%s", md.String())
	}
}

// TestWilson checks the interval against known values.
func TestWilson(t *testing.T) {
	f := func(flagged, windows int, low, high float64) {
		t.Helper()
		r := wilson(Count{Windows: windows, Flagged: flagged})
		if math.Abs(r.Low-low) > 5e-4 || math.Abs(r.High-high) > 5e-4 {
			t.Errorf("wilson(%d/%d) = [%.4f, %.4f], want [%.4f, %.4f]", flagged, windows, r.Low, r.High, low, high)
		}
	}
	f(0, 20, 0, 0.1611)
	f(10, 20, 0.2993, 0.7007)
	f(5, 100, 0.0215, 0.1118)
}

// TestMatched tunes a level to the baseline's clean rate: with the
// scores of the new defaults equal to the baseline's, both get the same
// power; the old rule's scores, shifted, match the same rate.
func TestMatched(t *testing.T) {
	c := &Cell{Dataset: "t", Features: 2, Rows: 10}
	// Ten clean windows, one flagged by the baseline, and ten shifted.
	for w := range 20 {
		si := 0
		if w >= 10 {
			si = 1
		}
		p := float64(w%10+1) / 10 // 0.1 .. 1.0
		if si == 1 {
			p /= 4
		}
		c.shift = append(c.shift, si)
		c.scores[RuleScipy] = append(c.scores[RuleScipy], p*0.45) // flagged below 0.05: the first clean one
		c.scores[RuleNew] = append(c.scores[RuleNew], p*0.45)
		c.scores[RuleOld] = append(c.scores[RuleOld], p)
		c.scores[RuleAuto] = append(c.scores[RuleAuto], math.NaN())
	}
	res := &Result{Shifts: []Shift{{Kind: Clean}, {Kind: Mean, Strength: 1}}, Cells: []*Cell{c}}
	m := res.matched(10)
	if m.Target != 0.1 {
		t.Fatalf("target: got %g, want 0.1", m.Target)
	}
	for _, r := range []int{RuleScipy, RuleNew, RuleOld} {
		if m.FalseAlarm[r].Flagged != 1 || m.Power[r].Flagged != m.Power[RuleScipy].Flagged {
			t.Errorf("%s: clean %d flagged, shifted %d; want 1 and %d", RuleNames[r], m.FalseAlarm[r].Flagged, m.Power[r].Flagged, m.Power[RuleScipy].Flagged)
		}
	}
	if !math.IsNaN(m.Level[RuleAuto]) {
		t.Errorf("threshold: auto got level %g, want none", m.Level[RuleAuto])
	}
}
