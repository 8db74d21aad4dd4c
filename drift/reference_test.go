package drift

import (
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestBuildProfileNumericBins(t *testing.T) {
	f := func(values []float64, bins int, wantEdges []float64, wantCounts []int64) {
		t.Helper()
		p := BuildProfile("x", Numeric, values, ProfileOptions{Bins: bins})
		if !slices.Equal(p.Edges, wantEdges) || !slices.Equal(p.Counts, wantCounts) {
			t.Fatalf("BuildProfile(%v, %d bins): edges %v, counts %v; want %v, %v", values, bins, p.Edges, p.Counts, wantEdges, wantCounts)
		}
		if p.Categories != nil {
			t.Fatalf("a numeric profile has categories %v", p.Categories)
		}
	}
	// 1..10, 5 bins: edge i is sorted[i*9/5], indices 0, 1, 3, 5, 7, 9, values
	// 1, 2, 4, 6, 8, 10. Bins: underflow, [1,2) {1}, [2,4) {2,3}, [4,6) {4,5},
	// [6,8) {6,7}, [8,10] {8,9,10}, overflow.
	f(seq(1, 10), 5, []float64{1, 2, 4, 6, 8, 10}, []int64{0, 1, 2, 2, 2, 3, 0})
	// 0..99, 10 bins: indices i*99/10 = 0, 9, 19, ..., 89, 99 hold their own
	// values; [0,9) holds 9, the next eight bins 10 each, [89,99] holds 11.
	f(seq(0, 99), 10, []float64{0, 9, 19, 29, 39, 49, 59, 69, 79, 89, 99}, []int64{0, 9, 10, 10, 10, 10, 10, 10, 10, 10, 11, 0})
	// 60% zeros: sorted 0,0,0,0,0,0,1,2,3,4, indices 0, 1, 3, 5, 7, 9 hold
	// 0, 0, 0, 0, 2, 4; the ties merge into edges 0, 2, 4, and [0,2) holds the
	// six zeros and the 1, [2,4] holds 2, 3, 4.
	f([]float64{3, 0, 0, 4, 0, 1, 0, 2, 0, 0}, 5, []float64{0, 2, 4}, []int64{0, 7, 3, 0})
	// A constant feature has edges [c, c] and every row in the one inner bin.
	f([]float64{3, 3, 3, 3}, 0, []float64{3, 3}, []int64{0, 4, 0})
	// Two rows, 10 bins: indices i*1/10 are 0 for i < 10 and 1 for i = 10.
	f([]float64{5, -5}, 10, []float64{-5, 5}, []int64{0, 2, 0})
	// No finite value at all: the placeholder edges [0, 0] and no counts.
	f([]float64{math.NaN()}, 10, []float64{0, 0}, []int64{0, 0, 0})
}

func TestBuildProfileMoments(t *testing.T) {
	f := func(values []float64, count, missing, nonFinite int64, mean, std, lo, hi float64) {
		t.Helper()
		p := BuildProfile("x", Numeric, values, ProfileOptions{Bins: 2})
		if p.Count != count || p.Missing != missing || p.NonFinite != nonFinite {
			t.Fatalf("%v: count %d, missing %d, non-finite %d; want %d, %d, %d", values, p.Count, p.Missing, p.NonFinite, count, missing, nonFinite)
		}
		if !near(p.Mean, mean, 1e-12) || !near(p.Std, std, 1e-12) || p.Min != lo || p.Max != hi {
			t.Fatalf("%v: mean %v, std %v, min %v, max %v; want %v, %v, %v, %v", values, p.Mean, p.Std, p.Min, p.Max, mean, std, lo, hi)
		}
		var binned int64
		for _, n := range p.Counts {
			binned += n
		}
		if binned != count {
			t.Fatalf("%v: %d values binned, want the %d finite ones", values, binned, count)
		}
		for _, x := range p.Sample {
			if math.IsNaN(x) || math.IsInf(x, 0) {
				t.Fatalf("%v: the sample %v holds %v", values, p.Sample, x)
			}
		}
	}
	// 1..10: mean 5.5; population variance (n^2-1)/12 = 99/12 = 8.25.
	f(seq(1, 10), 10, 0, 0, 5.5, math.Sqrt(8.25), 1, 10)
	// NaN is missing, ±Inf non-finite, neither binned nor in the moments:
	// finite 1, 2, 3 have mean 2 and variance (1+0+1)/3.
	nan, inf := math.NaN(), math.Inf(1)
	f([]float64{nan, 1, inf, 2, -inf, 3, nan}, 3, 2, 2, 2, math.Sqrt(2.0/3), 1, 3)
	// -2, 4: mean 1, deviations ±3, std 3.
	f([]float64{4, -2}, 2, 0, 0, 1, 3, -2, 4)
	f([]float64{nan, inf}, 0, 1, 1, 0, 0, 0, 0)
}

func TestBuildProfileNonFiniteBins(t *testing.T) {
	nan, inf := math.NaN(), math.Inf(1)
	p := BuildProfile("x", Numeric, []float64{nan, 1, inf, 2, -inf, 3, nan}, ProfileOptions{Bins: 2})
	// Finite 1, 2, 3 with 2 bins: indices 0, 1, 2, edges 1, 2, 3; [1,2) {1}, [2,3] {2, 3}.
	if want := []float64{1, 2, 3}; !slices.Equal(p.Edges, want) {
		t.Fatalf("edges %v, want %v", p.Edges, want)
	}
	if want := []int64{0, 1, 2, 0}; !slices.Equal(p.Counts, want) {
		t.Fatalf("counts %v, want %v: ±Inf must not land in the outer bins", p.Counts, want)
	}
	if want := []float64{1, 2, 3}; !slices.Equal(p.Sample, want) {
		t.Fatalf("sample %v, want %v", p.Sample, want)
	}
}

func TestBuildProfileSample(t *testing.T) {
	values := make([]float64, 5000)
	for i := range values {
		values[i] = float64((i * 7919) % 5000) // 0..4999, shuffled
	}
	f := func(size int, seed uint64, wantLen int) []float64 {
		t.Helper()
		p := BuildProfile("x", Numeric, values, ProfileOptions{SampleSize: size, Seed: seed})
		if len(p.Sample) != wantLen {
			t.Fatalf("sample size %d: got %d values, want %d", size, len(p.Sample), wantLen)
		}
		for i, x := range p.Sample {
			// The values are distinct, so a sample without replacement is
			// strictly ascending, and each is an integer in [0, 5000).
			if i > 0 && !(x > p.Sample[i-1]) {
				t.Fatalf("sample size %d: not strictly ascending at %d: %v then %v", size, i, p.Sample[i-1], x)
			}
			if x != math.Trunc(x) || x < 0 || x >= 5000 {
				t.Fatalf("sample size %d: %v is none of the values", size, x)
			}
		}
		again := BuildProfile("x", Numeric, values, ProfileOptions{SampleSize: size, Seed: seed})
		if !slices.Equal(again.Sample, p.Sample) {
			t.Fatalf("sample size %d, seed %d: two builds drew different samples", size, seed)
		}
		return p.Sample
	}
	a := f(100, 1, 100)
	if b := f(100, 2, 100); slices.Equal(a, b) {
		t.Fatal("seeds 1 and 2 drew the same sample")
	}
	f(0, 1, DefaultSampleSize) // the default size
	// At least as large as the data: the sample is all of it, sorted.
	if all := f(5000, 1, 5000); !slices.Equal(all, seq(0, 4999)) {
		t.Fatal("a sample as large as the data is not all of it")
	}
	f(1_000_000, 1, 5000)
	// A sample of 1000 of 0..4999 has a mean near 2499.5: sd of the values
	// 1443, of the mean 1443/sqrt(1000) * sqrt(1-1000/5000) = 40.8.
	var sum float64
	for _, x := range f(1000, 3, 1000) {
		sum += x
	}
	if mean := sum / 1000; math.Abs(mean-2499.5) > 250 {
		t.Fatalf("mean of the sample %v, want about 2499.5: it is not uniform", mean)
	}
}

func TestBuildProfileCategorical(t *testing.T) {
	p := BuildProfile("colour", Categorical, []float64{3, 1, 3, math.NaN(), 2, 3, 1, math.Inf(-1)}, ProfileOptions{})
	if want := []float64{1, 2, 3}; !slices.Equal(p.Categories, want) {
		t.Fatalf("categories %v, want %v", p.Categories, want)
	}
	// Counts of 1, 2, 3, then the bin of unseen values, empty in the reference.
	if want := []int64{2, 1, 3, 0}; !slices.Equal(p.Counts, want) {
		t.Fatalf("counts %v, want %v", p.Counts, want)
	}
	if p.Edges != nil || p.Count != 6 || p.Missing != 1 || p.NonFinite != 1 {
		t.Fatalf("edges %v, count %d, missing %d, non-finite %d; want none, 6, 1, 1", p.Edges, p.Count, p.Missing, p.NonFinite)
	}
	f := func(x float64, want int) {
		t.Helper()
		if got := p.bin(x); got != want {
			t.Fatalf("bin(%v) = %d, want %d", x, got, want)
		}
	}
	f(1, 0)
	f(2, 1)
	f(3, 2)
	f(0, 3) // unseen, below every category
	f(2.5, 3)
	f(4, 3)
	if err := (&Reference{Features: []Profile{p}}).Validate(); err != nil {
		t.Fatalf("a built categorical profile is invalid: %s", err)
	}
}

func TestProfileBin(t *testing.T) {
	f := func(edges []float64, x float64, want int) {
		t.Helper()
		p := Profile{Kind: Numeric, Edges: edges}
		if got := p.bin(x); got != want {
			t.Fatalf("edges %v: bin(%v) = %d, want %d", edges, x, got, want)
		}
	}
	// Bins: 0 underflow (x < 0), 1 [0,1), 2 [1,2), 3 [2,3], 4 overflow (x > 3).
	edges := []float64{0, 1, 2, 3}
	f(edges, -1, 0)
	f(edges, math.Nextafter(0, -1), 0)
	f(edges, 0, 1) // exactly e0
	f(edges, 0.5, 1)
	f(edges, math.Nextafter(1, 0), 1)
	f(edges, 1, 2) // an inner edge goes to the bin above it
	f(edges, 2, 3)
	f(edges, 2.5, 3)
	f(edges, 3, 3) // exactly ek: the last inner bin is closed
	f(edges, math.Nextafter(3, 4), 4)
	f(edges, 1e300, 4)
	// A constant feature: underflow, [c, c], overflow.
	f([]float64{7, 7}, 6.9, 0)
	f([]float64{7, 7}, 7, 1)
	f([]float64{7, 7}, 7.1, 2)
}

// validProfile returns a small valid numeric profile named name.
func validProfile(name string) Profile {
	return BuildProfile(name, Numeric, seq(1, 10), ProfileOptions{Bins: 5})
}

func TestReferenceValidate(t *testing.T) {
	f := func(mutate func(ref *Reference), want string) {
		t.Helper()
		ref := &Reference{Rows: 10, Features: []Profile{validProfile("a"), validProfile("b")}, Predictions: []Profile{validProfile("score")}}
		mutate(ref)
		err := ref.Validate()
		if want == "" {
			if err != nil {
				t.Fatalf("unexpected error: %s", err)
			}
			return
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("got error %v, want one containing %q", err, want)
		}
	}
	f(func(*Reference) {}, "")
	f(func(ref *Reference) { ref.Predictions = nil }, "")
	f(func(ref *Reference) { ref.Features = nil }, "it profiles no features")
	f(func(ref *Reference) { ref.Features[1].Name = "a" }, `feature "a" is profiled twice`)
	f(func(ref *Reference) { ref.Predictions[0].Name = "b" }, `feature "b" is profiled twice`)
	f(func(ref *Reference) { ref.Features[0].Name = "" }, "has no name")
	f(func(ref *Reference) { ref.Features[1].Kind = "ordinal" }, `feature "b": unknown kind "ordinal"`)
	f(func(ref *Reference) { ref.Features[1].Kind = "" }, `unknown kind ""`)
	f(func(ref *Reference) { ref.Features[0].Edges = []float64{1, 4, 2, 6, 8, 10} }, `feature "a": a numeric feature needs at least two ascending edges`)
	f(func(ref *Reference) { ref.Features[0].Edges = []float64{1, 2, 2, 6, 8, 10} }, "ascending edges")
	f(func(ref *Reference) { ref.Features[0].Edges = []float64{2, 1} }, "ascending edges")
	f(func(ref *Reference) { ref.Features[0].Edges = []float64{1} }, "ascending edges")
	f(func(ref *Reference) {
		ref.Features[0].Edges, ref.Features[0].Counts = []float64{3, 3}, []int64{0, 1, 0}
	}, "")
	f(func(ref *Reference) { ref.Features[0].Counts = ref.Features[0].Counts[1:] }, `feature "a": has 6 counts, want 7`)
	f(func(ref *Reference) { ref.Features[0].Counts[2] = -1 }, "counts must not be negative")
	f(func(ref *Reference) { clear(ref.Features[0].Counts) }, "counts are all zero")
	f(func(ref *Reference) { ref.Features[0].Sample = []float64{1, 3, 2} }, "sample must be sorted")
	f(func(ref *Reference) { ref.Features[0].Sample = nil }, "a numeric feature needs a sample")
	f(func(ref *Reference) { ref.Features[0].Sample = []float64{1, math.NaN(), 3} }, `feature "a": holds a value that is not finite`)
	f(func(ref *Reference) { ref.Features[0].Sample = []float64{1, 2, math.Inf(1)} }, "not finite")
	f(func(ref *Reference) { ref.Features[0].Edges[5] = math.Inf(1) }, "not finite")
	f(func(ref *Reference) { ref.Features[0].Edges[0] = math.NaN() }, "not finite")
	f(func(ref *Reference) { ref.Predictions[0].Mean = math.NaN() }, `feature "score": holds a value that is not finite`)
	f(func(ref *Reference) { ref.Predictions[0].Std = math.Inf(1) }, "not finite")
	f(func(ref *Reference) {
		ref.Features[1] = Profile{Name: "c", Kind: Categorical, Categories: []float64{2, 1}, Counts: []int64{1, 1, 0}}
	}, `feature "c": categories must be ascending and distinct`)
	f(func(ref *Reference) {
		ref.Features[1] = Profile{Name: "c", Kind: Categorical, Categories: []float64{1, 1}, Counts: []int64{1, 1, 0}}
	}, "categories must be ascending and distinct")
	f(func(ref *Reference) {
		ref.Features[1] = Profile{Name: "c", Kind: Categorical, Categories: []float64{1, 2}, Counts: []int64{1, 1}}
	}, `feature "c": has 2 counts, want 3`)
	// A categorical feature needs no sample: chi-square and JS are binned.
	f(func(ref *Reference) {
		ref.Features[1] = Profile{Name: "c", Kind: Categorical, Categories: []float64{1, 2}, Counts: []int64{1, 1, 0}}
	}, "")
}

func TestReferenceFileRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, ReferenceFile)
	ref := &Reference{
		Rows: 10,
		Features: []Profile{
			BuildProfile("a", Numeric, []float64{0.1, 1.0 / 3, math.NaN(), 2e-300, 7, math.Inf(1), 1e30, -4.25, 5, 6}, ProfileOptions{Bins: 3}),
			BuildProfile("c", Categorical, []float64{1, 2, 2, 3, 3, 3, 1, 2, 3, 3}, ProfileOptions{}),
		},
		Predictions: []Profile{BuildProfile("score", Numeric, seq(1, 10), ProfileOptions{})},
	}
	if err := ref.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	got, err := LoadReference(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, ref) {
		t.Fatalf("read back\n%+v\nwant\n%+v", got, ref)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("the folder holds %d files after WriteFile, want only %s", len(entries), ReferenceFile)
	}
	// Writing again replaces the file.
	ref.Rows = 11
	if err := ref.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	if got, err := LoadReference(path); err != nil || got.Rows != 11 {
		t.Fatalf("after a second write: rows %v, error %v; want 11, none", got, err)
	}
}

func TestLoadReferenceErrors(t *testing.T) {
	dir := t.TempDir()
	f := func(name, content string, want ...string) {
		t.Helper()
		path := filepath.Join(dir, name)
		if content != "" {
			if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		ref, err := LoadReference(path)
		if err == nil {
			t.Fatalf("%s: got %+v, want an error", name, ref)
		}
		for _, w := range append(want, path) {
			if !strings.Contains(err.Error(), w) {
				t.Fatalf("%s: error %q does not contain %q", name, err, w)
			}
		}
	}
	f("missing.json", "", "cannot read reference profile", "no such file")
	f("corrupt.json", `{"rows": 3, "features": [`, "cannot decode reference profile")
	f("wrongtype.json", `{"rows": "three"}`, "cannot decode reference profile")
	f("empty.json", `{"rows": 3, "features": []}`, "invalid reference profile", "profiles no features")
	f("badfeature.json", `{"features": [{"name": "a", "kind": "numeric", "edges": [1, 2], "counts": [0, 1], "sample": [1]}]}`,
		"invalid reference profile", `feature "a": has 2 counts, want 3`)
}

// seq returns lo, lo+1, ..., hi.
func seq(lo, hi int) []float64 {
	var out []float64
	for i := lo; i <= hi; i++ {
		out = append(out, float64(i))
	}
	return out
}

// near reports whether got is within tol of want, relative once |want| > 1.
func near(got, want, tol float64) bool {
	return math.Abs(got-want) <= tol*max(1, math.Abs(want))
}

func TestBuildProfileFloat32(t *testing.T) {
	// Values a hair either side of float32 numbers: in float64 they are
	// all distinct, in float32 (as an FP32 input holds them) 1, 2 and 3.
	values := []float64{1 - 1e-12, 1 + 1e-12, 2 - 1e-12, 2 + 1e-12, 3 - 1e-12, 3 + 1e-12, 1e39, math.NaN()}
	p := BuildProfile("x", Numeric, values, ProfileOptions{Bins: 2, Float32: true})
	// 1e39 is beyond float32's range: infinite, as in the model's input.
	if !slices.Equal(p.Edges, []float64{1, 2, 3}) || !slices.Equal(p.Counts, []int64{0, 2, 4, 0}) ||
		p.Min != 1 || p.Max != 3 || p.Mean != 2 || !slices.Equal(p.Sample, []float64{1, 1, 2, 2, 3, 3}) ||
		p.Count != 6 || p.NonFinite != 1 || p.Missing != 1 {
		t.Fatalf("in float32: %+v", p)
	}
	// In float64 the edges are values no FP32 input holds.
	p = BuildProfile("x", Numeric, values[:6], ProfileOptions{Bins: 2})
	if !slices.Equal(p.Edges, []float64{1 - 1e-12, 2 - 1e-12, 3 + 1e-12}) {
		t.Fatalf("in float64: edges %v", p.Edges)
	}
}
