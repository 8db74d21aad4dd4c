package drift

import (
	"cmp"
	"errors"
	"fmt"
)

// jury is the judges of a version's features and predictions with the
// rule by which their verdicts decide a window. A Monitor holds one, and
// so does Offline, so that a file is judged as traffic is.
type jury struct {
	cfg    Config  // with its defaults
	judges []judge // the reference's features, then its predictions
	// mmd, with method mmd, decides the window from its rows.
	mmd *mmdJudge
	// calibrated, when set, is told of each auto threshold calibrated.
	calibrated func(j *judge, rows int64, threshold float64)
}

// calibrationSizes are the window sizes that auto thresholds are
// calibrated for when windows close by time: a window is judged by the
// threshold of the largest size it reaches (its statistic is no noisier
// than at that size, so the false-alarm rate holds), or of its own size
// below the first.
var calibrationSizes = []int64{10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000}

// sizeClass returns the window size whose auto thresholds judge a window
// of size rows: window.rows for windows by rows, else a calibrationSizes
// one.
func (jy *jury) sizeClass(size int64) int64 {
	if rows := jy.cfg.Window.Rows; rows > 0 {
		return int64(rows)
	}
	class := size
	for _, c := range calibrationSizes {
		if c <= size {
			class = c
		}
	}
	return class
}

// autoThreshold returns the auto threshold of judge i, deciding by method
// at rate, for windows of class rows, calibrating it on first use.
func (jy *jury) autoThreshold(i int, method Method, class int64, rate float64) float64 {
	j := &jy.judges[i]
	if t, ok := j.calibrated[class]; ok {
		return t
	}
	t := j.calibrate(method, int(class), jy.cfg.Reservoir, rate, uint64(i))
	if j.calibrated == nil {
		j.calibrated = map[int64]float64{}
	}
	j.calibrated[class] = t
	if jy.calibrated != nil {
		jy.calibrated(j, class, t)
	}
	return t
}

// methodOf returns the method judge j decides by in a window of size
// rows: an auto threshold keeps the method of the size it was calibrated
// for, also in a window that grew past it (an overrun).
func (jy *jury) methodOf(j *judge, size int64) Method {
	if j.threshold.Auto {
		return j.methodFor(jy.sizeClass(size))
	}
	return j.methodFor(size)
}

// newJury sets up a judge per feature and prediction of ref under cfg,
// which has its defaults.
func newJury(ref *Reference, cfg Config) (*jury, error) {
	jy := &jury{cfg: cfg}
	perFeature := cfg.Method
	if cfg.Method == MethodMMD {
		if len(ref.SampleRows) < 2 {
			return nil, errors.New("method mmd compares whole rows, and the reference has no sample_rows: profile the training data again with this version's infergate profile")
		}
		jy.mmd, perFeature = newMMDJudge(ref), ""
	}
	for _, group := range [][]Profile{ref.Features, ref.Predictions} {
		for i := range group {
			p := &group[i]
			fc := cfg.Features[p.Name]
			j := judge{
				profile: p, prediction: len(jy.judges) >= len(ref.Features), ignore: fc.Ignore,
				method: cmp.Or(fc.Method, perFeature), threshold: fc.Threshold,
				refCounts: make([]float64, len(p.Counts)), curCounts: make([]float64, len(p.Counts)),
			}
			if j.threshold == (Threshold{}) {
				j.threshold = cfg.Threshold
			}
			if j.method == MethodMMD {
				return nil, fmt.Errorf("method mmd judges whole rows, not the feature %q: set it as the model's drift method", p.Name)
			}
			if j.method != "" && !j.method.validFor(p.Kind) {
				return nil, fmt.Errorf("method %s cannot judge the %s feature %q", j.method, p.Kind, p.Name)
			}
			for b, n := range p.Counts {
				j.refCounts[b] = float64(n)
			}
			jy.judges = append(jy.judges, j)
		}
	}
	return jy, nil
}

// controlled reports whether judge j, deciding by method, is held to a
// false-alarm rate: a p-value method at the rate the rule gives it, a
// threshold calibrated to that rate, or a distance that the window's size
// picked, gated by its kind's test at that rate (see gated). A threshold
// set by hand, or the default one of a distance the config names, holds
// no stated rate.
func (j *judge) controlled(method Method) bool {
	return !j.ignore && (j.threshold.Auto || j.threshold.Value == 0 && (method.isPValue() || j.gated(method)))
}

// gated reports whether j decides by method, a distance that the window's
// size picked (the config names no method or threshold), only where its
// kind's test agrees: the feature drifts when the distance exceeds its
// threshold (the difference matters) and the test's p-value is below the
// rule's rate (it is not the window's noise). A window's reservoir caps
// the values a distance sees, and alone its noise crosses the usual
// threshold on skewed features: normed Wasserstein over 1000 values
// drifted 8% of clean 2000-row windows of the demo's eight features.
func (j *judge) gated(method Method) bool {
	return j.method == "" && !j.threshold.Auto && j.threshold.Value == 0 && !method.isPValue()
}

// rates returns the false-alarm rate of each controlled judge of the
// input features (rates[0]) and of the predictions (rates[1]) in a window
// of size rows, and how many judges of each share it: under family_wise
// the configured rate divided among them (Bonferroni), so that a clean
// window drifts with at most that chance; under share each judge's own.
func (jy *jury) rates(size int64) (rates [2]float64, controlled [2]int) {
	for i := range jy.judges {
		j := &jy.judges[i]
		if j.controlled(jy.methodOf(j, size)) {
			controlled[boolIndex(j.prediction)]++
		}
	}
	for g := range rates {
		rates[g] = jy.cfg.FalseAlarmRate
		if jy.cfg.Rule == RuleFamilyWise && controlled[g] > 1 {
			rates[g] /= float64(controlled[g])
		}
	}
	return rates, controlled
}

// calibrate computes the auto thresholds for windows of window.rows rows
// ahead of the first window, one judge at a time, each at the rate the
// rule gives it; windows by time calibrate each size as it first comes.
// Before each judge it calls proceed, and it stops, returning false, when
// proceed does.
func (jy *jury) calibrate(proceed func() bool) bool {
	rows := int64(jy.cfg.Window.Rows)
	if rows == 0 {
		return true
	}
	rates, _ := jy.rates(rows)
	for i := range jy.judges {
		j := &jy.judges[i]
		if !j.threshold.Auto {
			continue
		}
		if !proceed() {
			return false
		}
		jy.autoThreshold(i, j.methodFor(rows), rows, rates[boolIndex(j.prediction)])
	}
	return true
}

// verdict judges every feature of w, a window judged as one of size rows,
// and decides w by the rule.
func (jy *jury) verdict(w *window, size int64, res *WindowResult) {
	rates, controlled := jy.rates(size)
	res.Rule = RuleApplied{
		Name: jy.cfg.Rule, FalseAlarmRate: jy.cfg.FalseAlarmRate, FeatureRate: rates[0], Controlled: controlled[0],
	}
	if jy.cfg.Rule == RuleShare && jy.mmd == nil {
		res.Rule.DriftShare = jy.cfg.DriftShare
	}
	var judged, drifted int
	for i := range jy.judges {
		j := &jy.judges[i]
		method, rate := jy.methodOf(j, size), rates[boolIndex(j.prediction)]
		threshold := j.thresholdFor(method, rate)
		if j.threshold.Auto {
			threshold = jy.autoThreshold(i, method, jy.sizeClass(size), rate)
		}
		fr := j.evaluate(w, i, method, threshold)
		if j.gated(method) && fr.Judged {
			fr.Gate = &TestGate{Statistic: j.gateStatistic(), Threshold: rate}
			fr.Gate.Value = fr.Statistics[fr.Gate.Statistic]
			fr.Drifted = fr.Drifted && fr.Gate.Value < rate
		}
		if !fr.Ignored && !fr.Prediction {
			if !j.controlled(method) {
				res.Rule.Uncontrolled = append(res.Rule.Uncontrolled, fr.Name)
			}
			if fr.Judged {
				judged++
				if fr.Drifted {
					drifted++
				}
			}
		}
		res.Features = append(res.Features, fr)
	}
	if judged > 0 {
		res.Share = float64(drifted) / float64(judged)
	}
	switch {
	case jy.mmd != nil:
		mmd := jy.mmd.test(w.sample, w.width, jy.cfg.FalseAlarmRate)
		res.MMD, res.Rule.Name = &mmd, RuleMMD
		res.Drifted = mmd.PValue < jy.cfg.FalseAlarmRate
	case jy.cfg.Rule == RuleShare:
		res.Drifted = judged > 0 && res.Share >= jy.cfg.DriftShare
	default:
		res.Drifted = drifted > 0
	}
}

// newWindow returns a window for ref's features that keeps a row sample
// when the jury judges rows.
func (jy *jury) newWindow(ref *Reference) *window {
	w := newWindow(ref, jy.cfg.Reservoir)
	if jy.mmd != nil {
		w.keepRows(mmdRows, len(ref.Features))
	}
	return w
}

// sampleRows returns the width and the most rows of the row samples the
// jury's windows keep (0, 0 without).
func (jy *jury) sampleRows() (width, rows int) {
	if jy.mmd == nil {
		return 0, 0
	}
	return jy.mmd.width, mmdRows
}

func boolIndex(b bool) int {
	if b {
		return 1
	}
	return 0
}
