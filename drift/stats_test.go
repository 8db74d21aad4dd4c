package drift

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// Every expected value below is worked out from the statistic's definition in the comment
// next to it, or taken from a published table; none comes from the code under test.

// statsClose reports whether got is within tol of want, relative to want once |want| > 1.
func statsClose(got, want, tol float64) bool {
	return math.Abs(got-want) <= tol*max(1, math.Abs(want))
}

func TestPSI(t *testing.T) {
	f := func(ref, cur []float64, want float64) {
		t.Helper()
		if got := PSI(ref, cur); !statsClose(got, want, 1e-9) {
			t.Fatalf("PSI(%v, %v) = %.12g; want %.12g", ref, cur, got, want)
		}
	}
	// Equal proportions give (q-p)*ln(1) = 0 in every bin.
	f([]float64{3, 5, 2}, []float64{6, 10, 4}, 0)
	// p = (.5, .5), q = (.25, .75):
	// (.25-.5)*ln(.25/.5) + (.75-.5)*ln(.75/.5) = .25*ln 2 + .25*ln 1.5
	//   = .25*0.693147180560 + .25*0.405465108108 = 0.274653072167.
	f([]float64{1, 1}, []float64{1, 3}, 0.2746530721670274)
	// A bin empty on both sides is skipped: the same as the case above.
	f([]float64{1, 0, 1}, []float64{1, 0, 3}, 0.2746530721670274)
	// p = (1, 0), floored to (1, 1e-4); q = (.5, .5):
	// (.5-1)*ln(.5/1) + (.5-1e-4)*ln(.5/1e-4) = .5*ln 2 + .4999*ln 5000
	//   = 0.346573590280 + .4999*8.517193191416 = 4.604318466669.
	f([]float64{1, 0}, []float64{1, 1}, 4.60431846666895)
	// An empty histogram leaves nothing to compare.
	f(nil, nil, 0)
	f([]float64{0, 0}, []float64{1, 2}, 0)
	f([]float64{1, 2}, []float64{0, 0}, 0)
}

func TestJensenShannon(t *testing.T) {
	f := func(ref, cur []float64, want float64) {
		t.Helper()
		if got := JensenShannon(ref, cur); !statsClose(got, want, 1e-9) {
			t.Fatalf("JensenShannon(%v, %v) = %.12g; want %.12g", ref, cur, got, want)
		}
	}
	// p = q gives m = p and log2(p/m) = 0.
	f([]float64{3, 5, 2}, []float64{6, 10, 4}, 0)
	// Disjoint supports: m = p/2 where p > 0 and q/2 where q > 0, so each KL is
	// sum p*log2 2 = 1, JSD = (1+1)/2 = 1 and the distance is exactly 1.
	f([]float64{1, 0}, []float64{0, 1}, 1)
	f([]float64{1, 2, 0, 0}, []float64{0, 0, 3, 1}, 1)
	// p = (.5, .5), q = (1, 0), m = (.75, .25):
	// KL(p||m) = .5*log2(.5/.75) + .5*log2(.5/.25) = .5*(-0.584962500721) + .5 = 0.207518749639
	// KL(q||m) = log2(1/.75) = 0.415037499279
	// JSD = (0.207518749639 + 0.415037499279)/2 = 0.311278124459; sqrt = 0.557923045284.
	f([]float64{1, 1}, []float64{1, 0}, 0.5579230452841438)
	f(nil, nil, 0)
	f([]float64{0, 0}, []float64{1, 2}, 0)
}

func TestHellinger(t *testing.T) {
	f := func(ref, cur []float64, want float64) {
		t.Helper()
		if got := Hellinger(ref, cur); !statsClose(got, want, 1e-9) {
			t.Fatalf("Hellinger(%v, %v) = %.12g; want %.12g", ref, cur, got, want)
		}
	}
	// sum sqrt(p q) = sum p = 1, so sqrt(1 - 1) = 0.
	f([]float64{3, 5, 2}, []float64{6, 10, 4}, 0)
	// Disjoint supports: every product p_i q_i is 0, so sqrt(1 - 0) = 1.
	f([]float64{1, 0}, []float64{0, 1}, 1)
	f([]float64{1, 2, 0, 0}, []float64{0, 0, 3, 1}, 1)
	// p = (.5, .5), q = (1, 0): sum sqrt(p q) = sqrt(.5) = 0.707106781187;
	// sqrt(1 - 0.707106781187) = sqrt(0.292893218813) = 0.541196100146.
	f([]float64{1, 1}, []float64{1, 0}, 0.5411961001461969)
	// p = (.25, .75), q = (.75, .25): sum sqrt(p q) = 2*sqrt(3/16) = sqrt(3)/2, and
	// 1 - sqrt(3)/2 = (4 - 2 sqrt(3))/4 = ((sqrt(3) - 1)/2)^2, so H = (sqrt(3) - 1)/2.
	f([]float64{1, 3}, []float64{3, 1}, (math.Sqrt(3)-1)/2)
	f(nil, nil, 0)
	f([]float64{1, 2}, []float64{0, 0}, 0)
}

func TestLInfinity(t *testing.T) {
	f := func(ref, cur []float64, want float64) {
		t.Helper()
		if got := LInfinity(ref, cur); !statsClose(got, want, 1e-12) {
			t.Fatalf("LInfinity(%v, %v) = %.12g; want %.12g", ref, cur, got, want)
		}
	}
	f([]float64{3, 5, 2}, []float64{6, 10, 4}, 0)
	// p = (.5, .5), q = (.25, .75): |.5 - .25| = |.5 - .75| = .25.
	f([]float64{1, 1}, []float64{1, 3}, 0.25)
	// p = (.25, .5, .25), q = (.25, .25, .5): differences 0, .25, .25.
	f([]float64{1, 2, 1}, []float64{1, 1, 2}, 0.25)
	// Disjoint: p = (1, 0), q = (0, 1).
	f([]float64{1, 0}, []float64{0, 1}, 1)
	f(nil, nil, 0)
}

func TestChiSquare(t *testing.T) {
	f := func(ref, cur []float64, wantStat, wantP float64) {
		t.Helper()
		stat, p := ChiSquare(ref, cur)
		if !statsClose(stat, wantStat, 1e-9) {
			t.Fatalf("ChiSquare(%v, %v) stat = %.12g; want %.12g", ref, cur, stat, wantStat)
		}
		// Relative, so that tiny p-values are checked too.
		if math.Abs(p-wantP) > 1e-9*wantP {
			t.Fatalf("ChiSquare(%v, %v) p = %.12g; want %.12g", ref, cur, p, wantP)
		}
	}
	// df = 1: expected (2, 2) for n = 4; stat = (1 + 1)/2 = 1. The chi-square survival
	// function for df = 1 is erfc(sqrt(x/2)): erfc(sqrt(.5)) = 0.317310507863 (the
	// familiar "outside one sigma" probability).
	f([]float64{1, 1}, []float64{3, 1}, 1, math.Erfc(math.Sqrt(0.5)))
	// df = 2: expected (4, 4, 4) for n = 12; stat = (4 + 0 + 4)/4 = 2. For df = 2 the
	// survival function is exp(-x/2): exp(-1) = 0.367879441171.
	f([]float64{1, 1, 1}, []float64{2, 4, 6}, 2, math.Exp(-1))
	// A fair die rolled 60 times, observed (5, 8, 9, 8, 10, 20) against 10 each:
	// stat = (25 + 4 + 1 + 4 + 0 + 100)/10 = 13.4, df = 5. For half-integer a,
	// Q(5/2, x) = erfc(sqrt x) + e^-x (x^(1/2)/Gamma(3/2) + x^(3/2)/Gamma(5/2)) with
	// Gamma(3/2) = sqrt(pi)/2 and Gamma(5/2) = 3 sqrt(pi)/4; at x = 6.7 that is 0.019905220335.
	f([]float64{1, 1, 1, 1, 1, 1}, []float64{5, 8, 9, 8, 10, 20}, 13.4, 0.019905220334774376)
	// An unseen category: shares (.5, .5, 1e-4)/1.0001, n = 11, so expected
	// e = 5.5/1.0001 = 5.499450054995 twice and u = 0.0011/1.0001 = 0.001099890011:
	// stat = 2*(5-e)^2/e + (1-u)^2/u = 0.090718290170 + 907.182918073466 = 907.273636363636,
	// df = 2 so p = exp(-stat/2).
	f([]float64{10, 10, 0}, []float64{5, 5, 1}, 907.2736363636363, math.Exp(-907.2736363636363/2))
	// Equal proportions; the bin empty on both sides does not count towards df = 1.
	f([]float64{1, 2, 0}, []float64{2, 4, 0}, 0, 1)
	// One bin in play leaves df = 0: no test.
	f([]float64{5, 0}, []float64{3, 0}, 0, 1)
	f([]float64{1, 2}, []float64{0, 0}, 0, 1)
	f(nil, nil, 0, 1)
}

func TestKolmogorovSmirnov(t *testing.T) {
	f := func(a, b []float64, wantD, wantP float64) {
		t.Helper()
		d, p := KolmogorovSmirnov(a, b)
		if !statsClose(d, wantD, 1e-12) || !statsClose(p, wantP, 1e-9) {
			t.Fatalf("KolmogorovSmirnov(%v, %v) = %.12g, %.12g; want %.12g, %.12g", a, b, d, p, wantD, wantP)
		}
	}
	// The p-values of these small samples are exact: the share of the binomial(n+m, n)
	// orderings of the pooled values whose D is at least as large.
	f([]float64{1, 2, 3}, []float64{1, 2, 3}, 0, 1)
	// A walk that compared between tied values would see F_a = 1/2, F_b = 0 here.
	f([]float64{1, 1}, []float64{1, 1}, 0, 1)
	// Disjoint samples: D = 1, reached only by the orderings aabb and bbaa of the 6.
	f([]float64{1, 2}, []float64{3, 4}, 1, 2.0/6)
	// Ties: after 1, F_a = 2/3 and F_b = 1/3; after 2 both are 1. D = 1/3, which every
	// ordering of 3 and 3 values reaches at its first value.
	f([]float64{1, 1, 2}, []float64{1, 2, 2}, 1.0/3, 1)
	// Different lengths: the CDF pairs after 1, 2, 2.5, 3, 3.5, 4 are (.25, 0), (.5, 0),
	// (.5, .5), (.75, .5), (.75, 1), (1, 1): D = .5. Of the 15 orderings of 4 a's and
	// 2 b's only abbaaa stays below 1/2 (its gaps are 1/4, 1/4, 1/4, 1/4, 0, ...), so
	// p = 14/15.
	f([]float64{1, 2, 3, 4}, []float64{2.5, 3.5}, 0.5, 14.0/15)
	f(nil, []float64{1}, 0, 1)
	f([]float64{1}, nil, 0, 1)
}

// ksGen describes a sample of integers, value i being (i*mul + add) % mod + shift, so
// that the samples of TestKolmogorovSmirnovExact are reproduced exactly in Python.
type ksGen struct{ mul, add, mod, shift int }

// sorted returns the n values of g, sorted ascending.
func (g ksGen) sorted(n int) []float64 {
	s := make([]float64, n)
	for i := range s {
		s[i] = float64((i*g.mul+g.add)%g.mod + g.shift)
	}
	slices.Sort(s)
	return s
}

// TestKolmogorovSmirnovExact compares the exact p-values with scipy 1.10.1 (Debian's
// python3-scipy), computed by
//
//	gen = lambda n, mul, add, mod, shift: [float((i*mul+add) % mod + shift) for i in range(n)]
//	scipy.stats.ks_2samp(gen(n, *a), gen(m, *b), method='exact')
//
// (method 'auto' gives the same for all of them). They are equal and unequal lengths,
// with and without ties, D from 0 to 1.
func TestKolmogorovSmirnovExact(t *testing.T) {
	for _, c := range []struct {
		n    int
		a    ksGen
		m    int
		b    ksGen
		d, p float64
	}{
		{5, ksGen{3, 1, 101, 0}, 5, ksGen{7, 2, 103, 200}, 1.0, 0.007936507936507936},
		{5, ksGen{3, 1, 101, 0}, 7, ksGen{7, 2, 103, 200}, 1.0, 0.0025252525252525255},
		{10, ksGen{3, 0, 4, 0}, 10, ksGen{3, 0, 4, 0}, 0.0, 1.0},
		{10, ksGen{3, 1, 7, 0}, 15, ksGen{5, 2, 7, 1}, 0.26666666666666666, 0.7315422361996597},
		{50, ksGen{17, 3, 97, 0}, 50, ksGen{13, 5, 89, 10}, 0.12, 0.8692618870414056},
		{37, ksGen{11, 2, 101, 0}, 200, ksGen{29, 7, 211, -8}, 0.48, 4.127330819150008e-07},
		{200, ksGen{7, 1, 50, 0}, 150, ksGen{11, 3, 53, 4}, 0.14, 0.06388813596536205},
		{200, ksGen{31, 5, 1009, 0}, 200, ksGen{37, 11, 1013, 60}, 0.075, 0.6284308022715471},
		{100, ksGen{13, 1, 503, 0}, 200, ksGen{19, 4, 499, 25}, 0.12, 0.2853697742641565},
		{5, ksGen{3, 1, 101, 300}, 200, ksGen{19, 4, 499, 0}, 0.63, 0.02216829658769834},
		{60, ksGen{7, 1, 61, 0}, 90, ksGen{11, 3, 89, 100}, 1.0, 4.327601116217422e-43},
		{120, ksGen{23, 9, 401, 0}, 80, ksGen{17, 5, 397, 3}, 0.06666666666666667, 0.9770721915292914},
		{199, ksGen{41, 3, 997, 0}, 200, ksGen{43, 1, 991, 40}, 0.07150753768844222, 0.6538163864466129},
		{200, ksGen{3, 2, 1000, 0}, 190, ksGen{7, 5, 1000, 0}, 0.30526315789473685, 1.5521664241390805e-08},
	} {
		a, b := c.a.sorted(c.n), c.b.sorted(c.m)
		for _, swap := range []bool{false, true} {
			x, y := a, b
			if swap {
				x, y = b, a
			}
			d, p := KolmogorovSmirnov(x, y)
			// Within 1e-6, relative to p below 1: scipy's tiny tails count as much as its 0.5s.
			if !statsClose(d, c.d, 1e-12) || math.Abs(p-c.p) > 1e-6*min(1, c.p) {
				t.Fatalf("KolmogorovSmirnov(n=%d %v, m=%d %v) = %.15g, %.15g; scipy %.15g, %.15g",
					len(x), c.a, len(y), c.b, d, p, c.d, c.p)
			}
		}
	}
}

// TestKolmogorovSmirnovFallback checks that samples past the exact bounds get the
// limiting distribution's p-value, and that the exact one tends to it.
func TestKolmogorovSmirnovFallback(t *testing.T) {
	// Past ksExactMaxN: 10001 values at 0..10000 against the same shifted by 500,
	// D = 500/10001.
	a, b := make([]float64, ksExactMaxN+1), make([]float64, ksExactMaxN+1)
	for i := range a {
		a[i], b[i] = float64(i), float64(i+500)
	}
	d, p := KolmogorovSmirnov(a, b)
	if want := kolmogorovQ(d * math.Sqrt(float64(len(a))/2)); p != want {
		t.Fatalf("KolmogorovSmirnov of %d values: p = %v; want the limiting %v", len(a), p, want)
	}
	// Past ksExactMaxCells: 3000 against 7000 values, D = 1.
	a, b = a[:3000], make([]float64, 7000)
	for i := range b {
		b[i] = float64(i + 5000)
	}
	if _, ok := ksExactSF(3000, 7000, 3000*7000); ok {
		t.Fatal("ksExactSF(3000, 7000) at D = 1 is within its bound; pick larger samples")
	}
	if d, p := KolmogorovSmirnov(a, b); d != 1 || p != kolmogorovQ(math.Sqrt(3000.0*7000/10000)) {
		t.Fatalf("KolmogorovSmirnov(3000, 7000 disjoint) = %v, %v; want 1 and the limiting p", d, p)
	}
	// At 1000 and 1500 values the exact p-value is close to the limiting one at
	// moderate D (within a few percent, the finite-sample correction being
	// O(1/sqrt(n))).
	for _, h := range []int{30, 60, 90} {
		exact, ok := ksExactSF(1000, 1500, h)
		limit := kolmogorovQ(float64(h) / 3000 * math.Sqrt(1000.0*1500/2500))
		if !ok || math.Abs(exact-limit) > 0.05*limit+0.01 {
			t.Fatalf("ksExactSF(1000, 1500, %d) = %v, %v; the limiting p is %v", h, exact, ok, limit)
		}
	}
}

func TestKolmogorovQ(t *testing.T) {
	f := func(lambda, want, tol float64) {
		t.Helper()
		if got := kolmogorovQ(lambda); math.Abs(got-want) > tol {
			t.Fatalf("kolmogorovQ(%v) = %.12g; want %.12g", lambda, got, want)
		}
	}
	// Upper quantiles of the Kolmogorov distribution, the asymptotic two-sample KS
	// critical values c(alpha) = 1.224, 1.358, 1.628 for alpha = .10, .05, .01 (e.g. the
	// table in the Kolmogorov-Smirnov test article of Wikipedia), to 7 digits.
	f(1.223848, 0.10, 1e-6)
	f(1.358099, 0.05, 1e-6)
	f(1.627624, 0.01, 1e-6)
	f(0, 1, 0)
	// 2(e^-.5 - e^-2 + e^-4.5 - e^-8 + e^-12.5 - e^-18 + ...) = 0.963945243665.
	f(0.5, 0.9639452436648751, 1e-12)
	f(1, 0.26999967167735456, 1e-12)
	// 2(e^-18 - e^-72) = 3.045995948943e-8, the later terms below 1e-70.
	f(3, 3.045995948942526e-08, 1e-20)
	// Far in the lower tail the CDF is below 1e-12.
	f(0.1, 1, 1e-12)

	// The two expansions meet at 1.18 and must agree there.
	if below, above := kolmogorovQ(math.Nextafter(1.18, 0)), kolmogorovQ(1.18); math.Abs(below-above) > 1e-12 {
		t.Fatalf("kolmogorovQ jumps at 1.18: %.15g below, %.15g at", below, above)
	}
	prev := 1.0
	for lambda := 0.01; lambda < 4; lambda += 0.01 {
		q := kolmogorovQ(lambda)
		if q > prev || q < 0 {
			t.Fatalf("kolmogorovQ(%v) = %v is not a survival function (previous %v)", lambda, q, prev)
		}
		prev = q
	}
}

func TestGammaQ(t *testing.T) {
	f := func(a, x, want, tol float64) {
		t.Helper()
		if got := gammaQ(a, x); math.Abs(got-want) > tol*want {
			t.Fatalf("gammaQ(%v, %v) = %.15g; want %.15g", a, x, got, want)
		}
	}
	// Chi-square critical values, Q(df/2, x/2) = 0.05 (e.g. NIST/SEMATECH e-Handbook of
	// Statistical Methods, 1.3.6.7.4), to 7 digits.
	f(0.5, 3.841459/2, 0.05, 1e-5)
	f(1, 5.991465/2, 0.05, 1e-5)
	f(2.5, 11.070498/2, 0.05, 1e-5)
	f(3, 0, 1, 0)
	f(3, math.Inf(1), 0, 0)
	// Closed forms on both sides of x = a+1, where the method switches:
	// Q(1/2, x) = erfc(sqrt x), and Q(n, x) = e^-x sum_{k<n} x^k/k! for integer n.
	for _, x := range []float64{0.01, 0.5, 1, 1.4999, 1.5, 2, 3, 10, 40, 200} {
		f(0.5, x, math.Erfc(math.Sqrt(x)), 1e-10)
		f(1, x, math.Exp(-x), 1e-10)
		f(2, x, math.Exp(-x)*(1+x), 1e-10)
	}
	// Large a (df = 100 and 1000) against the Poisson sum, each term via logs.
	poissonTail := func(n int, x float64) float64 {
		var sum float64
		for k := range n {
			lgammaK, _ := math.Lgamma(float64(k + 1))
			sum += math.Exp(float64(k)*math.Log(x) - x - lgammaK)
		}
		return sum
	}
	for _, c := range []struct{ n, x float64 }{{50, 40}, {50, 50.5}, {50, 51}, {50, 65}, {500, 470}, {500, 530}} {
		f(c.n, c.x, poissonTail(int(c.n), c.x), 1e-9)
	}
}

func TestWasserstein(t *testing.T) {
	f := func(a, b []float64, want float64) {
		t.Helper()
		if got := Wasserstein(a, b); !statsClose(got, want, 1e-12) {
			t.Fatalf("Wasserstein(%v, %v) = %.15g; want %.15g", a, b, got, want)
		}
	}
	// Point masses at 0 and 1: |F_a - F_b| = 1 on [0, 1).
	f([]float64{0}, []float64{1}, 1)
	// |F_a - F_b| = .5 on [0, .5) and on [.5, 1): .25 + .25.
	f([]float64{0, 1}, []float64{0.5, 0.5}, 0.5)
	// Against a point mass at 0 it is the mean distance to 0: (0 + 1 + 2)/3 = 1.
	f([]float64{0, 1, 2}, []float64{0}, 1)
	// .5 on [0, 1) and .5 on [1, 2).
	f([]float64{0, 2}, []float64{1}, 1)
	// Ties: after 1, F_a = 2/3 and F_b = 1/3 up to 3, so |2/3 - 1/3| * 2 = 2/3.
	f([]float64{1, 1, 3}, []float64{1, 3, 3}, 2.0/3)
	f([]float64{1, 2, 3}, []float64{1, 2, 3}, 0)
	// A sample shifted by c is |c| away whichever way.
	sample := []float64{-4, 0.5, 1, 1, 2.25, 7}
	shifted := make([]float64, len(sample))
	for i, x := range sample {
		shifted[i] = x + 3
	}
	f(sample, shifted, 3)
	f(shifted, sample, 3)
	f(nil, []float64{1}, 0)
	f([]float64{1}, nil, 0)
}

func TestStatsLengthMismatch(t *testing.T) {
	f := func(name string, stat func(ref, cur []float64)) {
		t.Helper()
		defer func() {
			if recover() == nil {
				t.Errorf("%s did not panic on histograms of different lengths", name)
			}
		}()
		stat([]float64{1, 2}, []float64{1, 2, 3})
	}
	f("PSI", func(ref, cur []float64) { PSI(ref, cur) })
	f("JensenShannon", func(ref, cur []float64) { JensenShannon(ref, cur) })
	f("Hellinger", func(ref, cur []float64) { Hellinger(ref, cur) })
	f("LInfinity", func(ref, cur []float64) { LInfinity(ref, cur) })
	f("ChiSquare", func(ref, cur []float64) { ChiSquare(ref, cur) })
}

func TestStatsSampleNaN(t *testing.T) {
	// Sorting puts NaN first and no comparison can step past it, so the walks would spin.
	f := func(name string, stat func(a, b []float64)) {
		t.Helper()
		defer func() {
			if recover() == nil {
				t.Errorf("%s did not panic on a NaN sample value", name)
			}
		}()
		stat([]float64{math.NaN(), 1}, []float64{1, 2})
	}
	f("KolmogorovSmirnov", func(a, b []float64) { KolmogorovSmirnov(a, b) })
	f("Wasserstein", func(a, b []float64) { Wasserstein(a, b) })
}

// statsRandomHistogram returns bins counts in [0, 5], so some bins are empty.
func statsRandomHistogram(rng *rand.Rand, bins int) []float64 {
	h := make([]float64, bins)
	for i := range h {
		h[i] = float64(rng.IntN(6))
	}
	return h
}

// statsRandomSample returns a sorted sample of n values on a coarse grid, so it has ties.
func statsRandomSample(rng *rand.Rand, n int) []float64 {
	s := make([]float64, n)
	for i := range s {
		s[i] = float64(rng.IntN(12)) / 4
	}
	slices.Sort(s)
	return s
}

func TestStatsSymmetryAndRange(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 500 {
		bins := 1 + rng.IntN(8)
		ref, cur := statsRandomHistogram(rng, bins), statsRandomHistogram(rng, bins)
		for _, s := range []struct {
			name string
			stat func(ref, cur []float64) float64
		}{{"JensenShannon", JensenShannon}, {"Hellinger", Hellinger}, {"LInfinity", LInfinity}} {
			forward, backward := s.stat(ref, cur), s.stat(cur, ref)
			if math.Abs(forward-backward) > 1e-12 || forward < 0 || forward > 1 {
				t.Fatalf("%s(%v, %v) = %v, reversed %v; want equal and in [0, 1]", s.name, ref, cur, forward, backward)
			}
		}
		if psi := PSI(ref, cur); psi < 0 {
			t.Fatalf("PSI(%v, %v) = %v; want >= 0", ref, cur, psi)
		}
		if stat, p := ChiSquare(ref, cur); stat < 0 || p < 0 || p > 1 {
			t.Fatalf("ChiSquare(%v, %v) = %v, %v; want stat >= 0, p in [0, 1]", ref, cur, stat, p)
		}

		a, b := statsRandomSample(rng, 1+rng.IntN(20)), statsRandomSample(rng, 1+rng.IntN(20))
		dForward, pForward := KolmogorovSmirnov(a, b)
		dBackward, _ := KolmogorovSmirnov(b, a)
		if math.Abs(dForward-dBackward) > 1e-12 || pForward < 0 || pForward > 1 {
			t.Fatalf("KolmogorovSmirnov(%v, %v) = %v, %v, reversed D %v", a, b, dForward, pForward, dBackward)
		}
		if forward, backward := Wasserstein(a, b), Wasserstein(b, a); math.Abs(forward-backward) > 1e-12 {
			t.Fatalf("Wasserstein(%v, %v) = %v, reversed %v", a, b, forward, backward)
		}
	}
}

func TestStatsScaleInvariance(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 200 {
		bins := 2 + rng.IntN(8)
		ref, cur := statsRandomHistogram(rng, bins), statsRandomHistogram(rng, bins)
		refScaled, curScaled := slices.Clone(ref), slices.Clone(cur)
		for i := range ref {
			refScaled[i] *= 7
			curScaled[i] *= 0.25
		}
		for _, s := range []struct {
			name string
			stat func(ref, cur []float64) float64
		}{{"PSI", PSI}, {"JensenShannon", JensenShannon}, {"Hellinger", Hellinger}, {"LInfinity", LInfinity}} {
			if plain, scaled := s.stat(ref, cur), s.stat(refScaled, curScaled); !statsClose(scaled, plain, 1e-12) {
				t.Fatalf("%s(%v, %v) = %v but %v on counts scaled by 7 and 1/4", s.name, ref, cur, plain, scaled)
			}
		}
		// The chi-square statistic grows with the observed count, so only ref may be scaled.
		plainStat, plainP := ChiSquare(ref, cur)
		scaledStat, scaledP := ChiSquare(refScaled, cur)
		if !statsClose(scaledStat, plainStat, 1e-12) || !statsClose(scaledP, plainP, 1e-12) {
			t.Fatalf("ChiSquare(%v, %v) = %v, %v but %v, %v with ref scaled by 7", ref, cur, plainStat, plainP, scaledStat, scaledP)
		}
	}
}

// TestStatsSamplesAgainstDefinitions checks the merge walks against slower direct
// computations: D as the largest CDF gap at any sample point, counted by scanning, and,
// for samples of equal size, W1 as the mean distance between same-rank order statistics.
func TestStatsSamplesAgainstDefinitions(t *testing.T) {
	cdf := func(sample []float64, x float64) float64 {
		var below int
		for _, v := range sample {
			if v <= x {
				below++
			}
		}
		return float64(below) / float64(len(sample))
	}
	rng := rand.New(rand.NewPCG(5, 6))
	for range 300 {
		a, b := statsRandomSample(rng, 1+rng.IntN(15)), statsRandomSample(rng, 1+rng.IntN(15))
		var wantD float64
		for _, x := range slices.Concat(a, b) {
			wantD = max(wantD, math.Abs(cdf(a, x)-cdf(b, x)))
		}
		if d, _ := KolmogorovSmirnov(a, b); math.Abs(d-wantD) > 1e-12 {
			t.Fatalf("KolmogorovSmirnov(%v, %v) D = %v; want %v", a, b, d, wantD)
		}

		b = statsRandomSample(rng, len(a))
		var wantW float64
		for i := range a {
			wantW += math.Abs(a[i] - b[i])
		}
		wantW /= float64(len(a))
		if w := Wasserstein(a, b); math.Abs(w-wantW) > 1e-12 {
			t.Fatalf("Wasserstein(%v, %v) = %v; want %v", a, b, w, wantW)
		}
	}
}
