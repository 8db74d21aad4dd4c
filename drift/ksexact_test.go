package drift

import (
	"fmt"
	"math"
	"testing"
)

// BenchmarkKolmogorovSmirnovExact measures one KS statistic and exact p-value at the
// monitor's sizes (reference sample 1000 or the default 5000, reservoir 200 or 1000), at a small D, a
// moderate one and D = 1, where the lattice walk of unequal samples is the longest.
func BenchmarkKolmogorovSmirnovExact(b *testing.B) {
	for _, size := range [][2]int{{1000, 1000}, {200, 1000}, {999, 1000}, {1000, 5000}} {
		for _, shift := range []float64{0.05, 0.3, 2} {
			ref, win := make([]float64, size[1]), make([]float64, size[0])
			for i := range ref {
				ref[i] = float64(i) / float64(len(ref))
			}
			for i := range win {
				win[i] = float64(i)/float64(len(win)) + shift + 0.5/float64(len(win))
			}
			b.Run(fmt.Sprintf("n=%d,m=%d,shift=%v", size[0], size[1], shift), func(b *testing.B) {
				var sink float64
				for b.Loop() {
					d, p := KolmogorovSmirnov(ref, win)
					sink += d + p
				}
				_ = sink
			})
		}
	}
}

// At the default sizes (a reservoir of 1000 against a reference sample of
// 5000, and others near them) the p-value is scipy's exact one:
// scipy.stats.ks_2samp(a, b, method='exact') on a = (i+0.5)/n + shift and
// b = (j+0.5)/m.
func TestKolmogorovSmirnovExactAtDefaultSizes(t *testing.T) {
	for _, c := range []struct {
		n, m  int
		shift float64
		d, p  float64
	}{
		{1000, 5000, 0.04, 0.0406, 0.12587088638805186},
		{1000, 5000, 0.07, 0.0706, 0.00047552171860347356},
		{999, 5000, 0.03, 0.0306004004004004, 0.40721437704569285},
		{300, 5000, 0.1, 0.10173333333333333, 0.005294142017381056},
	} {
		a, b := make([]float64, c.n), make([]float64, c.m)
		for i := range a {
			a[i] = (float64(i)+0.5)/float64(c.n) + c.shift
		}
		for j := range b {
			b[j] = (float64(j) + 0.5) / float64(c.m)
		}
		d, p := KolmogorovSmirnov(a, b)
		if math.Abs(d-c.d) > 1e-12 || math.Abs(p-c.p) > 1e-9 {
			t.Errorf("n=%d m=%d shift %v: D %v p %v, scipy %v %v", c.n, c.m, c.shift, d, p, c.d, c.p)
		}
	}
}

// A judge's memoized KS p-value is KolmogorovSmirnov's, on the first
// window of a size and gap and on the next that meets them.
func TestJudgeMemoizesKSPValue(t *testing.T) {
	ref := normalReference(t, 2, 1, 5000)
	jy, err := newJury(ref, Config{}.WithDefaults())
	if err != nil {
		t.Fatal(err)
	}
	j := &jy.judges[0]
	sample := make([]float64, 1000)
	for i := range sample {
		sample[i] = ref.Features[0].Sample[i*5] + 0.01
	}
	wantD, wantP := KolmogorovSmirnov(ref.Features[0].Sample, sample)
	for range 2 {
		if d, p := j.ks(sample); d != wantD || p != wantP {
			t.Fatalf("memoized D %v p %v, want %v %v", d, p, wantD, wantP)
		}
	}
	if len(j.ksPValues) != 1 {
		t.Fatalf("%d memo entries, want 1", len(j.ksPValues))
	}
}
