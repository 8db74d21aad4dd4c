package drift

import (
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
	"testing/synctest"
)

// gaussianReference profiles nf independent standard normal features of
// rows rows, with a row sample of up to sampleRows of them.
func gaussianReference(t *testing.T, seed uint64, nf, rows, sampleRows int) *Reference {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 2))
	columns := make([][]float64, nf)
	ref := &Reference{Rows: rows}
	for i := range columns {
		columns[i] = make([]float64, rows)
		for k := range columns[i] {
			columns[i][k] = r.NormFloat64()
		}
		ref.Features = append(ref.Features, BuildProfile(string(rune('a'+i)), Numeric, columns[i], ProfileOptions{Seed: uint64(i)}))
	}
	ref.SampleRows = SampleRowsOf(columns, sampleRows, seed, false)
	if err := ref.Validate(); err != nil {
		t.Fatal(err)
	}
	return ref
}

// gaussianWindow returns rows rows of nf standard normal features, each
// shifted by shift.
func gaussianWindow(r *rand.Rand, rows, nf int, shift float64) [][]float64 {
	out := make([][]float64, rows)
	for k := range out {
		out[k] = make([]float64, nf)
		for i := range out[k] {
			out[k][i] = r.NormFloat64() + shift
		}
	}
	return out
}

// MMD holds its false-alarm rate on clean windows and, on a shift spread
// thin over many features, catches more windows than the per-feature
// tests under the family-wise rule.
func TestMMDDetector(t *testing.T) {
	const nf, rows, windows = 16, 60, 30
	// A row sample of 150 keeps the test quick under the race detector.
	ref := gaussianReference(t, 21, nf, 2000, 150)
	mmd, err := NewOffline(ref, Config{Method: MethodMMD, Window: WindowConfig{Rows: rows}})
	if err != nil {
		t.Fatal(err)
	}
	ks, err := NewOffline(ref, Config{Window: WindowConfig{Rows: rows}})
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(22, 22))
	count := func(o *Offline, shift float64, r *rand.Rand) (drifted int, last WindowResult) {
		for range windows {
			res, err := o.Judge(gaussianWindow(r, rows, nf, shift))
			if err != nil {
				t.Fatal(err)
			}
			drifted += boolIndex(res.Drifted)
			last = res
		}
		return drifted, last
	}
	clean, last := count(mmd, 0, r)
	if m := last.MMD; m == nil || last.Rule.Name != RuleMMD || m.Rows != rows || m.ReferenceRows != 150 || m.Permutations < mmdMinPermutations || !(m.Bandwidth > 0) {
		t.Fatalf("last clean window: rule %+v, mmd %+v", last.Rule, last.MMD)
	}
	if clean > windows/6 { // 5% expected: 1.5 of 30
		t.Fatalf("MMD flagged %d of %d clean windows", clean, windows)
	}
	seed := r.Uint64()
	caughtMMD, last := count(mmd, 0.25, rand.New(rand.NewPCG(seed, 1)))
	caughtKS, _ := count(ks, 0.25, rand.New(rand.NewPCG(seed, 1)))
	t.Logf("clean windows flagged by MMD: %d of %d; a 0.25 sd shift in all %d features caught by MMD in %d, by KS family-wise in %d; last took %.3fs, %d permutations",
		clean, windows, nf, caughtMMD, caughtKS, last.MMD.Seconds, last.MMD.Permutations)
	if caughtMMD < windows*3/4 || caughtMMD <= caughtKS {
		t.Fatalf("a thin shift: MMD caught %d of %d windows, KS %d; want most, and more than KS", caughtMMD, windows, caughtKS)
	}
}

func TestMMDNeedsRows(t *testing.T) {
	ref := gaussianReference(t, 1, 2, 100, 100)
	ref.SampleRows = nil
	if _, err := NewOffline(ref, Config{Method: MethodMMD}); err == nil || !strings.Contains(err.Error(), "no sample_rows") {
		t.Fatalf("mmd without sample rows: %v", err)
	}
	ref = gaussianReference(t, 1, 2, 100, 100)
	if _, err := NewOffline(ref, Config{Features: map[string]FeatureConfig{"a": {Method: MethodMMD}}}); err == nil || !strings.Contains(err.Error(), `not the feature "a"`) {
		t.Fatalf("mmd for one feature: %v", err)
	}
}

// With method mmd a monitor judges the rows it observed and those a
// follower's counts carried, and refuses a malformed row sample.
func TestMMDMonitorTakesFollowersRows(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ref := gaussianReference(t, 5, 3, 1000, 100)
		cfg := Config{Method: MethodMMD, Window: WindowConfig{Rows: 200}}
		leader := startMonitor(t, Options{Config: cfg, Reference: ref})
		follower := startMonitor(t, Options{Config: cfg, Reference: ref, Follower: true})
		r := rand.New(rand.NewPCG(6, 6))
		feed(follower, r, 100, shifted(3, 0))
		c, ok := follower.TakeCounts()
		if !ok || c.RowsSampled != 100 || len(c.SampleRows) != 300 {
			t.Fatalf("follower's counts: %v, %d rows sampled, %d sample values; want 100, 300", ok, c.RowsSampled, len(c.SampleRows))
		}
		data, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		var back Counts
		if err := json.Unmarshal(data, &back); err != nil {
			t.Fatal(err)
		}
		bad := back
		bad.SampleRows = bad.SampleRows[:299]
		if err := leader.MergeCounts(bad); err == nil || !strings.Contains(err.Error(), "a sample of rows of 299 values, want a multiple of 3") {
			t.Fatalf("a torn row sample: %v", err)
		}
		if err := leader.MergeCounts(back); err != nil {
			t.Fatal(err)
		}
		feed(leader, r, 100, shifted(3, 0))
		synctest.Wait()
		last := leader.Report().Last
		if last == nil || last.MMD == nil || last.MMD.Rows != 200 || last.Rule.Name != RuleMMD {
			t.Fatalf("the fleet's window: %+v", last)
		}
	})
}

// On features that move together (one factor and a little noise each), a
// small step of every feature is a large move under their correlation:
// the whitened MMD catches it where no single feature's test does.
func TestMMDWhitensCorrelatedFeatures(t *testing.T) {
	const nf, rows, windows = 12, 50, 20
	r := rand.New(rand.NewPCG(31, 31))
	row := func(shift float64) []float64 {
		f := r.NormFloat64()
		out := make([]float64, nf)
		for i := range out {
			out[i] = f + 0.3*r.NormFloat64() + shift
		}
		return out
	}
	columns := make([][]float64, nf)
	ref := &Reference{Rows: 2000}
	for range 2000 {
		for i, x := range row(0) {
			columns[i] = append(columns[i], x)
		}
	}
	for i := range columns {
		ref.Features = append(ref.Features, BuildProfile(string(rune('a'+i)), Numeric, columns[i], ProfileOptions{Seed: uint64(i)}))
	}
	ref.SampleRows = SampleRowsOf(columns, 150, 1, false)
	mmd, err := NewOffline(ref, Config{Method: MethodMMD, Window: WindowConfig{Rows: rows}})
	if err != nil {
		t.Fatal(err)
	}
	ks, _ := NewOffline(ref, Config{Window: WindowConfig{Rows: rows}})
	// The step: 0.15 of a feature's sd (1.04) in every feature, opposite
	// in the two halves, which the common factor cannot explain.
	var caughtMMD, caughtKS int
	for range windows {
		win := make([][]float64, rows)
		for k := range win {
			win[k] = row(0)
			for i := range win[k] {
				if i < nf/2 {
					win[k][i] += 0.15
				} else {
					win[k][i] -= 0.15
				}
			}
		}
		a, _ := mmd.Judge(win)
		b, _ := ks.Judge(win)
		caughtMMD += boolIndex(a.Drifted)
		caughtKS += boolIndex(b.Drifted)
	}
	t.Logf("a 0.15 sd step against the correlation of %d features, %d-row windows: MMD caught %d of %d, KS family-wise %d", nf, rows, caughtMMD, windows, caughtKS)
	if caughtMMD < windows*3/4 || caughtMMD <= caughtKS {
		t.Fatalf("MMD caught %d of %d windows, KS %d; want most, and more than KS", caughtMMD, windows, caughtKS)
	}
}

// The permutation p-value is exact: with a small reference of correlated
// features (fewer rows than a covariance of 13 features wants), a clean
// window drifts with about the nominal chance. Each window has a
// reference of its own, so that the rate is not that of one reference.
func TestMMDHoldsItsRateOnSmallReferences(t *testing.T) {
	const nf, refRows, rows, windows = 13, 90, 50, 80
	r := rand.New(rand.NewPCG(41, 41))
	draw := func(n int) [][]float64 {
		out := make([][]float64, n)
		for k := range out {
			f := r.NormFloat64()
			out[k] = make([]float64, nf)
			for i := range out[k] {
				out[k][i] = f*float64(i%3) + r.NormFloat64()
			}
		}
		return out
	}
	drifted := 0
	for range windows {
		refRowsOf := draw(refRows)
		columns := make([][]float64, nf)
		for _, row := range refRowsOf {
			for i, x := range row {
				columns[i] = append(columns[i], x)
			}
		}
		ref := &Reference{Rows: refRows}
		for i := range columns {
			ref.Features = append(ref.Features, BuildProfile(string(rune('a'+i)), Numeric, columns[i], ProfileOptions{Seed: uint64(i)}))
		}
		ref.SampleRows = SampleRowsOf(columns, refRows, 1, false)
		off, err := NewOffline(ref, Config{Method: MethodMMD, Window: WindowConfig{Rows: rows}})
		if err != nil {
			t.Fatal(err)
		}
		res, err := off.Judge(draw(rows))
		if err != nil {
			t.Fatal(err)
		}
		drifted += boolIndex(res.Drifted)
	}
	t.Logf("%d of %d clean windows drifted at a nominal 5%%", drifted, windows)
	if drifted > windows/8 { // 4 expected; 10 or more is beyond chance (p < 0.01)
		t.Fatalf("%d of %d clean windows drifted at a nominal 5%%", drifted, windows)
	}
}
