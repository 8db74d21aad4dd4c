package batcher

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

func TestEachRequestGetsItsOwnRows(t *testing.T) {
	const (
		clients           = 400
		requestsPerClient = 10
		requests          = clients * requestsPerClient
	)
	rec := &recorder{}
	cfg := Config{
		MaxBatchSize:        32,
		PreferredBatchSizes: []int{16},
		MaxQueueDelay:       Delay{Duration: 200 * time.Microsecond},
		MaxQueueSize:        requests,
		PriorityLevels:      2,
		DefaultTimeout:      time.Minute,
	}
	b := newTestBatcher(t, cfg, 4, rec)
	defer b.Close()

	var wg sync.WaitGroup
	var mu sync.Mutex
	var problems []string
	wantRows := 0
	for c := range clients {
		for i := range requestsPerClient {
			wantRows += 1 + (c*requestsPerClient+i)%8
		}
		wg.Go(func() {
			for i := range requestsPerClient {
				id := uint32(c*requestsPerClient + i)
				r := newRequest(id, 1+int(id)%8, int(id)%2)
				err := b.Do(context.Background(), r)
				if err == nil {
					err = checkOutputs(r)
				}
				if err != nil {
					mu.Lock()
					problems = append(problems, fmt.Sprintf("request %d: %v", id, err))
					mu.Unlock()
				}
				ReleaseRequest(r)
			}
		})
	}
	wg.Wait()
	if len(problems) > 0 {
		t.Fatalf("%d of %d requests failed, first: %s", len(problems), requests, problems[0])
	}

	batches := rec.seen()
	ids := make(map[uint32]bool)
	for _, batch := range batches {
		for _, id := range batch {
			if ids[id] {
				t.Fatalf("request %d ran twice", id)
			}
			ids[id] = true
		}
	}
	switch {
	case len(ids) != requests:
		t.Fatalf("%d requests ran, want %d", len(ids), requests)
	case rec.rows != wantRows:
		t.Fatalf("%d rows ran, want %d", rec.rows, wantRows)
	case len(batches) >= requests:
		t.Fatalf("%d executions for %d requests: no batch formed", len(batches), requests)
	}
	if got := b.metrics.executions.Get(); got != uint64(len(batches)) {
		t.Fatalf("executions_total %d, want %d", got, len(batches))
	}
	if got := b.metrics.rows.Get(); got != uint64(wantRows) {
		t.Fatalf("rows_total %d, want %d", got, wantRows)
	}
	t.Logf("%d requests in %d batches", requests, len(batches))
}

func TestDoRejects(t *testing.T) {
	b := newTestBatcher(t, Config{MaxBatchSize: 8, PriorityLevels: 2}, 1, &recorder{})
	defer b.Close()
	f := func(edit func(r *Request), want error, wantText string) {
		t.Helper()
		r := newRequest(1, 2, 0)
		edit(r)
		err := b.Do(context.Background(), r)
		ReleaseRequest(r)
		if want != nil && !errors.Is(err, want) || err == nil || !strings.Contains(err.Error(), wantText) {
			t.Fatalf("got error %v, want %v containing %q", err, want, wantText)
		}
	}
	f(func(r *Request) { r.Rows = 0 }, ErrNoRows, "got 0 rows")
	f(func(r *Request) { r.Rows = 9 }, ErrTooLarge, "9 rows, max_batch_size is 8")
	f(func(r *Request) { r.Priority = 2 }, ErrBadPriority, "2, want 0..1")
	f(func(r *Request) { r.Priority = -1 }, ErrBadPriority, "-1, want 0..1")
	f(func(r *Request) { r.Inputs = r.Inputs[:1] }, nil, "request has 1 inputs, the model takes 2")
	f(func(r *Request) { r.Inputs[1] = r.Inputs[1][:5] }, nil, "input 1 holds 5 bytes, want 2 rows of 3 bytes")
	if got := b.metrics.rejected[reasonTooLarge].Get(); got != 2 {
		t.Fatalf("too_large rejections: got %d, want 2", got)
	}
}

func TestNewRejects(t *testing.T) {
	one := []Runner{echoRunner{&recorder{}}}
	f := func(cfg Config, layout Layout, runners []Runner, labels, want string) {
		t.Helper()
		b, err := New(cfg, layout, runners, labels)
		if err == nil {
			b.Close()
			t.Fatalf("New succeeded, want an error containing %q", want)
		}
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("got error %q, want it to contain %q", err, want)
		}
	}
	f(Config{MaxBatchSize: -1}, testLayout, one, "", "batching.max_batch_size: must not be negative")
	f(Config{}, testLayout, nil, "", "without runners")
	f(Config{}, testLayout, []Runner{one[0], nil}, "", "runner 1 is nil")
	f(Config{}, Layout{InputRowBytes: []int{-4}}, one, "", "input 0 has -4 bytes per row")
	f(Config{}, Layout{OutputRowBytes: []int{4, -1}}, one, "", "output 1 has -1 bytes per row")
	f(Config{}, testLayout, one, `model=demo`, "invalid batcher metric labels")
}

func TestMetricsAreExportedUntilClose(t *testing.T) {
	rec := &recorder{}
	runners := []Runner{echoRunner{rec}}
	b, err := New(Config{MaxBatchSize: 8}, testLayout, runners, `model="metrics",version="1"`)
	if err != nil {
		t.Fatal(err)
	}
	for id := range uint32(3) {
		r := newRequest(id, 2, 0)
		if err := b.Do(context.Background(), r); err != nil {
			t.Fatal(err)
		}
		ReleaseRequest(r)
	}
	r := newRequest(9, 9, 0)
	if err := b.Do(context.Background(), r); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("got %v, want ErrTooLarge", err)
	}
	ReleaseRequest(r)

	var buf bytes.Buffer
	metrics.WritePrometheus(&buf, false)
	for _, want := range []string{
		`infergate_batcher_queue_length{model="metrics",version="1"} 0`,
		`infergate_batcher_queue_wait_seconds_count{model="metrics",version="1",priority="0"} 3`,
		`infergate_batcher_batch_rows_bucket{model="metrics",version="1",le="2"} 3`,
		`infergate_inference_duration_seconds_count{model="metrics",version="1"} 3`,
		`infergate_batcher_rows_total{model="metrics",version="1"} 6`,
		`infergate_batcher_executions_total{model="metrics",version="1"} 3`,
		`infergate_batcher_runner_panics_total{model="metrics",version="1"} 0`,
		`infergate_batcher_rejected_total{model="metrics",version="1",reason="too_large"} 1`,
		`infergate_batcher_rejected_total{model="metrics",version="1",reason="queue_full"} 0`,
	} {
		if !strings.Contains(buf.String(), want+"\n") {
			t.Errorf("metrics lack %s", want)
		}
	}

	b.Close()
	buf.Reset()
	metrics.WritePrometheus(&buf, false)
	if strings.Contains(buf.String(), `model="metrics"`) {
		t.Fatal("metrics still exported after Close")
	}
}

func TestSeriesNames(t *testing.T) {
	f := func(labels, extra, want string) {
		t.Helper()
		if got := series("m", labels, extra); got != want {
			t.Fatalf("series(%q, %q): got %s, want %s", labels, extra, got, want)
		}
	}
	f("", "", "m")
	f(`a="1"`, "", `m{a="1"}`)
	f("", `reason="x"`, `m{reason="x"}`)
	f(`a="1",b="2"`, `reason="x"`, `m{a="1",b="2",reason="x"}`)
}

func TestCheckCapacity(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		block := make(chan struct{})
		b, err := New(Config{MaxBatchSize: 1, MaxQueueSize: 1, MaxQueueDelay: Delay{Duration: time.Hour}}.WithDefaults(),
			Layout{InputRowBytes: []int{1}, OutputRowBytes: []int{1}}, []Runner{blockingRunner(block)}, `test="capacity"`)
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		defer close(block)
		if err := b.CheckCapacity(); err != nil {
			t.Fatalf("an empty queue refused: %v", err)
		}
		for range 2 { // one runs (blocked), one waits in the queue
			go func() {
				r := AcquireRequest()
				r.Rows, r.Inputs = 1, append(r.Inputs[:0], []byte{1})
				b.Do(context.Background(), r)
				ReleaseRequest(r)
			}()
			synctest.Wait()
		}
		if err := b.CheckCapacity(); !errors.Is(err, ErrQueueFull) {
			t.Fatalf("a full queue: got %v, want ErrQueueFull", err)
		}
	})
}

type blockingRunner chan struct{}

func (r blockingRunner) Run(rows int, in, out [][]byte) error {
	<-r
	return nil
}

// panickingRunner is an echo runner whose call number panicAt panics.
type panickingRunner struct {
	echoRunner
	calls   *atomic.Int32
	panicAt int32
}

func (r panickingRunner) Run(rows int, in, out [][]byte) error {
	if r.calls.Add(1) == r.panicAt {
		panic("boom")
	}
	return r.echoRunner.Run(rows, in, out)
}

// TestRunnerPanicFailsOnlyItsBatch: a panic in Run answers every request
// of that batch with ErrRunnerPanic, is counted, and leaves the worker
// serving the next batches.
func TestRunnerPanicFailsOnlyItsBatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &recorder{gate: make(chan struct{})}
		runner := panickingRunner{echoRunner{rec}, new(atomic.Int32), 2}
		b, err := New(Config{MaxBatchSize: 8}, testLayout, []Runner{runner}, `test="runner_panic"`)
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		ctx := context.Background()
		p1 := startDo(ctx, b, 1, 1, 0)
		synctest.Wait()
		p2 := startDo(ctx, b, 2, 2, 0)
		p3 := startDo(ctx, b, 3, 1, 0)
		synctest.Wait()
		rec.gate <- struct{}{} // batch [1] ends; batch [2 3] panics
		synctest.Wait()
		p1.wantOK(t)
		for _, p := range []*pendingDo{p2, p3} {
			err, _ := p.done()
			var pe *PanicError
			if !errors.As(err, &pe) || pe.Value != "boom" || !strings.Contains(string(pe.Stack), "panickingRunner.Run") {
				t.Fatalf("request %d: got %v, want a PanicError of boom with the runner's stack", p.id(), err)
			}
			if want := "cannot run batch of 3 rows: batcher: runner panicked: boom"; err.Error() != want {
				t.Fatalf("request %d: got error %q, want %q", p.id(), err, want)
			}
			p.wantErr(t, ErrRunnerPanic)
		}
		if n := b.metrics.runnerPanics.Get(); n != 1 {
			t.Fatalf("runner_panics_total %d, want 1", n)
		}

		p4 := startDo(ctx, b, 4, 3, 0)
		synctest.Wait()
		rec.gate <- struct{}{}
		synctest.Wait()
		p4.wantOK(t)
		wantBatches(t, rec, []uint32{1}, []uint32{4})
	})
}

// TestWaitedComputedExecutions: Do reports each request's time in the queue
// and its batch's compute time, and Executions counts the batches computed
// without error, whether a worker or the caller ran them.
func TestWaitedComputedExecutions(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := func(p *pendingDo, waited, computed time.Duration) {
			t.Helper()
			if err, _ := p.done(); err == nil && (p.r.Waited != waited || p.r.Computed != computed) {
				t.Fatalf("request %d: waited %s, computed %s; want %s, %s", p.id(), p.r.Waited, p.r.Computed, waited, computed)
			}
			p.wantOK(t)
		}
		rec := &recorder{compute: func(rows int) time.Duration { return time.Duration(rows) * time.Millisecond }}
		b := newTestBatcher(t, Config{MaxBatchSize: 8, MaxQueueDelay: Delay{Duration: 10 * time.Millisecond}}, 1, rec)
		defer b.Close()
		ctx := context.Background()
		p1 := startDo(ctx, b, 1, 1, 0)
		time.Sleep(4 * time.Millisecond)
		p2 := startDo(ctx, b, 2, 2, 0)
		time.Sleep(20 * time.Millisecond)
		synctest.Wait()
		f(p1, 10*time.Millisecond, 3*time.Millisecond)
		f(p2, 6*time.Millisecond, 3*time.Millisecond)
		if n := b.Executions(); n != 1 {
			t.Fatalf("executions %d, want 1", n)
		}

		// Run at once on the caller's goroutine: no wait.
		alone := newTestBatcher(t, Config{}, 1, rec)
		defer alone.Close()
		p3 := startDo(ctx, alone, 3, 2, 0)
		time.Sleep(5 * time.Millisecond)
		synctest.Wait()
		f(p3, 0, 2*time.Millisecond)
		rec.fail = errors.New("broken")
		p4 := startDo(ctx, alone, 4, 1, 0)
		time.Sleep(5 * time.Millisecond)
		synctest.Wait()
		p4.wantErr(t, rec.fail)
		if n := alone.Executions(); n != 1 {
			t.Fatalf("executions %d, want 1: a failed batch is not counted", n)
		}
	})
}
