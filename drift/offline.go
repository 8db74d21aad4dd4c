package drift

import "fmt"

// Offline judges windows of rows handed to it whole, outside a running
// monitor (a file to score, a detection benchmark), with the statistics,
// thresholds and rule that a Monitor of the same Config applies to
// traffic. It is not safe for concurrent use.
type Offline struct {
	ref  *Reference
	jury *jury
	w    *window
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
	return &Offline{columns: columns, ref: ref, jury: jy, w: jy.newWindow(ref)}, nil
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
		}
		o.w.addRow(row, o.columns)
		o.w.rows++
	}
	res := WindowResult{Rows: o.w.rows, Judged: true}
	o.jury.verdict(o.w, o.w.rows, &res)
	return res, nil
}
