package capture

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/klauspost/compress/zstd"
	"github.com/nats-io/nats.go"

	"github.com/infergate/infergate/retrain/engine"
)

// ErrClosed is returned by a Writer or Labels store used after Close.
var ErrClosed = errors.New("capture: closed")

const (
	// shipEvery is how often the records gathered are shipped as a block,
	// so that readers see traffic at most that late.
	shipEvery = time.Second
	// maxUnsent bounds the blocks kept for another try while the engine
	// does not take them; beyond it the oldest is dropped, its records
	// counted lost.
	maxUnsent = 16
	// closeWait is how long Close keeps trying to ship what is left.
	closeWait = 5 * time.Second
)

// Writer captures the sampled traffic of one model into the model's capture
// stream. It is safe for concurrent use; a nil *Writer samples nothing and
// drops every record.
type Writer struct {
	conn  *engine.Conn
	s     stream
	model string
	cfg   Config
	o     Options
	m     writerMetrics
	// idPrefix makes the message ids of this Writer's blocks unique, so
	// that the stream drops a block shipped twice (an ack lost in transit).
	idPrefix string

	closed    atomic.Bool
	records   chan Record
	flushReq  chan chan error
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error // set by run before done is closed

	// The fields below are owned by the run goroutine.
	enc      *zstd.Encoder
	block    []byte // JSON lines gathered, uncompressed
	gathered int    // records in block
	line     []byte
	unsent   []unsentBlock
	seq      uint64
	failing  bool // an error was logged and nothing has shipped since
	// closing is set once Close began: full blocks are sealed, and shipped
	// together within closeWait.
	closing bool
}

// unsentBlock is a compressed block that the engine has not acknowledged.
type unsentBlock struct {
	id      string
	data    []byte
	records int
}

type writerMetrics struct {
	records, dropped, lost, bytes, blocks, errors *metrics.Counter
}

// Open starts capturing traffic of model into its capture stream, created
// (or its retention updated) on conn's engine. Close stops it.
func Open(conn *engine.Conn, model string, cfg Config, o Options) (*Writer, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate("capture"); err != nil {
		return nil, fmt.Errorf("cannot open capture of model %q: %w", model, err)
	}
	if conn == nil {
		return nil, fmt.Errorf("cannot open capture of model %q: %w", model, errNoEngine)
	}
	o = o.withDefaults()
	s := captureOf(model, o.Replica)
	if err := s.provision(conn, cfg.Retention, cfg.MaxAge); err != nil {
		return nil, fmt.Errorf("cannot open capture of model %q: %w", model, err)
	}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	if err != nil {
		return nil, fmt.Errorf("cannot create zstd encoder: %w", err)
	}
	w := &Writer{
		conn: conn, s: s, model: model, cfg: cfg, o: o,
		idPrefix: o.Replica + "-" + strconv.FormatUint(rand.Uint64(), 36) + "-",
		records:  make(chan Record, cfg.BufferSize), flushReq: make(chan chan error),
		stop: make(chan struct{}), done: make(chan struct{}), enc: enc,
	}
	name := func(series string) string { return fmt.Sprintf("infergate_capture_%s{model=%q}", series, model) }
	set := o.Metrics
	w.m = writerMetrics{
		records: set.NewCounter(name("records_total")), dropped: set.NewCounter(name("dropped_total")),
		lost: set.NewCounter(name("lost_total")), bytes: set.NewCounter(name("bytes_total")),
		blocks: set.NewCounter(name("blocks_total")), errors: set.NewCounter(name("errors_total")),
	}
	set.NewGauge(name("buffered"), func() float64 { return float64(len(w.records)) })
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

// Write queues r for shipping and reports whether it was queued. It never
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

// Flush ships every record queued before the call and returns once the
// engine has them, or with the error that kept one from it. It waits for
// the engine; it is not for the request path.
func (w *Writer) Flush() error {
	reply := make(chan error, 1)
	select {
	case w.flushReq <- reply:
		return <-reply
	case <-w.done:
		return ErrClosed
	}
}

// Close ships the buffered records, trying for a few seconds while the
// engine does not take them, and stops the Writer's goroutine. A Write
// racing with Close may be lost even though it returned true; the gateway
// stops routing to a Writer before closing it. Close returns the error
// that lost records, if any; later calls return the same.
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
	defer w.enc.Close()
	tick := time.NewTicker(shipEvery)
	defer tick.Stop()
	for {
		select {
		case r := <-w.records:
			w.add(&r)
		case reply := <-w.flushReq:
			w.drain()
			reply <- w.ship(context.Background())
		case <-tick.C:
			w.ship(context.Background())
		case <-w.stop:
			w.closing = true
			w.drain()
			ctx, cancel := context.WithTimeout(context.Background(), closeWait)
			w.closeErr = w.ship(ctx)
			for w.closeErr != nil && ctx.Err() == nil {
				time.Sleep(100 * time.Millisecond)
				w.closeErr = w.ship(ctx)
			}
			cancel()
			if lost := w.pending(); lost > 0 {
				w.m.lost.Add(lost)
				w.closeErr = fmt.Errorf("cannot ship %d captured records of model %q: %w", lost, w.model, w.closeErr)
			}
			return
		}
	}
}

// drain adds the records queued now.
func (w *Writer) drain() {
	for n := len(w.records); n > 0; n-- {
		r := <-w.records
		w.add(&r)
	}
}

// add encodes r into the block, shipping the block first when r would
// take it past maxBlock.
func (w *Writer) add(r *Record) {
	if r.Time.IsZero() {
		r.Time = w.o.Now()
	}
	if r.Model == "" {
		r.Model = w.model
	}
	r.Replica = w.o.Replica
	line, err := appendRecord(w.line[:0], r)
	if cap(line) <= 1<<20 {
		w.line = line // keep the buffer, unless one huge record grew it
	}
	if err != nil {
		w.fail("cannot encode captured record", fmt.Errorf("record %q: %w", r.ID, err), 1)
		return
	}
	if w.gathered > 0 && len(w.block)+len(line) > maxBlock {
		w.sealFull()
	}
	w.block = append(w.block, line...)
	w.gathered++
	if len(w.block) >= maxBlock {
		w.sealFull()
	}
}

// sealFull seals a full block and, unless the Writer is closing, ships it.
func (w *Writer) sealFull() {
	w.seal()
	if !w.closing {
		w.ship(context.Background())
	}
}

// seal compresses the gathered records into an unsent block.
func (w *Writer) seal() {
	if w.gathered == 0 {
		return
	}
	w.seq++
	data := w.enc.EncodeAll(w.block, nil)
	w.unsent = append(w.unsent, unsentBlock{id: w.idPrefix + strconv.FormatUint(w.seq, 10), data: data, records: w.gathered})
	w.block, w.gathered = w.block[:0], 0
	if cap(w.block) > 2*maxBlock {
		w.block = nil
	}
	if len(w.unsent) > maxUnsent {
		w.m.lost.Add(w.unsent[0].records)
		w.unsent = w.unsent[1:]
	}
}

// ship seals the gathered records and publishes the unsent blocks in
// order; it stops at the first the engine does not acknowledge, which
// stays for the next try, and returns that error. While the connection is
// down it tries nothing.
func (w *Writer) ship(ctx context.Context) error {
	w.seal()
	if len(w.unsent) > 0 && !w.conn.Connected() {
		return fmt.Errorf("cannot ship captured traffic of model %q: %w", w.model, ErrUnavailable)
	}
	for len(w.unsent) > 0 {
		b := w.unsent[0]
		msg := nats.NewMsg(w.s.subject)
		msg.Data = b.data
		msg.Header.Set("Content-Encoding", "zstd")
		msg.Header.Set(nats.MsgIdHdr, b.id)
		ctx, cancel := context.WithTimeout(ctx, opTimeout)
		_, err := w.conn.JS.PublishMsg(ctx, msg)
		cancel()
		if err != nil {
			w.fail("cannot ship captured traffic; keeping it for another try", fmt.Errorf("stream %s: %w", w.s.name, err), 0)
			if errors.Is(err, nats.ErrMaxPayload) {
				w.m.lost.Add(b.records)
				w.unsent = w.unsent[1:]
			}
			return err
		}
		w.unsent = w.unsent[1:]
		w.m.records.Add(b.records)
		w.m.bytes.Add(len(b.data))
		w.m.blocks.Inc()
		if w.failing {
			w.o.Log.Info("captured traffic ships again", "model", w.model)
			w.failing = false
		}
	}
	return nil
}

// pending counts the records gathered or sealed and not yet shipped.
func (w *Writer) pending() int {
	n := w.gathered
	for _, b := range w.unsent {
		n += b.records
	}
	return n
}

// fail counts an error that lost n records and logs it, once until a block
// ships again.
func (w *Writer) fail(msg string, err error, n int) {
	w.m.errors.Inc()
	w.m.lost.Add(n)
	if !w.failing {
		w.o.Log.Warn(msg, "model", w.model, "err", err)
		w.failing = true
	}
}
