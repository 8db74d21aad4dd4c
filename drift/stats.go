package drift

import (
	"fmt"
	"math"
)

// psiEpsilon is the proportion given to a bin that is empty on one side. Without a floor
// a category seen only in the current window would make PSI and the chi-square statistic
// infinite; 1e-4 is the customary floor, small enough that such a bin dominates the score.
const psiEpsilon = 1e-4

const (
	// gammaEps is the relative precision at which gammaQ stops: a few float64 ulps.
	gammaEps = 1e-15
	// gammaMaxIter bounds gammaQ's loops; both need O(sqrt(a)) steps, so this is reached
	// only for absurd degrees of freedom, where the truncated result is still close.
	gammaMaxIter = 100000
)

// binTotals returns the sums of ref and cur, which every binned statistic needs to turn
// counts into proportions.
func binTotals(ref, cur []float64) (refTotal, curTotal float64) {
	if len(ref) != len(cur) {
		panic(fmt.Sprintf("BUG: cannot compare histograms with %d and %d bins; they must share bins", len(ref), len(cur)))
	}
	for i := range ref {
		refTotal += ref[i]
		curTotal += cur[i]
	}
	return refTotal, curTotal
}

// PSI returns the population stability index of the current histogram cur against the
// reference histogram ref: the sum over bins of (q_i - p_i) * ln(q_i / p_i), where p and q
// are the proportions of ref and cur, each floored at psiEpsilon so that a bin empty on
// one side scores high instead of infinite.
//
// Like every binned statistic here, it takes non-negative counts per bin (normalised
// inside), ref and cur of the same length, skips bins empty on both sides, and returns 0
// when either histogram is empty, since there is nothing to compare. It is pure and safe
// for concurrent use.
func PSI(ref, cur []float64) float64 {
	refTotal, curTotal := binTotals(ref, cur)
	if refTotal <= 0 || curTotal <= 0 {
		return 0
	}
	var psi float64
	for i := range ref {
		if ref[i] == 0 && cur[i] == 0 {
			continue
		}
		p := max(ref[i]/refTotal, psiEpsilon)
		q := max(cur[i]/curTotal, psiEpsilon)
		psi += (q - p) * math.Log(q/p)
	}
	return psi
}

// JensenShannon returns the Jensen-Shannon distance between the histograms ref and cur:
// the square root of their Jensen-Shannon divergence taken with base-2 logarithms, so it
// lies in [0, 1] and is 1 exactly for disjoint supports. Unlike PSI it needs no floor,
// because each side is compared with the mixture, which is never empty where the side is
// not. Inputs are as for PSI. It is pure and safe for concurrent use.
func JensenShannon(ref, cur []float64) float64 {
	refTotal, curTotal := binTotals(ref, cur)
	if refTotal <= 0 || curTotal <= 0 {
		return 0
	}
	var divergence float64
	for i := range ref {
		p := ref[i] / refTotal
		q := cur[i] / curTotal
		mixture := (p + q) / 2
		divergence += klTerm(p, mixture) + klTerm(q, mixture)
	}
	// Rounding may push the divergence a hair outside [0, 1]; the distance must not.
	return math.Sqrt(min(max(divergence/2, 0), 1))
}

// klTerm returns one bin's contribution p*log2(p/m) to a Kullback-Leibler divergence,
// with 0*log(0) taken as its limit 0.
func klTerm(p, m float64) float64 {
	if p == 0 {
		return 0
	}
	return p * math.Log2(p/m)
}

// Hellinger returns the Hellinger distance between the histograms ref and cur,
// sqrt(1 - sum_i sqrt(p_i q_i)), in [0, 1]. It is computed in the equivalent form
// ||sqrt(p) - sqrt(q)||_2 / sqrt(2), which is exactly 0 for identical histograms where the
// first form would leave the square root of a rounding error. Inputs are as for PSI.
// It is pure and safe for concurrent use.
func Hellinger(ref, cur []float64) float64 {
	refTotal, curTotal := binTotals(ref, cur)
	if refTotal <= 0 || curTotal <= 0 {
		return 0
	}
	var sumSquares float64
	for i := range ref {
		d := math.Sqrt(ref[i]/refTotal) - math.Sqrt(cur[i]/curTotal)
		sumSquares += d * d
	}
	return min(math.Sqrt(sumSquares/2), 1)
}

// LInfinity returns the largest difference in proportion of any one bin between the
// histograms ref and cur, max_i |p_i - q_i|, in [0, 1]. Inputs are as for PSI.
// It is pure and safe for concurrent use.
func LInfinity(ref, cur []float64) float64 {
	refTotal, curTotal := binTotals(ref, cur)
	if refTotal <= 0 || curTotal <= 0 {
		return 0
	}
	var largest float64
	for i := range ref {
		largest = max(largest, math.Abs(ref[i]/refTotal-cur[i]/curTotal))
	}
	return largest
}

// ChiSquare returns Pearson's goodness-of-fit statistic of the counts cur against the
// counts expected from the reference proportions, n_cur * p_i, and its p-value for
// (bins non-empty on either side) - 1 degrees of freedom. A bin empty in ref is expected
// to hold a psiEpsilon share (the shares then renormalised), so a category never seen in
// the reference yields a large statistic rather than a division by zero. With fewer than
// two bins in play, or an empty histogram, there is no test: it returns 0, 1.
// Inputs are as for PSI. It is pure and safe for concurrent use.
func ChiSquare(ref, cur []float64) (stat, p float64) {
	refTotal, curTotal := binTotals(ref, cur)
	if refTotal <= 0 || curTotal <= 0 {
		return 0, 1
	}
	bins, unseen := 0, 0
	for i := range ref {
		if ref[i] > 0 || cur[i] > 0 {
			bins++
		}
		if ref[i] == 0 && cur[i] > 0 {
			unseen++
		}
	}
	df := bins - 1
	if df <= 0 {
		return 0, 1
	}
	// The seen shares sum to 1, each unseen bin adds psiEpsilon.
	shareTotal := 1 + psiEpsilon*float64(unseen)
	for i := range ref {
		share := ref[i] / refTotal
		switch {
		case ref[i] > 0:
		case cur[i] > 0:
			share = psiEpsilon
		default:
			continue
		}
		expected := curTotal * share / shareTotal
		d := cur[i] - expected
		stat += d * d / expected
	}
	return stat, gammaQ(float64(df)/2, stat/2)
}

// KolmogorovSmirnov returns the two-sample Kolmogorov-Smirnov statistic D, the largest
// distance between the empirical CDFs of a and b, and its two-sided p-value P(D' >= D)
// under the null hypothesis: exact, as scipy.stats.ks_2samp(method='exact') computes it,
// for samples of up to 10000 values where that is cheap (equal lengths, or unequal ones
// whose lattice walk stays within ksExactMaxCells), else the limiting Kolmogorov
// distribution's kolmogorovQ(D * sqrt(n*m/(n+m))). a and b must be sorted ascending and
// free of NaN; they may differ in length and hold ties. Either one empty gives 0, 1.
// It is pure and safe for concurrent use.
func KolmogorovSmirnov(a, b []float64) (d, p float64) {
	n, m := len(a), len(b)
	if n == 0 || m == 0 {
		return 0, 1
	}
	d, gap := ksDistance(a, b)
	return d, ksPValue(n, m, d, gap)
}

// ksPValue is KolmogorovSmirnov's p-value of samples of n and m values
// whose statistic is d, and d*n*m the integer gap.
func ksPValue(n, m int, d float64, gap int) float64 {
	if p, ok := ksExactSF(n, m, gap/gcd(n, m)); ok {
		return p
	}
	return kolmogorovQ(d * math.Sqrt(float64(n)*float64(m)/float64(n+m)))
}

// ksDistance returns the Kolmogorov-Smirnov statistic D of the sorted
// samples a and b, and D*n*m as an integer (the largest |i*m - j*n|), from
// which the exact p-value takes D without rounding.
func ksDistance(a, b []float64) (d float64, gap int) {
	n, m := len(a), len(b)
	i, j := 0, 0
	// Once one sample is used up the gap only shrinks, so the walk can stop there.
	for i < n && j < m {
		x := min(a[i], b[j])
		if math.IsNaN(x) {
			panic("BUG: NaN in a KolmogorovSmirnov sample; callers must drop NaN before sorting")
		}
		// Both CDFs step past every copy of x before they are compared: comparing between
		// tied values would count a gap that neither CDF has.
		for i < n && a[i] == x {
			i++
		}
		for j < m && b[j] == x {
			j++
		}
		d = max(d, math.Abs(float64(i)/float64(n)-float64(j)/float64(m)))
		gap = max(gap, i*m-j*n, j*n-i*m)
	}
	return d, gap
}

// Wasserstein returns the Wasserstein-1 (earth mover's) distance between the empirical
// distributions of a and b, the integral over x of |F_a(x) - F_b(x)|, in the units of the
// samples. a and b must be sorted ascending and free of NaN; they may differ in length and
// hold ties. Either one empty gives 0. It is pure and safe for concurrent use.
func Wasserstein(a, b []float64) float64 {
	n, m := len(a), len(b)
	if n == 0 || m == 0 {
		return 0
	}
	var area float64
	i, j := 0, 0
	prev := min(a[0], b[0])
	// Between consecutive sample points both CDFs are flat, so the integral is a sum of
	// rectangles: the CDF gap since prev times the width up to the next point x.
	for i < n || j < m {
		var x float64
		switch {
		case i == n:
			x = b[j]
		case j == m:
			x = a[i]
		default:
			x = min(a[i], b[j])
		}
		if math.IsNaN(x) {
			panic("BUG: NaN in a Wasserstein sample; callers must drop NaN before sorting")
		}
		area += math.Abs(float64(i)/float64(n)-float64(j)/float64(m)) * (x - prev)
		prev = x
		for i < n && a[i] == x {
			i++
		}
		for j < m && b[j] == x {
			j++
		}
	}
	return area
}

// kolmogorovQ returns the survival function of the Kolmogorov distribution,
// Q_KS(lambda) = 2 * sum_{k>=1} (-1)^(k-1) exp(-2 k^2 lambda^2), clamped to [0, 1].
func kolmogorovQ(lambda float64) float64 {
	if lambda <= 0 {
		return 1
	}
	var sum float64
	if lambda < 1.18 {
		// Here the alternating series needs dozens of terms; the Jacobi theta form of the
		// same CDF, sqrt(2*pi)/lambda * sum_{k>=1} exp(-(2k-1)^2 pi^2 / (8 lambda^2)), needs
		// four at most and underflows cleanly to Q = 1 for small lambda.
		for k := 1; k < 100; k++ {
			odd := float64(2*k - 1)
			term := math.Exp(-odd * odd * math.Pi * math.Pi / (8 * lambda * lambda))
			sum += term
			if term <= gammaEps*sum {
				break
			}
		}
		return min(max(1-math.Sqrt(2*math.Pi)/lambda*sum, 0), 1)
	}
	sign := 1.0
	for k := 1; k < 100; k++ {
		term := math.Exp(-2 * float64(k*k) * lambda * lambda)
		sum += sign * term
		if term <= gammaEps*sum {
			break
		}
		sign = -sign
	}
	return min(max(2*sum, 0), 1)
}

// gammaQ returns the upper regularized incomplete gamma function Q(a, x) =
// Gamma(a, x) / Gamma(a) for a > 0, the chi-square survival function Q(df/2, stat/2).
// As in Numerical Recipes (section 6.2) it sums the series of P = 1 - Q below x = a+1,
// where that converges fast, and the continued fraction of Q above it.
func gammaQ(a, x float64) float64 {
	if x <= 0 {
		return 1
	}
	if math.IsInf(x, 1) {
		return 0
	}
	lgammaA, _ := math.Lgamma(a)
	// e^-x x^a / Gamma(a), common to both expansions, taken through logs: each factor
	// alone overflows for large a or x.
	prefactor := math.Exp(a*math.Log(x) - x - lgammaA)
	if x < a+1 {
		// P(a, x) = prefactor * sum_{n>=0} x^n / (a (a+1) ... (a+n)).
		term := 1 / a
		sum := term
		for n := 1; n < gammaMaxIter; n++ {
			term *= x / (a + float64(n))
			sum += term
			if term < sum*gammaEps {
				break
			}
		}
		return min(max(1-prefactor*sum, 0), 1)
	}
	// Q(a, x) = prefactor / (x+1-a- 1(1-a)/(x+3-a- 2(2-a)/(x+5-a- ...))), by modified Lentz.
	const tiny = 1e-300
	b := x + 1 - a
	c := 1 / tiny
	d := 1 / b
	h := d
	for i := 1; i < gammaMaxIter; i++ {
		an := -float64(i) * (float64(i) - a)
		b += 2
		d = an*d + b
		if math.Abs(d) < tiny {
			d = tiny
		}
		c = b + an/c
		if math.Abs(c) < tiny {
			c = tiny
		}
		d = 1 / d
		delta := d * c
		h *= delta
		if math.Abs(delta-1) < gammaEps {
			break
		}
	}
	return min(max(prefactor*h, 0), 1)
}
