package batcher

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"
)

// testLayout has two inputs and two outputs of different row sizes, so that
// a mix-up of offsets between them shows.
//
// Input 0 row: request id (uint32), row index (uint16), request rows (uint16).
// Input 1 row: low byte of the id, low byte of the row index, 0x5a.
// The echo runner answers with every input byte plus one; output 1 adds 0xee.
var testLayout = Layout{InputRowBytes: []int{8, 3}, OutputRowBytes: []int{8, 4}}

// recorder is what the echo runners of one test share: settings fixed
// before New, and the batches they saw.
type recorder struct {
	// gate, when set, makes each Run wait for a value before computing.
	gate chan struct{}
	// compute, when set, is how long Run takes for a batch of rows.
	compute func(rows int) time.Duration
	// fail, when set, is the error every Run returns.
	fail error

	mu sync.Mutex
	// batches holds the request ids of every batch, in batch order, and
	// goroutines the goroutine that ran each.
	batches    [][]uint32
	goroutines []uint64
	rows       int
}

func (rec *recorder) seen() [][]uint32 {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([][]uint32(nil), rec.batches...)
}

// echoRunner is the batcher's seam: it checks that each batch holds whole
// requests, records it, and echoes every row with each byte plus one.
type echoRunner struct{ rec *recorder }

func (e echoRunner) Run(rows int, in, out [][]byte) error {
	ids, err := wholeRequests(rows, in[0])
	e.rec.mu.Lock()
	e.rec.batches = append(e.rec.batches, ids)
	e.rec.goroutines = append(e.rec.goroutines, goroutineID())
	e.rec.rows += rows
	e.rec.mu.Unlock()
	if e.rec.gate != nil {
		<-e.rec.gate
	}
	if e.rec.compute != nil {
		time.Sleep(e.rec.compute(rows))
	}
	switch {
	case err != nil:
		return err
	case e.rec.fail != nil:
		return e.rec.fail
	}
	for i := range out[0] {
		out[0][i] = in[0][i] + 1
	}
	for k := range rows {
		for i := range 3 {
			out[1][k*4+i] = in[1][k*3+i] + 1
		}
		out[1][k*4+3] = 0xee
	}
	return nil
}

// goroutineID returns the calling goroutine's id, from its stack trace.
func goroutineID() uint64 {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	id, err := strconv.ParseUint(string(bytes.Fields(buf)[1]), 10, 64)
	if err != nil {
		panic(fmt.Sprintf("cannot read the goroutine id of %q: %v", buf, err))
	}
	return id
}

// wholeRequests returns the ids of the requests in a batch, failing when a
// request's rows are split, out of order, or cut off at the batch's end.
func wholeRequests(rows int, in0 []byte) ([]uint32, error) {
	if len(in0) != rows*8 {
		return nil, fmt.Errorf("input 0 holds %d bytes for %d rows", len(in0), rows)
	}
	var ids []uint32
	for k := 0; k < rows; {
		id, n := rowMarker(in0, k)
		for row := range n {
			if k+row >= rows {
				return nil, fmt.Errorf("request %d split: batch ends after its row %d of %d", id, row, n)
			}
			if gotID, _ := rowMarker(in0, k+row); gotID != id || binary.LittleEndian.Uint16(in0[(k+row)*8+4:]) != uint16(row) {
				return nil, fmt.Errorf("request %d: row %d of the batch is not its row %d", id, k+row, row)
			}
		}
		ids = append(ids, id)
		k += n
	}
	return ids, nil
}

func rowMarker(in0 []byte, k int) (id uint32, rows int) {
	return binary.LittleEndian.Uint32(in0[k*8:]), int(binary.LittleEndian.Uint16(in0[k*8+6:]))
}

// newRequest returns a request of rows rows marked with id.
func newRequest(id uint32, rows, priority int) *Request {
	r := AcquireRequest()
	r.Rows = rows
	r.Priority = priority
	in0, in1 := make([]byte, rows*8), make([]byte, rows*3)
	for k := range rows {
		binary.LittleEndian.PutUint32(in0[k*8:], id)
		binary.LittleEndian.PutUint16(in0[k*8+4:], uint16(k))
		binary.LittleEndian.PutUint16(in0[k*8+6:], uint16(rows))
		in1[k*3], in1[k*3+1], in1[k*3+2] = byte(id), byte(k), 0x5a
	}
	r.Inputs = append(r.Inputs, in0, in1)
	return r
}

// checkOutputs reports whether r got exactly its own rows back, echoed.
func checkOutputs(r *Request) error {
	if len(r.Outputs) != 2 || len(r.Outputs[0]) != r.Rows*8 || len(r.Outputs[1]) != r.Rows*4 {
		return fmt.Errorf("outputs have the wrong shape: %d outputs", len(r.Outputs))
	}
	for k := range r.Rows {
		for i := range 8 {
			if got, want := r.Outputs[0][k*8+i], r.Inputs[0][k*8+i]+1; got != want {
				return fmt.Errorf("output 0 row %d byte %d: got %#x, want %#x", k, i, got, want)
			}
		}
		for i := range 3 {
			if got, want := r.Outputs[1][k*4+i], r.Inputs[1][k*3+i]+1; got != want {
				return fmt.Errorf("output 1 row %d byte %d: got %#x, want %#x", k, i, got, want)
			}
		}
		if r.Outputs[1][k*4+3] != 0xee {
			return fmt.Errorf("output 1 row %d: last byte not written", k)
		}
	}
	return nil
}

// newTestBatcher starts a batcher of instances echo runners sharing rec.
// The caller closes it.
func newTestBatcher(t testing.TB, cfg Config, instances int, rec *recorder) *Batcher {
	t.Helper()
	runners := make([]Runner, instances)
	for i := range runners {
		runners[i] = echoRunner{rec}
	}
	b, err := New(cfg, testLayout, runners, fmt.Sprintf("test=%q", t.Name()))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// pendingDo is a Do running on its own goroutine.
type pendingDo struct {
	r      *Request
	result chan error
}

// startDo runs Do for a new request of rows rows marked with id.
func startDo(ctx context.Context, b *Batcher, id uint32, rows, priority int) *pendingDo {
	return startRequest(ctx, b, newRequest(id, rows, priority))
}

func startRequest(ctx context.Context, b *Batcher, r *Request) *pendingDo {
	p := &pendingDo{r: r, result: make(chan error, 1)}
	go func() { p.result <- b.Do(ctx, r) }()
	return p
}

// done returns Do's result once it returned.
func (p *pendingDo) done() (err error, ok bool) {
	select {
	case err := <-p.result:
		p.result <- err
		return err, true
	default:
		return nil, false
	}
}

// wantOK fails unless Do returned nil with r's own rows; it releases r.
func (p *pendingDo) wantOK(t *testing.T) {
	t.Helper()
	err, ok := p.done()
	switch {
	case !ok:
		t.Fatalf("request %d: Do has not returned", p.id())
	case err != nil:
		t.Fatalf("request %d: %v", p.id(), err)
	}
	if err := checkOutputs(p.r); err != nil {
		t.Fatalf("request %d: %v", p.id(), err)
	}
	ReleaseRequest(p.r)
}

// wantErr fails unless Do returned an error matching want; it releases r.
func (p *pendingDo) wantErr(t *testing.T, want error) {
	t.Helper()
	err, ok := p.done()
	switch {
	case !ok:
		t.Fatalf("request %d: Do has not returned", p.id())
	case !errors.Is(err, want):
		t.Fatalf("request %d: got error %v, want %v", p.id(), err, want)
	}
	ReleaseRequest(p.r)
}

func (p *pendingDo) wantPending(t *testing.T) {
	t.Helper()
	if err, ok := p.done(); ok {
		t.Fatalf("request %d: Do returned %v, want it still waiting", p.id(), err)
	}
}

func (p *pendingDo) id() uint32 {
	id, _ := rowMarker(p.r.Inputs[0], 0)
	return id
}

// wantBatches fails unless the runners saw exactly these batches of ids.
func wantBatches(t *testing.T, rec *recorder, want ...[]uint32) {
	t.Helper()
	got := rec.seen()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("batches: got %v, want %v", got, want)
	}
}
