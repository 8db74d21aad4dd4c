package batcher

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Errors Do returns before or instead of running a request. The gateway
// answers ErrQueueFull and ErrStopped with 503, ErrDeadline with 504,
// ErrTooLarge, ErrNoRows and ErrBadPriority with 400, ErrGone with 499
// (its client is no longer there to read it), and ErrRunnerPanic,
// like any error of the Runner, with 500. Do wraps ErrTooLarge, ErrNoRows,
// ErrBadPriority and ErrRunnerPanic with details; test with errors.Is.
var (
	// ErrQueueFull means max_queue_size requests already wait: the model is
	// overloaded. Retry later, or raise instances or max_queue_size.
	ErrQueueFull = errors.New("batcher: queue full")
	// ErrDeadline means the request's deadline passed before a batch took it.
	ErrDeadline = errors.New("batcher: deadline passed while queued")
	// ErrTooLarge means the request has more rows than max_batch_size.
	ErrTooLarge = errors.New("batcher: request too large")
	// ErrNoRows means the request has no rows.
	ErrNoRows = errors.New("batcher: request has no rows")
	// ErrBadPriority means the priority is outside 0..priority_levels-1.
	ErrBadPriority = errors.New("batcher: priority out of range")
	// ErrStopped means the batcher was closed.
	ErrStopped = errors.New("batcher: stopped")
	// ErrGone means the request's Gone said its caller had given up
	// before a batch computed it.
	ErrGone = errors.New("batcher: the caller has gone")
	// ErrRunnerPanic means the Runner panicked while computing the
	// request's batch. The batcher recovered, failed that batch's requests
	// and counted the panic in infergate_batcher_runner_panics_total; it
	// goes on serving later batches.
	ErrRunnerPanic = errors.New("batcher: runner panicked")
)

// PanicError is the error of a batch whose Runner panicked; it matches
// ErrRunnerPanic with errors.Is. Every request of the batch gets the same
// PanicError, so treat it as read-only.
type PanicError struct {
	// Value is what the runner passed to panic.
	Value any
	// Stack is the stack where the panic was recovered (the worker's, or
	// the caller's for a request run alone), for the log line of whoever
	// answers the request.
	Stack []byte
}

// Error returns the panic value without the stack, fit for a response.
func (e *PanicError) Error() string { return fmt.Sprintf("%v: %v", ErrRunnerPanic, e.Value) }

// Unwrap returns ErrRunnerPanic.
func (e *PanicError) Unwrap() error { return ErrRunnerPanic }

// Layout gives the size in bytes of one row of each input and output.
type Layout struct{ InputRowBytes, OutputRowBytes []int }

func (l Layout) validate() error {
	for i, n := range l.InputRowBytes {
		if n < 0 {
			return fmt.Errorf("invalid batch layout: input %d has %d bytes per row", i, n)
		}
	}
	for j, n := range l.OutputRowBytes {
		if n < 0 {
			return fmt.Errorf("invalid batch layout: output %d has %d bytes per row", j, n)
		}
	}
	return nil
}

// Runner computes batches for one instance (one session). Each Runner is
// called by one goroutine at a time: its worker's, or that of a caller
// running its own request while the worker is idle. A panic in Run fails
// only that batch's requests (with ErrRunnerPanic); Run is called again
// for the next batch, so a Runner that can panic halfway must still be
// usable afterwards.
type Runner interface {
	// Run computes rows rows: in[i] holds rows*InputRowBytes[i] bytes of
	// input i; Run writes rows*OutputRowBytes[j] bytes of output j into
	// out[j], which is already sized so. Run must not keep in or out.
	Run(rows int, in, out [][]byte) error
}

// Request is one call's rows. Get one with AcquireRequest, fill the
// exported fields, pass it to Do, read Outputs, then give it back with
// ReleaseRequest. A Request belongs to one goroutine at a time.
//
// ReleaseRequest clears Inputs and Outputs and keeps their backing arrays
// for the request's next use, so fill Inputs with append(r.Inputs, ...)
// (it starts empty) rather than assigning a [][]byte you own: that one's
// elements would be cleared too.
type Request struct {
	// Rows is the number of rows the request carries; a batch never splits them.
	Rows int
	// Inputs holds Rows*InputRowBytes[i] bytes of input i. Do reads the
	// bytes until it returns and never writes them; they stay the caller's.
	Inputs [][]byte
	// Priority is 0..PriorityLevels-1; higher levels form batches first.
	Priority int
	// Timeout bounds the time spent queued; 0 (or less) means
	// DefaultTimeout, and a larger value is lowered to it.
	Timeout time.Duration
	// Gone, when set, says whether the caller has given up, such as an
	// HTTP client that closed its connection. A worker asks it of each
	// request of a batch that waited at least GoneCheckAfter, on its own
	// goroutine, outside the batcher's lock, and answers a gone one
	// ErrGone without computing it, so that abandoned requests do not
	// hold up the queue behind them when it is long.
	Gone func() bool
	// Outputs is set by Do when it returns nil: Rows*OutputRowBytes[j]
	// bytes of output j, slices of the batch's output buffers that stay
	// valid (and hold those buffers) until ReleaseRequest. Read them, do
	// not write or keep them.
	Outputs [][]byte
	// Waited is set by Do when it returns nil: the time from the request's
	// arrival to a batch taking it from the queue (0 for a request run at
	// once on an idle instance).
	Waited time.Duration
	// Computed is set by Do when it returns nil: the time the Runner took
	// for the batch that held the request, the whole batch's time (a
	// request shares it with the others of its batch).
	Computed time.Duration

	// w is what Do waits on; it is set only while Do runs.
	w *waiter
	// enqueued and deadline are set by Do before r is queued.
	enqueued, deadline time.Time
	// queued says r sits in a queue; Batcher.mu guards it.
	queued bool
	// err is r's answer, written by whoever answers r before it signals w.done.
	err error
	// set holds the buffers Outputs point into, until ReleaseRequest.
	set *bufferSet
}

var requestPool sync.Pool

// AcquireRequest returns an empty Request from a pool. It is safe for
// concurrent use.
func AcquireRequest() *Request {
	if r, ok := requestPool.Get().(*Request); ok {
		return r
	}
	return &Request{}
}

// ReleaseRequest returns r to the pool and releases its hold on its
// batch's output buffers, which its worker needs back to run later
// batches: release every request soon after Do returns. r must not be used
// afterwards. It is safe for concurrent use on distinct requests.
func ReleaseRequest(r *Request) {
	if r.w != nil {
		panic("BUG: ReleaseRequest called while Do still runs the request")
	}
	if r.set != nil {
		r.set.release()
	}
	clear(r.Inputs)
	clear(r.Outputs)
	*r = Request{Inputs: r.Inputs[:0], Outputs: r.Outputs[:0]}
	requestPool.Put(r)
}

// waiter is what one Do call blocks on. Waiters are pooled per Batcher, not
// in the Request, so that their channel and timer belong to the goroutines
// of the batcher that uses them (and, in tests, to its synctest bubble).
type waiter struct {
	// done receives one value when the request is answered; it is empty
	// whenever the waiter is pooled.
	done chan struct{}
	// timer fires at the request's deadline; it is stopped while pooled.
	timer *time.Timer
}

func newWaiter() any {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &waiter{done: make(chan struct{}, 1), timer: t}
}

// finish answers r with err and wakes its Do. r must not be touched
// afterwards: its caller may already be releasing it.
func finish(r *Request, err error) {
	r.err = err
	select {
	case r.w.done <- struct{}{}:
	default:
		panic("BUG: request answered twice")
	}
}

// Batcher queues requests of one model version and runs them in batches on
// its workers, one per Runner. It is safe for concurrent use.
type Batcher struct {
	cfg     Config
	layout  Layout
	metrics *batcherMetrics
	// model predicts compute times in adaptive mode; nil otherwise.
	model *computeModel

	// mu guards queues, queued, closed and every queued Request's queued field.
	mu sync.Mutex
	// queues holds one bounded FIFO per priority level, lowest first.
	queues []ring
	// queued counts the requests in queues; at most MaxQueueSize.
	queued int
	closed bool

	// queueLen mirrors queued for readers that should not take mu, and
	// aboveLowest the requests of it above the lowest level.
	queueLen, aboveLowest atomic.Int64
	// executed counts the batches the Runners computed without error.
	executed atomic.Uint64
	// wake tells an idle worker that the queues changed. It is 1-buffered
	// so that signals sent while no worker listens merge into one.
	wake chan struct{}
	// closing is closed by Close to wake every idle worker.
	closing chan struct{}
	// waiters pools what Do calls block on.
	waiters sync.Pool
	// instances are the workers, one per Runner.
	instances []*worker
	workers   sync.WaitGroup
	closeOnce sync.Once
}

// New starts one worker per runner (cfg.Instances is informational: the
// caller creates that many runners). labels is a Prometheus label list such
// as `model="demo",version="1"` used for the batcher's metrics, which it
// registers in its own metrics.Set and unregisters on Close.
func New(cfg Config, layout Layout, runners []Runner, labels string) (*Batcher, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate("batching"); err != nil {
		return nil, err
	}
	if err := layout.validate(); err != nil {
		return nil, err
	}
	if len(runners) == 0 {
		return nil, errors.New("cannot start a batcher without runners: pass one per instance")
	}
	if i := slices.Index(runners, nil); i >= 0 {
		return nil, fmt.Errorf("cannot start a batcher: runner %d is nil", i)
	}
	b := &Batcher{
		cfg:     cfg,
		layout:  Layout{InputRowBytes: slices.Clone(layout.InputRowBytes), OutputRowBytes: slices.Clone(layout.OutputRowBytes)},
		queues:  make([]ring, cfg.PriorityLevels),
		wake:    make(chan struct{}, 1),
		closing: make(chan struct{}),
		waiters: sync.Pool{New: newWaiter},
	}
	m, err := newMetrics(labels, cfg.PriorityLevels, func() float64 { return float64(b.QueueLength()) })
	if err != nil {
		return nil, err
	}
	b.metrics = m
	for i := range b.queues {
		b.queues[i] = newRing(cfg.MaxQueueSize)
	}
	if cfg.MaxQueueDelay.Auto {
		b.model = &computeModel{instances: len(runners), minBusy: busyShare}
	}
	for _, r := range runners {
		w := newWorker(b, r)
		b.instances = append(b.instances, w)
		b.workers.Go(w.loop)
	}
	m.register()
	return b, nil
}

// Do queues r and waits until its rows are computed, its deadline passes,
// or ctx is done. Once a batch took r, Do waits for that batch whatever
// the deadline or ctx say, because the worker reads r.Inputs and writes
// r.Outputs. When Do returns nil, r.Outputs holds r's rows.
//
// A request that finds the queue empty, an instance idle and itself due
// at once (batching off, max_queue_delay 0, a full or preferred batch, or
// an adaptive batcher that would not wait) is run by Do on the caller's
// goroutine: the same batch a worker would run, without waking one.
func (b *Batcher) Do(ctx context.Context, r *Request) error {
	if err := b.check(r); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		b.metrics.rejected[reasonCanceled].Inc()
		return err
	}
	wt := b.waiters.Get().(*waiter)
	r.w = wt
	inst, set, err := b.enqueue(r)
	switch {
	case err != nil:
	case inst != nil:
		err = inst.runAlone(set, r)
	default:
		err = b.wait(ctx, r)
	}
	r.w = nil
	b.waiters.Put(wt)
	return err
}

// check rejects a request that no batch could run.
func (b *Batcher) check(r *Request) error {
	switch {
	case r.w != nil:
		panic("BUG: Request passed to Do while Do already runs it")
	case r.set != nil:
		panic("BUG: Request passed to Do again before ReleaseRequest")
	case r.Rows < 1:
		b.metrics.rejected[reasonTooLarge].Inc()
		return fmt.Errorf("%w: got %d rows", ErrNoRows, r.Rows)
	case b.cfg.MaxBatchSize > 0 && r.Rows > b.cfg.MaxBatchSize:
		b.metrics.rejected[reasonTooLarge].Inc()
		return fmt.Errorf("%w: %d rows, max_batch_size is %d", ErrTooLarge, r.Rows, b.cfg.MaxBatchSize)
	case r.Priority < 0 || r.Priority >= len(b.queues):
		return fmt.Errorf("%w: %d, want 0..%d", ErrBadPriority, r.Priority, len(b.queues)-1)
	case len(r.Inputs) != len(b.layout.InputRowBytes):
		return fmt.Errorf("batcher: request has %d inputs, the model takes %d", len(r.Inputs), len(b.layout.InputRowBytes))
	}
	for i, rowBytes := range b.layout.InputRowBytes {
		if len(r.Inputs[i]) != r.Rows*rowBytes {
			return fmt.Errorf("batcher: input %d holds %d bytes, want %d rows of %d bytes", i, len(r.Inputs[i]), r.Rows, rowBytes)
		}
	}
	return nil
}

// enqueue admits r into its priority level's queue, or fails at once. When
// r may run alone at once, it returns the instance claimed for it and the
// buffer set to run it in instead, with r not queued.
func (b *Batcher) enqueue(r *Request) (*worker, *bufferSet, error) {
	now := time.Now()
	r.enqueued = now
	r.deadline = now.Add(b.timeout(r))
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		b.metrics.rejected[reasonStopped].Inc()
		return nil, nil, ErrStopped
	}
	if b.queued >= b.cfg.MaxQueueSize {
		b.mu.Unlock()
		b.metrics.rejected[reasonQueueFull].Inc()
		return nil, nil, ErrQueueFull
	}
	b.queues[r.Priority].push(r)
	r.queued = true
	b.addQueuedLocked(1)
	if inst, set := b.claimLocked(now); inst != nil {
		b.popLocked()
		b.metrics.queueWait[r.Priority].Update(0)
		b.mu.Unlock()
		return inst, set, nil
	}
	b.mu.Unlock()
	b.signal()
	return nil, nil, nil
}

// claimLocked returns an idle instance, its Runner's token taken, and a
// free buffer set of it when the one queued request is due at once; otherwise nil.
func (b *Batcher) claimLocked(now time.Time) (*worker, *bufferSet) {
	if b.queued != 1 {
		return nil, nil
	}
	if take, _ := b.decideLocked(now); take != 1 {
		return nil, nil
	}
	for _, w := range b.instances {
		if set := w.claim(); set != nil {
			return w, set
		}
	}
	return nil, nil
}

func (b *Batcher) timeout(r *Request) time.Duration {
	if r.Timeout <= 0 || r.Timeout > b.cfg.DefaultTimeout {
		return b.cfg.DefaultTimeout
	}
	return r.Timeout
}

// wait blocks until r is answered, its deadline passes or ctx is done.
func (b *Batcher) wait(ctx context.Context, r *Request) error {
	t := r.w.timer
	t.Reset(r.deadline.Sub(r.enqueued))
	defer t.Stop()
	select {
	case <-r.w.done:
		return r.err
	case <-t.C:
		return b.leave(r, ErrDeadline, reasonDeadline)
	case <-ctx.Done():
		return b.leave(r, ctx.Err(), reasonCanceled)
	}
}

// leave takes r out of its queue and returns err. If a batch already took
// r, leave waits for the batch's answer instead.
func (b *Batcher) leave(r *Request, err error, why reason) error {
	b.mu.Lock()
	if !r.queued {
		b.mu.Unlock()
		<-r.w.done
		return r.err
	}
	if !b.queues[r.Priority].remove(r) {
		panic("BUG: a queued request is missing from its queue")
	}
	r.queued = false
	b.addQueuedLocked(-1)
	b.mu.Unlock()
	b.metrics.rejected[why].Inc()
	// The rows left may now form a preferred size.
	b.signal()
	return err
}

func (b *Batcher) addQueuedLocked(n int) {
	b.queued += n
	b.queueLen.Store(int64(b.queued))
	b.aboveLowest.Store(int64(b.queued - b.queues[0].len()))
}

// signal wakes one idle worker; signals merge while none listens.
func (b *Batcher) signal() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// QueueLength returns the number of queued requests. It is safe for
// concurrent use.
func (b *Batcher) QueueLength() int {
	return int(b.queueLen.Load())
}

// QueueLengthAboveLowest returns the number of requests queued above the
// lowest priority level: a caller that keeps that level for background
// work (a gateway's batch jobs) counts these as its traffic's. It is safe
// for concurrent use.
func (b *Batcher) QueueLengthAboveLowest() int {
	return int(b.aboveLowest.Load())
}

// Executions returns the number of batches the Runners computed without
// error since New: model executions, each of one or more requests. It is
// safe for concurrent use.
func (b *Batcher) Executions() uint64 {
	return b.executed.Load()
}

// Close stops accepting requests (Do returns ErrStopped), lets the workers
// finish every request already queued, stops them and unregisters the
// metrics. A worker still waits for the buffers of a batch it needs to
// reuse, so callers must keep releasing their requests. Close is safe to
// call twice and concurrently; every call returns once the workers stopped.
func (b *Batcher) Close() {
	b.closeOnce.Do(func() {
		b.mu.Lock()
		b.closed = true
		b.mu.Unlock()
		close(b.closing)
		b.workers.Wait()
		for _, w := range b.instances {
			// Wait for a caller still running its request alone.
			<-w.own
		}
		b.metrics.unregister()
	})
}

// drained reports whether the batcher is closed and nothing is queued, so
// that no worker will run another batch.
func (b *Batcher) drained() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed && b.queued == 0
}

// CheckCapacity returns ErrQueueFull, counted as a queue_full rejection,
// when the queue holds max_queue_size requests, so a caller under overload
// can refuse a request before spending work on it. Do checks again. It is
// safe for concurrent use.
func (b *Batcher) CheckCapacity() error {
	if b.QueueLength() < b.cfg.MaxQueueSize {
		return nil
	}
	b.metrics.rejected[reasonQueueFull].Inc()
	return ErrQueueFull
}
