package batcher

import (
	"slices"
	"time"
)

// ring is a bounded FIFO of the requests queued at one priority level. Its
// capacity is max_queue_size, the bound on all levels together, so a push
// admitted by that bound always fits.
type ring struct {
	items []*Request // fixed length: the capacity
	head  int        // index of the oldest request
	n     int
}

func newRing(capacity int) ring {
	return ring{items: make([]*Request, capacity)}
}

func (q *ring) len() int { return q.n }

// at returns the i-th oldest request.
func (q *ring) at(i int) *Request {
	return q.items[(q.head+i)%len(q.items)]
}

func (q *ring) set(i int, r *Request) {
	q.items[(q.head+i)%len(q.items)] = r
}

func (q *ring) push(r *Request) {
	if q.n == len(q.items) {
		panic("BUG: push to a full queue: max_queue_size was not enforced")
	}
	q.n++
	q.set(q.n-1, r)
}

func (q *ring) pop() *Request {
	if q.n == 0 {
		panic("BUG: pop from an empty queue")
	}
	r := q.at(0)
	q.set(0, nil)
	q.head = (q.head + 1) % len(q.items)
	q.n--
	return r
}

// remove takes r out of the queue, keeping the others in order. It costs
// a shift of the requests behind r, which is fine for the rare request that
// gives up while queued.
func (q *ring) remove(r *Request) bool {
	for i := range q.n {
		if q.at(i) != r {
			continue
		}
		for j := i; j < q.n-1; j++ {
			q.set(j, q.at(j+1))
		}
		q.set(q.n-1, nil)
		q.n--
		return true
	}
	return false
}

// batchPlan is the batch that would go if one were sent now: the first
// count queued requests in priority-then-arrival order.
type batchPlan struct {
	count, rows int
	// full says the batch cannot grow: it holds max_batch_size rows, the
	// next request would not fit, or batching is off.
	full bool
	// preferred is the count of the longest prefix whose rows are a
	// preferred batch size; 0 when there is none.
	preferred int
}

// planLocked walks the queues from the highest priority level down, in
// arrival order within a level, taking whole requests while they fit.
// Stopping at the first request that does not fit keeps arrival order:
// a small late request never overtakes a large early one.
func (b *Batcher) planLocked() batchPlan {
	var p batchPlan
	limit := b.cfg.MaxBatchSize
	for level := len(b.queues) - 1; level >= 0; level-- {
		q := &b.queues[level]
		for i := range q.len() {
			r := q.at(i)
			if limit == 0 {
				return batchPlan{count: 1, rows: r.Rows, full: true}
			}
			if p.rows+r.Rows > limit {
				p.full = true
				return p
			}
			p.count++
			p.rows += r.Rows
			if slices.Contains(b.cfg.PreferredBatchSizes, p.rows) {
				p.preferred = p.count
			}
			if p.rows == limit {
				p.full = true
				return p
			}
		}
	}
	return p
}

// decideLocked says how many requests to send now (in the order
// planLocked walks them) or, when it is none, how long the batch may still
// wait for more rows. It is called with at least one request queued.
func (b *Batcher) decideLocked(now time.Time) (take int, wait time.Duration) {
	p := b.planLocked()
	switch {
	case p.full || b.closed:
		return p.count, 0
	case p.preferred > 0:
		return p.preferred, 0
	}
	if wait := b.patienceLocked(now, p.rows); wait > 0 {
		return 0, wait
	}
	return p.count, 0
}

// patienceLocked is how much longer a batch of rows may wait for more: in
// fixed mode until the oldest request has waited max_queue_delay; in
// adaptive mode while the instances are busy and the oldest request's wait
// plus the predicted compute of the batch grown by one typical request
// stays within latency_target.
func (b *Batcher) patienceLocked(now time.Time, rows int) time.Duration {
	waited := now.Sub(b.oldestLocked())
	if b.model == nil {
		return b.cfg.MaxQueueDelay.Duration - waited
	}
	return b.model.budget(now, rows, b.cfg.MaxBatchSize, b.cfg.LatencyTarget) - waited
}

// oldestLocked returns when the oldest queued request, of any level,
// arrived: its wait is what max_queue_delay bounds.
func (b *Batcher) oldestLocked() time.Time {
	var oldest time.Time
	for i := range b.queues {
		q := &b.queues[i]
		if q.len() > 0 && (oldest.IsZero() || q.at(0).enqueued.Before(oldest)) {
			oldest = q.at(0).enqueued
		}
	}
	if oldest.IsZero() {
		panic("BUG: oldestLocked called with nothing queued")
	}
	return oldest
}

// popLocked takes the next request in priority-then-arrival order.
func (b *Batcher) popLocked() *Request {
	for level := len(b.queues) - 1; level >= 0; level-- {
		if q := &b.queues[level]; q.len() > 0 {
			r := q.pop()
			r.queued = false
			b.addQueuedLocked(-1)
			return r
		}
	}
	panic("BUG: popLocked called with nothing queued")
}
