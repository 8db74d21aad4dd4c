package drift

import "math"

// ddmMinRows is the labeled rows DDM needs before it judges: before, the
// error rate's estimate is too rough to compare against its minimum.
// Gama et al. use 30; more keeps a young version from alarming on its
// first errors. Simulated on streams of 4000 labels at a steady 9% error
// rate, in batches of 25 as a fleet's counts bring them, 200 raised a
// false alarm on 11% of streams, 1000 on 4%; and a rise to 30% after 2400
// labels was caught more often (98% against 90%, where an early false
// alarm had started the detector over) and as fast (about 110 labels).
const ddmMinRows = 1000

// ConceptLevel is what the error-rate detector says of the labeled rows.
type ConceptLevel string

// The levels of the concept-drift detector.
const (
	ConceptStable  ConceptLevel = "stable"
	ConceptWarning ConceptLevel = "warning"
	ConceptDrift   ConceptLevel = "drift"
)

// DDM is the Drift Detection Method of Gama et al. (2004) over the stream
// of labeled rows: after n rows with error rate p, s = sqrt(p(1-p)/n); with
// pmin and smin taken where p+s was lowest, it warns once p+s reaches
// pmin+2smin and signals drift at pmin+3smin, then starts over, since the
// concept it measured against is gone. Its fields are its whole state, so
// that a monitor can carry it over a restart (see State).
type DDM struct {
	Rows    float64 `json:"rows"`
	Errors  float64 `json:"errors"`
	MinRate float64 `json:"min_rate"` // pmin
	MinStd  float64 `json:"min_std"`  // smin
}

// add counts rows labeled rows of which errors were mispredicted and
// returns the detector's level after them.
func (d *DDM) add(rows, errors int) ConceptLevel {
	d.Rows += float64(rows)
	d.Errors += float64(errors)
	if d.Rows < ddmMinRows {
		return ConceptStable
	}
	p := d.Errors / d.Rows
	s := math.Sqrt(p * (1 - p) / d.Rows)
	if d.MinRate == 0 && d.MinStd == 0 || p+s < d.MinRate+d.MinStd {
		d.MinRate, d.MinStd = p, s
	}
	switch {
	case p+s >= d.MinRate+3*d.MinStd && d.MinStd > 0:
		*d = DDM{}
		return ConceptDrift
	case p+s >= d.MinRate+2*d.MinStd && d.MinStd > 0:
		return ConceptWarning
	}
	return ConceptStable
}
