package capture

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/infergate/infergate/retrain/engine"
	"github.com/infergate/infergate/retrain/engine/enginetest"
)

// testRecord is a request of rows rows of two features, and one output.
func testRecord(id string, rows int) Record {
	x := make([]float32, 2*rows)
	y := make([]float32, rows)
	for i := range rows {
		x[2*i], x[2*i+1], y[i] = float32(i), float32(i)+0.5, float32(i)/10
	}
	return Record{
		ID: id, Version: "1",
		Inputs:  map[string]Tensor{"x": {Datatype: "FP32", Shape: []int64{int64(rows), 2}, Data: x}},
		Outputs: map[string]Tensor{"y": {Datatype: "FP32", Shape: []int64{int64(rows), 1}, Data: y}},
	}
}

func mustOpen(t *testing.T, conn *engine.Conn, cfg Config, o Options) *Writer {
	t.Helper()
	w, err := Open(conn, "demo", cfg, o)
	if err != nil {
		t.Fatalf("cannot open writer: %s", err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

func mustWrite(t *testing.T, w *Writer, r Record) {
	t.Helper()
	if !w.Write(r) {
		t.Fatalf("record %s was dropped", r.ID)
	}
}

func mustFlush(t *testing.T, w *Writer) {
	t.Helper()
	if err := w.Flush(); err != nil {
		t.Fatalf("cannot flush: %s", err)
	}
}

// readIDs reads the ids of model demo's captured records, in order.
func readIDs(t *testing.T, conn *engine.Conn, since time.Time) []string {
	t.Helper()
	var ids []string
	for r, err := range Records(context.Background(), conn, "demo", since) {
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.ID)
	}
	return ids
}

// TestShipAndRead: records of two replicas ship in blocks to one stream
// and read back in order, with their values, replicas and times.
func TestShipAndRead(t *testing.T) {
	e := enginetest.Start(t)
	if ids := readIDs(t, e.Conn, time.Time{}); len(ids) != 0 {
		t.Fatalf("a model with no stream read %v", ids)
	}
	a := mustOpen(t, e.Conn, Config{Sample: 1}, Options{Replica: "a"})
	b := mustOpen(t, e.Conn, Config{Sample: 1}, Options{Replica: "b"})
	if !a.Sampled() || (*Writer)(nil).Sampled() || (*Writer)(nil).Write(Record{}) {
		t.Fatal("sampling at 1 or of a nil writer is wrong")
	}
	var want []string
	for i := range 50 {
		w := a
		if i%2 == 1 {
			w = b
		}
		id := fmt.Sprintf("r%02d", i)
		mustWrite(t, w, testRecord(id, 1+i%3))
		mustFlush(t, w)
		want = append(want, id)
	}
	if got := readIDs(t, e.Conn, time.Time{}); !slices.Equal(got, want) {
		t.Fatalf("read %v, want %v", got, want)
	}
	replicas := map[string]int{}
	for r, err := range Records(context.Background(), e.Conn, "demo", time.Time{}) {
		if err != nil {
			t.Fatal(err)
		}
		replicas[r.Replica]++
		x := r.Inputs["x"].Data.([]float64)
		if r.Model != "demo" || r.Time.IsZero() || len(x) != 2*int(r.Inputs["x"].Shape[0]) || x[1] != 0.5 {
			t.Fatalf("record %s came back as %+v", r.ID, r)
		}
	}
	if replicas["a"] != 25 || replicas["b"] != 25 {
		t.Fatalf("records by replica: %v", replicas)
	}
	if a.m.records.Get() != 25 || a.m.blocks.Get() != 25 || a.m.bytes.Get() == 0 {
		t.Fatalf("metrics: %d records in %d blocks", a.m.records.Get(), a.m.blocks.Get())
	}
}

// TestBlocksBounded: a burst ships in blocks of at most maxBlock
// uncompressed bytes, each well within the engine's payload limit.
func TestBlocksBounded(t *testing.T) {
	e := enginetest.Start(t)
	w := mustOpen(t, e.Conn, Config{Sample: 1, BufferSize: 10000}, Options{})
	for i := range 3000 {
		mustWrite(t, w, testRecord(fmt.Sprint(i), 8))
	}
	mustFlush(t, w)
	if n := len(readIDs(t, e.Conn, time.Time{})); n != 3000 {
		t.Fatalf("read %d records, want 3000", n)
	}
	if blocks := w.m.blocks.Get(); blocks < 3 {
		t.Fatalf("3000 records of ~%d bytes shipped in %d blocks", maxBlock*3/3000, blocks)
	}
	st, err := e.JS.Stream(context.Background(), "infergate_capture_demo")
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	if cfg.MaxBytes != 1<<30 || cfg.MaxAge != 7*24*time.Hour || cfg.Subjects[0] != "infergate.capture.demo.*" {
		t.Fatalf("stream config %+v", cfg)
	}
}

// TestSince: reading since a time leaves out the records before it.
func TestSince(t *testing.T) {
	e := enginetest.Start(t)
	clk := newClock()
	clk.t = time.Now()
	w := mustOpen(t, e.Conn, Config{Sample: 1}, Options{Now: clk.Now})
	for i := range 10 {
		mustWrite(t, w, testRecord(fmt.Sprint(i), 1))
		mustFlush(t, w)
		clk.Add(time.Second)
	}
	got := readIDs(t, e.Conn, clk.Now().Add(-4*time.Second))
	if !slices.Equal(got, []string{"6", "7", "8", "9"}) {
		t.Fatalf("since: read %v", got)
	}
}

// TestFullBufferDropsWithoutBlocking: with the shipper stalled, Write
// drops beyond the buffer and counts it, and never blocks.
func TestFullBufferDropsWithoutBlocking(t *testing.T) {
	e := enginetest.Start(t)
	w := mustOpen(t, e.Conn, Config{Sample: 1, BufferSize: 4}, Options{})
	e.Embedded.Shutdown() // the shipper waits on the engine now
	dropped := 0
	start := time.Now()
	for i := range 50000 {
		if !w.Write(testRecord(fmt.Sprint(i), 1)) {
			dropped++
		}
	}
	// What the shipper holds is bounded: the buffer, one block being
	// gathered and maxUnsent sealed blocks.
	if time.Since(start) > 5*time.Second || dropped < 10000 || w.m.dropped.Get() != uint64(dropped) {
		t.Fatalf("%d of 50000 dropped (counted %d) in %s", dropped, w.m.dropped.Get(), time.Since(start))
	}
}

// TestOutageKeepsBlocks: blocks the engine does not take while it is down
// are kept and shipped once it is back; nothing is lost or doubled.
func TestOutageKeepsBlocks(t *testing.T) {
	dir := t.TempDir()
	e := enginetest.StartIn(t, dir)
	w := mustOpen(t, e.Conn, Config{Sample: 1}, Options{})
	mustWrite(t, w, testRecord("before", 1))
	mustFlush(t, w)
	e.Embedded.Shutdown()
	for i := range 5 {
		mustWrite(t, w, testRecord(fmt.Sprint("during", i), 1))
	}
	if err := w.Flush(); err == nil {
		t.Fatal("a flush with the engine down succeeded")
	}
	emb, err := engine.StartEmbedded(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Shutdown()
	for deadline := time.Now().Add(20 * time.Second); w.Flush() != nil; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the blocks never shipped after the engine came back")
		}
	}
	got := readIDs(t, e.Conn, time.Time{})
	if want := []string{"before", "during0", "during1", "during2", "during3", "during4"}; !slices.Equal(got, want) {
		t.Fatalf("read %v, want %v", got, want)
	}
	if w.m.lost.Get() != 0 {
		t.Fatalf("%d records counted lost", w.m.lost.Get())
	}
}

// TestCloseShipsAndRefuses: Close ships what is buffered; a closed Writer
// drops and Flush answers ErrClosed.
func TestCloseShipsAndRefuses(t *testing.T) {
	e := enginetest.Start(t)
	w, err := Open(e.Conn, "demo", Config{Sample: 1}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		mustWrite(t, w, testRecord(fmt.Sprint(i), 1))
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if n := len(readIDs(t, e.Conn, time.Time{})); n != 100 {
		t.Fatalf("read %d of 100 records after Close", n)
	}
	if w.Write(testRecord("late", 1)) || w.Flush() != ErrClosed || w.Close() != nil {
		t.Fatal("a closed writer took a record or a flush")
	}
}

// TestConcurrentWrite: many goroutines write at once; every record that
// Write took is read back once.
func TestConcurrentWrite(t *testing.T) {
	e := enginetest.Start(t)
	w := mustOpen(t, e.Conn, Config{Sample: 1, BufferSize: 100000}, Options{})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				mustWrite(t, w, testRecord(fmt.Sprintf("%d-%d", g, i), 1))
			}
		})
	}
	wg.Wait()
	mustFlush(t, w)
	seen := map[string]bool{}
	for _, id := range readIDs(t, e.Conn, time.Time{}) {
		if seen[id] {
			t.Fatalf("record %s read twice", id)
		}
		seen[id] = true
	}
	if len(seen) != 4000 {
		t.Fatalf("read %d of 4000 records", len(seen))
	}
}

// TestOpenErrors: a bad section or no engine is refused, naming it.
func TestOpenErrors(t *testing.T) {
	if _, err := Open(nil, "demo", Config{Sample: 1}, Options{}); err == nil || !strings.Contains(err.Error(), "no connection to the engine") {
		t.Fatalf("no engine: %v", err)
	}
	if _, err := Open(nil, "demo", Config{Sample: 2}, Options{}); err == nil || !strings.Contains(err.Error(), "capture.sample") {
		t.Fatalf("bad sample: %v", err)
	}
	e := enginetest.Start(t)
	w := mustOpen(t, e.Conn, Config{Sample: 1}, Options{})
	mustWrite(t, w, testRecord("x", 1))
	mustFlush(t, w)
	// A model name that is no subject token gets a stream of its own.
	odd, err := Open(e.Conn, "a.b c", Config{Sample: 1}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer odd.Close()
	odd.Write(testRecord("y", 1))
	if err := odd.Flush(); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for r, err := range Records(context.Background(), e.Conn, "a.b c", time.Time{}) {
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.ID)
	}
	if !slices.Equal(ids, []string{"y"}) {
		t.Fatalf("model %q read %v", "a.b c", ids)
	}
	if _, err := e.JS.Stream(context.Background(), captureOf("a.b c", "").name); err != nil {
		t.Fatal(err)
	}

}
