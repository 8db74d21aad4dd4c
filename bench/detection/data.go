package detection

import (
	"bytes"
	_ "embed"
	"encoding/csv"
	"fmt"
	"math"
	"math/rand/v2"
	"os/exec"
	"strconv"

	"github.com/infergate/infergate/drift"
	"github.com/infergate/infergate/retrain/trainer"
)

// sklearnScript exports one of scikit-learn's bundled data sets as CSV; it
// is run from its embedded copy, so that the binary needs no source tree.
//
//go:embed sklearn_data.py
var sklearnScript []byte

// The data sets measured.
const (
	BreastCancer = "breast_cancer" // scikit-learn: 30 features, 569 rows, 2 classes
	Wine         = "wine"          // scikit-learn: 13 features, 178 rows, 3 classes
	Demo         = "demo"          // retrain/trainer.Synthetic: 8 features, fresh rows
)

// demoReference is the number of rows of the demo's reference: the
// profile's default sample, drift.DefaultSampleSize, so that KS compares a
// window with every reference row, the rows scipy is given. A
// scikit-learn set's reference is half its rows.
const demoReference = drift.DefaultSampleSize

// dataset is a table of rows (values rounded to float32) with a class per
// row, or a generator of fresh rows.
type dataset struct {
	name     string
	features []string
	x        [][]float64
	y        []int
	classes  int
	// refRows is the number of rows of a generator's reference.
	refRows int
	// fresh, when set, generates n rows from seed instead of x and y.
	fresh func(seed uint64, n int) ([][]float64, []int)
}

// loadSklearn runs python on the embedded sklearn_data.py to export the
// scikit-learn data set name.
func loadSklearn(python, name string) (*dataset, error) {
	cmd := exec.Command(python, "-", name)
	cmd.Stdin = bytes.NewReader(sklearnScript)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("cannot export scikit-learn's %s with %s: %w: %s", name, python, err, bytes.TrimSpace(stderr.Bytes()))
	}
	records, err := csv.NewReader(bytes.NewReader(out)).ReadAll()
	if err != nil || len(records) < 2 {
		return nil, fmt.Errorf("cannot read scikit-learn's %s: want a CSV header and rows: %v", name, err)
	}
	header := records[0]
	d := &dataset{name: name, features: header[:len(header)-1]}
	for i, rec := range records[1:] {
		if len(rec) != len(header) {
			return nil, fmt.Errorf("cannot read scikit-learn's %s: row %d holds %d values, want %d", name, i+1, len(rec), len(header))
		}
		row := make([]float64, len(d.features))
		for j := range row {
			v, err := strconv.ParseFloat(rec[j], 64)
			if err != nil {
				return nil, fmt.Errorf("cannot read scikit-learn's %s: row %d: %w", name, i+1, err)
			}
			row[j] = float64(float32(v))
		}
		class, err := strconv.Atoi(rec[len(rec)-1])
		if err != nil || class < 0 {
			return nil, fmt.Errorf("cannot read scikit-learn's %s: row %d: invalid class %q", name, i+1, rec[len(rec)-1])
		}
		d.x = append(d.x, row)
		d.y = append(d.y, class)
		d.classes = max(d.classes, class+1)
	}
	return d, nil
}

// demoDataset is the demo's generator: every draw is fresh rows.
// Its reference holds refRows rows.
func demoDataset(refRows int) *dataset {
	probe := trainer.Synthetic(1, 1)
	return &dataset{
		name: Demo, features: probe.Features, classes: probe.Classes, refRows: refRows,
		fresh: func(seed uint64, n int) ([][]float64, []int) {
			ds := trainer.Synthetic(seed, n)
			x := make([][]float64, n)
			for i, row := range ds.X {
				x[i] = make([]float64, len(row))
				for j, v := range row {
					x[i][j] = float64(v)
				}
			}
			return x, ds.Y
		},
	}
}

// maxWindow returns the largest window d draws without replacement from
// a split's pool, the rows left after the reference (a generator's: any).
func (d *dataset) maxWindow() int {
	if d.fresh != nil {
		return math.MaxInt
	}
	return len(d.x) - len(d.x)/2
}

// split is one reference of a data set and the source its windows are
// drawn from.
type split struct {
	ref  [][]float64 // reference rows
	mean []float64   // the reference's mean per feature
	sd   []float64   // the reference's standard deviation per feature
	// pool and poolY are the rows windows are drawn from without
	// replacement, the rows not in the reference; nil for a generator.
	pool  [][]float64
	poolY []int
}

// newSplit splits d at random (seed) into a reference of half its rows,
// rounded down, and a pool of the rest, so that a clean window drawn from
// the pool without replacement is exchangeable with the reference; a
// generator's reference is d.refRows fresh rows.
func (d *dataset) newSplit(seed uint64) *split {
	s := &split{}
	if d.fresh != nil {
		s.ref, _ = d.fresh(seed, d.refRows)
	} else {
		r := rand.New(rand.NewPCG(seed, 0x5b117))
		perm := r.Perm(len(d.x))
		nRef := len(d.x) / 2
		for k, i := range perm {
			if k < nRef {
				s.ref = append(s.ref, d.x[i])
			} else {
				s.pool = append(s.pool, d.x[i])
				s.poolY = append(s.poolY, d.y[i])
			}
		}
	}
	s.sd, s.mean = make([]float64, len(d.features)), make([]float64, len(d.features))
	for j := range s.sd {
		var sum, sumSq float64
		for _, row := range s.ref {
			sum += row[j]
		}
		mean := sum / float64(len(s.ref))
		s.mean[j] = mean
		for _, row := range s.ref {
			sumSq += (row[j] - mean) * (row[j] - mean)
		}
		s.sd[j] = sqrt(sumSq / float64(len(s.ref)))
	}
	return s
}

// draw returns n rows of s, each of class knock kept with chance 1-drop
// (knock < 0 knocks out no class): fresh rows of a generator, or rows
// drawn without replacement from the pool, walking a random permutation
// of it. The rows are copies, free to shift. It returns nil when the pool
// runs out before n rows are kept.
func (d *dataset) draw(s *split, r *rand.Rand, n, knock int, drop float64) [][]float64 {
	rows := make([][]float64, 0, n)
	keep := func(class int) bool { return class != knock || drop < 1 && r.Float64() >= drop }
	if d.fresh != nil {
		for len(rows) < n {
			x, y := d.fresh(r.Uint64(), 2*(n-len(rows))+8)
			for i := range x {
				if len(rows) < n && keep(y[i]) {
					rows = append(rows, x[i])
				}
			}
		}
		return rows
	}
	for _, i := range r.Perm(len(s.pool)) {
		if len(rows) == n {
			break
		}
		if keep(s.poolY[i]) {
			rows = append(rows, append([]float64(nil), s.pool[i]...))
		}
	}
	if len(rows) < n {
		return nil
	}
	return rows
}
