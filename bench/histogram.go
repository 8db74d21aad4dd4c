package bench

import (
	"encoding/json"
	"math"
	"math/bits"
	"strconv"
	"sync/atomic"
	"time"
)

// The histogram keeps durations in nanoseconds, exactly below 256ns and in
// 128 linear sub-buckets per power of two above, so any value it reports is
// within 1/256 of a recorded one; it spans up to 2^40ns (about 18 minutes).
const (
	subBits     = 7
	subBuckets  = 1 << subBits
	exactBelow  = 2 * subBuckets
	maxShift    = 40 - (subBits + 1)
	bucketCount = exactBelow + maxShift*subBuckets
)

// Histogram records durations in a fixed-size log-linear layout: its memory
// does not grow with the number of values. It is safe for concurrent use;
// Record allocates nothing.
type Histogram struct {
	counts [bucketCount]atomic.Uint64
	count  atomic.Uint64
	sum    atomic.Uint64 // nanoseconds
	max    atomic.Uint64
	// minInv holds ^min so that its zero value means "nothing yet".
	minInv atomic.Uint64
}

// Record adds one duration; negative durations count as zero.
func (h *Histogram) Record(d time.Duration) {
	v := uint64(max(d, 0))
	h.counts[bucketIndex(v)].Add(1)
	h.count.Add(1)
	h.sum.Add(v)
	raise(&h.max, v)
	raise(&h.minInv, ^v)
}

// raise sets a to v if v is larger.
func raise(a *atomic.Uint64, v uint64) {
	for {
		cur := a.Load()
		if v <= cur || a.CompareAndSwap(cur, v) {
			return
		}
	}
}

// Count returns the number of recorded values.
func (h *Histogram) Count() uint64 { return h.count.Load() }

// bucketIndex returns the bucket v falls in.
func bucketIndex(v uint64) int {
	if v < exactBelow {
		return int(v)
	}
	shift := bits.Len64(v) - (subBits + 1) // v>>shift is in [128, 256)
	if shift > maxShift {
		return bucketCount - 1
	}
	return exactBelow + (shift-1)*subBuckets + int(v>>shift) - subBuckets
}

// bucketValue returns the value a bucket stands for: the value itself below
// exactBelow, the middle of the bucket's range above.
func bucketValue(i int) uint64 {
	if i < exactBelow {
		return uint64(i)
	}
	j := i - exactBelow
	shift := j/subBuckets + 1
	lo := uint64(j%subBuckets+subBuckets) << shift
	return lo + (uint64(1)<<shift-1)/2
}

// Quantile returns the smallest recorded value (to the histogram's
// precision) that at least q of the values do not exceed: the nearest-rank
// percentile. It returns 0 when nothing was recorded.
func (h *Histogram) Quantile(q float64) time.Duration {
	n := h.count.Load()
	if n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(n)))
	rank = min(max(rank, 1), n)
	var seen uint64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen >= rank {
			v := min(max(bucketValue(i), ^h.minInv.Load()), h.max.Load())
			return time.Duration(v)
		}
	}
	return time.Duration(h.max.Load())
}

// Latency summarises a Histogram. In JSON its durations are milliseconds.
type Latency struct {
	Count uint64 `json:"count"`
	Mean  Millis `json:"mean_ms"`
	Min   Millis `json:"min_ms"`
	P50   Millis `json:"p50_ms"`
	P90   Millis `json:"p90_ms"`
	P99   Millis `json:"p99_ms"`
	P999  Millis `json:"p99_9_ms"`
	Max   Millis `json:"max_ms"`
}

// Summary returns the count, mean, extremes and the 50th, 90th, 99th and
// 99.9th percentiles of h. Values recorded while it runs may or may not be
// included.
func (h *Histogram) Summary() Latency {
	n := h.count.Load()
	if n == 0 {
		return Latency{}
	}
	return Latency{
		Count: n,
		Mean:  Millis(h.sum.Load() / n),
		Min:   Millis(^h.minInv.Load()),
		P50:   Millis(h.Quantile(0.50)),
		P90:   Millis(h.Quantile(0.90)),
		P99:   Millis(h.Quantile(0.99)),
		P999:  Millis(h.Quantile(0.999)),
		Max:   Millis(h.max.Load()),
	}
}

// Millis is a duration that JSON encodes as a number of milliseconds.
type Millis time.Duration

// MarshalJSON writes m in milliseconds with microsecond precision.
func (m Millis) MarshalJSON() ([]byte, error) {
	return appendMillis(nil, time.Duration(m)), nil
}

// UnmarshalJSON reads a number of milliseconds.
func (m *Millis) UnmarshalJSON(b []byte) error {
	var ms float64
	if err := json.Unmarshal(b, &ms); err != nil {
		return err
	}
	*m = Millis(ms * float64(time.Millisecond))
	return nil
}

// String formats m in milliseconds, such as "1.234ms".
func (m Millis) String() string { return string(appendMillis(nil, time.Duration(m))) + "ms" }

func appendMillis(dst []byte, d time.Duration) []byte {
	return strconv.AppendFloat(dst, math.Round(float64(d)/1e3)/1e3, 'f', -1, 64)
}
