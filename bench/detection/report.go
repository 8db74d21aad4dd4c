package detection

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"
)

// Rate is a share of windows flagged with its 95% Wilson interval.
type Rate struct {
	Count
	Rate float64 `json:"rate"`
	Low  float64 `json:"low"`
	High float64 `json:"high"`
}

// wilson returns c's rate with its 95% Wilson score interval.
func wilson(c Count) Rate {
	r := Rate{Count: c}
	if c.Windows == 0 {
		return Rate{Count: c, Rate: math.NaN(), Low: math.NaN(), High: math.NaN()}
	}
	const z = 1.959963984540054
	n, p := float64(c.Windows), float64(c.Flagged)/float64(c.Windows)
	centre := (p + z*z/(2*n)) / (1 + z*z/n)
	half := z / (1 + z*z/n) * math.Sqrt(p*(1-p)/n+z*z/(4*n*n))
	r.Rate, r.Low, r.High = p, max(centre-half, 0), min(centre+half, 1)
	return r
}

// String writes r as "12.3% (10.1–14.8)".
func (r Rate) String() string {
	if r.Windows == 0 {
		return "—"
	}
	return fmt.Sprintf("%.1f%% (%.1f–%.1f)", 100*r.Rate, 100*r.Low, 100*r.High)
}

// add sums counts.
func (c Count) add(o Count) Count {
	return Count{Windows: c.Windows + o.Windows, Flagged: c.Flagged + o.Flagged}
}

// sum adds the counts of rule over the cells for which keep says so and
// the shifts for which shift says so.
func (res *Result) sum(rule int, keep func(*Cell) bool, shift func(Shift) bool) Count {
	var c Count
	for _, cell := range res.Cells {
		if !keep(cell) {
			continue
		}
		for si, sh := range res.Shifts {
			if shift(sh) && si < len(cell.Counts) {
				c = c.add(cell.Counts[si][rule])
			}
		}
	}
	return c
}

// Matched is the power of a rule at the baseline's false-alarm rate for a
// window size: the rule's level is the quantile of its clean windows'
// scores at that rate.
type Matched struct {
	Rows int `json:"window_rows"`
	// Target is the baseline's false-alarm rate at its own level.
	Target float64 `json:"target_false_alarm_rate"`
	// Level, FalseAlarm and Power are per rule: the tuned level, the clean
	// windows' rate at it (ties in the scores may keep it below Target)
	// and the shifted windows caught. A rule without a score has none.
	Level      [nRules]float64 `json:"level"`
	FalseAlarm [nRules]Rate    `json:"false_alarm"`
	Power      [nRules]Rate    `json:"power"`
}

// matched computes power at matched false-alarm rates for window size n.
func (res *Result) matched(n int) Matched {
	m := Matched{Rows: n}
	var clean, shifted [nRules][]float64
	var cleanFlagged, cleanN int
	for _, cell := range res.Cells {
		if cell.Rows != n || len(cell.scores[RuleScipy]) == 0 {
			continue
		}
		lv := levels(cell.Features)
		for w, si := range cell.shift {
			isClean := res.Shifts[si].Kind == Clean
			if isClean {
				cleanN++
				if cell.scores[RuleScipy][w] < lv[RuleScipy] {
					cleanFlagged++
				}
			}
			for r := range nRules {
				if w >= len(cell.scores[r]) {
					continue
				}
				s := cell.scores[r][w]
				if math.IsNaN(s) {
					continue
				}
				// The old rule's level depends on d; dividing by it puts
				// every cell's score on one scale, flagged below 1.
				s /= lv[r]
				if isClean {
					clean[r] = append(clean[r], s)
				} else {
					shifted[r] = append(shifted[r], s)
				}
			}
		}
	}
	if cleanN == 0 {
		return m
	}
	m.Target = float64(cleanFlagged) / float64(cleanN)
	for r := range nRules {
		if len(clean[r]) == 0 {
			m.Level[r] = math.NaN()
			continue
		}
		slices.Sort(clean[r])
		k := min(int(math.Floor(m.Target*float64(len(clean[r])))), len(clean[r])-1)
		level := clean[r][k]
		m.Level[r] = level
		m.FalseAlarm[r] = wilson(countBelow(clean[r], level))
		m.Power[r] = wilson(countBelow(shifted[r], level))
	}
	return m
}

// atFloor reports whether rule r's tuned level flags no clean window
// although the target asks for some: its clean scores tie at the lowest.
func (m Matched) atFloor(r int) bool {
	return m.Target > 0 && m.FalseAlarm[r].Windows > 0 && m.FalseAlarm[r].Flagged == 0 &&
		m.Target*float64(m.FalseAlarm[r].Windows) >= 1
}

// countBelow counts the scores below level.
func countBelow(scores []float64, level float64) Count {
	c := Count{Windows: len(scores)}
	for _, s := range scores {
		if s < level {
			c.Flagged++
		}
	}
	return c
}

// Meta says how and where a result was made, for the report.
type Meta struct {
	Command string    `json:"command"`
	Date    time.Time `json:"date"`
	Machine string    `json:"machine"`
	CPUs    int       `json:"cpus"`
	// Build names the infergate build measured (infergate version).
	Build string `json:"build"`
}

// reportJSON is the JSON report.
type reportJSON struct {
	Meta
	Rules      []string `json:"rules"`
	Windows    int      `json:"windows_per_shift"`
	Splits     int      `json:"splits"`
	AutoSplits int      `json:"auto_splits"`
	MMDWindows int      `json:"mmd_windows_per_shift"`
	Elapsed    float64  `json:"elapsed_seconds"`
	*Result
	Matched []Matched `json:"matched"`
}

// WriteJSON writes res and meta as JSON: the counts per data set, window
// size, shift and rule, and power at matched false-alarm rates.
func (res *Result) WriteJSON(w io.Writer, meta Meta) error {
	rep := reportJSON{Meta: meta, Rules: RuleNames[:], Windows: res.Options.Windows, Splits: res.Options.Splits,
		AutoSplits: res.Options.AutoSplits, MMDWindows: res.Options.MMDWindows,
		Elapsed: res.Elapsed.Seconds(), Result: res}
	for _, n := range res.Options.Sizes {
		rep.Matched = append(rep.Matched, res.matched(n))
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", " ")
	if err := enc.Encode(sanitize(rep)); err != nil {
		return fmt.Errorf("cannot write the drift detection report: %w", err)
	}
	return nil
}

// sanitize turns rep into a value JSON can hold: NaN becomes null.
func sanitize(rep reportJSON) any {
	for i := range rep.Matched {
		for r := range nRules {
			if math.IsNaN(rep.Matched[i].Level[r]) {
				rep.Matched[i].Level[r] = -1
			}
			for _, rt := range []*Rate{&rep.Matched[i].FalseAlarm[r], &rep.Matched[i].Power[r]} {
				if math.IsNaN(rt.Rate) {
					*rt = Rate{}
				}
			}
		}
	}
	return rep
}

// WriteMarkdown writes the report's tables and notes.
func (res *Result) WriteMarkdown(w io.Writer, meta Meta) error {
	var b strings.Builder
	all := func(*Cell) bool { return true }
	isClean := func(s Shift) bool { return s.Kind == Clean }
	isShifted := func(s Shift) bool { return s.Kind != Clean }
	ofSize := func(n int) func(*Cell) bool { return func(c *Cell) bool { return c.Rows == n } }
	rules := []int{RuleScipy, RuleNew, RuleOld, RuleAuto, RuleMMD}
	o := res.Options
	// of returns the rate of rule r on data set ds at n rows over the
	// shifts for which shift says so, "n/a" where ds has too few rows.
	of := func(r int, ds string, n int, shift func(Shift) bool) string {
		if !res.measured(ds, n) {
			return "n/a"
		}
		return wilson(res.sum(r, func(c *Cell) bool { return c.Dataset == ds && c.Rows == n }, shift)).String()
	}
	var tooSmall []string
	for _, ds := range o.Datasets {
		if sizes := res.TooSmall[ds]; len(sizes) > 0 {
			tooSmall = append(tooSmall, fmt.Sprintf("%s at %s rows", ds, joinInts(sizes)))
		}
	}

	fmt.Fprintf(&b, "# Drift detection: shifted windows caught, clean windows flagged\n\n")
	fmt.Fprintf(&b, "How often infergate's drift decision flags a window of shifted data (power) and a window of\n"+
		"clean data (false alarms), against a scipy baseline: `scipy.stats.ks_2samp` per feature, drifted\n"+
		"when any feature's p < 0.05/d. Every rate with its 95%% Wilson interval. Generated by `%s`;\n"+
		"see \"How it was measured\" below. (bench/DRIFT.md is the drift overhead report.)\n\n", meta.Command)

	fmt.Fprintf(&b, "## Table 1: by window size, over the data sets and shifts\n\n")
	if len(tooSmall) > 0 {
		fmt.Fprintf(&b, "n/a: the data set has too few rows for windows drawn without replacement from the rows\n"+
			"its reference leaves (%s); each size pools the data sets measured at it.\n", strings.Join(tooSmall, "; "))
	}
	fmt.Fprintf(&b, "`threshold: auto` judges the windows of %d of the %d splits of a scikit-learn set, method mmd the\n"+
		"first %d windows per data set, size and shift (%d clean ones): their rows count fewer windows.\n\n",
		min(o.AutoSplits, o.Splits), o.Splits, max(o.MMDWindows, 0), 2*max(o.MMDWindows, 0))
	fmt.Fprintf(&b, "| window rows | data sets | rule | shifted windows caught | clean windows flagged |\n| ---: | --- | --- | ---: | ---: |\n")
	for _, n := range o.Sizes {
		var sets []string
		for _, ds := range o.Datasets {
			if res.measured(ds, n) {
				sets = append(sets, ds)
			}
		}
		for _, r := range rules {
			fmt.Fprintf(&b, "| %d | %s | %s | %s | %s |\n", n, strings.Join(sets, ", "), RuleNames[r],
				wilson(res.sum(r, ofSize(n), isShifted)), wilson(res.sum(r, ofSize(n), isClean)))
		}
	}
	for _, r := range rules {
		fmt.Fprintf(&b, "| all | all | %s | %s | %s |\n", RuleNames[r], wilson(res.sum(r, all, isShifted)), wilson(res.sum(r, all, isClean)))
	}

	fmt.Fprintf(&b, "\n### By shift and window size\n\nShare of windows flagged; the clean rows are false alarms.\n\n")
	fmt.Fprintf(&b, "| shift | rule |")
	for _, n := range o.Sizes {
		fmt.Fprintf(&b, " %d rows |", n)
	}
	fmt.Fprintf(&b, "\n| --- | --- |%s\n", strings.Repeat(" ---: |", len(o.Sizes)))
	for _, sh := range res.Shifts {
		for _, r := range rules {
			fmt.Fprintf(&b, "| %s | %s |", sh, RuleNames[r])
			for _, n := range o.Sizes {
				fmt.Fprintf(&b, " %s |", wilson(res.sum(r, ofSize(n), func(s Shift) bool { return s == sh })))
			}
			b.WriteString("\n")
		}
	}

	fmt.Fprintf(&b, "\n### Shifts spread thin over every feature, by data set\n\n"+
		"Every feature moved by a small share of its standard deviation: no single feature's KS test\n"+
		"sees much, the rows as a whole do. The clean rows are the same windows' false alarms.\n\n")
	fmt.Fprintf(&b, "| data set | shift | rule |")
	for _, n := range o.Sizes {
		fmt.Fprintf(&b, " %d rows |", n)
	}
	fmt.Fprintf(&b, "\n| --- | --- | --- |%s\n", strings.Repeat(" ---: |", len(o.Sizes)))
	for _, ds := range o.Datasets {
		for _, sh := range res.Shifts {
			if sh.Kind != Thin && sh.Kind != Tilt && sh.Kind != Clean {
				continue
			}
			for _, r := range []int{RuleScipy, RuleNew, RuleMMD} {
				fmt.Fprintf(&b, "| %s | %s | %s |", ds, sh, RuleNames[r])
				for _, n := range o.Sizes {
					fmt.Fprintf(&b, " %s |", of(r, ds, n, func(s Shift) bool { return s == sh }))
				}
				b.WriteString("\n")
			}
		}
	}

	fmt.Fprintf(&b, "\n### By data set, over the window sizes\n\n")
	fmt.Fprintf(&b, "| data set | rule | shifted windows caught | clean windows flagged |\n| --- | --- | ---: | ---: |\n")
	for _, ds := range o.Datasets {
		of := func(c *Cell) bool { return c.Dataset == ds }
		for _, r := range rules {
			fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", ds, RuleNames[r], wilson(res.sum(r, of, isShifted)), wilson(res.sum(r, of, isClean)))
		}
	}

	fmt.Fprintf(&b, "\n### Clean windows flagged, by data set and window size\n\n"+
		"A clean window is exchangeable with its reference: rows of the same split drawn without\n"+
		"replacement (scikit-learn), or fresh rows (demo). A valid test flags about 5%% or fewer.\n\n")
	fmt.Fprintf(&b, "| data set | rule |")
	for _, n := range o.Sizes {
		fmt.Fprintf(&b, " %d rows |", n)
	}
	fmt.Fprintf(&b, "\n| --- | --- |%s\n", strings.Repeat(" ---: |", len(o.Sizes)))
	for _, ds := range o.Datasets {
		for _, r := range rules {
			fmt.Fprintf(&b, "| %s | %s |", ds, RuleNames[r])
			for _, n := range o.Sizes {
				fmt.Fprintf(&b, " %s |", of(r, ds, n, isClean))
			}
			b.WriteString("\n")
		}
	}
	fmt.Fprintf(&b, "\n## Table 2: power at the baseline's false-alarm rate\n\n")
	fmt.Fprintf(&b, "Each rule's level is tuned per window size, without judging again, to the highest at which its\n"+
		"clean windows are flagged no more often than the baseline's are at its own level (the target): the\n"+
		"new defaults and the baseline score a window by its smallest p-value times d (flagged below 0.05),\n"+
		"the old defaults by its ceil(d/2)-th smallest p-value (flagged below 0.05/d), method mmd by its\n"+
		"permutation p-value (flagged below 0.05; on its own subset of windows, and its p-values step by\n"+
		"about 1/200). Ties between scores\n"+
		"can keep a rule's clean rate below the target; it is given beside the power. The baseline's own\n"+
		"row can show more power than in table 1 where its clean scores leave room above its level.\n"+
		"`threshold: auto` is left out: it decides on each feature's KS distance against a threshold of\n"+
		"its own, calibrated by bootstrap at the rule's rate, so its level is a rate to calibrate at\n"+
		"again, not a cut of one score.\n\n")
	fmt.Fprintf(&b, "| window rows | target | rule | shifted windows caught | clean windows flagged |\n| ---: | ---: | --- | ---: | ---: |\n")
	floored := false
	for _, n := range o.Sizes {
		m := res.matched(n)
		for _, r := range []int{RuleScipy, RuleNew, RuleOld, RuleMMD} {
			mark := ""
			if m.atFloor(r) {
				mark, floored = " †", true
			}
			fmt.Fprintf(&b, "| %d | %.1f%% | %s | %s%s | %s |\n", n, 100*m.Target, RuleNames[r], m.Power[r], mark, m.FalseAlarm[r])
		}
	}
	if floored {
		fmt.Fprintf(&b, "\n†: more of the rule's clean windows than the target allows share its lowest score (mmd's\n"+
			"p-value stops at 1/(1+permutations), about 0.005), so any level that flags one flags too many: its\n"+
			"power at the baseline's rate is unknown here, not 0.\n")
	}

	fmt.Fprintf(&b, "\n## Agreement with scipy\n\n")
	fmt.Fprintf(&b, "Per cell: the splits (references), the windows judged and the knockout windows not drawn (no\n"+
		"class's knockout leaves the pool enough rows), how far the new defaults' KS p-values are from\n"+
		"scipy's and how many decisions differ, and the decisions of drift.Offline that do not match the\n"+
		"score they are read from (a bug if not 0).\n\n")
	fmt.Fprintf(&b, "| data set | window rows | splits (auto) | windows | knockout not drawn | largest KS p-value difference | decisions differing | offline decisions not matching their scores (new, old, mmd) | Go s | Python s |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, c := range res.Cells {
		fmt.Fprintf(&b, "| %s | %d | %d (%d) | %d | %d | %.2g | %d | %d, %d, %d | %.1f | %.1f |\n", c.Dataset, c.Rows, c.Splits, c.AutoSplits,
			len(c.shift), c.NotDrawn, c.MaxPDiff, c.Disagree,
			c.Inconsistent[RuleNew], c.Inconsistent[RuleOld], c.Inconsistent[RuleMMD], c.GoTime.Seconds(), c.PythonTime.Seconds())
	}
	b.WriteString(howMeasured(res, meta))
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("cannot write the drift detection report: %w", err)
	}
	return nil
}

// joinInts writes xs as "500, 1000".
func joinInts(xs []int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = fmt.Sprint(x)
	}
	return strings.Join(s, ", ")
}
