package drift

import (
	"math"
	"math/bits"
	"slices"
	"time"
)

// window is the state of one tumbling window: plain counters per feature,
// so that windows merge by addition, plus a reservoir sample per numeric
// feature for the two-sample statistics.
type window struct {
	seq        int64
	start, end time.Time
	rows       int64
	// labeled and correct count the rows scored by feedback labels.
	labeled, correct int64
	features         []featureState // the reference's features, then its predictions
	rng              uint64         // xorshift state of the reservoirs
	// sample is a reservoir of whole rows of the input features, width
	// values each, for the multivariate detector (nil without one);
	// sampled counts the rows offered to it.
	sample  []float64
	width   int
	sampled int64
}

// keepRows makes w keep a uniform sample of up to n rows of width input
// features.
func (w *window) keepRows(n, width int) {
	w.sample, w.width = make([]float64, 0, n*width), width
}

// addRow offers the input features of row, at columns, to the row
// sample; a row with a value that is not finite is left out.
func (w *window) addRow(row []float64, columns []int) {
	if w.sample == nil {
		return
	}
	for _, col := range columns {
		if x := row[col]; math.IsNaN(x) || math.IsInf(x, 0) {
			return
		}
	}
	w.sampled++
	slot := -1
	if len(w.sample) < cap(w.sample) {
		slot = len(w.sample) / w.width
		w.sample = w.sample[:len(w.sample)+w.width]
	} else if j := w.below(uint64(w.sampled)); j < uint64(cap(w.sample)/w.width) {
		slot = int(j)
	}
	if slot >= 0 {
		dst := w.sample[slot*w.width : (slot+1)*w.width]
		for i, col := range columns {
			dst[i] = row[col]
		}
	}
}

// featureState is one feature's counters within a window.
type featureState struct {
	counts    []int64
	count     int64 // finite values
	missing   int64
	nonFinite int64
	sum       float64
	sumSq     float64
	// reservoir holds a uniform sample of the finite values; seen counts
	// the values offered to it.
	reservoir []float64
	seen      int64
}

func newWindow(ref *Reference, reservoir int) *window {
	w := &window{rng: 0x9e3779b97f4a7c15}
	for _, group := range [][]Profile{ref.Features, ref.Predictions} {
		for i := range group {
			fs := featureState{counts: make([]int64, group[i].bins())}
			if group[i].Kind == Numeric {
				fs.reservoir = make([]float64, 0, reservoir)
			}
			w.features = append(w.features, fs)
		}
	}
	return w
}

// reset empties w for reuse as window seq starting at start.
func (w *window) reset(seq int64, start time.Time) {
	w.seq, w.start, w.end, w.rows, w.labeled, w.correct = seq, start, time.Time{}, 0, 0, 0
	w.sample, w.sampled = w.sample[:0], 0
	for i := range w.features {
		f := &w.features[i]
		clear(f.counts)
		f.count, f.missing, f.nonFinite, f.sum, f.sumSq, f.seen = 0, 0, 0, 0, 0, 0
		f.reservoir = f.reservoir[:0]
	}
}

// add records x as a value of feature i, profiled by p.
func (w *window) add(i int, p *Profile, x float64) {
	f := &w.features[i]
	switch {
	case math.IsNaN(x):
		f.missing++
		return
	case math.IsInf(x, 0):
		f.nonFinite++
		return
	}
	f.counts[p.bin(x)]++
	f.count++
	f.sum += x
	f.sumSq += x * x
	if f.reservoir == nil {
		return
	}
	// Algorithm R: the n-th value replaces a random slot with chance k/n.
	f.seen++
	if len(f.reservoir) < cap(f.reservoir) {
		f.reservoir = append(f.reservoir, x)
	} else if j := w.below(uint64(f.seen)); j < uint64(cap(f.reservoir)) {
		f.reservoir[j] = x
	}
}

// next returns the next number of w's xorshift64 generator: cheap, and
// good enough to pick reservoir slots.
func (w *window) next() uint64 {
	w.rng ^= w.rng << 13
	w.rng ^= w.rng >> 7
	w.rng ^= w.rng << 17
	return w.rng
}

// below returns a number in [0, n) from w's generator, by a multiplication
// rather than a division, which would cost the request path more than the
// rest of a value's update (Lemire's method, without its rejection step:
// the bias is below n/2^64).
func (w *window) below(n uint64) uint64 {
	hi, _ := bits.Mul64(w.next(), n)
	return hi
}

// merge adds the counters of o, a window over the same reference, to w.
// Counts, sums and row totals add exactly; the reservoirs combine into a
// uniform sample of both windows' values.
func (w *window) merge(o *window) {
	w.rows += o.rows
	w.labeled += o.labeled
	w.correct += o.correct
	for i := range w.features {
		f, g := &w.features[i], &o.features[i]
		for b := range f.counts {
			f.counts[b] += g.counts[b]
		}
		f.count += g.count
		f.missing += g.missing
		f.nonFinite += g.nonFinite
		f.sum += g.sum
		f.sumSq += g.sumSq
		if f.reservoir != nil {
			f.reservoir = w.mergeSample(f.reservoir, g.reservoir, f.seen, g.seen, 1)
			f.seen += g.seen
		}
	}
	if w.sample != nil {
		w.sample = w.mergeSample(w.sample, o.sample, w.sampled, o.sampled, w.width)
		w.sampled += o.sampled
	}
}

// mergeSample returns dst, a reservoir of items of stride values standing
// for seenMine items, refilled in its own backing array from itself and
// from theirs, standing for seenTheirs: each item is taken with a chance
// proportional to the number of items its reservoir stands for.
func (w *window) mergeSample(dst, theirs []float64, seenMine, seenTheirs int64, stride int) []float64 {
	mine, theirs := slices.Clone(dst), slices.Clone(theirs)
	dst = dst[:0]
	for len(dst) < cap(dst) && (len(mine) > 0 || len(theirs) > 0) {
		fromMine := len(theirs) == 0 ||
			len(mine) > 0 && w.below(uint64(seenMine+seenTheirs)) < uint64(seenMine)
		src, seen := &theirs, &seenTheirs
		if fromMine {
			src, seen = &mine, &seenMine
		}
		items := len(*src) / stride
		j := int(w.below(uint64(items))) * stride
		dst = append(dst, (*src)[j:j+stride]...)
		last := (items - 1) * stride
		copy((*src)[j:j+stride], (*src)[last:last+stride])
		*src = (*src)[:last]
		*seen = max(*seen-1, 0)
	}
	return dst
}
