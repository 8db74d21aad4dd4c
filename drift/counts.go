package drift

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// The errors of MergeCounts that a fleet's leader may want to tell apart.
var (
	// ErrNotLeading is MergeCounts' answer while the monitor follows: only
	// the leader merges the fleet's counts. The counts are not taken.
	ErrNotLeading = errors.New("drift: not leading")
	// ErrReferenceMismatch is MergeCounts' answer to counts taken over
	// another reference profile, as from a replica with another
	// reference.json for the same version.
	ErrReferenceMismatch = errors.New("drift: counts of another reference profile")
)

// maxCountsRows bounds the rows and labels one Counts may carry, far
// above what a replica counts between two reports, so that no sum of
// merged counts overflows.
const maxCountsRows = 1 << 40

// Counts is what a follower's monitor counted since the last TakeCounts,
// for the fleet's leader to add into its open window (see MergeCounts).
// It is plain data and round-trips through encoding/json; what judges the
// counts (bin edges, the reference sample, names) stays with the reference,
// which Reference identifies.
type Counts struct {
	Model   string `json:"model"`
	Version string `json:"version"`
	// Reference is a fingerprint of the reference profile the counts were
	// binned by; a leader refuses counts of another.
	Reference string `json:"reference"`
	// Start and End are the span the counts cover, on the follower's clock.
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	Rows  int64     `json:"rows"`
	// Labeled counts the rows labeled by feedback, Correct those of them
	// predicted right; the leader's error-rate detector takes them.
	Labeled int64 `json:"labeled,omitempty"`
	Correct int64 `json:"correct,omitempty"`
	// Features holds the counts of the reference's features, then of its
	// predictions, in its order.
	Features []FeatureCounts `json:"features"`
	// SampleRows is, with method mmd, a uniform sample without replacement
	// of whole rows of the input features, one value per feature each
	// (rows with a value that is not finite left out), flattened; it
	// stands for RowsSampled rows.
	SampleRows  Sample `json:"sample_rows,omitempty"`
	RowsSampled int64  `json:"rows_sampled,omitempty"`
}

// FeatureCounts are one feature's counts within Counts.
type FeatureCounts struct {
	// Bins counts the finite values per bin of the reference profile;
	// their sum is the number of finite values.
	Bins      []int64 `json:"bins"`
	Missing   int64   `json:"missing,omitempty"`
	NonFinite int64   `json:"non_finite,omitempty"`
	// Sum and SumSq are the sum and the sum of squares of the finite values.
	Sum   float64 `json:"sum"`
	SumSq float64 `json:"sum_sq"`
	// Sample is, for a numeric feature, a uniform sample without
	// replacement of its finite values (all of them, in the sum of Bins),
	// of at most Config.Reservoir values, in no order.
	Sample Sample `json:"sample,omitempty"`
}

// Sample is a reservoir sample as Counts carries it. In JSON it is a
// string: "f4:" and the values as little-endian float32s in base64 when
// every value is a float32 (as those of float32 tensors are), else "f8:"
// and float64s; either way it round-trips exactly, at 5.3 or 10.7 bytes a
// value. A JSON array of numbers decodes too.
type Sample []float64

// MarshalJSON encodes s as its doc says.
func (s Sample) MarshalJSON() ([]byte, error) {
	width := 4
	for _, x := range s {
		if float64(float32(x)) != x {
			width = 8
			break
		}
	}
	raw := make([]byte, 0, width*len(s))
	for _, x := range s {
		if width == 4 {
			raw = binary.LittleEndian.AppendUint32(raw, math.Float32bits(float32(x)))
		} else {
			raw = binary.LittleEndian.AppendUint64(raw, math.Float64bits(x))
		}
	}
	out := make([]byte, 0, 5+base64.RawStdEncoding.EncodedLen(len(raw)))
	out = fmt.Appendf(out, `"f%d:`, width)
	out = base64.RawStdEncoding.AppendEncode(out, raw)
	return append(out, '"'), nil
}

// UnmarshalJSON decodes what MarshalJSON encodes, or an array of numbers.
func (s *Sample) UnmarshalJSON(b []byte) error {
	if b = bytes.TrimSpace(b); len(b) > 0 && b[0] != '"' {
		var values []float64
		if err := json.Unmarshal(b, &values); err != nil {
			return fmt.Errorf("cannot decode a drift sample: %w", err)
		}
		*s = values
		return nil
	}
	var text string
	if err := json.Unmarshal(b, &text); err != nil {
		return fmt.Errorf("cannot decode a drift sample: %w", err)
	}
	width := 4
	packed, ok := strings.CutPrefix(text, "f4:")
	if !ok {
		width = 8
		if packed, ok = strings.CutPrefix(text, "f8:"); !ok {
			return errors.New(`cannot decode a drift sample: want "f4:" or "f8:" and base64`)
		}
	}
	raw, err := base64.RawStdEncoding.DecodeString(packed)
	if err != nil {
		return fmt.Errorf("cannot decode a drift sample: %w", err)
	}
	if len(raw)%width != 0 {
		return fmt.Errorf("cannot decode a drift sample: %d bytes are no whole number of %d-byte values", len(raw), width)
	}
	values := make([]float64, len(raw)/width)
	for i := range values {
		if width == 4 {
			values[i] = float64(math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:])))
		} else {
			values[i] = math.Float64frombits(binary.LittleEndian.Uint64(raw[8*i:]))
		}
	}
	*s = values
	return nil
}

// TakeCounts takes what a follower's open window counted since the last
// TakeCounts (or since it started following) and empties the window; it
// returns false, taking nothing, when nothing was observed, and while the
// monitor leads, since a leader judges its counts itself. The gateway of a
// follower calls it once a report interval and sends the counts to the
// leader. It is safe for concurrent use; it allocates the Counts, but not
// while Observe waits for it.
func (mon *Monitor) TakeCounts() (Counts, bool) {
	now := mon.o.Now()
	mon.mu.Lock()
	w := mon.cur
	if mon.leading || w.rows == 0 && w.labeled == 0 {
		mon.mu.Unlock()
		return Counts{}, false
	}
	select {
	case next := <-mon.free:
		// Swap in an empty window and copy the full one outside the lock.
		next.reset(w.seq, now)
		mon.cur = next
		mon.mu.Unlock()
		c := mon.countsOf(w, now)
		mon.free <- w // never blocks: free holds the whole pool
		return c, true
	default:
		// Every other window waits to be folded back in (the monitor just
		// stopped leading): copy under the lock.
		c := mon.countsOf(w, now)
		w.reset(w.seq, now)
		mon.mu.Unlock()
		return c, true
	}
}

// countsOf copies the counts of w, which nobody changes meanwhile, ending at end.
func (mon *Monitor) countsOf(w *window, end time.Time) Counts {
	c := Counts{
		Model: mon.o.Model, Version: mon.o.Version, Reference: mon.fingerprint,
		Start: w.start, End: end, Rows: w.rows, Labeled: w.labeled, Correct: w.correct,
		Features: make([]FeatureCounts, len(w.features)), RowsSampled: w.sampled,
	}
	if len(w.sample) > 0 {
		c.SampleRows = slices.Clone(w.sample)
	}
	for i := range w.features {
		f := &w.features[i]
		fc := FeatureCounts{Bins: slices.Clone(f.counts), Missing: f.missing, NonFinite: f.nonFinite, Sum: f.sum, SumSq: f.sumSq}
		if len(f.reservoir) > 0 {
			fc.Sample = slices.Clone(f.reservoir)
		}
		c.Features[i] = fc
	}
	return c
}

// MergeCounts adds c, the counts of one of the fleet's followers, into the
// leader's open window, as if the leader had observed those rows and
// labels itself: a window by rows closes once it holds its rows (it may
// then hold more), a window by time just grows; the labels feed the
// error-rate detector. Counts cross the network, so they are checked
// first: counts of another model, version or reference profile (wrapping
// ErrReferenceMismatch), or malformed ones (bins of another number,
// negative counts, sums or sample values that are not finite, a sample
// larger than Config.Reservoir or than its feature's values, rows that
// do not add up) are refused whole with an error, and change nothing.
// Merged and refused counts are counted in infergate_drift_counts_total.
// While the monitor follows, MergeCounts takes nothing and returns
// ErrNotLeading. It is safe for concurrent use and may allocate.
func (mon *Monitor) MergeCounts(c Counts) error {
	if err := mon.checkCounts(&c); err != nil {
		mon.m.countsRefused.Inc()
		return fmt.Errorf("cannot merge drift counts into model %q version %s: %w", mon.o.Model, mon.o.Version, err)
	}
	o := window{
		rows: c.Rows, labeled: c.Labeled, correct: c.Correct, features: make([]featureState, len(c.Features)),
		sample: c.SampleRows, sampled: c.RowsSampled,
	}
	for i := range c.Features {
		fc := &c.Features[i]
		var count int64
		for _, n := range fc.Bins {
			count += n
		}
		o.features[i] = featureState{
			counts: fc.Bins, count: count, missing: fc.Missing, nonFinite: fc.NonFinite,
			sum: fc.Sum, sumSq: fc.SumSq, reservoir: fc.Sample, seen: count,
		}
	}
	mon.mu.Lock()
	if !mon.leading {
		mon.mu.Unlock()
		return ErrNotLeading
	}
	mon.cur.merge(&o)
	open := openResult(mon.cur)
	mon.closeFullLocked()
	mon.mu.Unlock()
	mon.m.countsMerged.Inc()
	if c.Labeled > 0 {
		mon.detectConcept(int(c.Labeled), int(c.Correct), open)
	}
	return nil
}

// checkCounts reports the first reason c cannot be merged into mon's windows.
func (mon *Monitor) checkCounts(c *Counts) error {
	switch {
	case c.Model != mon.o.Model || c.Version != mon.o.Version:
		return fmt.Errorf("the counts are of model %q version %s", c.Model, c.Version)
	case c.Reference != mon.fingerprint:
		return fmt.Errorf("%w: the counts' is %q, the monitor's %q", ErrReferenceMismatch, c.Reference, mon.fingerprint)
	case len(c.Features) != len(mon.jury.judges):
		return fmt.Errorf("counts of %d features, want %d", len(c.Features), len(mon.jury.judges))
	case c.Rows < 0 || c.Rows > maxCountsRows:
		return fmt.Errorf("%d rows, want 0 to %d", c.Rows, int64(maxCountsRows))
	case c.Labeled < 0 || c.Labeled > maxCountsRows || c.Correct < 0 || c.Correct > c.Labeled:
		return fmt.Errorf("%d labeled rows of which %d correct", c.Labeled, c.Correct)
	case c.End.Before(c.Start):
		return fmt.Errorf("the counts end (%s) before they start (%s)", c.End, c.Start)
	}
	if err := mon.checkSampleRows(c); err != nil {
		return err
	}
	for i := range c.Features {
		j := &mon.jury.judges[i]
		if err := c.Features[i].check(j.profile, c.Rows, !j.prediction, mon.cfg.Reservoir); err != nil {
			return fmt.Errorf("feature %q: %w", j.profile.Name, err)
		}
	}
	return nil
}

// checkSampleRows reports what is wrong with the row sample of c, which
// only a monitor with a row sample of its own takes.
func (mon *Monitor) checkSampleRows(c *Counts) error {
	width, rows := mon.jury.sampleRows()
	switch {
	case len(c.SampleRows) == 0 && c.RowsSampled == 0:
		return nil
	case width == 0:
		return errors.New("a sample of rows, which this monitor does not keep")
	case len(c.SampleRows)%width != 0:
		return fmt.Errorf("a sample of rows of %d values, want a multiple of %d", len(c.SampleRows), width)
	case c.RowsSampled < 0 || c.RowsSampled > c.Rows || int64(len(c.SampleRows)/width) > min(int64(rows), c.RowsSampled):
		return fmt.Errorf("a sample of %d rows standing for %d of %d rows, want at most %d", len(c.SampleRows)/width, c.RowsSampled, c.Rows, rows)
	}
	for _, x := range c.SampleRows {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return errors.New("a sample row value that is not finite")
		}
	}
	return nil
}

// check reports the first inconsistency of f, the counts of the feature
// profiled by p over rows rows: each row has a value of an input feature,
// while a prediction may lack some. reservoir bounds the sample.
func (f *FeatureCounts) check(p *Profile, rows int64, input bool, reservoir int) error {
	if len(f.Bins) != p.bins() {
		return fmt.Errorf("%d bins, want %d", len(f.Bins), p.bins())
	}
	if f.Missing < 0 || f.Missing > rows || f.NonFinite < 0 || f.NonFinite > rows {
		return fmt.Errorf("%d missing and %d non-finite values of %d rows", f.Missing, f.NonFinite, rows)
	}
	values := f.Missing + f.NonFinite
	for _, n := range f.Bins {
		if n < 0 || n > rows {
			return fmt.Errorf("a bin of %d values in %d rows", n, rows)
		}
		values += n // at most bins times 2^40: no overflow
	}
	if values > rows || input && values != rows {
		return fmt.Errorf("%d values (binned, missing and non-finite) in %d rows", values, rows)
	}
	finite := values - f.Missing - f.NonFinite
	switch {
	case math.IsNaN(f.Sum) || math.IsInf(f.Sum, 0) || math.IsNaN(f.SumSq) || math.IsInf(f.SumSq, 0) || f.SumSq < 0:
		return fmt.Errorf("sum %v and sum of squares %v, want finite ones", f.Sum, f.SumSq)
	case p.Kind == Categorical && len(f.Sample) > 0:
		return errors.New("a sample of a categorical feature")
	case int64(len(f.Sample)) > min(int64(reservoir), finite):
		return fmt.Errorf("a sample of %d values, want at most %d", len(f.Sample), min(int64(reservoir), finite))
	}
	for _, x := range f.Sample {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return errors.New("a sample value that is not finite")
		}
	}
	return nil
}

// fingerprint returns the first 8 bytes of a SHA-256 hash of ref, in hex:
// references alike in every field, and only those, share it.
func fingerprint(ref *Reference) string {
	h := sha256.New()
	buf := binary.AppendVarint(nil, int64(ref.Rows))
	floats := func(xs []float64) {
		buf = binary.AppendUvarint(buf, uint64(len(xs)))
		for _, x := range xs {
			buf = binary.LittleEndian.AppendUint64(buf, math.Float64bits(x))
		}
	}
	for _, group := range [][]Profile{ref.Features, ref.Predictions} {
		buf = binary.AppendUvarint(buf, uint64(len(group)))
		for i := range group {
			p := &group[i]
			for _, s := range []string{p.Name, string(p.Kind)} {
				buf = binary.AppendUvarint(buf, uint64(len(s)))
				buf = append(buf, s...)
			}
			floats(p.Edges)
			floats(p.Categories)
			buf = binary.AppendUvarint(buf, uint64(len(p.Counts)))
			for _, n := range append(slices.Clone(p.Counts), p.Count, p.Missing, p.NonFinite) {
				buf = binary.AppendVarint(buf, n)
			}
			floats([]float64{p.Mean, p.Std, p.Min, p.Max})
			floats(p.Sample)
			h.Write(buf)
			buf = buf[:0]
		}
	}
	h.Write(buf)
	return hex.EncodeToString(h.Sum(nil)[:8])
}
