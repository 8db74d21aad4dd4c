package trainer

import (
	"math"
	"math/rand/v2"
)

// prod returns a*b rounded to float64. The explicit conversion forbids the
// compiler to fuse the product with a following addition into an FMA
// instruction, which would round differently on some platforms.
func prod(a, b float64) float64 { return float64(a * b) }

// exp returns e**x to within a few ulps, computed the same way on every
// platform (math.Exp uses assembly on some).
func exp(x float64) float64 {
	const (
		ln2Hi = 6.93147180369123816490e-01 // high bits of ln 2: k*ln2Hi is exact
		ln2Lo = 1.90821492927058770002e-10
	)
	switch {
	case math.IsNaN(x) || x > 709.78:
		return math.Exp(x) // NaN or +Inf; both are exact everywhere
	case x < -745.2:
		return 0
	}
	// e**x = 2**k * e**r with |r| <= ln2/2, where the Taylor series of e**r
	// to the 13th power is accurate to 1e-17.
	k := math.Round(x / math.Ln2)
	r := x - prod(k, ln2Hi) - prod(k, ln2Lo)
	p := 1.0
	for i := 13; i >= 1; i-- {
		p = 1 + prod(p, r)/float64(i)
	}
	return math.Ldexp(p, int(k))
}

// normal returns an approximately standard normal value: the sum of twelve
// uniform values, less six (the Irwin-Hall approximation). It uses only
// additions, so it is the same everywhere; its tails end at ±6.
func normal(r *rand.Rand) float64 {
	var s float64
	for range 12 {
		s += r.Float64()
	}
	return s - 6
}
