package drift

import "math"

// ddmMinRows is the labeled rows DDM needs before it judges: before, the
// error rate's estimate is too rough to compare against its minimum.
// Gama et al. use 30; more keeps a young version from alarming on its
// first few errors.
const ddmMinRows = 200

// ConceptLevel is what the error-rate detector says of the labeled rows.
type ConceptLevel string

// The levels of the concept-drift detector.
const (
	ConceptStable  ConceptLevel = "stable"
	ConceptWarning ConceptLevel = "warning"
	ConceptDrift   ConceptLevel = "drift"
)

// ddm is the Drift Detection Method of Gama et al. (2004) over the stream
// of labeled rows: after n rows with error rate p, s = sqrt(p(1-p)/n); with
// pmin and smin taken where p+s was lowest, it warns once p+s reaches
// pmin+2smin and signals drift at pmin+3smin, then starts over, since the
// concept it measured against is gone.
type ddm struct {
	n, errors  float64
	pmin, smin float64
}

// add counts rows labeled rows of which errors were mispredicted and
// returns the detector's level after them.
func (d *ddm) add(rows, errors int) ConceptLevel {
	d.n += float64(rows)
	d.errors += float64(errors)
	if d.n < ddmMinRows {
		return ConceptStable
	}
	p := d.errors / d.n
	s := math.Sqrt(p * (1 - p) / d.n)
	if d.pmin == 0 && d.smin == 0 || p+s < d.pmin+d.smin {
		d.pmin, d.smin = p, s
	}
	switch {
	case p+s >= d.pmin+3*d.smin && d.smin > 0:
		*d = ddm{}
		return ConceptDrift
	case p+s >= d.pmin+2*d.smin && d.smin > 0:
		return ConceptWarning
	}
	return ConceptStable
}
