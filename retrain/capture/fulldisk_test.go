package capture

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// fullDisk makes the files that capture creates from now on write to
// /dev/full, a real device whose writes fail with ENOSPC, while the returned
// switch is on: each file is still created (and named) in its folder, as on
// a full disk where creating a file succeeds and writing to it fails. fds
// gets the descriptor of each file created while the switch is off.
func fullDisk(t *testing.T, fds chan<- int) *atomic.Bool {
	t.Helper()
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skipf("no /dev/full: %v", err)
	}
	full := new(atomic.Bool)
	testHookCreated = func(f *os.File) *os.File {
		if !full.Load() {
			if fds != nil {
				fds <- int(f.Fd())
			}
			return f
		}
		f.Close()
		dev, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
		if err != nil {
			panic(err)
		}
		return dev
	}
	t.Cleanup(func() { testHookCreated = nil })
	return full
}

// logBuffer is a log destination safe for concurrent use.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) warnings() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Count(b.buf.String(), "level=WARN")
}

func (b *logBuffer) logger() *slog.Logger { return slog.New(slog.NewTextHandler(b, nil)) }

// TestFullDiskCapture: records that never reach the disk are counted as
// lost, not captured, the failure is logged once per streak, and no empty
// segment is left behind.
func TestFullDiskCapture(t *testing.T) {
	full := fullDisk(t, nil)
	full.Store(true)
	dir := t.TempDir()
	var log logBuffer
	w := mustOpen(t, dir, Config{Sample: 1}, Options{Log: log.logger()})
	write := func(prefix string, n int) (ids []string) {
		for i := range n {
			ids = append(ids, fmt.Sprintf("%s%d", prefix, i))
			mustWrite(t, w, testRecord(ids[i], 1))
		}
		return ids
	}
	for range 2 {
		write("lost", 5)
		if err := w.Rotate(); !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("rotate on a full disk: %v, want ENOSPC", err)
		}
	}
	if got := segmentFiles(t, dir, ""); len(got) != 0 {
		t.Fatalf("a full disk left %v", got)
	}
	if r, l, b := w.m.records.Get(), w.m.lost.Get(), w.m.bytes.Get(); r != 0 || l != 10 || b != 0 {
		t.Fatalf("on a full disk: %d records and %d bytes captured, %d lost; want 0, 0, 10", r, b, l)
	}
	if n := log.warnings(); n != 1 {
		t.Fatalf("%d warnings for one failure streak, want 1", n)
	}

	full.Store(false)
	want := write("kept", 7)
	if err := w.Rotate(); err != nil {
		t.Fatal(err)
	}
	if got := readIDs(t, dir); !slices.Equal(got, want) {
		t.Fatalf("read %v, want %v", got, want)
	}
	if r, l := w.m.records.Get(), w.m.lost.Get(); r != 7 || l != 10 {
		t.Fatalf("after the disk freed up: %d records captured, %d lost; want 7, 10", r, l)
	}

	full.Store(true)
	write("lost again", 1)
	if err := w.Rotate(); err == nil {
		t.Fatal("rotate on a full disk succeeded")
	}
	if n := log.warnings(); n != 2 {
		t.Fatalf("%d warnings for two failure streaks, want 2", n)
	}
}

// TestFullDiskKeepsFlushedRecords: when the disk fills up under an open
// segment, the records flushed into it before stay captured: the segment is
// left for the next Open to finish, and only the later ones count as lost.
func TestFullDiskKeepsFlushedRecords(t *testing.T) {
	fds := make(chan int, 1)
	fullDisk(t, fds)
	dir := t.TempDir()
	w, err := Open(dir, "demo", Config{Sample: 1}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	mustWrite(t, w, testRecord("a", 1))
	mustWrite(t, w, testRecord("b", 1))
	waitWritten(t, w, 2) // flushed by the writer's ticker
	dev, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	// The open segment's descriptor now writes to /dev/full.
	if err := syscall.Dup3(int(dev.Fd()), <-fds, 0); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, w, testRecord("c", 1))
	if err := w.Rotate(); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("rotate on a full disk: %v, want ENOSPC", err)
	}
	if r, l := w.m.records.Get(), w.m.lost.Get(); r != 2 || l != 1 {
		t.Fatalf("%d records captured, %d lost; want 2, 1", r, l)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if tmp := segmentFiles(t, dir, ".tmp"); len(tmp) != 1 {
		t.Fatalf("want the segment with the flushed records kept, got %v", tmp)
	}
	w2 := mustOpen(t, dir, Config{Sample: 1}, Options{})
	if err := w2.Close(); err != nil {
		t.Fatal(err)
	}
	if got := readIDs(t, dir); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("read %v after the next Open, want [a b]", got)
	}
}

// TestFullDiskLabels: a label that cannot be written fails without leaving
// an empty label file, is not counted as recorded, and the failure is
// logged once per streak.
func TestFullDiskLabels(t *testing.T) {
	full := fullDisk(t, nil)
	full.Store(true)
	dir := t.TempDir()
	var log logBuffer
	l := mustOpenLabels(t, dir, LabelsConfig{}, Options{Log: log.logger()})
	for i := range 3 {
		if err := l.RecordLabel("demo", fmt.Sprint(i), json.RawMessage("1"), time.Time{}); !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("label %d on a full disk: %v, want ENOSPC", i, err)
		}
	}
	labelFiles := func() []string {
		names, err := filepath.Glob(filepath.Join(dir, "capture", "demo", labelPrefix+"*"))
		if err != nil {
			t.Fatal(err)
		}
		return names
	}
	if got := labelFiles(); len(got) != 0 {
		t.Fatalf("a full disk left %v", got)
	}
	if n, e := l.m.labels.Get(), l.m.errors.Get(); n != 0 || e != 3 {
		t.Fatalf("on a full disk: %d labels recorded, %d errors; want 0, 3", n, e)
	}
	if n := log.warnings(); n != 1 {
		t.Fatalf("%d warnings for one failure streak, want 1", n)
	}

	full.Store(false)
	mustLabel(t, l, "kept", "1")
	if got := labelFiles(); len(got) != 1 {
		t.Fatalf("label files %v, want one", got)
	}
	full.Store(true)
	l.Close() // the next label needs a new file
	l = mustOpenLabels(t, dir, LabelsConfig{}, Options{Log: log.logger()})
	if err := l.RecordLabel("demo", "x", json.RawMessage("1"), time.Time{}); err == nil {
		t.Fatal("a label on a full disk was recorded")
	}
	if n := log.warnings(); n != 2 {
		t.Fatalf("%d warnings for two failure streaks, want 2", n)
	}
}
