package batcher

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// These tests run in synctest bubbles: time moves only when every goroutine
// waits, so delays and deadlines are checked to the nanosecond without
// sleeping for real.

func TestMaxQueueDelayHoldsThenSends(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &recorder{}
		b := newTestBatcher(t, Config{MaxBatchSize: 8, MaxQueueDelay: Delay{Duration: 10 * time.Millisecond}}, 1, rec)
		defer b.Close()
		ctx := context.Background()
		p1 := startDo(ctx, b, 1, 1, 0)
		time.Sleep(4 * time.Millisecond)
		p2 := startDo(ctx, b, 2, 2, 0)
		synctest.Wait()
		p3 := startDo(ctx, b, 3, 1, 0)

		// The delay counts from the oldest request, not the newest.
		time.Sleep(6*time.Millisecond - time.Nanosecond)
		synctest.Wait()
		wantBatches(t, rec)
		if n := b.QueueLength(); n != 3 {
			t.Fatalf("queue length %d, want 3", n)
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		wantBatches(t, rec, []uint32{1, 2, 3})
		p1.wantOK(t)
		p2.wantOK(t)
		p3.wantOK(t)
	})
}

func TestZeroDelaySendsWhatIsThere(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &recorder{gate: make(chan struct{})}
		b := newTestBatcher(t, Config{MaxBatchSize: 8}, 1, rec)
		defer b.Close()
		ctx := context.Background()
		p1 := startDo(ctx, b, 1, 1, 0)
		synctest.Wait()
		wantBatches(t, rec, []uint32{1})

		// While the only instance is busy, requests gather; the moment it
		// is free they go together, without waiting for more.
		p2 := startDo(ctx, b, 2, 3, 0)
		synctest.Wait()
		p3 := startDo(ctx, b, 3, 1, 0)
		synctest.Wait()
		rec.gate <- struct{}{}
		synctest.Wait()
		p1.wantOK(t)
		wantBatches(t, rec, []uint32{1}, []uint32{2, 3})
		rec.gate <- struct{}{}
		synctest.Wait()
		p2.wantOK(t)
		p3.wantOK(t)
	})
}

func TestFullBatchGoesAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &recorder{}
		b := newTestBatcher(t, Config{MaxBatchSize: 4, MaxQueueDelay: Delay{Duration: time.Hour}}, 1, rec)
		ctx := context.Background()
		p1 := startDo(ctx, b, 1, 2, 0)
		synctest.Wait()
		p2 := startDo(ctx, b, 2, 2, 0)
		synctest.Wait()
		wantBatches(t, rec, []uint32{1, 2})
		p1.wantOK(t)
		p2.wantOK(t)

		// 3 rows wait; 2 more would not fit, so the 3 go alone at once
		// and the 2 wait for the delay.
		p3 := startDo(ctx, b, 3, 3, 0)
		synctest.Wait()
		p4 := startDo(ctx, b, 4, 2, 0)
		synctest.Wait()
		wantBatches(t, rec, []uint32{1, 2}, []uint32{3})
		p3.wantOK(t)
		p4.wantPending(t)

		// Close sends what waits without waiting for the delay.
		b.Close()
		synctest.Wait()
		wantBatches(t, rec, []uint32{1, 2}, []uint32{3}, []uint32{4})
		p4.wantOK(t)
	})
}

func TestPreferredSizeGoesAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &recorder{gate: make(chan struct{})}
		cfg := Config{MaxBatchSize: 8, PreferredBatchSizes: []int{2, 6}, MaxQueueDelay: Delay{Duration: time.Hour}}
		b := newTestBatcher(t, cfg, 1, rec)
		ctx := context.Background()
		p1 := startDo(ctx, b, 1, 1, 0)
		synctest.Wait()
		wantBatches(t, rec)
		p2 := startDo(ctx, b, 2, 1, 0)
		synctest.Wait()
		wantBatches(t, rec, []uint32{1, 2})

		// While the instance is busy the queue reaches 1, 2, 4, 6 and 7
		// rows; the largest preferred size reachable in arrival order (6)
		// goes, and the last request waits.
		var ps []*pendingDo
		for _, req := range []struct {
			id   uint32
			rows int
		}{{3, 1}, {4, 1}, {5, 2}, {6, 2}, {7, 1}} {
			ps = append(ps, startDo(ctx, b, req.id, req.rows, 0))
			synctest.Wait()
		}
		rec.gate <- struct{}{}
		synctest.Wait()
		wantBatches(t, rec, []uint32{1, 2}, []uint32{3, 4, 5, 6})
		rec.gate <- struct{}{}
		synctest.Wait()
		p1.wantOK(t)
		p2.wantOK(t)
		for _, p := range ps[:4] {
			p.wantOK(t)
		}
		ps[4].wantPending(t)

		close(rec.gate)
		b.Close()
		synctest.Wait()
		ps[4].wantOK(t)
	})
}

func TestHigherPriorityGoesFirst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &recorder{gate: make(chan struct{})}
		b := newTestBatcher(t, Config{MaxBatchSize: 4, PriorityLevels: 2}, 1, rec)
		defer b.Close()
		ctx := context.Background()
		p1 := startDo(ctx, b, 1, 1, 0)
		synctest.Wait()
		var ps []*pendingDo
		for _, req := range []struct {
			id             uint32
			rows, priority int
		}{{2, 2, 0}, {3, 2, 0}, {4, 2, 1}} {
			ps = append(ps, startDo(ctx, b, req.id, req.rows, req.priority))
			synctest.Wait()
		}
		rec.gate <- struct{}{}
		synctest.Wait()
		// The high-priority request queued last is in the next batch,
		// followed by the oldest low-priority one.
		wantBatches(t, rec, []uint32{1}, []uint32{4, 2})
		p1.wantOK(t)
		close(rec.gate)
		synctest.Wait()
		wantBatches(t, rec, []uint32{1}, []uint32{4, 2}, []uint32{3})
		for _, p := range ps {
			p.wantOK(t)
		}
	})
}

// TestLowestLevelWaitsAndIsCountedApart queues requests at level 0, the
// level the gateway keeps for batch-scoring jobs, before requests at level
// 1: the later level-1 requests go first, and each level's queue-wait
// series counts its own requests and their waits.
func TestLowestLevelWaitsAndIsCountedApart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &recorder{gate: make(chan struct{})}
		b := newTestBatcher(t, Config{MaxBatchSize: 4, PriorityLevels: 2}, 1, rec)
		defer b.Close()
		labels := fmt.Sprintf("test=%q", t.Name())
		wantSeries := func(want ...string) {
			t.Helper()
			var buf bytes.Buffer
			b.metrics.set.WritePrometheus(&buf)
			for _, w := range want {
				if !strings.Contains(buf.String(), "infergate_batcher_queue_wait_seconds_"+w+"\n") {
					t.Errorf("metrics lack infergate_batcher_queue_wait_seconds_%s; got\n%s", w, buf.String())
				}
			}
		}
		// New creates both levels' series before any request.
		wantSeries(`count{`+labels+`,priority="0"} 0`, `count{`+labels+`,priority="1"} 0`)

		ctx := context.Background()
		p1 := startDo(ctx, b, 1, 1, 1) // runs at once, alone, waiting 0
		synctest.Wait()
		// start queues requests one after the other, in this order.
		start := func(id uint32, rows, priority int) *pendingDo {
			p := startDo(ctx, b, id, rows, priority)
			synctest.Wait()
			return p
		}
		jobs := []*pendingDo{start(2, 2, 0), start(3, 2, 0)}
		time.Sleep(4 * time.Millisecond)
		if n, above := b.QueueLength(), b.QueueLengthAboveLowest(); n != 2 || above != 0 {
			t.Errorf("two requests queued at level 0: queue length %d, above the lowest level %d, want 2 and 0", n, above)
		}
		online := []*pendingDo{start(4, 2, 1), start(5, 1, 1)}
		if n, above := b.QueueLength(), b.QueueLengthAboveLowest(); n != 4 || above != 2 {
			t.Errorf("two requests queued at level 0, two at level 1: queue length %d, above the lowest level %d, want 4 and 2", n, above)
		}
		time.Sleep(6 * time.Millisecond)
		rec.gate <- struct{}{}
		synctest.Wait()
		// Level 1, queued 4ms after level 0, forms the next batch alone:
		// request 2 of level 0 does not fit beside its 3 rows.
		wantBatches(t, rec, []uint32{1}, []uint32{4, 5})
		p1.wantOK(t)
		time.Sleep(5 * time.Millisecond)
		close(rec.gate)
		synctest.Wait()
		wantBatches(t, rec, []uint32{1}, []uint32{4, 5}, []uint32{2, 3})
		for _, p := range append(online, jobs...) {
			p.wantOK(t)
		}
		// Level 1: request 1 waited 0, requests 4 and 5 6ms each; level 0:
		// requests 2 and 3 waited 15ms each.
		wantSeries(
			`bucket{`+labels+`,priority="1",le="1e-05"} 1`,
			`bucket{`+labels+`,priority="1",le="0.005"} 1`,
			`bucket{`+labels+`,priority="1",le="0.01"} 3`,
			`count{`+labels+`,priority="1"} 3`,
			`bucket{`+labels+`,priority="0",le="0.01"} 0`,
			`bucket{`+labels+`,priority="0",le="0.025"} 2`,
			`count{`+labels+`,priority="0"} 2`,
		)
	})
}

func TestDeadlinePassesWhileQueued(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &recorder{gate: make(chan struct{})}
		b := newTestBatcher(t, Config{MaxBatchSize: 8, DefaultTimeout: time.Second}, 1, rec)
		defer b.Close()
		ctx := context.Background()
		p1 := startDo(ctx, b, 1, 1, 0)
		synctest.Wait()

		r2 := newRequest(2, 1, 0)
		r2.Timeout = 5 * time.Millisecond
		p2 := startRequest(ctx, b, r2)
		r3 := newRequest(3, 1, 0)
		r3.Timeout = time.Hour // lowered to DefaultTimeout
		p3 := startRequest(ctx, b, r3)

		time.Sleep(5*time.Millisecond - time.Nanosecond)
		synctest.Wait()
		p2.wantPending(t)
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		p2.wantErr(t, ErrDeadline)
		if n := b.QueueLength(); n != 1 {
			t.Fatalf("queue length %d after a deadline, want 1", n)
		}
		time.Sleep(time.Second - 5*time.Millisecond)
		synctest.Wait()
		p3.wantErr(t, ErrDeadline)

		// Expired requests are never computed.
		close(rec.gate)
		synctest.Wait()
		p1.wantOK(t)
		wantBatches(t, rec, []uint32{1})
		if got := b.metrics.rejected[reasonDeadline].Get(); got != 2 {
			t.Fatalf("deadline rejections: got %d, want 2", got)
		}
	})
}

func TestBatchedRequestOutlivesItsDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &recorder{compute: func(int) time.Duration { return 20 * time.Millisecond }}
		b := newTestBatcher(t, Config{MaxBatchSize: 8, DefaultTimeout: 5 * time.Millisecond}, 1, rec)
		defer b.Close()
		start := time.Now()
		p := startDo(context.Background(), b, 1, 2, 0)
		synctest.Wait()
		p.wantPending(t)
		time.Sleep(20 * time.Millisecond)
		synctest.Wait()
		p.wantOK(t)
		if d := time.Since(start); d != 20*time.Millisecond {
			t.Fatalf("Do took %s, want the batch's 20ms", d)
		}
	})
}

func TestQueueFullRejectsAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &recorder{gate: make(chan struct{})}
		b := newTestBatcher(t, Config{MaxBatchSize: 8, MaxQueueSize: 2}, 1, rec)
		defer b.Close()
		ctx := context.Background()
		p1 := startDo(ctx, b, 1, 1, 0)
		synctest.Wait()
		p2 := startDo(ctx, b, 2, 1, 0)
		synctest.Wait()
		p3 := startDo(ctx, b, 3, 1, 0)
		synctest.Wait()

		r := newRequest(4, 1, 0)
		if err := b.Do(ctx, r); !errors.Is(err, ErrQueueFull) {
			t.Fatalf("Do on a full queue: got %v, want ErrQueueFull", err)
		}
		ReleaseRequest(r)
		if got := b.metrics.rejected[reasonQueueFull].Get(); got != 1 {
			t.Fatalf("queue_full rejections: got %d, want 1", got)
		}
		close(rec.gate)
		synctest.Wait()
		p1.wantOK(t)
		p2.wantOK(t)
		p3.wantOK(t)
	})
}

func TestCancelWhileQueuedFreesItsSlot(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &recorder{gate: make(chan struct{})}
		b := newTestBatcher(t, Config{MaxBatchSize: 8, MaxQueueSize: 1}, 1, rec)
		defer b.Close()
		p1 := startDo(context.Background(), b, 1, 1, 0)
		synctest.Wait()
		ctx, cancel := context.WithCancel(context.Background())
		p2 := startDo(ctx, b, 2, 1, 0)
		synctest.Wait()
		r := newRequest(3, 1, 0)
		if err := b.Do(context.Background(), r); !errors.Is(err, ErrQueueFull) {
			t.Fatalf("Do on a full queue: got %v, want ErrQueueFull", err)
		}
		ReleaseRequest(r)

		cancel()
		synctest.Wait()
		p2.wantErr(t, context.Canceled)
		if n := b.QueueLength(); n != 0 {
			t.Fatalf("queue length %d after a cancel, want 0", n)
		}
		p4 := startDo(context.Background(), b, 4, 1, 0)
		synctest.Wait()
		close(rec.gate)
		synctest.Wait()
		p1.wantOK(t)
		p4.wantOK(t)
		wantBatches(t, rec, []uint32{1}, []uint32{4})
		if got := b.metrics.rejected[reasonCanceled].Get(); got != 1 {
			t.Fatalf("canceled rejections: got %d, want 1", got)
		}
	})
}

func TestCloseDrainsTheQueue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &recorder{gate: make(chan struct{})}
		b := newTestBatcher(t, Config{MaxBatchSize: 2, MaxQueueDelay: Delay{Duration: time.Hour}}, 1, rec)
		ctx := context.Background()
		p1 := startDo(ctx, b, 1, 2, 0)
		synctest.Wait()
		var ps []*pendingDo
		for id := range uint32(3) {
			ps = append(ps, startDo(ctx, b, 2+id, 1, 0))
			synctest.Wait()
		}

		closed := make(chan struct{})
		go func() {
			b.Close()
			close(closed)
		}()
		synctest.Wait()
		r := newRequest(9, 1, 0)
		if err := b.Do(ctx, r); !errors.Is(err, ErrStopped) {
			t.Fatalf("Do after Close: got %v, want ErrStopped", err)
		}
		ReleaseRequest(r)
		select {
		case <-closed:
			t.Fatal("Close returned before the queue was drained")
		default:
		}

		// The last batch needs the buffers of the first: Close waits for
		// its release.
		close(rec.gate)
		synctest.Wait()
		p1.wantOK(t)
		synctest.Wait()
		for _, p := range ps {
			p.wantOK(t)
		}
		<-closed
		if got := len(rec.seen()); got != 3 {
			t.Fatalf("Close drained in %d batches, want 3", got)
		}
		b.Close()
	})
}

func TestCloseDoesNotWaitForUnreleasedRequests(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newTestBatcher(t, Config{MaxBatchSize: 2}, 1, &recorder{})
		ctx := context.Background()
		// Both buffer sets stay held: nothing queued needs them, so Close
		// must not wait for their release.
		r1, r2 := newRequest(1, 1, 0), newRequest(2, 1, 0)
		for _, r := range []*Request{r1, r2} {
			if err := b.Do(ctx, r); err != nil {
				t.Fatal(err)
			}
		}
		b.Close()
		for _, r := range []*Request{r1, r2} {
			if err := checkOutputs(r); err != nil {
				t.Fatal(err)
			}
			ReleaseRequest(r)
		}
	})
}

func TestRunnerErrorReachesEveryRequestOfTheBatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		boom := errors.New("boom")
		rec := &recorder{fail: boom}
		b := newTestBatcher(t, Config{MaxBatchSize: 8, MaxQueueDelay: Delay{Duration: time.Millisecond}}, 1, rec)
		defer b.Close()
		// More batches than buffer sets: a failed batch must free its set.
		for batch := range uint32(3) {
			var ps []*pendingDo
			for i := range uint32(3) {
				ps = append(ps, startDo(context.Background(), b, batch*3+i, 2, 0))
			}
			time.Sleep(time.Millisecond)
			synctest.Wait()
			for _, p := range ps {
				err, _ := p.done()
				if err == nil || err.Error() != "cannot run batch of 6 rows: boom" {
					t.Fatalf("got error %v, want the batch's error", err)
				}
				p.wantErr(t, boom)
			}
		}
		if n := len(rec.seen()); n != 3 {
			t.Fatalf("%d batches ran, want 3", n)
		}
	})
}

func TestBuffersReusedOnlyOnceReleased(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &recorder{}
		b := newTestBatcher(t, Config{MaxBatchSize: 4}, 1, rec)
		defer b.Close()
		ctx := context.Background()
		r1, r2 := newRequest(1, 4, 0), newRequest(2, 4, 0)
		for _, r := range []*Request{r1, r2} {
			if err := b.Do(ctx, r); err != nil {
				t.Fatal(err)
			}
		}
		// Both sets are held, so the third batch waits rather than
		// overwrite outputs still being read.
		p3 := startDo(ctx, b, 3, 4, 0)
		synctest.Wait()
		p3.wantPending(t)
		wantBatches(t, rec, []uint32{1}, []uint32{2})

		ReleaseRequest(r1)
		synctest.Wait()
		p3.wantOK(t)
		if err := checkOutputs(r2); err != nil {
			t.Fatalf("outputs of a held request changed: %v", err)
		}
		ReleaseRequest(r2)
	})
}

func TestBatchingOffRunsEachRequestAlone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &recorder{gate: make(chan struct{})}
		b := newTestBatcher(t, Config{MaxQueueDelay: Delay{Duration: time.Hour}}, 1, rec)
		defer b.Close()
		ctx := context.Background()
		// Any row count goes, and the buffers grow to fit it.
		var ps []*pendingDo
		for id, rows := range []int{1, 300, 2, 1000} {
			ps = append(ps, startDo(ctx, b, uint32(id), rows, 0))
			synctest.Wait()
		}
		close(rec.gate)
		for _, p := range ps {
			synctest.Wait()
			p.wantOK(t)
		}
		wantBatches(t, rec, []uint32{0}, []uint32{1}, []uint32{2}, []uint32{3})
	})
}

func TestWorkerSkipsRequestsPastTheirDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &recorder{gate: make(chan struct{})}
		b := newTestBatcher(t, Config{MaxBatchSize: 8}, 1, rec)
		defer b.Close()
		ctx := context.Background()
		// Keep the batcher's only Runner busy (lent to p1's caller).
		p1 := startDo(ctx, b, 1, 1, 0)
		synctest.Wait()
		r2 := newRequest(2, 1, 0)
		r2.Timeout = 5 * time.Millisecond
		p2 := startRequest(ctx, b, r2)
		synctest.Wait()
		p3 := startDo(ctx, b, 3, 1, 0)
		synctest.Wait()

		// A worker deciding at the deadline, before r2's own timer made its
		// Do leave, answers r2 itself and never runs it.
		byHand := &recorder{}
		w := newWorker(b, echoRunner{byHand})
		set, _ := w.acquireSet()
		b.mu.Lock()
		w.takeLocked(2, time.Now().Add(5*time.Millisecond))
		b.mu.Unlock()
		w.run(set, w.batch)
		synctest.Wait()
		p2.wantErr(t, ErrDeadline)
		p3.wantOK(t)
		wantBatches(t, byHand, []uint32{3})

		close(rec.gate)
		synctest.Wait()
		p1.wantOK(t)
	})
}

// TestDueRequestRunsOnItsCaller: a request that finds nothing queued and
// an instance idle, and is due at once, is run by its own Do on the
// caller's goroutine; one that would wait for a fuller batch is not.
func TestDueRequestRunsOnItsCaller(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &recorder{}
		b := newTestBatcher(t, Config{MaxBatchSize: 4, PreferredBatchSizes: []int{2}, MaxQueueDelay: Delay{Duration: time.Millisecond}}, 1, rec)
		defer b.Close()
		caller := goroutineID()
		for id, rows := range []int{4, 2} { // full, then preferred: both due at once
			r := newRequest(uint32(id), rows, 0)
			if err := b.Do(context.Background(), r); err != nil {
				t.Fatal(err)
			}
			if err := checkOutputs(r); err != nil {
				t.Fatal(err)
			}
			ReleaseRequest(r)
		}
		r := newRequest(2, 1, 0) // waits up to max_queue_delay for more rows
		if err := b.Do(context.Background(), r); err != nil {
			t.Fatal(err)
		}
		ReleaseRequest(r)
		wantBatches(t, rec, []uint32{0}, []uint32{1}, []uint32{2})
		if g := rec.goroutines; g[0] != caller || g[1] != caller || g[2] == caller {
			t.Fatalf("batches ran on goroutines %v; the caller is %d: want the first two on it, the last on the worker", g, caller)
		}
	})
}

// TestRequestsQueuedBehindACallerRunAfterIt: while a caller runs its own
// request on the only instance, later requests stay queued (and counted),
// and the worker runs them as one batch as soon as the caller is done.
func TestRequestsQueuedBehindACallerRunAfterIt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &recorder{gate: make(chan struct{})}
		b := newTestBatcher(t, Config{MaxBatchSize: 8}, 1, rec)
		defer b.Close()
		ctx := context.Background()
		p1 := startDo(ctx, b, 1, 1, 0)
		synctest.Wait()
		p2 := startDo(ctx, b, 2, 1, 0)
		synctest.Wait()
		p3 := startDo(ctx, b, 3, 2, 0)
		synctest.Wait()
		if n := b.QueueLength(); n != 2 {
			t.Fatalf("queue length %d while the instance is lent out, want 2", n)
		}
		p2.wantPending(t)
		rec.gate <- struct{}{}
		synctest.Wait()
		p1.wantOK(t)
		rec.gate <- struct{}{}
		synctest.Wait()
		p2.wantOK(t)
		p3.wantOK(t)
		wantBatches(t, rec, []uint32{1}, []uint32{2, 3})
		if g := rec.goroutines; g[0] == g[1] {
			t.Fatalf("both batches ran on goroutine %d, want the caller's then the worker's", g[0])
		}
	})
}

// TestLentRunnerPassesTheSignalOn: with one of two instances lent to a
// caller, a queued request is run by the other when its delay ends, even
// if the worker of the lent one heard the signal first.
func TestLentRunnerPassesTheSignalOn(t *testing.T) {
	for range 8 { // which worker hears a signal first is up to the scheduler
		synctest.Test(t, func(t *testing.T) {
			gated, free := &recorder{gate: make(chan struct{})}, &recorder{}
			b, err := New(Config{MaxBatchSize: 2, MaxQueueDelay: Delay{Duration: time.Millisecond}}, testLayout,
				[]Runner{echoRunner{gated}, echoRunner{free}}, fmt.Sprintf("test=%q", t.Name()))
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			ctx := context.Background()
			p1 := startDo(ctx, b, 1, 2, 0) // a full batch: run alone, on the first instance
			synctest.Wait()
			p2 := startDo(ctx, b, 2, 1, 0)
			time.Sleep(time.Millisecond)
			synctest.Wait()
			p2.wantOK(t)
			wantBatches(t, free, []uint32{2})
			close(gated.gate)
			synctest.Wait()
			p1.wantOK(t)
		})
	}
}

// TestGoneCallersAreNotComputed: a request whose caller has gone is
// answered ErrGone and left out of its batch once it waited
// GoneCheckAfter; before that its Gone is not even asked.
func TestGoneCallersAreNotComputed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		for _, delay := range []time.Duration{GoneCheckAfter, GoneCheckAfter / 2} {
			rec := &recorder{}
			b := newTestBatcher(t, Config{MaxBatchSize: 8, MaxQueueDelay: Delay{Duration: delay}}, 1, rec)
			ctx := context.Background()
			asked := 0
			gone := newRequest(1, 1, 0)
			gone.Gone = func() bool { asked++; return true }
			here := newRequest(2, 1, 0)
			here.Gone = func() bool { return false }
			p1 := startRequest(ctx, b, gone)
			synctest.Wait()
			p2 := startRequest(ctx, b, here)
			time.Sleep(delay)
			synctest.Wait()
			p2.wantOK(t)
			if delay < GoneCheckAfter {
				p1.wantOK(t)
				wantBatches(t, rec, []uint32{1, 2})
				if asked != 0 {
					t.Fatalf("Gone asked %d times of a request that waited %s", asked, delay)
				}
			} else {
				p1.wantErr(t, ErrGone)
				wantBatches(t, rec, []uint32{2})
				if got := b.metrics.rejected[reasonCanceled].Get(); got != 1 {
					t.Fatalf("canceled rejections: %d, want 1", got)
				}
			}
			b.Close()
		}
	})
}
