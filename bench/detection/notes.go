package detection

import (
	"fmt"
	"strings"
	"time"
)

// howMeasured writes the report's notes: the command, the machine, the
// data and shifts, and a reading of the numbers.
func howMeasured(res *Result, meta Meta) string {
	var b strings.Builder
	o := res.Options
	fmt.Fprintf(&b, "\n## How it was measured\n\n")
	fmt.Fprintf(&b, "- Command: `%s` (`make bench-drift`), infergate %s, %s, on %s, %d CPUs\n"+
		"  (`runtime.NumCPU`); the run took %s.\n",
		meta.Command, meta.Build, meta.Date.UTC().Format("2006-01-02 15:04 MST"), meta.Machine, meta.CPUs, res.Elapsed.Round(time.Second))
	fmt.Fprintf(&b, "- Data: scikit-learn's bundled `load_breast_cancer` (30 features, 569 rows, 2 classes) and `load_wine`\n"+
		"  (13 features, 178 rows, 3 classes), exported by `bench/detection/sklearn_data.py`, and the demo's\n"+
		"  generator `trainer.Synthetic` (8 features: integer ages, counts and scores, many ties). Every value is\n"+
		"  rounded to float32 before either side sees it, as the gateway sees an FP32 input.\n")
	fmt.Fprintf(&b, "- Reference and windows: each scikit-learn set is split at random %d times into a reference of half its\n"+
		"  rows (284 and 89) and a pool of the rest (285 and 89); each shift's windows are dealt round robin among\n"+
		"  the splits, and a window is drawn from its split's pool without replacement, so that a clean window and\n"+
		"  its reference are disjoint random subsets of the data set, exchangeable: a valid test flags such a\n"+
		"  window with at most its level's chance. Windows larger than a pool are not measured (n/a). The demo's\n"+
		"  reference is %d fresh rows (`drift.DefaultSampleSize`, the profile's default sample) and every window is\n"+
		"  fresh rows. Profiles are built with `drift.BuildProfile(..., ProfileOptions{Float32: true})`, with\n"+
		"  `SampleRows` from `drift.SampleRowsOf`; the reference sample KS uses is every reference row, the rows\n"+
		"  scipy is given.\n", o.Splits, o.DemoReference)
	fmt.Fprintf(&b, "- Subsets: `threshold: auto` calibrates for 1 to 3 s per reference and window size, so it judges only\n"+
		"  the windows of the first %d splits of a scikit-learn set (all of the demo's); method mmd takes up to\n"+
		"  a tenth of a second per window (permutations), so it judges the first %d windows per data set, size\n"+
		"  and shift (%d clean ones). Their rates count those windows only.\n", o.AutoSplits, o.MMDWindows, 2*o.MMDWindows)
	fmt.Fprintf(&b, "- Windows: %d per data set, window size and shift, %d clean ones; window sizes %v.\n", o.Windows, 2*o.Windows, o.Sizes)
	fmt.Fprintf(&b, "- Shifts (sd is each feature's standard deviation in the reference; \"half the features\" are\n"+
		"  ceil(d/2) picked at random per window):")
	for _, sh := range res.Shifts[1:] {
		fmt.Fprintf(&b, " %s;", sh)
	}
	fmt.Fprintf(&b, " knockout picks the class at random per window, among those whose knockout leaves the pool\n"+
		"  enough rows for the window, and drops its rows with that chance (none qualifies for breast_cancer's\n"+
		"  200-row windows with the class knocked out: those are not drawn, see the last table).\n")
	fmt.Fprintf(&b, "- Rules: *new defaults* `drift.Config{Window: {Rows: n}}` (family_wise: drifted when any feature's\n"+
		"  exact KS p < 0.05/d); *old defaults* `Rule: share, DriftShare: 0.5, Threshold: 0.05/d` (Bonferroni\n"+
		"  and half the features, as before issue 18); *threshold: auto* `Threshold: {Auto: true}` (KS distance\n"+
		"  thresholds calibrated by bootstrap family-wise, one `drift.Offline` per split and window size); *mmd*\n"+
		"  `Method: mmd` (Gaussian-kernel MMD of up to 400 window rows against up to 400 reference rows, each\n"+
		"  feature standardized by the reference, permutation p-value, drifted when p < 0.05); *scipy*\n"+
		"  `bench/detection/scipy_baseline.py`: `ks_2samp(reference_column, window_column)`, default method\n"+
		"  (exact at these sizes), drifted when any p < 0.05/d, one Python process per data set and window size.\n")
	b.WriteString(reading(res))
	return b.String()
}

// reading writes what the numbers say, from the numbers.
func reading(res *Result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n## Reading\n\n")
	isClean := func(s Shift) bool { return s.Kind == Clean }
	isShifted := func(s Shift) bool { return s.Kind != Clean }
	var worseAt []string
	var maxExcess float64
	var excessAt int
	for _, n := range res.Options.Sizes {
		of := func(c *Cell) bool { return c.Rows == n }
		newC, sciC := wilson(res.sum(RuleNew, of, isShifted)), wilson(res.sum(RuleScipy, of, isShifted))
		if newC.Flagged < sciC.Flagged {
			worseAt = append(worseAt, fmt.Sprint(n))
		}
		newF, sciF := wilson(res.sum(RuleNew, of, isClean)), wilson(res.sum(RuleScipy, of, isClean))
		if e := newF.Rate - sciF.Rate; e > maxExcess {
			maxExcess, excessAt = e, n
		}
	}
	var windows, disagree int
	var maxDiff float64
	for _, c := range res.Cells {
		windows += len(c.shift)
		disagree += c.Disagree
		maxDiff = max(maxDiff, c.MaxPDiff)
	}
	if len(worseAt) == 0 {
		fmt.Fprintf(&b, "- The new defaults catch at least as many shifted windows as the scipy baseline at every window size.\n")
	} else {
		fmt.Fprintf(&b, "- The new defaults catch fewer shifted windows than the scipy baseline at %s rows.\n", strings.Join(worseAt, ", "))
	}
	if maxExcess > 0 {
		fmt.Fprintf(&b, "- Their false-alarm rate exceeds the baseline's by at most %.1f percentage points (at %d rows).\n", 100*maxExcess, excessAt)
	} else {
		fmt.Fprintf(&b, "- Their false-alarm rate is nowhere above the baseline's.\n")
	}
	fmt.Fprintf(&b, "- They decide as scipy does on all but %d of %d windows; the largest difference between a KS p-value\n"+
		"  of theirs and scipy's is %.2g.\n", disagree, windows, maxDiff)
	// Clean windows: the pooled rate and the cells whose interval lies
	// above 5%.
	for _, r := range []int{RuleScipy, RuleNew, RuleAuto, RuleMMD} {
		worst, worstAt := Rate{}, ""
		var above []string
		for _, c := range res.Cells {
			rt := wilson(c.Counts[0][r])
			if rt.Windows == 0 {
				continue
			}
			if worst.Windows == 0 || rt.Rate > worst.Rate {
				worst, worstAt = rt, fmt.Sprintf("%s at %d rows", c.Dataset, c.Rows)
			}
			if rt.Low > 0.05 {
				above = append(above, fmt.Sprintf("%s at %d rows, %s", c.Dataset, c.Rows, rt))
			}
		}
		if worst.Windows == 0 {
			continue
		}
		fmt.Fprintf(&b, "- Clean windows, %s: %s flagged over all cells; the highest cell is %s (%s).", RuleNames[r],
			wilson(res.sum(r, func(*Cell) bool { return true }, isClean)), worstAt, worst)
		if len(above) == 0 {
			fmt.Fprintf(&b, " No cell's interval lies above 5%%.\n")
		} else {
			fmt.Fprintf(&b, " Cells whose interval lies above 5%%: %s.\n", strings.Join(above, "; "))
		}
	}
	fmt.Fprintf(&b, "  A cell holds %d clean windows for the KS rules, %d for mmd and, on a scikit-learn set, %d for auto:\n"+
		"  among %d cells, one interval just above 5%% is what chance alone gives about as often as not; the\n"+
		"  pooled rates are the sharper test. On the demo's integer features (many ties) KS is conservative,\n"+
		"  which keeps its clean rate below 5%%.\n", 2*res.Options.Windows, 2*max(res.Options.MMDWindows, 0),
		2*res.Options.Windows*min(max(res.Options.AutoSplits, 0), res.Options.Splits)/max(res.Options.Splits, 1), len(res.Cells))
	all := func(*Cell) bool { return true }
	autoC, autoF := wilson(res.sum(RuleAuto, all, isShifted)), wilson(res.sum(RuleAuto, all, isClean))
	fmt.Fprintf(&b, "- `threshold: auto` catches %s of the shifted windows it judges (the new defaults: %s of all)\n"+
		"  with %s of its clean windows flagged: its bootstrap calibration knows the data's ties, which make the\n"+
		"  exact KS p-value (exact for continuous data) conservative. It judges fewer windows (see Subsets).\n",
		autoC, wilson(res.sum(RuleNew, all, isShifted)), autoF)
	b.WriteString(readMMD(res))
	old := res.sum(RuleOld, func(*Cell) bool { return true }, isShifted)
	nw := res.sum(RuleNew, func(*Cell) bool { return true }, isShifted)
	var oldM, newM Count
	for _, n := range res.Options.Sizes {
		m := res.matched(n)
		oldM, newM = oldM.add(m.Power[RuleOld].Count), newM.add(m.Power[RuleNew].Count)
	}
	fmt.Fprintf(&b, "- The old defaults (Bonferroni and half the features) catch %s of shifted windows where\n"+
		"  the new ones catch %s. Tuned to the baseline's false-alarm rate at each size (table 2) they\n"+
		"  catch %s against %s: the gap is partly their level and partly their rule that half the\n"+
		"  features must move.\n", wilson(old), wilson(nw), wilson(oldM), wilson(newM))
	fmt.Fprintf(&b, "- Limits of the design: the windows dealt to one split share its reference, so their decisions\n"+
		"  are not independent and the intervals (which assume they are) are somewhat too narrow, the more so\n"+
		"  for the demo's single reference per size; %d splits keep that small for the scikit-learn sets. The\n"+
		"  scikit-learn sets measure windows of up to 200 (breast_cancer) and 50 (wine) rows only, so the\n"+
		"  500- and 1000-row rows are the demo's alone. A shift is applied to a window, not to a population:\n"+
		"  strengths are in the reference's standard deviations. Auto and mmd judge subsets (see Subsets),\n"+
		"  and their rates are compared with the baseline's on all windows, drawn alike.\n", res.Options.Splits)
	return b.String()
}

// readMMD writes what the numbers say of method mmd: overall, by shift,
// and on the thin shifts against the baseline, size by size.
func readMMD(res *Result) string {
	var b strings.Builder
	all := func(*Cell) bool { return true }
	isClean := func(s Shift) bool { return s.Kind == Clean }
	isShifted := func(s Shift) bool { return s.Kind != Clean }
	mmdC := wilson(res.sum(RuleMMD, all, isShifted))
	if mmdC.Windows == 0 {
		return ""
	}
	fmt.Fprintf(&b, "- Method mmd catches %s of the shifted windows it judges, the baseline %s of all, with %s of\n"+
		"  its clean windows flagged. By shift, pooled over sizes and data sets (mmd against the baseline):",
		mmdC, wilson(res.sum(RuleScipy, all, isShifted)), wilson(res.sum(RuleMMD, all, isClean)))
	for _, sh := range res.Shifts[1:] {
		is := func(s Shift) bool { return s == sh }
		m, sc := wilson(res.sum(RuleMMD, all, is)), wilson(res.sum(RuleScipy, all, is))
		fmt.Fprintf(&b, " %s %.0f%% / %.0f%%%s;", sh, 100*m.Rate, 100*sc.Rate, compare(m, sc))
	}
	fmt.Fprintf(&b, " (\"higher\" or \"lower\" where the two intervals do not overlap).\n")
	fmt.Fprintf(&b, "- On the shifts spread thin over every feature, data set by data set, mmd against the baseline\n"+
		"  (\"higher\"/\"lower\" where the intervals do not overlap, else within each other's intervals):\n")
	for _, ds := range res.Options.Datasets {
		var parts []string
		for _, sh := range res.Shifts {
			if sh.Kind != Thin && sh.Kind != Tilt {
				continue
			}
			label := fmt.Sprintf("+%g sd", sh.Strength)
			if sh.Kind == Tilt {
				label = fmt.Sprintf("tilt %g", sh.Strength)
			}
			is := func(s Shift) bool { return s == sh }
			for _, n := range res.Options.Sizes {
				of := func(c *Cell) bool { return c.Dataset == ds && c.Rows == n }
				m, sc := wilson(res.sum(RuleMMD, of, is)), wilson(res.sum(RuleScipy, of, is))
				if m.Windows == 0 || sc.Windows == 0 {
					continue
				}
				verdict := compare(m, sc)
				if verdict == "" {
					verdict = " even"
				}
				parts = append(parts, fmt.Sprintf("%s at %d rows %.0f%%/%.0f%%%s", label, n, 100*m.Rate, 100*sc.Rate, verdict))
			}
		}
		if len(parts) > 0 {
			fmt.Fprintf(&b, "  %s: %s.\n", ds, strings.Join(parts, ", "))
		}
	}
	fmt.Fprintf(&b, "  Two things to read these by. The demo's features are integers with heavy ties (products is 1\n"+
		"  for 45%% of rows): a mean shift moves every value off the integers, and KS, comparing the two\n"+
		"  distribution functions at every value, sees a tie's whole mass move (D near 0.45) where the shift\n"+
		"  is 0.05 sd; on the demo the \"thin: mean\" rows measure that, not thinness. The tilt rows move the\n"+
		"  population itself along a random direction of every feature (rows drawn with weight\n"+
		"  exp(strength x score)), each feature by about strength/sqrt(d) sd, every value one the data has:\n"+
		"  no tie is broken, so they measure thinness on the demo too. And method mmd whitens rows by the\n"+
		"  reference's covariance, so its distances are Mahalanobis ones: under the data's correlation the\n"+
		"  +0.15 sd step has a length of 0.52 on breast_cancer and 0.59 on wine, against 0.15 per feature.\n")
	return b.String()
}

// compare returns " higher" or " lower" where a's interval lies wholly
// above or below b's, else "".
func compare(a, b Rate) string {
	switch {
	case a.Windows == 0 || b.Windows == 0:
		return ""
	case a.Low > b.High:
		return " higher"
	case a.High < b.Low:
		return " lower"
	}
	return ""
}

// orNone joins xs, or says none.
func orNone(xs []string) string {
	if len(xs) == 0 {
		return "none"
	}
	return strings.Join(xs, "; ")
}
