package batchjob

import (
	"fmt"
	"testing"
)

// packCase returns width columns of n values each, and every row index,
// or every other when sparse (rows left out as rejects are).
func packCase(width, n int, sparse bool) ([][]float64, []int) {
	cols := make([][]float64, width)
	for f := range cols {
		cols[f] = make([]float64, n)
		for i := range cols[f] {
			cols[f][i] = float64(f*n+i) + 0.25
		}
	}
	var rows []int
	for i := 0; i < n; i++ {
		if !sparse || i%3 != 1 {
			rows = append(rows, i)
		}
	}
	return cols, rows
}

// TestPack: the rows' values land row-major, converted, whether the rows
// are contiguous or not, for widths and row counts that are no multiple of
// a tile.
func TestPack(t *testing.T) {
	for _, width := range []int{1, 3, 256} {
		for _, n := range []int{1, 17, 100} {
			for _, sparse := range []bool{false, true} {
				cols, rows := packCase(width, n, sparse)
				if len(rows) > 2 {
					rows = rows[1:] // starting past row 0
				}
				x32 := make([]float32, len(rows)*width)
				x64 := make([]float64, len(rows)*width)
				pack(x32, cols, rows)
				pack(x64, cols, rows)
				for k, r := range rows {
					for f := range cols {
						if want := cols[f][r]; x64[k*width+f] != want || x32[k*width+f] != float32(want) {
							t.Fatalf("width %d, %d rows, sparse %v: row %d feature %d holds %v and %v, want %v",
								width, n, sparse, k, f, x32[k*width+f], x64[k*width+f], want)
						}
					}
				}
			}
		}
	}
}

// BenchmarkPack packs 256 rows of the heavy model's 256 features into
// FP32, as a batch of a score job does.
func BenchmarkPack(b *testing.B) {
	for _, sparse := range []bool{false, true} {
		b.Run(fmt.Sprintf("sparse=%v", sparse), func(b *testing.B) {
			cols, rows := packCase(256, 1664, sparse)
			rows = rows[512:768]
			x := make([]float32, len(rows)*256)
			b.SetBytes(int64(len(x) * 4))
			for b.Loop() {
				pack(x, cols, rows)
			}
		})
	}
}
