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
// false-alarm rate: a p-value method at the rate the rule gives it, or a
// threshold calibrated to that rate. A fixed threshold set by hand, or a
// distance's default one, holds no stated rate.
func (j *judge) controlled(method Method) bool {
	return !j.ignore && (j.threshold.Auto || method.isPValue() && j.threshold.Value == 0)
}

// rates returns the false-alarm rate of each controlled judge of the
// input features (rates[0]) and of the predictions (rates[1]) in a window
// of size rows, and how many judges of each share it: under family_wise
// the configured rate divided among them (Bonferroni), so that a clean
// window drifts with at most that chance; under share each judge's own.
func (jy *jury) rates(size int64) (rates [2]float64, controlled [2]int) {
	for i := range jy.judges {
		j := &jy.judges[i]
		if j.controlled(j.methodFor(size)) {
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

// calibrate computes the auto thresholds for windows of cfg.Window.Rows
// rows, one judge at a time, each at the rate the rule gives it. Before
// each it calls proceed, and it stops, returning false, when proceed
// does; after each it calls calibrated.
func (jy *jury) calibrate(proceed func() bool, calibrated func(j *judge)) bool {
	rows := jy.cfg.Window.Rows
	rates, _ := jy.rates(int64(rows))
	for i := range jy.judges {
		j := &jy.judges[i]
		if !j.threshold.Auto {
			continue
		}
		if !proceed() {
			return false
		}
		j.calibrate(rows, jy.cfg.Reservoir, rates[boolIndex(j.prediction)], uint64(i))
		calibrated(j)
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
		method := j.methodFor(size)
		fr := j.evaluate(w, i, method, rates[boolIndex(j.prediction)])
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
	return len(jy.mmd.mean), mmdRows
}

func boolIndex(b bool) int {
	if b {
		return 1
	}
	return 0
}
