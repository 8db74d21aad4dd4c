package drift

import "math"

const (
	// ksExactMaxN is the largest sample for which KolmogorovSmirnov computes the exact
	// p-value, the bound of scipy.stats.ks_2samp's method 'auto'.
	ksExactMaxN = 10000
	// ksExactMaxCells bounds the lattice cells the exact p-value of unequal samples visits,
	// about max(n, m) * min(min(n, m), 2*D*min(n, m)), at 3 to 4 ns a cell: 5e6 cells take
	// under 20 ms. The default reservoir of 1000 against the default reference sample of
	// 5000 fits at any D (it needs 5e6 at D = 1; its typical unshifted D of 0.03 takes 3e5,
	// about 1 ms), so a window judged at the defaults gets scipy's exact p-value. Equal
	// samples take O(n) steps and need no bound.
	ksExactMaxCells = 5_000_000
	// ksStackColumn is the length of the lattice column that ksOutsideBand keeps on the
	// stack, enough for the default reservoir and reference sample of 1000 values; a
	// longer one is allocated.
	ksStackColumn = 1025
)

// ksExactSF returns the exact two-sided two-sample Kolmogorov-Smirnov p-value
// P(D >= h / lcm(n, m)) for samples of n and m values of a continuous distribution (ties
// count as in scipy: not at all), where h*gcd(n, m) is
// the largest |i*m - j*n| the two empirical CDFs reached (i of a's values and j of b's at
// or below some x), as scipy.stats.ks_2samp(method='exact') computes it. ok is false
// where the exact value is too costly (see ksExactMaxN and ksExactMaxCells) or came out
// of range; the caller then falls back to the limiting distribution.
func ksExactSF(n, m, h int) (p float64, ok bool) {
	if h <= 0 {
		return 1, true
	}
	if max(n, m) > ksExactMaxN {
		return 0, false
	}
	if n == m {
		p = ksOutsideSquare(n, h)
	} else {
		if n > m {
			n, m = m, n
		}
		g := gcd(n, m)
		mg := m / g
		// Each of the m columns of the lattice holds about 2h/mg cells inside the band.
		if float64(m)*min(float64(n+1), 2*float64(h)/float64(mg)+2) > ksExactMaxCells {
			return 0, false
		}
		p = ksOutsideBand(n, m, h)
	}
	if math.IsNaN(p) || p < -1e-12 || p > 1+1e-12 {
		return 0, false
	}
	return min(max(p, 0), 1), true
}

// ksOutsideSquare returns P(D >= h/n) for two samples of n values each: the share of
// the binomial(2n, n) lattice paths from (0, 0) to (n, n) that touch |x - y| = h. By
// reflection it is 2 * sum_{k>=1} (-1)^(k-1) binomial(2n, n-kh) / binomial(2n, n); the
// alternating sum cancels, so it is evaluated as 2*A0*(1 - A1*(1 - A2*(...))) with A_k
// the ratio of consecutive binomials, a product of h simple factors each, from the
// innermost term out.
func ksOutsideSquare(n, h int) float64 {
	var p float64
	for k := n / h; k >= 0; k-- {
		ratio := 1.0
		// binomial(2n, n-(k+1)h) / binomial(2n, n-kh) for k >= 0 (with n - 0*h the centre
		// for A0): a factor (n-kh-j)/(n+kh+j+1) for each j < h, zero once n-kh-j is.
		for j := 0; j < h && ratio != 0; j++ {
			ratio = float64(n-k*h-j) * ratio / float64(n+k*h+j+1)
		}
		p = ratio * (1 - p)
	}
	return 2 * p
}

// ksOutsideBand returns P(D >= h/lcm(n, m)) for samples of n < m values: the share of the
// lattice paths from (0, 0) to (m, n) that touch |x*n - y*m| >= h*gcd(n, m) somewhere,
// counted as in Hodges (1958) column by column, but for the share outside the band
// directly (Viehmann, arXiv:2102.08037, the recursion scipy follows): with A(x, y) the
// share of paths to (x, y) that left the band, A = 1 outside it and
// A(x, y) = (x*A(x-1, y) + y*A(x, y-1)) / (x + y) inside, since x of the x+y paths' last
// steps come from the left. Every value is a share in [0, 1], so nothing overflows, and
// the tail is not lost to 1 - (1 - p).
func ksOutsideBand(n, m, h int) float64 {
	g := gcd(n, m)
	ng, mg := n/g, m/g
	var stack [ksStackColumn]float64
	var col []float64
	if n+1 <= len(stack) {
		col = stack[:n+1]
	} else {
		col = make([]float64, n+1)
	}
	// Column x = 0: (0, y) is inside while y*mg < h, and those paths never left; the
	// cells above the band are outside. Cells above a column's band are never written
	// later, so they keep the 1 that the next columns read there.
	for y := range col {
		if y*mg < h {
			col[y] = 0
		} else {
			col[y] = 1
		}
	}
	for x := 1; x <= m; x++ {
		// Inside: x*ng - h < y*mg < x*ng + h.
		lo := 0
		if below := x*ng - h; below >= 0 {
			lo = below/mg + 1
		}
		hi := min((x*ng+h-1)/mg, n)
		if lo > hi {
			// The band is empty here: every path leaves it.
			return 1
		}
		// (x, lo-1) is below the band, so outside; at lo = 0 its weight y is 0.
		prev := 1.0
		fx := float64(x)
		for y := lo; y <= hi; y++ {
			// The reciprocal is off the chain through prev, so the divisions overlap.
			inv := 1 / float64(x+y)
			prev = (fx*col[y] + float64(y)*prev) * inv
			col[y] = prev
		}
	}
	return col[n]
}

// gcd returns the greatest common divisor of the positive a and b.
func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}
