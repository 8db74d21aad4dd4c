package batcher

import (
	"fmt"
	"runtime/debug"
	"sync/atomic"
	"time"
)

// GoneCheckAfter is how long a request waits in the queue before a worker
// asks its Gone: a caller gives up after seconds, not milliseconds, and
// the question may cost a system call.
const GoneCheckAfter = 50 * time.Millisecond

// untilSignal is a wait that ends only when a worker is signalled;
// untilReturned one that ends when the worker's Runner is given back.
const (
	untilSignal   time.Duration = -1
	untilReturned time.Duration = -2
)

// worker runs the batches of one Runner on its own goroutine, or lends
// the Runner to a caller whose request may go at once while the worker is
// idle (see Batcher.Do). runner, alone and the contents of the buffer sets
// belong to whoever holds own's token; batch and timer to the worker's
// goroutine; the sets' holds are dropped from the callers' goroutines by
// ReleaseRequest.
type worker struct {
	b      *Batcher
	runner Runner
	// own holds the Runner's one token while nobody runs it: the worker's
	// goroutine, or a caller running its own request, takes it to run a
	// batch. (A channel, unlike a mutex, is a durable wait in synctest.)
	own chan struct{}
	// alone is the batch of a caller's request run by that caller.
	alone [1]*Request
	// sets double-buffer the batches: the worker assembles and computes the
	// next batch in one set while the requests of the previous batch still
	// read their outputs from the other.
	sets [2]*bufferSet
	// batch holds the requests of the batch being run.
	batch []*Request
	// timer wakes the worker when a waiting batch's delay ends.
	timer *time.Timer
}

func newWorker(b *Batcher, r Runner) *worker {
	t := time.NewTimer(time.Hour)
	t.Stop()
	w := &worker{b: b, runner: r, own: make(chan struct{}, 1), batch: make([]*Request, 0, max(b.cfg.MaxBatchSize, 1)), timer: t}
	w.own <- struct{}{}
	for i := range w.sets {
		w.sets[i] = newBufferSet(b.layout, b.cfg.MaxBatchSize)
	}
	return w
}

// loop runs batches until the batcher is closed and drained.
func (w *worker) loop() {
	for {
		set, ok := w.acquireSet()
		if !ok || !w.nextBatch() {
			return
		}
		w.run(set, w.dropGone(w.batch))
		clear(w.batch)
		w.batch = w.batch[:0]
		w.own <- struct{}{}
	}
}

// claim takes the worker for one caller's request: it returns a free
// buffer set with own's token taken, or nil when the Runner is busy or no
// set is free. The caller must later run a batch in the set and give the
// token back.
func (w *worker) claim() *bufferSet {
	select {
	case <-w.own:
	default:
		return nil
	}
	for _, s := range w.sets {
		select {
		case <-s.free:
			return s
		default:
		}
	}
	w.own <- struct{}{}
	return nil
}

// acquireSet waits until one of the worker's buffer sets is free. It gives
// up once the batcher is closed and drained, so that Close does not wait
// for callers to release buffers no batch will need.
func (w *worker) acquireSet() (*bufferSet, bool) {
	select {
	case <-w.sets[0].free:
		return w.sets[0], true
	case <-w.sets[1].free:
		return w.sets[1], true
	case <-w.b.closing:
	}
	if w.b.drained() {
		return nil, false
	}
	select {
	case <-w.sets[0].free:
		return w.sets[0], true
	case <-w.sets[1].free:
		return w.sets[1], true
	}
}

// nextBatch waits until a batch is due and moves its requests into
// w.batch, with own held. It returns false once the batcher is closed and
// drained.
func (w *worker) nextBatch() bool {
	for {
		wait, drained := w.takeDue()
		switch {
		case drained:
			return false
		case len(w.batch) > 0:
			return true
		}
		w.sleep(wait)
	}
}

// takeDue moves the batch that is due now, if any, into w.batch and takes
// own. Otherwise it says how long to sleep before deciding again, or that
// the batcher is closed and drained. While a caller runs its request alone
// on the worker's Runner, the worker leaves the queue be until the Runner
// is back, so that requests stay queued (and counted) until a Runner is
// free for them, and passes the signal on to a worker that may be idle.
func (w *worker) takeDue() (wait time.Duration, drained bool) {
	b := w.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.queued == 0 {
		return untilSignal, b.closed
	}
	now := time.Now()
	n, wait := b.decideLocked(now)
	if n == 0 {
		return wait, false
	}
	select {
	case <-w.own:
	default:
		b.signal()
		return untilReturned, false
	}
	w.takeLocked(n, now)
	if len(w.batch) == 0 {
		w.own <- struct{}{}
	}
	if b.queued > 0 {
		// Another idle worker may take the rest.
		b.signal()
	}
	// wait is 0: if every taken request had expired, decide again at once.
	return 0, false
}

// takeLocked pops n requests into w.batch. A request whose deadline passed
// while its Do had yet to notice is answered ErrDeadline and never runs.
func (w *worker) takeLocked(n int, now time.Time) {
	b := w.b
	for range n {
		r := b.popLocked()
		if !now.Before(r.deadline) {
			b.metrics.rejected[reasonDeadline].Inc()
			finish(r, ErrDeadline)
			continue
		}
		r.Waited = now.Sub(r.enqueued)
		b.metrics.queueWait[r.Priority].Update(r.Waited.Seconds())
		w.batch = append(w.batch, r)
	}
}

// sleep waits for a signal (the queues changed, or Close) or for d to pass;
// untilSignal waits for a signal only, untilReturned for the Runner's
// token, and 0 does not wait.
func (w *worker) sleep(d time.Duration) {
	b := w.b
	switch {
	case d == 0:
		return
	case d == untilReturned:
		w.own <- <-w.own
		return
	case d < 0:
		select {
		case <-b.wake:
		case <-b.closing:
		}
		return
	}
	w.timer.Reset(d)
	select {
	case <-b.wake:
	case <-b.closing:
	case <-w.timer.C:
	}
	w.timer.Stop()
}

// dropGone answers ErrGone to the requests of batch that waited at least
// GoneCheckAfter and whose caller has gone, and returns the others.
func (w *worker) dropGone(batch []*Request) []*Request {
	var now time.Time
	kept := batch[:0]
	for _, r := range batch {
		if r.Gone != nil {
			if now.IsZero() {
				now = time.Now()
			}
			if now.Sub(r.enqueued) >= GoneCheckAfter && r.Gone() {
				w.b.metrics.rejected[reasonCanceled].Inc()
				finish(r, ErrGone)
				continue
			}
		}
		kept = append(kept, r)
	}
	return kept
}

// runAlone runs r, which was claimed with set, on the caller's goroutine
// and returns its answer.
func (w *worker) runAlone(set *bufferSet, r *Request) error {
	w.alone[0] = r
	w.run(set, w.alone[:])
	w.own <- struct{}{}
	if w.b.QueueLength() > 0 {
		// A worker may have left requests queued while this one ran.
		w.b.signal()
	}
	<-r.w.done
	return r.err
}

// run computes batch in set and answers its requests; an empty batch only
// gives set back. The caller holds own.
func (w *worker) run(set *bufferSet, batch []*Request) {
	rows := 0
	for _, r := range batch {
		rows += r.Rows
	}
	var err error
	var took time.Duration
	if rows > 0 {
		set.size(w.b.layout, rows)
		w.copyInputs(set, batch)
		start := time.Now()
		err = w.compute(rows, set)
		took = time.Since(start)
		w.b.observe(rows, len(batch), took, err)
		if err != nil {
			err = fmt.Errorf("cannot run batch of %d rows: %w", rows, err)
		}
	}
	w.handOut(set, batch, took, err)
}

// compute runs the runner on set's views. A panic in the runner becomes
// the batch's error, so that one bad batch fails its own requests rather
// than the whole process, and the worker lives on to run the next batch.
func (w *worker) compute(rows int, set *bufferSet) (err error) {
	defer func() {
		if p := recover(); p != nil {
			w.b.metrics.runnerPanics.Inc()
			err = &PanicError{Value: p, Stack: debug.Stack()}
		}
	}()
	return w.runner.Run(rows, set.inView, set.outView)
}

// copyInputs lays the batch's rows out contiguously, request after request.
func (w *worker) copyInputs(set *bufferSet, batch []*Request) {
	off := 0
	for _, r := range batch {
		for i, rowBytes := range w.b.layout.InputRowBytes {
			copy(set.inView[i][off*rowBytes:], r.Inputs[i])
		}
		off += r.Rows
	}
}

// handOut answers the batch's requests: with err, or with their slices of
// set's output buffers, which each request holds until it is released, and
// the batch's compute time took. The worker holds the set too while it
// hands out, so that the set cannot be freed before every request got its
// hold.
func (w *worker) handOut(set *bufferSet, batch []*Request, took time.Duration, err error) {
	holds := 1
	if err == nil {
		holds += len(batch)
	}
	set.hold(holds)
	off := 0
	for i, r := range batch {
		batch[i] = nil
		if err != nil {
			finish(r, err)
			continue
		}
		rows := r.Rows
		r.Outputs = r.Outputs[:0]
		for j, rowBytes := range w.b.layout.OutputRowBytes {
			lo, hi := off*rowBytes, (off+rows)*rowBytes
			r.Outputs = append(r.Outputs, set.out[j][lo:hi:hi])
		}
		r.set = set
		r.Computed = took
		off += rows
		finish(r, nil)
	}
	set.release()
}

// bufferSet is the memory of one batch: one contiguous buffer per input and
// per output. A set goes back to its worker when every hold on it is
// released: the requests of its batch and the worker while it hands out.
type bufferSet struct {
	// in and out are the whole buffers, sized for max_batch_size rows, or
	// grown to the largest request so far when batching is off.
	in, out [][]byte
	// inView and outView are the current batch's rows, passed to Run.
	inView, outView [][]byte
	holds           atomic.Int32
	// free holds the set's one token while nothing holds the set.
	free chan struct{}
}

func newBufferSet(layout Layout, rows int) *bufferSet {
	s := &bufferSet{
		in:      makeBuffers(layout.InputRowBytes, rows),
		out:     makeBuffers(layout.OutputRowBytes, rows),
		inView:  make([][]byte, len(layout.InputRowBytes)),
		outView: make([][]byte, len(layout.OutputRowBytes)),
		free:    make(chan struct{}, 1),
	}
	s.free <- struct{}{}
	return s
}

func makeBuffers(rowBytes []int, rows int) [][]byte {
	bufs := make([][]byte, len(rowBytes))
	for i, n := range rowBytes {
		bufs[i] = make([]byte, rows*n)
	}
	return bufs
}

// size points the views at the first rows rows, growing a buffer that is
// too small (only when batching is off; otherwise it has max_batch_size rows).
func (s *bufferSet) size(layout Layout, rows int) {
	sizeViews(s.in, s.inView, layout.InputRowBytes, rows)
	sizeViews(s.out, s.outView, layout.OutputRowBytes, rows)
}

func sizeViews(bufs, views [][]byte, rowBytes []int, rows int) {
	for i, n := range rowBytes {
		if cap(bufs[i]) < rows*n {
			bufs[i] = make([]byte, rows*n)
		}
		views[i] = bufs[i][:rows*n]
	}
}

// hold marks the set as held n times; it must be free.
func (s *bufferSet) hold(n int) {
	if s.holds.Swap(int32(n)) != 0 {
		panic("BUG: buffer set reused while a request still holds it")
	}
}

// release drops one hold; the last one gives the set back to its worker.
func (s *bufferSet) release() {
	switch n := s.holds.Add(-1); {
	case n < 0:
		panic("BUG: buffer set released more often than held")
	case n == 0:
		select {
		case s.free <- struct{}{}:
		default:
			panic("BUG: buffer set freed twice")
		}
	}
}
