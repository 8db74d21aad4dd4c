package gateway

import (
	"math/bits"
	"sync/atomic"
	"time"

	"github.com/infergate/infergate/router"
)

// intervalBuckets are the latency buckets of an interval: bucket i holds
// latencies below 10µs * 2^i, the last one everything longer.
const intervalBuckets = 24

// intervalStats counts one version's answers since the canary analysis
// last took them. It is safe for concurrent use and allocates nothing.
type intervalStats struct {
	requests, errors atomic.Int64
	buckets          [intervalBuckets]atomic.Int64
	// labeled and correct count rows scored by feedback labels.
	labeled, correct atomic.Int64
}

// observe counts one answer with status code that took d.
func (s *intervalStats) observe(code int, d time.Duration) {
	s.requests.Add(1)
	if code >= 500 {
		s.errors.Add(1)
	}
	s.buckets[latencyBucket(d)].Add(1)
}

func latencyBucket(d time.Duration) int {
	units := uint64(max(d/(10*time.Microsecond), 0))
	return min(bits.Len64(units), intervalBuckets-1)
}

// intervalSnapshot is what take returns: plain counts that add up.
type intervalSnapshot struct {
	requests, errors int64
	buckets          [intervalBuckets]int64
	labeled, correct int64
}

// take returns the counts since the last take and starts over. Answers
// counted while it runs land in this interval or the next, never in none.
func (s *intervalStats) take() intervalSnapshot {
	var out intervalSnapshot
	out.requests, out.errors = s.requests.Swap(0), s.errors.Swap(0)
	out.labeled, out.correct = s.labeled.Swap(0), s.correct.Swap(0)
	for i := range s.buckets {
		out.buckets[i] = s.buckets[i].Swap(0)
	}
	return out
}

func (a *intervalSnapshot) add(b *intervalSnapshot) {
	a.requests += b.requests
	a.errors += b.errors
	a.labeled += b.labeled
	a.correct += b.correct
	for i := range a.buckets {
		a.buckets[i] += b.buckets[i]
	}
}

// stats returns the snapshot as the canary analysis takes it; its p99 is
// the upper bound of the bucket that holds the 99th percentile.
func (a *intervalSnapshot) stats() router.Stats {
	st := router.Stats{Requests: a.requests, Errors: a.errors, Labeled: a.labeled, Correct: a.correct}
	var total int64
	for _, n := range a.buckets {
		total += n
	}
	rank, seen := total-total/100, int64(0)
	for i, n := range a.buckets {
		if seen += n; n > 0 && seen >= rank {
			st.P99 = 10 * time.Microsecond << i
			break
		}
	}
	return st
}
