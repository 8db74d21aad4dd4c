package drift

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// BenchmarkObserve measures the request path of drift monitoring with
// the default window of 1000 rows, the judge running beside it.
func BenchmarkObserve(b *testing.B) {
	for _, rows := range []int{1, 32} {
		b.Run(fmt.Sprintf("rows=%d", rows), func(b *testing.B) {
			ref := benchReference(b)
			cfg := Config{}.WithDefaults()
			mon, err := New(Options{Config: cfg, Reference: ref, Columns: identityColumns(8), PredictionColumns: []int{0}})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(mon.Close)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				r := rand.New(rand.NewPCG(rand.Uint64(), 1))
				in, out := Rows{Values: make([]float64, rows*8), Width: 8}, Rows{Values: make([]float64, rows), Width: 1}
				for k := range in.Values {
					in.Values[k] = r.NormFloat64()
				}
				for k := range out.Values {
					out.Values[k] = r.Float64()
				}
				for pb.Next() {
					mon.Observe(in, out)
				}
			})
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*rows), "ns/row")
		})
	}
}

// benchReference profiles 8 standard normal features and a prediction
// uniform on [0, 1) of 10000 rows.
func benchReference(b *testing.B) *Reference {
	r := rand.New(rand.NewPCG(1, 1))
	ref := &Reference{Rows: 10000}
	values := make([]float64, 10000)
	for i := range 9 {
		for k := range values {
			values[k] = r.NormFloat64()
		}
		name, kind := fmt.Sprintf("f%d", i), Numeric
		if i == 8 {
			for k := range values {
				values[k] = r.Float64()
			}
			name = "score"
		}
		p := BuildProfile(name, kind, values, ProfileOptions{Seed: uint64(i)})
		if i == 8 {
			ref.Predictions = append(ref.Predictions, p)
		} else {
			ref.Features = append(ref.Features, p)
		}
	}
	if err := ref.Validate(); err != nil {
		b.Fatal(err)
	}
	return ref
}

// BenchmarkMergeCounts measures a leader adding one follower's counts of
// a second (full reservoirs of 1000 values a feature) into its open
// window, and BenchmarkTakeCounts a follower taking them.
func BenchmarkMergeCounts(b *testing.B) {
	ref := benchReference(b)
	cfg := Config{Window: WindowConfig{Rows: 1e12}}.WithDefaults()
	o := Options{Config: cfg, Reference: ref, Columns: identityColumns(8), PredictionColumns: []int{0}}
	leader, err := New(o)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(leader.Close)
	o.Follower = true
	follower, err := New(o)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(follower.Close)
	observe := func(mon *Monitor, rows int) {
		r := rand.New(rand.NewPCG(1, 2))
		in, out := Rows{Values: make([]float64, 8), Width: 8}, Rows{Values: make([]float64, 1), Width: 1}
		for range rows {
			for k := range in.Values {
				in.Values[k] = r.NormFloat64()
			}
			out.Values[0] = r.Float64()
			mon.Observe(in, out)
		}
	}
	observe(leader, 5000)
	observe(follower, 5000)
	c, _ := follower.TakeCounts()
	b.Run("merge", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := leader.MergeCounts(c); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("take", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			b.StopTimer()
			observe(follower, 1000)
			b.StartTimer()
			if _, ok := follower.TakeCounts(); !ok {
				b.Fatal("nothing taken")
			}
		}
	})
}
