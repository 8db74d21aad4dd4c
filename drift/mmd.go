package drift

import (
	"math"
	"math/rand/v2"
	"slices"
	"time"
)

// The multivariate detector's bounds, which keep its work per window to
// about a tenth of a second of one core (mmdBudget at the most): it
// compares up to mmdRows rows of the window's row sample with as many of
// the reference's, and estimates the p-value from at least
// mmdMinPermutations label permutations, 10/false_alarm_rate of them
// where the budget allows.
const (
	mmdRows            = 400
	mmdMinPermutations = 100
	mmdMaxPermutations = 2000
	mmdBudget          = 500 * time.Millisecond
)

// MMDResult is the multivariate detector's judgement of a window: the
// maximum mean discrepancy between the window's rows and the reference's
// under a Gaussian kernel, and its permutation p-value.
type MMDResult struct {
	// Statistic is the unbiased estimate of MMD² over the features,
	// whitened by the pooled rows' mean and covariance (see mmdJudge).
	Statistic float64 `json:"statistic"`
	// PValue is the share of label permutations of the pooled rows (plus
	// the observed labelling) whose statistic reaches Statistic.
	PValue       float64 `json:"p_value"`
	Permutations int     `json:"permutations"`
	// Rows and ReferenceRows are the rows compared.
	Rows          int `json:"rows"`
	ReferenceRows int `json:"reference_rows"`
	// Bandwidth is the kernel's 2σ², the median squared distance between
	// pooled rows, whitened (the median heuristic).
	Bandwidth float64 `json:"bandwidth"`
	// Seconds is the time the judgement took.
	Seconds float64 `json:"seconds"`
}

// mmdJudge is the multivariate detector of a version: a two-sample test
// of maximum mean discrepancy (Gretton et al., 2012), as Alibi Detect's
// MMDDrift runs it, between a window's row sample and the reference's.
//
// Rows are whitened first: x becomes L⁻¹(x - mean), where L L' is the
// covariance of the pooled rows (the reference's and the window's) with
// a ridge of a hundredth of each feature's variance added to its
// diagonal. The kernel's distances are then Mahalanobis distances: a move
// that many correlated features make together counts for what it is
// under their correlation, not once per feature (with features only
// standardized, it hides in the direction in which they vary most). The
// ridge keeps collinear features (a radius, its perimeter and its area)
// from making a direction of rounding noise count. Whitening and the
// bandwidth come from the pooled rows, not the reference's alone, so that
// the statistic is the same function of the pooled rows whichever of them
// are labelled the window: that is what makes the permutation p-value
// exact (fitted to the reference's rows alone, the whitening made them
// look more typical than the window's, and clean windows of 50 to 200
// rows against 89 to 284 reference rows drifted 10 to 19% of the time
// at a nominal 5%).
type mmdJudge struct {
	ref   [][]float64 // reference rows, as they are
	width int
	r     *rand.Rand
	// Scratch, reused by each window: the pooled rows' mean, covariance
	// and whitened values, the kernel matrix over them (row-major, upper
	// triangle used), a permutation of their indices and their labels.
	mean   []float64
	cov    [][]float64
	pooled [][]float64
	kernel []float32
	perm   []int
	member []uint8
}

// mmdBandwidthPairs is the number of random pairs of pooled rows whose
// median squared distance is the kernel's bandwidth.
const mmdBandwidthPairs = 4000

// newMMDJudge prepares the detector from ref's row sample, of which it
// takes up to mmdRows rows; ref must have one.
func newMMDJudge(ref *Reference) *mmdJudge {
	nf := len(ref.Features)
	m := &mmdJudge{width: nf, r: rand.New(rand.NewPCG(0x33d, 1)), mean: make([]float64, nf), cov: make([][]float64, nf)}
	for i := range m.cov {
		m.cov[i] = make([]float64, nf)
	}
	m.ref = ref.SampleRows[:min(len(ref.SampleRows), mmdRows)]
	return m
}

// whiten sets m.pooled to the rows whitened by their own mean and
// covariance (with the ridge): z solves L z = row - mean.
func (m *mmdJudge) whiten(rows [][]float64) {
	nf, n := m.width, float64(len(rows))
	clear(m.mean)
	for _, row := range rows {
		for i, x := range row {
			m.mean[i] += x / n
		}
	}
	for i := range m.cov {
		clear(m.cov[i])
	}
	for _, row := range rows {
		for i := range nf {
			di := row[i] - m.mean[i]
			for j := range i + 1 {
				m.cov[i][j] += di * (row[j] - m.mean[j]) / n
			}
		}
	}
	for i := range nf {
		if m.cov[i][i] == 0 {
			m.cov[i][i] = 1 // a constant feature: any change counts, in its own units
		} else {
			m.cov[i][i] *= 1.01
		}
	}
	chol := cholesky(m.cov)
	for k, row := range rows {
		z := m.pooled[k][:0]
		for i, x := range row {
			v := x - m.mean[i]
			for j := range i {
				v -= chol[i][j] * z[j]
			}
			z = append(z, v/chol[i][i])
		}
		m.pooled[k] = z
	}
}

// bandwidth returns the median squared distance between random pairs of
// the pooled rows (the median heuristic), 1 where that is 0.
func (m *mmdJudge) bandwidth() float64 {
	n := len(m.pooled)
	d2 := make([]float64, 0, mmdBandwidthPairs)
	for range mmdBandwidthPairs {
		i, j := m.r.IntN(n), m.r.IntN(n-1)
		if j >= i {
			j++
		}
		d2 = append(d2, squaredDistance(m.pooled[i], m.pooled[j]))
	}
	slices.Sort(d2)
	if med := d2[len(d2)/2]; med > 0 {
		return med
	}
	return 1
}

// cholesky returns L, lower triangular, with L L' = a, for a symmetric
// positive definite a given by its lower triangle (which it overwrites).
// A pivot that rounding made non-positive (the ridge rules it out in
// exact arithmetic) takes the diagonal's own value, as if that feature
// were uncorrelated with those before it.
func cholesky(a [][]float64) [][]float64 {
	for j := range a {
		d := a[j][j]
		for k := range j {
			d -= a[j][k] * a[j][k]
		}
		if !(d > 0) {
			d = a[j][j]
		}
		a[j][j] = math.Sqrt(d)
		for i := j + 1; i < len(a); i++ {
			s := a[i][j]
			for k := range j {
				s -= a[i][k] * a[j][k]
			}
			a[i][j] = s / a[j][j]
		}
	}
	return a
}

func squaredDistance(a, b []float64) float64 {
	var s float64
	for i := range a {
		d := a[i] - b[i]
		s += d * d
	}
	return s
}

// test compares sample, a flattened row sample of width values a row,
// with the reference, taking about 10/rate permutations within the bounds.
func (m *mmdJudge) test(sample []float64, width int, rate float64) MMDResult {
	began := time.Now()
	rows := min(len(sample)/width, mmdRows)
	res := MMDResult{Rows: rows, ReferenceRows: len(m.ref), PValue: 1}
	if rows < 2 || len(m.ref) < 2 {
		return res
	}
	// The pooled rows: the reference's, then the window's.
	n := len(m.ref) + rows
	raw := make([][]float64, 0, n)
	raw = append(raw, m.ref...)
	for k := range rows {
		raw = append(raw, sample[k*width:(k+1)*width])
	}
	for len(m.pooled) < n {
		m.pooled = append(m.pooled, make([]float64, 0, width))
	}
	m.pooled = m.pooled[:n]
	m.whiten(raw)
	res.Bandwidth = m.bandwidth()
	if cap(m.kernel) < n*n {
		m.kernel = make([]float32, n*n)
	}
	m.kernel = m.kernel[:n*n]
	for i := range n {
		for j := i + 1; j < n; j++ {
			m.kernel[i*n+j] = float32(math.Exp(-squaredDistance(m.pooled[i], m.pooled[j]) / res.Bandwidth))
		}
	}
	m.member = slices.Grow(m.member[:0], n)[:n]
	for i := range n {
		m.member[i] = uint8(boolIndex(i >= len(m.ref)))
	}
	res.Statistic = m.statistic(n, len(m.ref), rows)
	m.perm = slices.Grow(m.perm[:0], n)[:n]
	for i := range m.perm {
		m.perm[i] = i
	}
	want := min(max(int(math.Ceil(10/rate)), mmdMinPermutations), mmdMaxPermutations)
	reached := 0
	for res.Permutations < want && (res.Permutations < mmdMinPermutations || time.Since(began) < mmdBudget) {
		m.r.Shuffle(n, func(i, j int) { m.perm[i], m.perm[j] = m.perm[j], m.perm[i] })
		for k, i := range m.perm {
			m.member[i] = uint8(boolIndex(k >= len(m.ref)))
		}
		if m.statistic(n, len(m.ref), rows) >= res.Statistic {
			reached++
		}
		res.Permutations++
	}
	res.PValue = float64(1+reached) / float64(1+res.Permutations)
	res.Seconds = time.Since(began).Seconds()
	return res
}

// statistic returns the unbiased MMD² of the pooled rows by membership
// (0: the first sample, of nx rows; 1: the second, of ny).
func (m *mmdJudge) statistic(n, nx, ny int) float64 {
	var sums [3]float64 // pairs within the first sample, across, within the second
	for i := range n {
		row := m.kernel[i*n : (i+1)*n]
		mi := m.member[i]
		var acc [3]float32
		for j := i + 1; j < n; j++ {
			acc[mi+m.member[j]] += row[j]
		}
		for k := range sums {
			sums[k] += float64(acc[k])
		}
	}
	fx, fy := float64(nx), float64(ny)
	return 2*sums[0]/(fx*(fx-1)) + 2*sums[2]/(fy*(fy-1)) - 2*sums[1]/(fx*fy)
}
