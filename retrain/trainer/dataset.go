package trainer

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
)

// Dataset is a table of float32 features with integer class labels: row i
// has the features X[i], one value per name in Features, and the label
// Y[i] in [0, Classes).
type Dataset struct {
	Features []string
	X        [][]float32
	Y        []int
	Classes  int
}

// Len returns the number of rows in d.
func (d Dataset) Len() int { return len(d.X) }

// Validate reports the first problem that keeps d from being trained on or
// scored: missing or duplicate feature names, a row of the wrong width, a
// non-finite feature value, or a label out of range.
func (d Dataset) Validate() error {
	if len(d.Features) == 0 {
		return errors.New("dataset has no features")
	}
	seen := make(map[string]bool, len(d.Features))
	for i, name := range d.Features {
		// Names are joined with commas in the model's metadata.
		if name == "" || strings.Contains(name, ",") {
			return fmt.Errorf("feature %d has the invalid name %q: names must be non-empty and contain no comma", i, name)
		}
		if seen[name] {
			return fmt.Errorf("feature %q appears twice", name)
		}
		seen[name] = true
	}
	if d.Classes < 2 {
		return fmt.Errorf("dataset has %d classes, want at least 2", d.Classes)
	}
	if len(d.Y) != len(d.X) {
		return fmt.Errorf("dataset has %d rows but %d labels", len(d.X), len(d.Y))
	}
	for i, row := range d.X {
		if len(row) != len(d.Features) {
			return fmt.Errorf("row %d has %d values, want %d (one per feature)", i, len(row), len(d.Features))
		}
		for j, v := range row {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return fmt.Errorf("row %d: feature %q is %v", i, d.Features[j], v)
			}
		}
		if y := d.Y[i]; y < 0 || y >= d.Classes {
			return fmt.Errorf("row %d has label %d, want 0 to %d", i, y, d.Classes-1)
		}
	}
	return nil
}

// syntheticFeatures names the features of Synthetic's rows, in order.
var syntheticFeatures = []string{
	"age", "income", "tenure_months", "balance",
	"num_products", "credit_score", "late_payments", "utilization",
}

// Synthetic returns n rows of a seeded 8-feature, 2-class tabular problem
// that looks like credit risk data: label 1 means the customer defaults.
// The features are age, income, tenure_months, balance, num_products,
// credit_score, late_payments and utilization.
// Features have realistic scales and distributions (a log-normal income,
// integer counts, a bounded utilization) and the label depends on several
// of them nonlinearly, plus noise; about 42% of rows are positive. The same
// seed gives the same rows on every platform, and the first rows do not
// depend on n.
func Synthetic(seed uint64, n int) Dataset { return synthetic(seed, n, false) }

// SyntheticShifted returns n rows of the same problem after the world
// moved on, for the demo's drift: the customers are older, their credit
// scores lower and their utilization higher (the inputs shift), and who
// defaults depends on them differently (the concept shifts): utilization
// and age weigh more, the credit score less. A model of Synthetic's rows
// scores markedly worse on these; one retrained on them recovers. Like
// Synthetic, it is reproducible from the seed.
func SyntheticShifted(seed uint64, n int) Dataset { return synthetic(seed, n, true) }

func synthetic(seed uint64, n int, shifted bool) Dataset {
	r := rand.New(rand.NewPCG(seed, 0x1fe7a7e5))
	d := Dataset{
		Features: append([]string(nil), syntheticFeatures...),
		X:        make([][]float32, n),
		Y:        make([]int, n),
		Classes:  2,
	}
	for i := range n {
		d.X[i], d.Y[i] = syntheticRow(r, shifted)
	}
	return d
}

func syntheticRow(r *rand.Rand, shifted bool) ([]float32, int) {
	ageMean, creditMean, utilShift := 43.0, 665.0, 0.0
	if shifted {
		ageMean, creditMean, utilShift = 55, 625, 0.2
	}
	age := clamp(math.Round(ageMean+prod(13, normal(r))), 18, 85)
	income := math.Round(exp(10.65+prod(0.45, normal(r))+prod(0.008, age-43))/100) * 100
	u := r.Float64()
	tenure := math.Round(prod(240, prod(u, u)))
	balance := max(0, math.Round(prod(income, prod(0.3, r.Float64()))+prod(2500, normal(r))))
	var products float64
	switch u := r.Float64(); {
	case u < 0.45:
		products = 1
	case u < 0.8:
		products = 2
	case u < 0.95:
		products = 3
	default:
		products = 4
	}
	credit := clamp(math.Round(creditMean+prod(75, normal(r))), 300, 850)
	lateP := clamp((735-credit)/550, 0.01, 0.6)
	var late float64
	for range 10 {
		if r.Float64() < lateP {
			late++
		}
	}
	util := clamp(0.35+utilShift+prod(0.18, normal(r))+prod(0.03, late), 0, 1)
	util = math.Round(util*1000) / 1000

	// The risk score: mostly credit history and utilization, with a hinge
	// in utilization, a U shape in age and a non-monotone effect of the
	// number of products.
	ageDev := (age - 42) / 14
	score := prod(1.5, (660-credit)/75) +
		prod(0.45, late) +
		prod(2.5, util-0.4) +
		prod(6, max(0, util-0.75)) -
		prod(0.9, min(tenure, 120)/60) +
		prod(0.6, prod(ageDev, ageDev)) -
		prod(0.8, min(income, 150000)/45000) +
		prod(0.5, balance/max(income, 1000))
	if shifted {
		score = prod(0.6, (640-credit)/75) +
			prod(0.45, late) +
			prod(4, util-0.6) +
			prod(1.2, (age-55)/13) -
			prod(0.9, min(tenure, 120)/60) -
			prod(0.8, min(income, 150000)/45000) +
			prod(1.5, balance/max(income, 1000))
	}
	switch products {
	case 1:
		score += 0.6
	case 4:
		score += 1.2
	}
	label := 0
	if score+prod(0.8, normal(r)) > 0.0 {
		label = 1
	}
	row := []float32{
		float32(age), float32(income), float32(tenure), float32(balance),
		float32(products), float32(credit), float32(late), float32(util),
	}
	return row, label
}

func clamp(x, lo, hi float64) float64 { return min(max(x, lo), hi) }
