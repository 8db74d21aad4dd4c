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
			w.mergeReservoir(f, g)
		}
	}
}

// mergeReservoir fills f's reservoir from both reservoirs, taking each value
// with a chance proportional to the number of values its reservoir stands for.
func (w *window) mergeReservoir(f, g *featureState) {
	mine, theirs := slices.Clone(f.reservoir), slices.Clone(g.reservoir)
	seenMine, seenTheirs := f.seen, g.seen
	f.reservoir, f.seen = f.reservoir[:0], seenMine+seenTheirs
	for len(f.reservoir) < cap(f.reservoir) && (len(mine) > 0 || len(theirs) > 0) {
		fromMine := len(theirs) == 0 ||
			len(mine) > 0 && w.below(uint64(seenMine+seenTheirs)) < uint64(seenMine)
		src, seen := &theirs, &seenTheirs
		if fromMine {
			src, seen = &mine, &seenMine
		}
		j := int(w.below(uint64(len(*src))))
		f.reservoir = append(f.reservoir, (*src)[j])
		(*src)[j] = (*src)[len(*src)-1]
		*src = (*src)[:len(*src)-1]
		*seen = max(*seen-1, 0)
	}
}
