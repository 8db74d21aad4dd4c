package bench

import (
	"math"
	"testing"
	"time"
)

func TestHistogramQuantilesOfKnownSamples(t *testing.T) {
	f := func(values []time.Duration, q float64, want time.Duration, tolerance float64) {
		t.Helper()
		var h Histogram
		for _, v := range values {
			h.Record(v)
		}
		got := h.Quantile(q)
		if diff := math.Abs(float64(got - want)); diff > tolerance*float64(want) {
			t.Errorf("quantile %g of %d values: got %s, want %s (±%.2f%%)", q, len(values), got, want, 100*tolerance)
		}
	}
	series := func(n int, unit time.Duration) []time.Duration {
		out := make([]time.Duration, n)
		for i := range out {
			out[i] = time.Duration(n-i) * unit // descending: order must not matter
		}
		return out
	}
	// Below 256ns every value has its own bucket: nearest rank is exact.
	f(series(100, time.Nanosecond), 0.50, 50, 0)
	f(series(100, time.Nanosecond), 0.99, 99, 0)
	f(series(100, time.Nanosecond), 1, 100, 0)
	f(series(100, time.Nanosecond), 0, 1, 0)
	// Above, within the histogram's precision of 1/256.
	f(series(1000, time.Microsecond), 0.50, 500*time.Microsecond, 1.0/256)
	f(series(1000, time.Microsecond), 0.90, 900*time.Microsecond, 1.0/256)
	f(series(1000, time.Microsecond), 0.99, 990*time.Microsecond, 1.0/256)
	f(series(1000, time.Microsecond), 0.999, 999*time.Microsecond, 1.0/256)
	f(series(10000, time.Millisecond), 0.999, 9991*time.Millisecond, 1.0/256)
	// A single value is every percentile, exactly: clamped to min and max.
	f([]time.Duration{123456789}, 0.5, 123456789, 0)
	// 99 fast values and one slow: p99 is fast, p99.9 is slow.
	mixed := append(series(99, 0), 0) // 100 zeros
	mixed[0] = time.Second
	f(mixed, 0.99, 0, 0)
	f(mixed, 0.999, time.Second, 0)
}

func TestHistogramSummary(t *testing.T) {
	var h Histogram
	if s := h.Summary(); s != (Latency{}) {
		t.Fatalf("empty histogram: got %+v, want zeros", s)
	}
	for _, v := range []time.Duration{time.Millisecond, 2 * time.Millisecond, 6 * time.Millisecond} {
		h.Record(v)
	}
	h.Record(-time.Second) // counts as zero
	s := h.Summary()
	if s.Count != 4 || s.Min != 0 || s.Max != Millis(6*time.Millisecond) || s.Mean != Millis(2250*time.Microsecond) {
		t.Fatalf("got %+v, want count 4, min 0, max 6ms, mean 2.25ms", s)
	}
	if s.P50 > s.P90 || s.P90 > s.P99 || s.P99 > s.P999 || s.P999 > s.Max {
		t.Fatalf("percentiles out of order: %+v", s)
	}
}

func TestHistogramBuckets(t *testing.T) {
	prev := -1
	for v := uint64(0); v < 1<<41; v = v*17/16 + 1 {
		i := bucketIndex(v)
		if i < prev || i >= bucketCount {
			t.Fatalf("bucketIndex(%d) = %d after %d: not monotonic or out of range", v, i, prev)
		}
		prev = i
		if v >= 1<<40 {
			continue // clamped into the last bucket
		}
		if got := bucketValue(i); math.Abs(float64(got)-float64(v)) > float64(v)/256+0.5 {
			t.Fatalf("bucketValue(bucketIndex(%d)) = %d: further than 1/256 away", v, got)
		}
	}
}

func TestMillisJSON(t *testing.T) {
	b, _ := Millis(1234567 * time.Nanosecond).MarshalJSON()
	if string(b) != "1.235" {
		t.Fatalf("got %s, want 1.235", b)
	}
	var m Millis
	if err := m.UnmarshalJSON([]byte("2.5")); err != nil || time.Duration(m) != 2500*time.Microsecond {
		t.Fatalf("got %v, %v; want 2.5ms", time.Duration(m), err)
	}
}
