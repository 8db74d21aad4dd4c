package bench

import (
	"context"
	"math"
	"sync/atomic"
	"time"
)

// schedule hands out the send times of an open-loop run: arrival k is due
// at start + k/rate. Each free worker takes the next arrival, so an arrival
// waits only when every worker is busy, and that wait counts in its latency,
// as in wrk2: the generator does not slow down when the server does.
type schedule struct {
	start    time.Time
	interval float64 // nanoseconds between arrivals
	next     atomic.Int64
}

func newSchedule(start time.Time, rate float64) *schedule {
	return &schedule{start: start, interval: 1e9 / rate}
}

// take returns the send time of the next arrival.
func (s *schedule) take() time.Time {
	k := s.next.Add(1) - 1
	return s.start.Add(time.Duration(float64(k) * s.interval))
}

// countBetween returns the number of arrivals due in [from, to).
func (s *schedule) countBetween(from, to time.Time) int64 {
	first := func(t time.Time) int64 {
		return int64(math.Ceil(float64(t.Sub(s.start)) / s.interval))
	}
	return max(first(to)-first(from), 0)
}

// runOpen serves arrivals of sched until one is due after the run's end.
// An arrival still waiting for a worker when the run ends is not sent; Run
// reports those as unsent.
//
// An arrival taken after it fell due found every worker busy: it waited
// for a connection, behind a slow server, and its latency runs from its due
// time. An arrival taken early is sent when this worker's timer fires, which
// on a busy machine may be a millisecond late; that lateness is the
// generator's, not the server's, so its latency runs from the actual send.
func (w *worker) runOpen(ctx context.Context, ph phases, sched *schedule) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for ctx.Err() == nil {
		due := sched.take()
		if !due.Before(ph.end) {
			return
		}
		start, sent := due, time.Now()
		if wait := due.Sub(sent); wait > 0 {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-ctx.Done():
				return
			}
			sent = time.Now()
			start = sent
		} else if !sent.Before(ph.end) {
			return // a backlog outlived the run
		}
		code, err := w.send()
		done := time.Now()
		w.rec.done.Add(1)
		if !due.Before(ph.measure) {
			w.rec.record(code, err, done.Sub(start))
			w.rec.recordSent(code, err, done.Sub(sent))
		}
	}
}
