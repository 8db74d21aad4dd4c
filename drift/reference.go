package drift

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
)

// ReferenceFile is the name of a version's reference profile, beside its model.onnx.
const ReferenceFile = "reference.json"

// Kind says how a feature is binned and judged.
type Kind string

// The kinds of feature.
const (
	Numeric     Kind = "numeric"
	Categorical Kind = "categorical"
)

// Reference is the profile of a version's training data: one Profile per
// monitored input feature and per prediction column.
type Reference struct {
	// Rows is the number of rows profiled.
	Rows        int       `json:"rows"`
	Features    []Profile `json:"features"`
	Predictions []Profile `json:"predictions,omitempty"`
	// SampleRows is a uniform sample of whole rows of the features (rows
	// with a value that is not finite left out), in random order, for the
	// multivariate detector (method mmd); SampleRowsOf builds it. Older
	// profiles have none.
	SampleRows [][]float64 `json:"sample_rows,omitempty"`
}

// SampleRowsOf returns a uniform sample without replacement of at most n
// rows of the features in columns (one slice per feature, one value per
// row), in random order, leaving out rows with a value that is not
// finite; with float32 each value is rounded to float32 first, as
// ProfileOptions.Float32 does.
func SampleRowsOf(columns [][]float64, n int, seed uint64, float32s bool) [][]float64 {
	if len(columns) == 0 {
		return nil
	}
	var rows [][]float64
	for r := range columns[0] {
		row := make([]float64, len(columns))
		ok := true
		for i, col := range columns {
			x := col[r]
			if float32s {
				x = float64(float32(x))
			}
			row[i], ok = x, ok && !math.IsNaN(x) && !math.IsInf(x, 0)
		}
		if ok {
			rows = append(rows, row)
		}
	}
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	n = min(n, len(rows))
	for i := range n { // a partial Fisher-Yates shuffle
		j := i + rng.IntN(len(rows)-i)
		rows[i], rows[j] = rows[j], rows[i]
	}
	return rows[:n:n]
}

// Profile describes one feature of the reference data.
//
// A numeric feature has Edges e0 < e1 < ... < ek at reference quantiles and
// k+2 Counts: the underflow bin (x < e0), the bins [e(i-1), e(i)) with the
// last one closed at ek, and the overflow bin (x > ek). A categorical
// feature has its sorted Categories and one count per category plus a last
// one for unseen values.
type Profile struct {
	Name       string    `json:"name"`
	Kind       Kind      `json:"kind"`
	Edges      []float64 `json:"edges,omitempty"`
	Categories []float64 `json:"categories,omitempty"`
	Counts     []int64   `json:"counts"`
	// Count is the number of finite values; Missing counts NaN values and
	// NonFinite the infinite ones, neither of which is binned.
	Count     int64   `json:"count"`
	Missing   int64   `json:"missing"`
	NonFinite int64   `json:"non_finite"`
	Mean      float64 `json:"mean"`
	Std       float64 `json:"std"`
	Min       float64 `json:"min"`
	Max       float64 `json:"max"`
	// Sample is a sorted uniform sample of the finite values, for the
	// two-sample statistics.
	Sample []float64 `json:"sample"`
}

// DefaultSampleSize is the reference sample a profile keeps per feature
// unless told otherwise: several times a window's reservoir, because every
// window is compared with the same reference sample, and a sample no
// larger than the window carries as much noise as the window itself (with
// the demo's 1000-row windows, a 1000-value sample that happens to sit
// off its population made one feature alarm on 28% of clean windows at a
// nominal 5%; all 4000 training values, on 5%).
const DefaultSampleSize = 5000

// ProfileOptions say how a Profile is built.
type ProfileOptions struct {
	// Bins is the number of equal-mass bins of a numeric feature; default
	// 10. Ties may merge bins.
	Bins int
	// SampleSize bounds Profile.Sample; default DefaultSampleSize.
	SampleSize int
	// Seed makes the sample reproducible.
	Seed uint64
	// Float32 rounds every value to float32 before it is profiled, as the
	// gateway observes the values of an FP32 input: without it, values
	// that round to one float32 would break ties the gateway sees as one,
	// and a value next to an edge could fall in another bin than the same
	// value served. Edges, sample, minimum and maximum are then float32
	// values (stored as float64); a finite value beyond float32's range
	// becomes infinite, as it would in the model's input.
	Float32 bool
}

// BuildProfile profiles values, one per row, of the feature name of kind kind.
func BuildProfile(name string, kind Kind, values []float64, o ProfileOptions) Profile {
	bins, sampleSize := cmp.Or(o.Bins, 10), cmp.Or(o.SampleSize, DefaultSampleSize)
	p := Profile{Name: name, Kind: kind}
	finite := make([]float64, 0, len(values))
	for _, x := range values {
		if o.Float32 {
			x = float64(float32(x))
		}
		switch {
		case math.IsNaN(x):
			p.Missing++
		case math.IsInf(x, 0):
			p.NonFinite++
		default:
			finite = append(finite, x)
		}
	}
	slices.Sort(finite)
	p.Count = int64(len(finite))
	if len(finite) > 0 {
		p.Min, p.Max = finite[0], finite[len(finite)-1]
		var sum, sumSq float64
		for _, x := range finite {
			sum += x
		}
		p.Mean = sum / float64(len(finite))
		for _, x := range finite {
			sumSq += (x - p.Mean) * (x - p.Mean)
		}
		p.Std = math.Sqrt(sumSq / float64(len(finite)))
	}
	if kind == Categorical {
		p.Categories = slices.Compact(slices.Clone(finite))
	} else {
		p.Edges = quantileEdges(finite, bins)
	}
	p.Counts = make([]int64, p.bins())
	for _, x := range finite {
		p.Counts[p.bin(x)]++
	}
	p.Sample = sampleOf(finite, sampleSize, o.Seed)
	return p
}

// quantileEdges returns the distinct values at the quantiles 0, 1/bins, ...,
// 1 of sorted; a constant feature gets the two edges [c, c].
func quantileEdges(sorted []float64, bins int) []float64 {
	if len(sorted) == 0 {
		return []float64{0, 0}
	}
	edges := make([]float64, 0, bins+1)
	for i := range bins + 1 {
		edges = append(edges, sorted[i*(len(sorted)-1)/bins])
	}
	edges = slices.Compact(edges)
	if len(edges) == 1 {
		edges = append(edges, edges[0])
	}
	return edges
}

// sampleOf returns a sorted uniform sample without replacement of at most n
// values of sorted.
func sampleOf(sorted []float64, n int, seed uint64) []float64 {
	if len(sorted) <= n {
		return slices.Clone(sorted)
	}
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	picked := slices.Clone(sorted)
	for i := range n { // a partial Fisher-Yates shuffle
		j := i + r.IntN(len(picked)-i)
		picked[i], picked[j] = picked[j], picked[i]
	}
	picked = picked[:n]
	slices.Sort(picked)
	return picked
}

// bins returns the number of bins of p: inner ones plus underflow and
// overflow for a numeric feature, categories plus unseen for a categorical one.
func (p *Profile) bins() int {
	if p.Kind == Categorical {
		return len(p.Categories) + 1
	}
	return len(p.Edges) + 1
}

// bin returns the index of the bin x (finite) falls into.
func (p *Profile) bin(x float64) int {
	if p.Kind == Categorical {
		i, found := slices.BinarySearch(p.Categories, x)
		if !found {
			return len(p.Categories)
		}
		return i
	}
	e := p.Edges
	switch {
	case x < e[0]:
		return 0
	case x > e[len(e)-1]:
		return len(e)
	}
	// The number of edges at or below x, capped so that the last inner
	// bin is closed at its upper edge.
	lo, hi := 0, len(e)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if e[mid] <= x {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return min(lo, len(e)-1)
}

// LoadReference reads and checks the reference profile at path.
func LoadReference(path string) (*Reference, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read reference profile: %w", err)
	}
	var ref Reference
	if err := json.Unmarshal(data, &ref); err != nil {
		return nil, fmt.Errorf("cannot decode reference profile %q: %w", path, err)
	}
	if err := ref.Validate(); err != nil {
		return nil, fmt.Errorf("invalid reference profile %q: %w", path, err)
	}
	return &ref, nil
}

// WriteFile writes ref as indented JSON to path, through a temporary file
// renamed into place so that a reader never sees half a profile.
func (ref *Reference) WriteFile(path string) error {
	data, err := json.MarshalIndent(ref, "", " ")
	if err != nil {
		return fmt.Errorf("cannot encode reference profile: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("cannot write reference profile: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("cannot write reference profile: %w", err)
	}
	return nil
}

// Validate reports the first inconsistency of ref, naming the feature.
func (ref *Reference) Validate() error {
	if len(ref.Features) == 0 {
		return errors.New("it profiles no features")
	}
	seen := make(map[string]bool)
	for _, group := range [][]Profile{ref.Features, ref.Predictions} {
		for i := range group {
			p := &group[i]
			if seen[p.Name] {
				return fmt.Errorf("feature %q is profiled twice", p.Name)
			}
			seen[p.Name] = true
			if err := p.validate(); err != nil {
				return fmt.Errorf("feature %q: %w", p.Name, err)
			}
		}
	}
	for r, row := range ref.SampleRows {
		if len(row) != len(ref.Features) {
			return fmt.Errorf("sample row %d holds %d values, want one per feature (%d)", r, len(row), len(ref.Features))
		}
		for _, x := range row {
			if math.IsNaN(x) || math.IsInf(x, 0) {
				return fmt.Errorf("sample row %d holds a value that is not finite", r)
			}
		}
	}
	return nil
}

func (p *Profile) validate() error {
	sorted := func(xs []float64, strict bool) bool {
		for i := 1; i < len(xs); i++ {
			if xs[i] < xs[i-1] || strict && xs[i] == xs[i-1] {
				return false
			}
		}
		return true
	}
	switch {
	case p.Name == "":
		return errors.New("has no name")
	case p.Kind != Numeric && p.Kind != Categorical:
		return fmt.Errorf("unknown kind %q: want numeric or categorical", p.Kind)
	case p.Kind == Numeric && (len(p.Edges) < 2 || !sorted(p.Edges, len(p.Edges) > 2)):
		return errors.New("a numeric feature needs at least two ascending edges")
	case p.Kind == Categorical && !sorted(p.Categories, true):
		return errors.New("categories must be ascending and distinct")
	case len(p.Counts) != p.bins():
		return fmt.Errorf("has %d counts, want %d", len(p.Counts), p.bins())
	case !sorted(p.Sample, false):
		return errors.New("sample must be sorted")
	case p.Kind == Numeric && len(p.Sample) == 0:
		return errors.New("a numeric feature needs a sample")
	}
	var total int64
	for _, n := range p.Counts {
		if n < 0 {
			return errors.New("counts must not be negative")
		}
		total += n
	}
	if total == 0 {
		return errors.New("counts are all zero")
	}
	for _, x := range slices.Concat(p.Edges, p.Categories, p.Sample, []float64{p.Mean, p.Std}) {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return errors.New("holds a value that is not finite")
		}
	}
	return nil
}
