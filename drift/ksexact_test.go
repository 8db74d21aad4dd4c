package drift

import (
	"fmt"
	"testing"
)

// BenchmarkKolmogorovSmirnovExact measures one KS statistic and exact p-value at the
// monitor's sizes (reference sample 1000, reservoir 200 or 1000), at a small D, a
// moderate one and D = 1, where the lattice walk of unequal samples is the longest.
func BenchmarkKolmogorovSmirnovExact(b *testing.B) {
	for _, size := range [][2]int{{1000, 1000}, {200, 1000}, {999, 1000}} {
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
