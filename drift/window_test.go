package drift

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// mixedReference profiles a numeric feature x, a categorical feature c of
// categories 0, 1, 2 and a numeric prediction p.
func mixedReference(t *testing.T, seed uint64, rows int) *Reference {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 1))
	x, c, p := make([]float64, rows), make([]float64, rows), make([]float64, rows)
	for i := range rows {
		x[i], c[i], p[i] = r.NormFloat64(), float64(r.IntN(3)), r.Float64()
	}
	ref := &Reference{
		Rows:        rows,
		Features:    []Profile{BuildProfile("x", Numeric, x, ProfileOptions{}), BuildProfile("c", Categorical, c, ProfileOptions{})},
		Predictions: []Profile{BuildProfile("p", Numeric, p, ProfileOptions{})},
	}
	if err := ref.Validate(); err != nil {
		t.Fatal(err)
	}
	return ref
}

// openWindow returns mon's open window; the caller must have stopped
// observing.
func openWindow(mon *Monitor) *window {
	mon.mu.Lock()
	defer mon.mu.Unlock()
	return mon.cur
}

// The merge requirement: the windows of two replicas, fed disjoint
// parts of the traffic and merged, equal one window fed all of it.
func TestWindowMergeEqualsOneWindow(t *testing.T) {
	ref := mixedReference(t, 1, 3000)
	cfg := Config{Window: WindowConfig{Rows: 1e9}, Reservoir: 100}
	replicas := [2]*Monitor{newMonitor(t, ref, cfg), newMonitor(t, ref, cfg)}
	all := newMonitor(t, ref, cfg)

	r := rand.New(rand.NewPCG(2, 2))
	const width = 3 // x, c and a column no feature reads
	in, out := make([]float64, 5*width), make([]float64, 5)
	var rowsOf [2]int
	fed := map[int]map[float64]bool{0: {}, 2: {}} // the finite values of x and p
	for range 400 {
		for k := range 5 {
			x := r.NormFloat64() + 0.3
			switch r.IntN(50) {
			case 0:
				x = math.NaN()
			case 1:
				x = math.Inf(1 - 2*r.IntN(2))
			case 2:
				x = 10 + r.Float64() // overflow bin
			}
			in[k*width], in[k*width+1], in[k*width+2] = x, float64(r.IntN(4)), r.Float64() // category 3 is unseen
			out[k] = r.Float64() * 1.2
			if k == 0 {
				out[k] = math.NaN()
			}
			fed[0][x], fed[2][out[k]] = true, true
		}
		i := r.IntN(2) // a request goes to either replica
		rowsOf[i] += 5
		replicas[i].Observe(Rows{Values: in, Width: width}, Rows{Values: out, Width: 1})
		all.Observe(Rows{Values: in, Width: width}, Rows{Values: out, Width: 1})
	}
	a, b, whole := openWindow(replicas[0]), openWindow(replicas[1]), openWindow(all)
	if rowsOf[0] < 500 || rowsOf[1] < 500 {
		t.Fatalf("the replicas got %v rows: too uneven to test the merge", rowsOf)
	}
	a.merge(b)

	if a.rows != whole.rows || whole.rows != 2000 {
		t.Fatalf("merged rows %d, one window %d; want both 2000", a.rows, whole.rows)
	}
	for i := range whole.features {
		got, want := &a.features[i], &whole.features[i]
		name := all.jury.judges[i].profile.Name
		if !slices.Equal(got.counts, want.counts) {
			t.Fatalf("%s: merged counts %v, one window %v", name, got.counts, want.counts)
		}
		if got.count != want.count || got.missing != want.missing || got.nonFinite != want.nonFinite || got.seen != want.seen {
			t.Fatalf("%s: merged count, missing, non-finite, seen %d, %d, %d, %d; one window %d, %d, %d, %d",
				name, got.count, got.missing, got.nonFinite, got.seen, want.count, want.missing, want.nonFinite, want.seen)
		}
		if !near(got.sum, want.sum, 1e-9) || !near(got.sumSq, want.sumSq, 1e-9) {
			t.Fatalf("%s: merged sum %v, sum of squares %v; one window %v, %v", name, got.sum, got.sumSq, want.sum, want.sumSq)
		}
	}
	x, c, p := &whole.features[0], &whole.features[1], &whole.features[2]
	if x.missing == 0 || x.nonFinite == 0 || x.counts[len(x.counts)-1] == 0 || c.counts[3] == 0 || p.missing != 400 || p.counts[len(p.counts)-1] == 0 {
		t.Fatal("the traffic did not reach missing, non-finite, overflow and unseen bins, so the test shows little")
	}
	if a.features[1].reservoir != nil {
		t.Fatal("a categorical feature keeps a reservoir")
	}
	// The merged reservoirs are full, of values the replicas observed, each
	// at most once (the values fed are distinct).
	for i, values := range fed {
		got := slices.Clone(a.features[i].reservoir)
		if len(got) != 100 || cap(a.features[i].reservoir) != 100 {
			t.Fatalf("feature %d: merged reservoir of %d values (capacity %d), want 100", i, len(got), cap(a.features[i].reservoir))
		}
		for _, v := range got {
			if !values[v] || math.IsNaN(v) || math.IsInf(v, 0) {
				t.Fatalf("feature %d: the merged reservoir holds %v, which was not a finite value observed", i, v)
			}
		}
		slices.Sort(got)
		if len(slices.Compact(got)) != 100 {
			t.Fatalf("feature %d: the merged reservoir holds a value twice", i)
		}
	}
}

// singleReference profiles one numeric feature of values uniform in [-1, 1].
func singleReference(t *testing.T) *Reference {
	t.Helper()
	values := make([]float64, 1000)
	for i := range values {
		values[i] = -1 + 2*(float64(i)+0.5)/1000
	}
	return &Reference{Rows: 1000, Features: []Profile{BuildProfile("u", Numeric, values, ProfileOptions{})}}
}

func TestWindowMergeReservoirShares(t *testing.T) {
	ref := singleReference(t)
	f := func(nA, nB, capacity int, minA, maxA int) {
		t.Helper()
		a, b := newWindow(ref, capacity), newWindow(ref, capacity)
		b.rng = 12345 // replicas do not share a generator state
		// a sees values in (-1, 0), b values in (0, 1), all distinct.
		for i := range nA {
			a.add(0, &ref.Features[0], -(float64(i)+0.5)/float64(nA))
		}
		for i := range nB {
			b.add(0, &ref.Features[0], (float64(i)+0.5)/float64(nB))
		}
		a.merge(b)
		got := a.features[0].reservoir
		if want := min(capacity, nA+nB); len(got) != want {
			t.Fatalf("%d + %d values into %d: merged reservoir of %d, want %d", nA, nB, capacity, len(got), want)
		}
		if a.features[0].seen != int64(nA+nB) {
			t.Fatalf("merged seen %d, want %d", a.features[0].seen, nA+nB)
		}
		fromA := 0
		for _, x := range got {
			if x < 0 {
				fromA++
			}
		}
		if fromA < minA || fromA > maxA {
			t.Fatalf("%d + %d values into %d: %d of the merged reservoir from the first, want %d..%d", nA, nB, capacity, fromA, minA, maxA)
		}
		sorted := slices.Clone(got)
		slices.Sort(sorted)
		if len(slices.Compact(sorted)) != len(got) {
			t.Fatal("the merged reservoir holds a value twice")
		}
	}
	// 30000 and 10000 values into 1000: the first's share is hypergeometric
	// with mean 1000 * 3/4 = 750 and sd sqrt(1000 * 3/4 * 1/4 * 39000/39999)
	// = 13.5; the bounds are more than 7 sd away.
	f(30000, 10000, 1000, 650, 850)
	// Equal parts: mean 500, sd sqrt(1000/4 * 0.975) = 15.8.
	f(20000, 20000, 1000, 400, 600)
	// 1000 and 99000 values into 100: mean 1, sd about 1.
	f(1000, 99000, 100, 0, 8)
	// Reservoirs not yet full keep every value of both.
	f(300, 200, 1000, 300, 300)
	f(0, 50, 100, 0, 0)
	f(50, 0, 100, 50, 50)
}

func TestWindowReservoirUniform(t *testing.T) {
	ref := singleReference(t)
	w := newWindow(ref, 1000)
	// 100000 distinct values in ascending order, uniform on (0, 1): a
	// reservoir that favoured early or late values would show it in its mean.
	const n = 100000
	for i := range n {
		w.add(0, &ref.Features[0], (float64(i)+0.5)/n)
	}
	f := &w.features[0]
	if len(f.reservoir) != 1000 || f.seen != n || f.count != n {
		t.Fatalf("reservoir of %d, seen %d, count %d; want 1000, %d, %d", len(f.reservoir), f.seen, f.count, n, n)
	}
	sorted := slices.Clone(f.reservoir)
	slices.Sort(sorted)
	if len(slices.Compact(sorted)) != 1000 {
		t.Fatal("the reservoir holds a value twice")
	}
	var sum float64
	deciles := make([]int, 10)
	for _, x := range f.reservoir {
		sum += x
		deciles[int(x*10)]++
	}
	// The mean of 1000 uniform values has sd sqrt(1/12/1000) = 0.0091.
	if mean := sum / 1000; math.Abs(mean-0.5) > 0.04 {
		t.Fatalf("reservoir mean %v, want about 0.5", mean)
	}
	// Each decile holds about 100 (sd sqrt(1000 * 0.1 * 0.9) = 9.5).
	for d, k := range deciles {
		if k < 55 || k > 145 {
			t.Fatalf("decile %d holds %d of 1000 reservoir values, want about 100: %v", d, k, deciles)
		}
	}

	// reset empties the window for reuse and keeps the capacity.
	w.reset(7, w.start)
	if w.seq != 7 || w.rows != 0 || f.count != 0 || f.seen != 0 || f.sum != 0 || f.sumSq != 0 || len(f.reservoir) != 0 || cap(f.reservoir) != 1000 || slices.ContainsFunc(f.counts, func(n int64) bool { return n != 0 }) {
		t.Fatalf("after reset: %+v", *f)
	}
	// Fewer values than the capacity are all kept, in order.
	for i := range 10 {
		w.add(0, &ref.Features[0], float64(i))
	}
	if !slices.Equal(f.reservoir, seq(0, 9)) {
		t.Fatalf("reservoir %v, want 0..9", f.reservoir)
	}
}
