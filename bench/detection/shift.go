package detection

import (
	"cmp"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
)

// sqrt is math.Sqrt, short for the formulas here.
func sqrt(x float64) float64 { return math.Sqrt(x) }

// Shift kinds.
const (
	Clean    = "clean"    // no shift
	Noise    = "noise"    // Gaussian noise of Strength sd added to half the features
	Mean     = "mean"     // half the features moved by Strength sd
	Knockout = "knockout" // rows of one class kept with chance 1-Strength
	Thin     = "thin"     // every feature moved by Strength sd
	// Tilt draws rows with weight exp(Strength * score), score a random
	// direction's standardized sum of every feature over sqrt(d): the
	// population moves by about Strength sd along that direction, each
	// feature by about Strength/sqrt(d) of its sd, and every value stays
	// one the data has (no tie of an integer feature broken).
	Tilt = "tilt"
)

// Shift is what is done to a window: a kind and its strength.
type Shift struct {
	Kind     string  `json:"kind"`
	Strength float64 `json:"strength"`
}

// String describes s for the report.
func (s Shift) String() string {
	switch s.Kind {
	case Noise:
		return fmt.Sprintf("noise %g sd, half the features", s.Strength)
	case Mean:
		return fmt.Sprintf("mean +%g sd, half the features", s.Strength)
	case Knockout:
		if s.Strength >= 1 {
			return "one class knocked out"
		}
		return fmt.Sprintf("one class %g%% dropped", 100*s.Strength)
	case Thin:
		return fmt.Sprintf("thin: mean +%g sd, every feature", s.Strength)
	case Tilt:
		return fmt.Sprintf("thin: rows tilted %g sd along a random direction of every feature", s.Strength)
	}
	return "clean"
}

// Shifts are the shifts measured, clean first: strengths chosen so that
// most are neither always nor never caught over the window sizes.
var Shifts = []Shift{
	{Kind: Clean},
	{Kind: Noise, Strength: 0.5}, {Kind: Noise, Strength: 1},
	{Kind: Mean, Strength: 0.2}, {Kind: Mean, Strength: 0.5}, {Kind: Mean, Strength: 1},
	{Kind: Knockout, Strength: 0.5}, {Kind: Knockout, Strength: 1},
	{Kind: Thin, Strength: 0.05}, {Kind: Thin, Strength: 0.15},
	{Kind: Tilt, Strength: 0.3}, {Kind: Tilt, Strength: 0.6},
}

// window draws a window of n rows of d from s under shift sh, with the
// values rounded to float32 after the shift, as the gateway sees them.
// Knockout picks its class at random among those that leave the pool
// enough rows for the window; window returns nil when none does.
func (d *dataset) window(s *split, r *rand.Rand, n int, sh Shift) [][]float64 {
	var rows [][]float64
	if sh.Kind == Knockout {
		for _, knock := range r.Perm(d.classes) {
			if rows = d.draw(s, r, n, knock, sh.Strength); rows != nil {
				break
			}
		}
		if rows == nil {
			return nil
		}
	} else if sh.Kind == Tilt {
		if rows = d.tilted(s, r, n, sh.Strength); rows == nil {
			return nil
		}
	} else {
		rows = d.draw(s, r, n, -1, 0)
	}
	nf := len(d.features)
	var moved []int
	switch sh.Kind {
	case Noise, Mean:
		moved = r.Perm(nf)[:(nf+1)/2]
	case Thin:
		moved = r.Perm(nf)
	}
	for _, j := range moved {
		step := sh.Strength * s.sd[j]
		for _, row := range rows {
			if sh.Kind == Noise {
				row[j] += step * r.NormFloat64()
			} else {
				row[j] += step
			}
		}
	}
	for _, row := range rows {
		for j, v := range row {
			row[j] = float64(float32(v))
		}
	}
	return rows
}

// tilted draws n rows of s without replacement, each with weight
// exp(strength * score), score the standardized sum of the features with
// random signs over sqrt(d) (Efraimidis and Spirakis: the n largest of
// log(u)/weight): from the pool, or from 4n fresh rows of a generator.
// It returns nil when the pool holds fewer than n rows.
func (d *dataset) tilted(s *split, r *rand.Rand, n int, strength float64) [][]float64 {
	candidates := s.pool
	if d.fresh != nil {
		candidates, _ = d.fresh(r.Uint64(), 4*n)
	}
	if len(candidates) < n {
		return nil
	}
	nf := len(d.features)
	sign := make([]float64, nf)
	for j := range sign {
		sign[j] = float64(2*r.IntN(2) - 1)
	}
	type keyed struct {
		key float64
		row []float64
	}
	keys := make([]keyed, len(candidates))
	for i, row := range candidates {
		var score float64
		for j, x := range row {
			if s.sd[j] > 0 {
				score += sign[j] * (x - s.mean[j]) / s.sd[j]
			}
		}
		score /= sqrt(float64(nf))
		keys[i] = keyed{math.Log(1-r.Float64()) / math.Exp(strength*score), row}
	}
	slices.SortFunc(keys, func(a, b keyed) int { return cmp.Compare(b.key, a.key) })
	rows := make([][]float64, n)
	for i := range rows {
		rows[i] = append([]float64(nil), keys[i].row...)
	}
	return rows
}
