//go:build !race

package drift

import "testing"

// The statistics run on every drift evaluation, so they must not allocate.
func TestStatsAllocs(t *testing.T) {
	ref := []float64{10, 20, 0, 5, 1}
	cur := []float64{12, 15, 3, 0, 2}
	a := []float64{0.1, 0.5, 0.5, 1.2, 3, 4.5}
	b := []float64{0.2, 0.5, 1.1, 1.2, 2}
	var sink float64
	f := func(name string, call func()) {
		t.Helper()
		if n := testing.AllocsPerRun(100, call); n != 0 {
			t.Fatalf("%s: expected 0 allocations, got %f", name, n)
		}
	}
	f("PSI", func() { sink += PSI(ref, cur) })
	f("JensenShannon", func() { sink += JensenShannon(ref, cur) })
	f("Hellinger", func() { sink += Hellinger(ref, cur) })
	f("LInfinity", func() { sink += LInfinity(ref, cur) })
	f("ChiSquare", func() { stat, p := ChiSquare(ref, cur); sink += stat + p })
	f("KolmogorovSmirnov", func() { d, p := KolmogorovSmirnov(a, b); sink += d + p })
	f("Wasserstein", func() { sink += Wasserstein(a, b) })
	f("kolmogorovQ", func() { sink += kolmogorovQ(0.8) + kolmogorovQ(1.5) })
	f("gammaQ", func() { sink += gammaQ(2.5, 1) + gammaQ(2.5, 9) })
	if sink == 0 {
		t.Fatal("the statistics were optimised away")
	}
}
