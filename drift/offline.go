package drift

import (
	"fmt"
	"math"
)

// Offline judges windows of rows handed to it whole, outside a running
// monitor (a file to score, a detection benchmark), with the statistics,
// thresholds and rule that a Monitor of the same Config applies to
// traffic. It is not safe for concurrent use.
type Offline struct {
	ref  *Reference
	jury *jury
	w    *window
	// whole holds the input features of every row judged, for
	// EffectSizes.
	whole *window
	// columns are the input features' places in a row: 0, 1, ...
	columns []int
}

// NewOffline prepares to judge windows against ref under cfg, to which it
// applies the defaults and which it validates. Auto thresholds are
// calibrated here, for windows of cfg.Window.Rows rows.
func NewOffline(ref *Reference, cfg Config) (*Offline, error) {
	if err := ref.Validate(); err != nil {
		return nil, fmt.Errorf("cannot judge drift: %w", err)
	}
	cfg = cfg.WithDefaults()
	if err := cfg.Validate("drift"); err != nil {
		return nil, fmt.Errorf("cannot judge drift: %w", err)
	}
	jy, err := newJury(ref, cfg)
	if err != nil {
		return nil, fmt.Errorf("cannot judge drift: %w", err)
	}
	jy.calibrate(func() bool { return true })
	columns := make([]int, len(ref.Features))
	for i := range columns {
		columns[i] = i
	}
	whole := newWindow(ref, cfg.Reservoir)
	whole.features = whole.features[:len(ref.Features)]
	for i := range whole.features {
		if whole.features[i].reservoir != nil {
			whole.features[i].reservoir = make([]float64, 0, max(wholeReservoir, cfg.Reservoir))
		}
	}
	return &Offline{columns: columns, ref: ref, jury: jy, w: jy.newWindow(ref), whole: whole}, nil
}

// Judge judges the window of rows: each row holds the values of the
// reference's features, in its order, and may go on with those of its
// predictions. A window is judged whatever its size (min_rows is the
// caller's to apply), by the methods that its size picks, but for
// auto thresholds, which keep the methods they were calibrated with.
func (o *Offline) Judge(rows [][]float64) (WindowResult, error) {
	nf, np := len(o.ref.Features), len(o.ref.Predictions)
	o.w.reset(0, o.w.start)
	for r, row := range rows {
		if len(row) != nf && len(row) != nf+np {
			return WindowResult{}, fmt.Errorf("cannot judge drift: row %d holds %d values, want %d features (and %d predictions)", r, len(row), nf, np)
		}
		for i, x := range row {
			o.w.add(i, o.jury.judges[i].profile, x)
			if i < nf {
				o.whole.add(i, o.jury.judges[i].profile, x)
			}
		}
		o.w.addRow(row, o.columns)
		o.w.rows++
	}
	res := WindowResult{Rows: o.w.rows, Judged: true}
	o.jury.verdict(o.w, o.w.rows, &res)
	return res, nil
}

// Include counts rows into EffectSizes without judging them as a window
// (the short last window of a file, say). Rows are as Judge takes them.
func (o *Offline) Include(rows [][]float64) {
	for _, row := range rows {
		for i := range min(len(row), len(o.ref.Features)) {
			o.whole.add(i, o.jury.judges[i].profile, row[i])
		}
	}
}

// wholeReservoir is the values per numeric feature the whole of an
// Offline's rows keep for the Wasserstein distance.
const wholeReservoir = 10000

// EffectSize is how far one input feature of all the rows an Offline
// judged sits from the reference, by effect sizes that, unlike a p-value,
// do not shrink towards a verdict of drift as rows grow: the population
// stability index over the reference's bins and, for a numeric feature,
// the Wasserstein distance in units of the reference's standard
// deviation (NaN for a categorical one). Drifted says whether either
// exceeds its threshold: PSIThreshold and WassersteinThreshold.
type EffectSize struct {
	Name        string  `json:"name"`
	Kind        Kind    `json:"kind"`
	Count       int64   `json:"count"`
	Missing     int64   `json:"missing"`
	PSI         float64 `json:"psi"`
	Wasserstein float64 `json:"wasserstein"`
	Drifted     bool    `json:"drifted"`
}

// The thresholds of EffectSize: the usual ones of PSI (0.2: a
// significant shift) and of the normed Wasserstein distance (0.1
// standard deviations), as online windows default to.
var (
	PSIThreshold         = MethodPSI.defaultThreshold()
	WassersteinThreshold = MethodWasserstein.defaultThreshold()
)

// EffectSizes returns the effect sizes of each input feature of every row
// Judge has been handed so far, together.
func (o *Offline) EffectSizes() []EffectSize {
	out := make([]EffectSize, len(o.ref.Features))
	for i, p := range o.ref.Features {
		f := &o.whole.features[i]
		s := o.jury.judges[i].statistics(f)
		e := EffectSize{Name: p.Name, Kind: p.Kind, Count: f.count, Missing: f.missing + f.nonFinite, PSI: s["psi"], Wasserstein: math.NaN()}
		if w, ok := s["wasserstein"]; ok {
			e.Wasserstein = w
		}
		e.Drifted = e.PSI > PSIThreshold || e.Wasserstein > WassersteinThreshold
		out[i] = e
	}
	return out
}
