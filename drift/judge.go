package drift

import (
	"math"
	"math/rand/v2"
	"slices"
	"time"
)

// judge decides for one monitored feature or prediction column.
type judge struct {
	profile    *Profile
	prediction bool
	ignore     bool
	method     Method // empty: the default for the window's size
	threshold  Threshold
	// refCounts is profile.Counts as floats; curCounts is scratch for a
	// window's counts.
	refCounts, curCounts []float64
	// calibrated holds, with threshold auto, the thresholds calibrated so
	// far, by the window size they hold for (see jury.sizeClass).
	calibrated map[int64]float64
	// ksPValues memoizes the KS p-value against the reference sample by
	// the window sample's size and the gap (D*n*m): the exact value costs
	// up to milliseconds (1.8 ms for 1000 values against the default 5000
	// at an unshifted window's D), which at tens of windows a second would
	// take a core, and a monitor meets the same few hundred (size, gap)
	// pairs window after window. At most ksMemoSize entries.
	ksPValues map[[2]int]float64
}

// ksMemoSize bounds a judge's memo of KS p-values.
const ksMemoSize = 4096

// ks returns the KS statistic of the sorted window sample against the
// reference sample, and its p-value, memoized.
func (j *judge) ks(sample []float64) (d, p float64) {
	ref := j.profile.Sample
	if len(ref) == 0 || len(sample) == 0 {
		return KolmogorovSmirnov(ref, sample)
	}
	d, gap := ksDistance(ref, sample)
	key := [2]int{len(sample), gap}
	if p, ok := j.ksPValues[key]; ok {
		return d, p
	}
	p = ksPValue(len(ref), len(sample), d, gap)
	if j.ksPValues == nil {
		j.ksPValues = map[[2]int]float64{}
	}
	if len(j.ksPValues) < ksMemoSize {
		j.ksPValues[key] = p
	}
	return d, p
}

// FeatureResult is the judgement of one feature over one window.
type FeatureResult struct {
	Name       string `json:"name"`
	Kind       Kind   `json:"kind"`
	Prediction bool   `json:"prediction,omitempty"`
	// Ignored features are reported but take no part in the decision.
	Ignored bool `json:"ignored,omitempty"`
	// Judged is false when the window held no finite value of the feature.
	Judged bool   `json:"judged"`
	Method Method `json:"method"`
	// Statistic names the statistic in Statistics that decided: the
	// method's p-value for ks and chi_square (their statistic with a
	// threshold: auto, calibrated on it), else the method's distance.
	Statistic string `json:"statistic"`
	// Threshold is what Value is compared with: a distance drifts above
	// it, a p-value below it (the share of the false-alarm rate the rule
	// gives the feature, unless the config sets it).
	Threshold float64 `json:"threshold"`
	Value     float64 `json:"value"`
	Drifted   bool    `json:"drifted"`
	// Statistics holds every statistic that applies to the feature's kind.
	Statistics map[string]float64 `json:"statistics"`
	Count      int64              `json:"count"`
	Missing    int64              `json:"missing"`
	NonFinite  int64              `json:"non_finite"`
	Mean       float64            `json:"mean"`
	Std        float64            `json:"std"`
	// Edges or Categories label the bins of ReferenceCounts and Counts.
	Edges           []float64 `json:"edges,omitempty"`
	Categories      []float64 `json:"categories,omitempty"`
	ReferenceCounts []int64   `json:"reference_counts"`
	Counts          []int64   `json:"counts"`
	// Gate, for a distance the window's size picked by default, is the
	// test that must also reject: the feature drifted only when Value
	// exceeds Threshold and Gate.Value is below Gate.Threshold.
	Gate *TestGate `json:"gate,omitempty"`
}

// TestGate is the p-value that a default distance's verdict also needs:
// Statistic (ks_p_value or chi_square_p_value) below Threshold, the rate
// the rule gives the feature.
type TestGate struct {
	Statistic string  `json:"statistic"`
	Threshold float64 `json:"threshold"`
	Value     float64 `json:"value"`
}

// gateStatistic names the p-value that gates a default distance of j's
// kind.
func (j *judge) gateStatistic() string {
	if j.profile.Kind == Categorical {
		return "chi_square_p_value"
	}
	return "ks_p_value"
}

// WindowResult is the judgement of one closed window.
type WindowResult struct {
	Seq int64 `json:"window"`
	// Labeled counts the rows of the window scored by feedback labels, and
	// Accuracy is the share of them predicted right (0 without labels).
	Labeled  int64     `json:"labeled"`
	Accuracy float64   `json:"accuracy"`
	Start    time.Time `json:"start"`
	End      time.Time `json:"end"`
	Rows     int64     `json:"rows"`
	// Judged is false when the window had fewer than min_rows rows;
	// SkippedReason then says so, with the numbers and the setting, as
	// "12 rows, fewer than min_rows 100 (models.demo.drift.min_rows)".
	Judged        bool   `json:"judged"`
	SkippedReason string `json:"skipped_reason,omitempty"`
	// Share is the share of judged, not ignored input features that drifted.
	Share   float64 `json:"drift_share"`
	Drifted bool    `json:"drifted"`
	// Rule is the rule that decided the window and what it held the
	// features to (absent from a skipped window).
	Rule RuleApplied `json:"rule,omitzero"`
	// MMD is the multivariate detector's judgement, with method mmd.
	MMD      *MMDResult      `json:"mmd,omitempty"`
	Features []FeatureResult `json:"features"`
}

// RuleApplied says how a window was decided.
type RuleApplied struct {
	// Name is the rule: family_wise (the window drifted when any input
	// feature did), share (when DriftShare of them did), or mmd (when the
	// multivariate detector's p-value fell below FalseAlarmRate; the
	// features' verdicts, at the family-wise rates, only inform).
	Name Rule `json:"name"`
	// FalseAlarmRate is the configured rate: under family_wise the chance
	// that a clean window drifts, shared by the Controlled features each
	// at FeatureRate; under share each controlled feature's own.
	FalseAlarmRate float64 `json:"false_alarm_rate"`
	FeatureRate    float64 `json:"feature_rate"`
	Controlled     int     `json:"controlled_features"`
	// Uncontrolled names the input features decided by a fixed threshold
	// (a distance's, or one set in the config), whose false alarms
	// FalseAlarmRate does not bound: under family_wise each adds its own.
	Uncontrolled []string `json:"uncontrolled_features,omitempty"`
	// DriftShare is the share rule's threshold.
	DriftShare float64 `json:"drift_share,omitempty"`
}

// statisticNames lists the statistics computed for each kind, in the order
// they are reported and exported.
var statisticNames = map[Kind][]string{
	Numeric:     {"psi", "jensen_shannon", "hellinger", "wasserstein", "ks", "ks_p_value"},
	Categorical: {"psi", "jensen_shannon", "hellinger", "chi_square", "chi_square_p_value", "linf"},
}

// methodFor returns the method that decides for j in a window of rows rows.
func (j *judge) methodFor(rows int64) Method {
	if j.method != "" {
		return j.method
	}
	return defaultMethod(j.profile.Kind, int(rows))
}

// evaluate judges feature i of w by method against threshold.
func (j *judge) evaluate(w *window, i int, method Method, threshold float64) FeatureResult {
	f, p := &w.features[i], j.profile
	res := FeatureResult{
		Name: p.Name, Kind: p.Kind, Prediction: j.prediction, Ignored: j.ignore, Method: method,
		Count: f.count, Missing: f.missing, NonFinite: f.nonFinite,
		Edges: p.Edges, Categories: p.Categories, ReferenceCounts: p.Counts, Counts: slices.Clone(f.counts),
	}
	if f.count == 0 {
		return res
	}
	res.Judged = true
	n := float64(f.count)
	res.Mean = f.sum / n
	res.Std = math.Sqrt(max(f.sumSq/n-res.Mean*res.Mean, 0))
	res.Statistics = j.statistics(f)
	res.Statistic = j.statisticOf(method)
	res.Value = res.Statistics[res.Statistic]
	res.Threshold = threshold
	if j.decidesByPValue(method) {
		res.Drifted = res.Value < res.Threshold
	} else {
		res.Drifted = res.Value > res.Threshold
	}
	return res
}

// decidesByPValue reports whether j, judging by method, drifts when a
// p-value falls below its threshold rather than a statistic rising above
// it: p-value methods but with an auto threshold, which is calibrated on
// the test's statistic (for fixed sample sizes the p-value falls as the
// statistic rises, and the statistic is far cheaper to bootstrap).
func (j *judge) decidesByPValue(method Method) bool {
	return method.isPValue() && !j.threshold.Auto
}

// statisticOf names the statistic that j decides by with method.
func (j *judge) statisticOf(method Method) string {
	if j.decidesByPValue(method) {
		return string(method) + "_p_value"
	}
	return string(method)
}

// thresholdFor returns the threshold of method for j, whose threshold is
// not auto: set, the rate the rule gives a p-value method, or a
// distance's default.
func (j *judge) thresholdFor(method Method, rate float64) float64 {
	switch {
	case j.threshold.Value > 0:
		return j.threshold.Value
	case method.isPValue():
		return rate
	}
	return method.defaultThreshold()
}

// statistics computes every statistic of f's kind against the reference.
// It sorts f's reservoir in place.
func (j *judge) statistics(f *featureState) map[string]float64 {
	for b, n := range f.counts {
		j.curCounts[b] = float64(n)
	}
	ref, cur := j.refCounts, j.curCounts
	s := map[string]float64{
		"psi":            PSI(ref, cur),
		"jensen_shannon": JensenShannon(ref, cur),
		"hellinger":      Hellinger(ref, cur),
	}
	if j.profile.Kind == Categorical {
		s["chi_square"], s["chi_square_p_value"] = ChiSquare(ref, cur)
		s["linf"] = LInfinity(ref, cur)
		return s
	}
	slices.Sort(f.reservoir)
	s["ks"], s["ks_p_value"] = j.ks(f.reservoir)
	s["wasserstein"] = normedWasserstein(j.profile, f.reservoir)
	return s
}

// normedWasserstein is the Wasserstein-1 distance of sample to the
// reference sample in units of the reference standard deviation (in the
// feature's own units for a constant reference).
func normedWasserstein(p *Profile, sample []float64) float64 {
	w := Wasserstein(p.Sample, sample)
	if p.Std > 0 {
		w /= p.Std
	}
	return w
}

// calibrate returns j's auto threshold for method in windows of rows rows
// from bootstrap windows drawn from the reference: the quantile of the
// statistic j decides by above which a clean window drifts with chance
// rate.
//
// Binned statistics compare a multinomial draw from the reference bins with
// the reference counts, as production compares a window with them.
// Two-sample statistics compare two independent resamples of the reference
// sample (one of its size, one of the window's), so that the null spread
// includes the reference sample's own noise, as a real window's does.
func (j *judge) calibrate(method Method, rows, reservoir int, rate float64, seed uint64) float64 {
	r := rand.New(rand.NewPCG(seed, 0xca11b))
	values := make([]float64, calibrationDraws(rate))
	cdf := cumulative(j.refCounts)
	p := j.profile
	refBoot := make([]float64, len(p.Sample))
	winBoot := make([]float64, min(rows, reservoir))
	picks := make([]int32, len(p.Sample))
	for b := range values {
		var s float64
		switch method {
		case MethodKS, MethodWasserstein:
			resample(r, p.Sample, refBoot, picks)
			resample(r, p.Sample, winBoot, picks)
			if method == MethodKS {
				s, _ = ksDistance(refBoot, winBoot)
			} else {
				s = Wasserstein(refBoot, winBoot)
				if p.Std > 0 {
					s /= p.Std
				}
			}
		default:
			clear(j.curCounts)
			for range rows {
				u := r.Float64() * cdf[len(cdf)-1]
				k, _ := slices.BinarySearch(cdf, u)
				j.curCounts[min(k, len(cdf)-1)]++
			}
			s = binnedStatistic(method, j.refCounts, j.curCounts)
		}
		values[b] = s
	}
	slices.Sort(values)
	return values[min(int(math.Ceil((1-rate)*float64(len(values)))), len(values)-1)]
}

// calibrationDraws is the number of bootstrap windows that calibrate a
// threshold at false-alarm rate rate: about 20 beyond the quantile, at
// least 1000 and at most 20000.
func calibrationDraws(rate float64) int {
	return int(min(max(math.Ceil(20/rate), 1000), 20000))
}

// binnedStatistic returns the statistic of method m (chi-square's, not its
// p-value) for the counts cur against ref.
func binnedStatistic(m Method, ref, cur []float64) float64 {
	switch m {
	case MethodPSI:
		return PSI(ref, cur)
	case MethodJensenShannon:
		return JensenShannon(ref, cur)
	case MethodHellinger:
		return Hellinger(ref, cur)
	case MethodLInfinity:
		return LInfinity(ref, cur)
	case MethodChiSquare:
		stat, _ := ChiSquare(ref, cur)
		return stat
	}
	panic("BUG: " + string(m) + " is not a binned statistic")
}

// cumulative returns the running sums of counts.
func cumulative(counts []float64) []float64 {
	out := make([]float64, len(counts))
	var sum float64
	for i, c := range counts {
		sum += c
		out[i] = sum
	}
	return out
}

// resample fills dst with a sorted draw with replacement from src, which
// is sorted, counting the picks of each value in picks (len(src) of
// scratch) rather than sorting the draw.
func resample(r *rand.Rand, src, dst []float64, picks []int32) {
	clear(picks)
	for range dst {
		picks[r.IntN(len(src))]++
	}
	k := 0
	for i, n := range picks {
		for range n {
			dst[k] = src[i]
			k++
		}
	}
}
