package capture

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
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

func mustOpen(t *testing.T, dir string, cfg Config, o Options) *Writer {
	t.Helper()
	w, err := Open(dir, "demo", cfg, o)
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

// waitWritten waits until w's goroutine has written n records.
func waitWritten(t *testing.T, w *Writer, n uint64) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); w.m.records.Get() < n; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d records written, want %d", w.m.records.Get(), n)
		}
	}
}

func readIDs(t *testing.T, dir string) []string {
	t.Helper()
	var ids []string
	for r, err := range Records(dir, "demo", time.Time{}) {
		if err != nil {
			t.Fatalf("cannot read records: %s", err)
		}
		ids = append(ids, r.ID)
	}
	return ids
}

// segmentFiles lists the files of the demo model's folder matching suffix.
func segmentFiles(t *testing.T, dir, suffix string) []string {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, "capture", "demo", "segment-*"+suffix))
	if err != nil {
		t.Fatal(err)
	}
	return names
}

func TestWriteCloseRead(t *testing.T) {
	dir := t.TempDir()
	clk := newClock()
	w := mustOpen(t, dir, Config{Sample: 1}, Options{Now: clk.Now})
	if !w.Sampled() {
		t.Fatalf("sample 1 must sample every request")
	}
	r := testRecord("a\"b\\c\n\x01é\xff", 2)
	r.Time = clk.Now().Add(-time.Second)
	r.Inputs["x"].Data.([]float32)[1] = float32(math.NaN())
	mustWrite(t, w, r)
	mustWrite(t, w, Record{ID: "raw", Inputs: map[string]Tensor{
		"n": {Datatype: "INT64", Shape: []int64{2, 2}, Data: json.RawMessage(" [[1, 2], [3, 4]] ")},
		"b": {Datatype: "BOOL", Shape: []int64{2}, Data: []bool{true, false}},
		"i": {Datatype: "INT64", Shape: []int64{1}, Data: []int64{-7}},
	}})
	mustWrite(t, w, Record{ID: "bad", Inputs: map[string]Tensor{"s": {Data: []string{"x"}}}})
	if err := w.Close(); err != nil {
		t.Fatalf("cannot close: %s", err)
	}
	if tmp := segmentFiles(t, dir, ".tmp"); len(tmp) != 0 {
		t.Fatalf("Close left %v", tmp)
	}
	segs := segmentFiles(t, dir, ".jsonl.zst")
	if len(segs) != 1 {
		t.Fatalf("want one segment, got %v", segs)
	}
	if w.m.records.Get() != 2 || w.m.errors.Get() != 1 || w.m.segments.Get() != 1 {
		t.Fatalf("records %d, errors %d, segments %d; want 2, 1, 1", w.m.records.Get(), w.m.errors.Get(), w.m.segments.Get())
	}

	// The segment is one plain zstd frame of JSON lines.
	compressed, err := os.ReadFile(segs[0])
	if err != nil {
		t.Fatal(err)
	}
	dec, _ := zstd.NewReader(nil)
	defer dec.Close()
	plain, err := dec.DecodeAll(compressed, nil)
	if err != nil {
		t.Fatalf("segment is not a valid zstd frame: %s", err)
	}
	lines := strings.Split(strings.TrimSuffix(string(plain), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 lines, got %d:\n%s", len(lines), plain)
	}
	var first struct {
		ID     string `json:"id"`
		Time   string `json:"time"`
		Model  string `json:"model"`
		Inputs map[string]struct {
			Datatype string     `json:"datatype"`
			Shape    []int64    `json:"shape"`
			Data     []*float64 `json:"data"`
		} `json:"inputs"`
	}
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil {
		t.Fatalf("line is not JSON: %s\n%s", err, lines[0])
	}
	x := first.Inputs["x"]
	if first.ID != "a\"b\\c\n\x01é\uFFFD" || first.Model != "demo" || first.Time != r.Time.Format(time.RFC3339Nano) ||
		x.Datatype != "FP32" || !slices.Equal(x.Shape, []int64{2, 2}) || len(x.Data) != 4 || x.Data[1] != nil {
		t.Fatalf("unexpected line: %s", lines[0])
	}

	var got []Record
	for rec, err := range Records(dir, "demo", time.Time{}) {
		if err != nil {
			t.Fatalf("cannot read records: %s", err)
		}
		got = append(got, rec)
	}
	if len(got) != 2 {
		t.Fatalf("want 2 records, got %d", len(got))
	}
	xs := got[0].Inputs["x"].Data.([]float64)
	if !math.IsNaN(xs[1]) || xs[2] != 1 || xs[3] != 1.5 || got[0].Version != "1" || !got[0].Time.Equal(r.Time) {
		t.Fatalf("unexpected record: %+v", got[0])
	}
	raw := got[1]
	if !slices.Equal(raw.Inputs["n"].Data.([]float64), []float64{1, 2, 3, 4}) ||
		!slices.Equal(raw.Inputs["b"].Data.([]float64), []float64{1, 0}) ||
		!slices.Equal(raw.Inputs["i"].Data.([]float64), []float64{-7}) || !raw.Time.Equal(clk.Now()) {
		t.Fatalf("unexpected record: %+v", raw)
	}
	if ids := readIDs(t, dir); len(ids) != 2 {
		t.Fatalf("got %v", ids)
	}
	// since filters by record time.
	n := 0
	for _, err := range Records(dir, "demo", clk.Now()) {
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != 1 {
		t.Fatalf("since: want 1 record, got %d", n)
	}
}

func TestRotateBySize(t *testing.T) {
	dir := t.TempDir()
	w := mustOpen(t, dir, Config{Sample: 1, SegmentSize: 300}, Options{})
	var want []string
	for i := range 10 {
		id := fmt.Sprintf("r%d", i)
		want = append(want, id)
		mustWrite(t, w, testRecord(id, 1))
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if segs := segmentFiles(t, dir, ".jsonl.zst"); len(segs) < 3 {
		t.Fatalf("want several segments, got %v", segs)
	}
	if got := readIDs(t, dir); !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestRotateByAge(t *testing.T) {
	dir := t.TempDir()
	clk := newClock()
	w := mustOpen(t, dir, Config{Sample: 1}, Options{Now: clk.Now})
	mustWrite(t, w, testRecord("a", 1))
	waitWritten(t, w, 1)
	clk.Add(11 * time.Minute)
	mustWrite(t, w, testRecord("b", 1)) // finds the open segment too old
	if err := w.Rotate(); err != nil {
		t.Fatal(err)
	}
	if segs := segmentFiles(t, dir, ".jsonl.zst"); len(segs) != 2 {
		t.Fatalf("want 2 segments, got %v", segs)
	}

	// An idle segment is rotated by the writer's own ticker.
	mustWrite(t, w, testRecord("c", 1))
	waitWritten(t, w, 3)
	clk.Add(11 * time.Minute)
	for deadline := time.Now().Add(10 * time.Second); len(segmentFiles(t, dir, ".jsonl.zst")) != 3; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("an idle segment past its age was not rotated")
		}
	}
	if got := readIDs(t, dir); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("got %v", got)
	}
}

func TestRetentionBytes(t *testing.T) {
	dir := t.TempDir()
	w := mustOpen(t, dir, Config{Sample: 1, SegmentSize: 300, Retention: 1000}, Options{})
	for i := range 60 {
		mustWrite(t, w, testRecord(fmt.Sprintf("r%02d", i), 1))
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, name := range segmentFiles(t, dir, ".jsonl.zst") {
		info, err := os.Stat(name)
		if err != nil {
			t.Fatal(err)
		}
		total += info.Size()
	}
	ids := readIDs(t, dir)
	if total > 1000 || w.m.deleted.Get() == 0 || len(ids) == 0 || ids[0] == "r00" || ids[len(ids)-1] != "r59" {
		t.Fatalf("retention kept %d bytes, deleted %d segments, left %v", total, w.m.deleted.Get(), ids)
	}
	if !slices.IsSorted(ids) {
		t.Fatalf("the newest segments must be kept: %v", ids)
	}
}

func TestRetentionAge(t *testing.T) {
	dir := t.TempDir()
	clk := newClock()
	w := mustOpen(t, dir, Config{Sample: 1, SegmentAge: time.Hour, MaxAge: 24 * time.Hour}, Options{Now: clk.Now})
	for day := range 5 {
		if day > 0 {
			clk.Add(24 * time.Hour)
		}
		mustWrite(t, w, testRecord(fmt.Sprintf("day%d", day), 1))
		if err := w.Rotate(); err != nil {
			t.Fatal(err)
		}
	}
	// The segments of days 0 and 1 ended (where the next began) before the
	// cutoff, a day before day 4.
	if got := readIDs(t, dir); !slices.Equal(got, []string{"day2", "day3", "day4"}) {
		t.Fatalf("got %v", got)
	}
}

func TestTmpNeverRead(t *testing.T) {
	dir := t.TempDir()
	w := mustOpen(t, dir, Config{Sample: 1}, Options{})
	mustWrite(t, w, testRecord("open", 1))
	waitWritten(t, w, 1)
	if tmp := segmentFiles(t, dir, ".tmp"); len(tmp) != 1 {
		t.Fatalf("want the open segment as .tmp, got %v", tmp)
	}
	if got := readIDs(t, dir); len(got) != 0 {
		t.Fatalf("read the open segment: %v", got)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got := readIDs(t, dir); !slices.Equal(got, []string{"open"}) {
		t.Fatalf("got %v", got)
	}
}

// TestRecoverUnfinishedSegment writes what a crashed writer leaves: flushed
// zstd blocks, then a torn tail, under a .tmp name.
func TestRecoverUnfinishedSegment(t *testing.T) {
	dir := t.TempDir()
	mdir := filepath.Join(dir, "capture", "demo")
	if err := os.MkdirAll(mdir, 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(mdir, fmt.Sprintf("segment-%020d.jsonl.zst.tmp", time.Now().UnixNano()))
	f, err := os.Create(tmp)
	if err != nil {
		t.Fatal(err)
	}
	enc, _ := zstd.NewWriter(f, zstd.WithEncoderConcurrency(1))
	for _, id := range []string{"a", "b", "c"} {
		r := testRecord(id, 1)
		r.Time = time.Now()
		line, err := appendRecord(nil, &r)
		if err != nil {
			t.Fatal(err)
		}
		enc.Write(line)
	}
	enc.Flush()
	enc.Write([]byte(`{"id":"torn","time":`))
	f.Write([]byte{0x28, 0xb5, 0x2f}) // a crash in the middle of a block
	f.Close()
	if got := readIDs(t, dir); len(got) != 0 {
		t.Fatalf("read a .tmp segment: %v", got)
	}

	w := mustOpen(t, dir, Config{Sample: 1}, Options{})
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tmp); !os.IsNotExist(err) {
		t.Fatalf("the unfinished segment is still there: %v", err)
	}
	if got := readIDs(t, dir); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("recovered %v", got)
	}
}

func TestFullBufferDropsWithoutBlocking(t *testing.T) {
	entered, release := make(chan struct{}, 1), make(chan struct{})
	testHookWrite = func() {
		select {
		case entered <- struct{}{}:
			<-release
		default:
		}
	}
	t.Cleanup(func() { testHookWrite = nil })
	dir := t.TempDir()
	w := mustOpen(t, dir, Config{Sample: 1, BufferSize: 1}, Options{})
	mustWrite(t, w, testRecord("first", 1))
	<-entered // the writer goroutine holds "first" and is stuck
	mustWrite(t, w, testRecord("second", 1))
	start := time.Now()
	for i := range 1000 {
		if w.Write(testRecord(fmt.Sprint(i), 1)) {
			t.Fatalf("write %d into a full buffer was queued", i)
		}
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("1000 dropped writes took %s", d)
	}
	if n := w.m.dropped.Get(); n != 1000 {
		t.Fatalf("dropped %d, want 1000", n)
	}
	close(release)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got := readIDs(t, dir); !slices.Equal(got, []string{"first", "second"}) {
		t.Fatalf("got %v", got)
	}
}

func TestConcurrentWrite(t *testing.T) {
	dir := t.TempDir()
	w := mustOpen(t, dir, Config{Sample: 1, SegmentSize: 4 << 10}, Options{})
	var wg sync.WaitGroup
	var queued atomic.Int64
	for g := range 16 {
		wg.Go(func() {
			for i := range 100 {
				if w.Sampled() && w.Write(testRecord(fmt.Sprintf("g%d-%d", g, i), 2)) {
					queued.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	ids := readIDs(t, dir)
	slices.Sort(ids)
	if int64(len(ids)) != queued.Load() || queued.Load() != 1600 || len(slices.Compact(ids)) != 1600 {
		t.Fatalf("queued %d, read %d", queued.Load(), len(ids))
	}
}

func TestCloseStopsAndRefuses(t *testing.T) {
	before := goroutineCount()
	dir := t.TempDir()
	w, err := Open(dir, "demo", Config{Sample: 1}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	l, err := OpenLabels(dir, LabelsConfig{}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, w, testRecord("a", 1))
	if err := l.RecordLabel("demo", "a", json.RawMessage("1"), time.Time{}); err != nil {
		t.Fatal(err)
	}
	if err := errorsJoin(w.Close(), l.Close(), w.Close(), l.Close()); err != nil {
		t.Fatal(err)
	}
	if !goroutinesBackTo(before, 10*time.Second) {
		t.Fatalf("goroutines left running after Close: %d, before %d", goroutineCount(), before)
	}
	if w.Write(testRecord("late", 1)) || w.Rotate() != ErrClosed {
		t.Fatal("a closed writer took a record")
	}
	if err := l.RecordLabel("demo", "a", json.RawMessage("1"), time.Time{}); err != ErrClosed {
		t.Fatalf("want ErrClosed, got %v", err)
	}
	var nilWriter *Writer
	if nilWriter.Sampled() || nilWriter.Write(Record{}) || nilWriter.Close() != nil {
		t.Fatal("a nil writer must do nothing")
	}
	if _, err := Open(dir, "../x", Config{}, Options{}); err == nil {
		t.Fatal("opened a writer outside the capture folder")
	}
}

func TestSampled(t *testing.T) {
	w := mustOpen(t, t.TempDir(), Config{Sample: 0.25}, Options{})
	n := 0
	for range 10000 {
		if w.Sampled() {
			n++
		}
	}
	if n < 2000 || n > 3000 {
		t.Fatalf("sampled %d of 10000 at 0.25", n)
	}
	off := mustOpen(t, t.TempDir(), Config{}, Options{})
	if off.Sampled() {
		t.Fatal("sample 0 sampled a request")
	}
}

// scanLines returns the lines of a plain file.
func scanLines(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for sc := bufio.NewScanner(bytes.NewReader(data)); sc.Scan(); {
		lines = append(lines, sc.Text())
	}
	return lines
}
