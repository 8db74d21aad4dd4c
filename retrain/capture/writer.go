package capture

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/klauspost/compress/zstd"
)

// ErrClosed is returned by a Writer or Labels store used after Close.
var ErrClosed = errors.New("capture: closed")

const (
	segmentPrefix, segmentSuffix = "segment-", ".jsonl.zst"
	tmpSuffix                    = ".tmp"
	salvageSuffix                = ".salvage"
	// flushEvery is how often an open segment's pending records are flushed
	// to the file as a zstd block, so a crash loses at most that much.
	flushEvery = time.Second
	// pruneEvery is how often retention runs besides after each rotation,
	// so segments of a model with no traffic still age out.
	pruneEvery = time.Minute
)

var (
	// liveTmp holds the .tmp paths that Writers of this process are
	// writing, so that a Writer opened beside them (during a reload) does
	// not take them for a crash's leftovers. salvageMu serialises recovery.
	liveTmp   sync.Map
	salvageMu sync.Mutex

	// testHookWrite, when set before Open, runs in the writer goroutine
	// before each record.
	testHookWrite func()
	// testHookCreated, when set before Open or OpenLabels, gets each file
	// that createNamed created and returns the one to write to instead.
	testHookCreated func(*os.File) *os.File
)

// Writer captures the sampled traffic of one model. It is safe for
// concurrent use; a nil *Writer samples nothing and drops every record.
type Writer struct {
	dir   string // <state_dir>/capture/<model>
	model string
	cfg   Config
	o     Options
	m     writerMetrics

	closed    atomic.Bool
	records   chan Record
	rotateReq chan chan error
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error // set by run before done is closed

	// The fields below are owned by the run goroutine.
	enc       *zstd.Encoder
	seg       *segment // nil when no segment is open
	lastName  int64    // unix nanos in the newest segment name, so names only grow
	line      []byte
	lastPrune time.Time
	failing   bool // an error was logged and nothing has succeeded since
}

type segment struct {
	f          *os.File
	tmp, final string
	start      time.Time
	size       int64 // uncompressed bytes given to the encoder
	dirty      bool  // written since the last flush
	// pending and pendingBytes are the records, and their uncompressed
	// bytes, given to the encoder since the last flush: counted as captured
	// once a flush puts them in the file, as lost when it fails. flushed
	// says that the file holds records.
	pending, pendingBytes int
	flushed               bool
}

type writerMetrics struct {
	records, dropped, lost, bytes, segments, deleted, errors *metrics.Counter
	diskBytes                                                *metrics.Gauge
}

// Open starts capturing traffic of model to <dir>/capture/<model>/, where
// dir is the gateway's state_dir. It finishes segments that a crash left
// unfinished (keeping their flushed records), then applies retention.
// Close stops it.
func Open(dir, model string, cfg Config, o Options) (*Writer, error) {
	if err := checkModel(model); err != nil {
		return nil, fmt.Errorf("cannot open capture of model %q: %w", model, err)
	}
	cfg = cfg.WithDefaults()
	if err := cfg.Validate("capture"); err != nil {
		return nil, fmt.Errorf("cannot open capture of model %q: %w", model, err)
	}
	o = o.withDefaults()
	mdir := filepath.Join(dir, "capture", model)
	if err := os.MkdirAll(mdir, 0o755); err != nil {
		return nil, fmt.Errorf("cannot create capture folder: %w", err)
	}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	if err != nil {
		return nil, fmt.Errorf("cannot create zstd encoder: %w", err)
	}
	w := &Writer{
		dir: mdir, model: model, cfg: cfg, o: o,
		records: make(chan Record, cfg.BufferSize), rotateReq: make(chan chan error),
		stop: make(chan struct{}), done: make(chan struct{}), enc: enc,
	}
	if err := w.recover(); err != nil { // before the metrics, so a failed Open registers none
		return nil, err
	}
	name := func(series string) string { return fmt.Sprintf("infergate_capture_%s{model=%q}", series, model) }
	set := o.Metrics
	w.m = writerMetrics{
		records: set.NewCounter(name("records_total")), dropped: set.NewCounter(name("dropped_total")),
		lost: set.NewCounter(name("lost_total")), bytes: set.NewCounter(name("bytes_total")),
		segments: set.NewCounter(name("segments_total")), deleted: set.NewCounter(name("segments_deleted_total")),
		errors: set.NewCounter(name("errors_total")), diskBytes: set.NewGauge(name("disk_bytes"), nil),
	}
	set.NewGauge(name("buffered"), func() float64 { return float64(len(w.records)) })
	w.prune()
	go w.run()
	return w, nil
}

// Sampled reports whether the caller should capture this request, at random
// by the configured share. It is cheap enough to call on every request.
func (w *Writer) Sampled() bool {
	if w == nil || w.cfg.Sample <= 0 {
		return false
	}
	return w.cfg.Sample >= 1 || rand.Float64() < w.cfg.Sample
}

// Write queues r for the segment and reports whether it was queued. It never
// blocks: when the buffer is full, or the Writer closed, r is dropped,
// counted in infergate_capture_dropped_total, and Write returns false. r's
// slices belong to the Writer from then on.
func (w *Writer) Write(r Record) bool {
	if w == nil {
		return false
	}
	if !w.closed.Load() {
		select {
		case w.records <- r:
			return true
		default:
		}
	}
	w.m.dropped.Inc()
	return false
}

// Rotate finishes the open segment, with every record queued before the
// call, so that readers see what has been captured so far. It waits for
// the disk; it is not for the request path.
func (w *Writer) Rotate() error {
	reply := make(chan error, 1)
	select {
	case w.rotateReq <- reply:
		return <-reply
	case <-w.done:
		return ErrClosed
	}
}

// Close writes the buffered records, finishes the open segment as a
// complete zstd frame under its final name, and stops the Writer's
// goroutine. A Write racing with Close may be lost even though it returned
// true; the gateway stops routing to a Writer before closing it. Close
// returns the error of finishing the segment, if any; later calls return
// the same.
func (w *Writer) Close() error {
	if w == nil {
		return nil
	}
	w.closeOnce.Do(func() {
		w.closed.Store(true)
		close(w.stop)
	})
	<-w.done
	return w.closeErr
}

func (w *Writer) run() {
	defer close(w.done)
	tick := time.NewTicker(flushEvery)
	defer tick.Stop()
	for {
		select {
		case r := <-w.records:
			w.write(&r)
		case reply := <-w.rotateReq:
			w.drain()
			reply <- w.closeSegment()
		case <-tick.C:
			w.tick()
		case <-w.stop:
			w.drain()
			w.closeErr = w.closeSegment()
			return
		}
	}
}

// drain writes the records queued now.
func (w *Writer) drain() {
	for n := len(w.records); n > 0; n-- {
		r := <-w.records
		w.write(&r)
	}
}

func (w *Writer) write(r *Record) {
	if testHookWrite != nil {
		testHookWrite()
	}
	now := w.o.Now()
	if r.Time.IsZero() {
		r.Time = now
	}
	if r.Model == "" {
		r.Model = w.model
	}
	line, err := appendRecord(w.line[:0], r)
	if cap(line) <= 1<<20 {
		w.line = line // keep the buffer, unless one huge record grew it
	}
	if err != nil {
		w.fail("cannot encode captured record", fmt.Errorf("record %q: %w", r.ID, err), 1)
		return
	}
	if w.seg != nil && now.Sub(w.seg.start) >= w.cfg.SegmentAge {
		w.closeSegment()
	}
	if w.seg == nil {
		if err := w.openSegment(now); err != nil {
			w.fail("cannot capture traffic", err, 1)
			return
		}
	}
	w.seg.pending++
	w.seg.pendingBytes += len(line)
	if _, err := w.enc.Write(line); err != nil {
		w.abandon(fmt.Errorf("cannot write capture segment %q: %w", w.seg.tmp, err))
		return
	}
	w.seg.size += int64(len(line))
	w.seg.dirty = true
	if w.seg.size >= int64(w.cfg.SegmentSize) {
		w.closeSegment()
	}
}

func (w *Writer) tick() {
	now := w.o.Now()
	switch {
	case w.seg != nil && now.Sub(w.seg.start) >= w.cfg.SegmentAge:
		w.closeSegment()
	case w.seg != nil && w.seg.dirty:
		if err := w.enc.Flush(); err != nil {
			w.abandon(fmt.Errorf("cannot flush capture segment %q: %w", w.seg.tmp, err))
			return
		}
		w.seg.dirty = false
		w.written(w.seg)
	}
	if now.Sub(w.lastPrune) >= pruneEvery {
		w.prune()
	}
}

// fail counts an error that lost n records and logs it, once until a write
// succeeds again.
func (w *Writer) fail(msg string, err error, n int) {
	w.m.errors.Inc()
	w.m.lost.Add(n)
	if !w.failing {
		w.o.Log.Warn(msg, "model", w.model, "err", err)
		w.failing = true
	}
}

// written counts s's pending records as captured, now that they are in its
// file, and ends a failure streak.
func (w *Writer) written(s *segment) {
	if s.pending > 0 {
		s.flushed = true
	}
	w.m.records.Add(s.pending)
	w.m.bytes.Add(s.pendingBytes)
	s.pending, s.pendingBytes = 0, 0
	w.failing = false
}

func (w *Writer) openSegment(now time.Time) error {
	f, tmp, n, err := createNamed(w.dir, segmentPrefix, segmentSuffix+tmpSuffix, max(now.UnixNano(), w.lastName+1))
	if err != nil {
		return err
	}
	liveTmp.Store(tmp, struct{}{})
	w.lastName = n
	w.enc.Reset(f)
	w.seg = &segment{f: f, tmp: tmp, final: strings.TrimSuffix(tmp, tmpSuffix), start: now}
	return nil
}

// closeSegment finishes the open segment, if any: it ends the zstd frame,
// syncs the file and renames it to its final name.
func (w *Writer) closeSegment() error {
	s := w.seg
	if s == nil {
		return nil
	}
	w.seg = nil
	err := w.enc.Close()
	if err == nil {
		err = s.f.Sync()
	}
	if cerr := s.f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(s.tmp, s.final)
	}
	liveTmp.Delete(s.tmp)
	if err != nil {
		err = fmt.Errorf("cannot finish capture segment %q: %w", s.final, err)
		w.drop(s, err)
		return err
	}
	syncDir(w.dir)
	w.written(s)
	w.m.segments.Inc()
	w.prune()
	return nil
}

// abandon drops the open segment after an I/O error.
func (w *Writer) abandon(err error) {
	s := w.seg
	w.seg = nil
	s.f.Close() // the next openSegment resets the encoder
	liveTmp.Delete(s.tmp)
	w.drop(s, err)
}

// drop counts s's pending records as lost to err, and removes its file
// unless earlier flushes put records in it: those are kept, for the next
// Open to recover as it does a crash's.
func (w *Writer) drop(s *segment, err error) {
	if !s.flushed {
		os.Remove(s.tmp)
	}
	w.fail("cannot capture traffic", err, s.pending)
	s.pending, s.pendingBytes = 0, 0
}

// prune deletes the oldest complete segments beyond Retention and those
// whose records are all older than MaxAge. A segment's records end where
// the next segment begins; the newest's end within SegmentAge of its start.
func (w *Writer) prune() {
	now := w.o.Now()
	w.lastPrune = now
	files, err := listFiles(w.dir, segmentPrefix, segmentSuffix)
	if err != nil {
		w.fail("cannot apply capture retention", err, 0)
		return
	}
	var total int64
	for _, f := range files {
		total += f.size
	}
	cutoff := now.Add(-w.cfg.MaxAge)
	for i, f := range files {
		end := f.start.Add(w.cfg.SegmentAge)
		if i+1 < len(files) {
			end = files[i+1].start
		}
		if total <= int64(w.cfg.Retention) && !end.Before(cutoff) {
			break
		}
		if err := os.Remove(filepath.Join(w.dir, f.name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			w.fail("cannot apply capture retention", err, 0)
			break
		}
		total -= f.size
		w.m.deleted.Inc()
	}
	w.m.diskBytes.Set(float64(total))
}

// recover finishes the segments a crashed Writer left as .tmp files: it
// rewrites their complete, flushed lines as a finished segment of the same
// name. It also sets lastName past every existing segment.
func (w *Writer) recover() error {
	salvageMu.Lock()
	defer salvageMu.Unlock()
	entries, err := os.ReadDir(w.dir)
	if err != nil {
		return fmt.Errorf("cannot read capture folder: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		if n, ok := parseName(strings.TrimSuffix(name, tmpSuffix), segmentPrefix, segmentSuffix); ok {
			w.lastName = max(w.lastName, n)
		}
		path := filepath.Join(w.dir, name)
		switch _, live := liveTmp.Load(path); {
		case strings.HasSuffix(name, salvageSuffix):
			os.Remove(path) // an interrupted salvage; its .tmp is still there
		case strings.HasSuffix(name, segmentSuffix+tmpSuffix) && !live:
			if err := w.salvage(path); err != nil {
				return err
			}
		}
	}
	return nil
}

func (w *Writer) salvage(tmp string) error {
	final := strings.TrimSuffix(tmp, tmpSuffix)
	part := final + salvageSuffix
	lines, err := w.copyLines(tmp, part)
	if err == nil && lines > 0 {
		err = os.Rename(part, final)
	}
	if err == nil {
		err = os.Remove(tmp)
	}
	if err != nil {
		os.Remove(part)
		return fmt.Errorf("cannot recover capture segment %q: %w", tmp, err)
	}
	os.Remove(part)
	syncDir(w.dir)
	w.o.Log.Info("recovered an unfinished capture segment", "model", w.model, "file", final, "records", lines)
	return nil
}

// copyLines copies the complete lines of the zstd stream in src, up to
// where it breaks off, into a new zstd file dst.
func (w *Writer) copyLines(src, dst string) (int, error) {
	in, err := os.Open(src)
	if err != nil {
		return 0, err
	}
	defer in.Close()
	dec, err := zstd.NewReader(in, zstd.WithDecoderConcurrency(1))
	if err != nil {
		return 0, err
	}
	defer dec.Close()
	out, err := os.Create(dst)
	if err != nil {
		return 0, err
	}
	defer out.Close()
	w.enc.Reset(out)
	br, lines := bufio.NewReader(dec), 0
	for {
		line, err := br.ReadBytes('\n')
		if err != nil || !json.Valid(line) {
			break // the end of what was flushed before the crash
		}
		if _, err := w.enc.Write(line); err != nil {
			return 0, err
		}
		lines++
	}
	if err := w.enc.Close(); err != nil {
		return 0, err
	}
	return lines, out.Sync()
}

// checkModel rejects a model name that is not one plain path element.
func checkModel(model string) error {
	if model == "" || model == "." || model == ".." || strings.ContainsAny(model, "/\\\x00") {
		return errors.New("model name must be one plain path element")
	}
	return nil
}

type namedFile struct {
	name  string
	start time.Time
	size  int64
}

// listFiles returns the files <prefix><unix nanos><suffix> of dir, oldest
// first. A missing dir has none.
func listFiles(dir, prefix, suffix string) ([]namedFile, error) {
	entries, err := os.ReadDir(dir) // sorted by name: zero-padded nanos sort by time
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("cannot list capture folder: %w", err)
	}
	var files []namedFile
	for _, e := range entries {
		n, ok := parseName(e.Name(), prefix, suffix)
		if !ok || !e.Type().IsRegular() {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue // deleted meanwhile
		}
		files = append(files, namedFile{name: e.Name(), start: time.Unix(0, n), size: info.Size()})
	}
	return files, nil
}

func parseName(name, prefix, suffix string) (int64, bool) {
	rest, ok := strings.CutPrefix(name, prefix)
	if rest, ok2 := strings.CutSuffix(rest, suffix); ok && ok2 {
		n, err := strconv.ParseInt(rest, 10, 64)
		return n, err == nil
	}
	return 0, false
}

// createNamed creates dir/<prefix><nanos><suffix> exclusively, for the
// first nanos from n on whose name is free, and returns the file, its path
// and nanos.
func createNamed(dir, prefix, suffix string, n int64) (*os.File, string, int64, error) {
	for ; ; n++ {
		path := filepath.Join(dir, fmt.Sprintf("%s%020d%s", prefix, n, suffix))
		if _, err := os.Lstat(strings.TrimSuffix(path, tmpSuffix)); err == nil {
			continue // a finished segment of another writer
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o644)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return nil, "", 0, fmt.Errorf("cannot create %q: %w", path, err)
		}
		if testHookCreated != nil {
			f = testHookCreated(f)
		}
		return f, path, n, nil
	}
}

// syncDir makes the renames and creations in dir durable. Its error is
// ignored: some file systems cannot sync a directory.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}
