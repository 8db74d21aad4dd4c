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
	// Threshold is what Value is compared with: a distance drifts above
	// it, a p-value below it (after the Bonferroni correction).
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
	Share    float64         `json:"drift_share"`
	Drifted  bool            `json:"drifted"`
	Features []FeatureResult `json:"features"`
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

// evaluate judges feature i of w by method; tests is the number of
// features judged by a p-value in the same group, for the Bonferroni
// correction.
func (j *judge) evaluate(w *window, i int, method Method, tests int) FeatureResult {
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
	res.Value = res.Statistics[statisticOf(method)]
	res.Threshold = j.thresholdFor(method, tests)
	if method.isPValue() {
		res.Drifted = res.Value < res.Threshold
	} else {
		res.Drifted = res.Value > res.Threshold
	}
	return res
}

// statisticOf names the statistic a method decides by.
func statisticOf(m Method) string {
	switch m {
	case MethodKS:
		return "ks_p_value"
	case MethodChiSquare:
		return "chi_square_p_value"
	}
	return string(m)
}

// thresholdFor returns the threshold of method for j: calibrated, set, or
// the method's default, with p-value thresholds divided among tests.
func (j *judge) thresholdFor(method Method, tests int) float64 {
	if j.threshold.Auto {
		return j.threshold.Value // calibrated before the first window
	}
	t := j.threshold.Value
	if t == 0 {
		t = method.defaultThreshold()
	}
	if method.isPValue() && tests > 1 {
		t /= float64(tests)
	}
	return t
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
	s["ks"], s["ks_p_value"] = KolmogorovSmirnov(j.profile.Sample, f.reservoir)
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

// calibrate sets j's auto threshold from bootstrap windows of rows rows
// drawn from the reference, at the quantile where one window in
// falseAlarmEvery would drift by chance.
//
// Binned statistics compare a multinomial draw from the reference bins with
// the reference counts, as production compares a window with them.
// Two-sample statistics compare two independent resamples of the reference
// sample (one of its size, one of the window's), so that the null spread
// includes the reference sample's own noise, as a real window's does.
func (j *judge) calibrate(rows, reservoir, falseAlarmEvery int, seed uint64) {
	// The threshold holds for this method only, so a window that grew past
	// rows (an overrun) must not switch to the one its size would pick.
	method := j.methodFor(int64(rows))
	j.method = method
	r := rand.New(rand.NewPCG(seed, 0xca11b))
	boots := max(500, 10*falseAlarmEvery)
	values := make([]float64, boots)
	cdf := cumulative(j.refCounts)
	p := j.profile
	refBoot := make([]float64, len(p.Sample))
	winBoot := make([]float64, min(rows, reservoir))
	for b := range values {
		var s float64
		switch method {
		case MethodKS, MethodWasserstein:
			resample(r, p.Sample, refBoot)
			resample(r, p.Sample, winBoot)
			if method == MethodKS {
				_, s = KolmogorovSmirnov(refBoot, winBoot)
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
	q := 1 - 1/float64(falseAlarmEvery)
	if method.isPValue() {
		q = 1 / float64(falseAlarmEvery)
	}
	j.threshold.Value = values[min(int(q*float64(boots)), boots-1)]
}

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
		_, p := ChiSquare(ref, cur)
		return p
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

// resample fills dst with a sorted draw with replacement from src.
func resample(r *rand.Rand, src, dst []float64) {
	for i := range dst {
		dst[i] = src[r.IntN(len(src))]
	}
	slices.Sort(dst)
}
