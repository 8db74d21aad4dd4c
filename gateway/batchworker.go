package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/infergate/infergate/batcher"
	"github.com/infergate/infergate/gateway/batchjob"
	"github.com/infergate/infergate/retrain/engine"
)

// batchChunksAtOnce is the chunks of batch jobs a replica scores at once:
// one computed while the next is fetched and its first rows queue.
const batchChunksAtOnce = 2

// batchWorker scores the chunks of the fleet's batch jobs on a replica
// whose config says cluster.batch_jobs: it pulls them from the replicas'
// shared consumer, runs each through the batcher of the version it names
// at batchJobPriority, below every online request, so that only capacity
// online traffic leaves idle scores them, puts the outputs in the result
// bucket and only then acknowledges the chunk. A chunk this replica cannot
// score now (its version is not loaded here, the batcher is full or
// stopping) goes back to the stream for another, or for later.
type batchWorker struct {
	s       *Server
	log     *slog.Logger
	replica string
	cons    jetstream.Consumer
	results jetstream.ObjectStore
	set     *metrics.Set
	// chunks counts the chunks taken, by outcome; rows the rows scored.
	scored, returned, refused *metrics.Counter
	rows                      *metrics.Counter
	// scoring counts the chunks being scored now.
	scoring atomic.Int64
	cancel  context.CancelFunc
	done    sync.WaitGroup
}

// batchWorkerHelp is the HELP text of the batch worker's families.
var batchWorkerHelp = map[string]string{
	"infergate_batch_chunks_total":       "Chunks of batch-scoring jobs this replica took (cluster.batch_jobs), by outcome: scored, returned (to the stream, for another replica or later) or refused (malformed, dropped).",
	"infergate_batch_rows_total":         "Rows of batch-scoring jobs this replica scored.",
	"infergate_batch_chunks_in_progress": "Chunks of batch-scoring jobs this replica is scoring now.",
}

// openBatchWorker opens the chunk stream, the result bucket and the shared
// consumer on conn.
func openBatchWorker(s *Server, conn *engine.Conn, replica string) (*batchWorker, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, results, err := batchjob.OpenChunks(ctx, conn)
	if err != nil {
		return nil, err
	}
	cons, err := st.CreateOrUpdateConsumer(ctx, batchjob.ChunkConsumerConfig())
	if err != nil {
		return nil, fmt.Errorf("cannot open consumer %s of stream %s: %w", batchjob.ChunkConsumer, batchjob.ChunkStream, err)
	}
	w := &batchWorker{s: s, log: s.log.With("component", "batch"), replica: replica, cons: cons, results: results, set: metrics.NewSet()}
	w.scored = w.set.NewCounter(`infergate_batch_chunks_total{outcome="scored"}`)
	w.returned = w.set.NewCounter(`infergate_batch_chunks_total{outcome="returned"}`)
	w.refused = w.set.NewCounter(`infergate_batch_chunks_total{outcome="refused"}`)
	w.rows = w.set.NewCounter(`infergate_batch_rows_total`)
	w.set.NewGauge(`infergate_batch_chunks_in_progress`, func() float64 { return float64(w.scoring.Load()) })
	metrics.RegisterSet(w.set)
	return w, nil
}

// start pulls and scores chunks until stop.
func (w *batchWorker) start() {
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	for range batchChunksAtOnce {
		w.done.Go(func() {
			for ctx.Err() == nil {
				// A pull lasts 5s at most, or until stop.
				pull, cancelPull := context.WithTimeout(ctx, 5*time.Second)
				batch, err := w.cons.Fetch(1, jetstream.FetchContext(pull))
				if err == nil {
					for msg := range batch.Messages() {
						w.take(ctx, msg)
					}
					err = batch.Error()
				}
				cancelPull()
				if err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, nats.ErrTimeout) {
					if ctx.Err() == nil {
						w.log.Warn("cannot fetch a chunk of a batch job; trying again in 1s", "error", err)
						sleepCtx(ctx, time.Second)
					}
				}
			}
		})
	}
	w.log.Info("scoring chunks of batch jobs", "stream", batchjob.ChunkStream, "consumer", batchjob.ChunkConsumer, "at_once", batchChunksAtOnce)
}

// stop stops pulling, waits for the chunks being scored and drops the
// worker's series. A nil worker does nothing.
func (w *batchWorker) stop() {
	if w == nil {
		return
	}
	if w.cancel != nil {
		w.cancel()
	}
	w.done.Wait()
	metrics.UnregisterSet(w.set, true)
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// take scores chunk msg and acknowledges it, or hands it back.
func (w *batchWorker) take(ctx context.Context, msg jetstream.Msg) {
	c, err := batchjob.ParseChunk(msg)
	if err != nil {
		w.refused.Inc()
		w.log.Warn("dropped a malformed chunk", "error", err)
		msg.TermWithReason(err.Error())
		return
	}
	w.scoring.Add(1)
	defer w.scoring.Add(-1)
	// The chunk stays this replica's while it is scored.
	keep := time.NewTicker(batchjob.ChunkAckWait / 4)
	defer keep.Stop()
	kept := make(chan struct{})
	defer close(kept)
	go func() {
		for {
			select {
			case <-keep.C:
				msg.InProgress()
			case <-kept:
				return
			}
		}
	}()
	out, after, err := w.score(ctx, c)
	switch {
	case err != nil && after == never:
		// No replica can: the job is told why, and the chunk dropped.
		w.refused.Inc()
		w.log.Warn("cannot score a chunk of a batch job", "job", c.Run, "chunk", c.Index, "model", c.Model, "version", c.Version, "error", err)
		if perr := w.put(ctx, msg, c, nil, err.Error()); perr != nil {
			// Dropped untold, the job would wait out its timeout: the
			// chunk comes back, to be refused again with the reason.
			w.log.Warn("cannot tell the job why", "job", c.Run, "chunk", c.Index, "error", perr)
			msg.NakWithDelay(time.Second)
			return
		}
		msg.TermWithReason(err.Error())
		return
	case err == nil:
		if err = w.put(ctx, msg, c, out, ""); err != nil {
			after = time.Second
		}
	}
	if err != nil {
		w.returned.Inc()
		w.log.Debug("handed a chunk back", "job", c.Run, "chunk", c.Index, "error", err)
		msg.NakWithDelay(after)
		return
	}
	// Stored, the chunk is scored whatever becomes of its ack: a lost one
	// has it delivered again after ChunkAckWait, and the same result put
	// again, which the job reads once.
	// The ack outlives a shutdown that began while the result was put.
	ackCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := msg.DoubleAck(ackCtx); err != nil {
		w.log.Debug("the ack of a scored chunk was lost", "job", c.Run, "chunk", c.Index, "error", err)
	}
	w.scored.Inc()
	w.rows.Add(c.Rows)
}

// put puts the result of chunk c, from msg: its outputs, or why it cannot
// be scored.
func (w *batchWorker) put(ctx context.Context, msg jetstream.Msg, c batchjob.Chunk, out []byte, failed string) error {
	meta := jetstream.ObjectMeta{Name: batchjob.ResultName(c.Run, c.Index), Headers: nats.Header{}}
	meta.Headers.Set(batchjob.HeaderReplica, w.replica)
	if md, err := msg.Metadata(); err == nil {
		meta.Headers.Set(batchjob.HeaderDelivery, strconv.FormatUint(md.NumDelivered, 10))
	}
	if failed != "" {
		meta.Headers.Set(batchjob.HeaderError, failed)
	}
	if _, err := w.results.Put(ctx, meta, bytes.NewReader(out)); err != nil {
		return fmt.Errorf("cannot put the result of chunk %d in object store %s: %w", c.Index, batchjob.ResultBucket, err)
	}
	return nil
}

// never, as the wait of a chunk handed back, says that no replica can
// score it.
const never = time.Duration(-1)

// batchPieceRows is the rows of a chunk run at once through a batcher
// without max_batch_size: a piece holds an instance while it computes, so
// an online request that comes then waits for it.
const batchPieceRows = 64

// score runs chunk c through its version's batcher, a piece at a time,
// and returns the outputs, each output's rows in turn; on an error, how
// long the chunk should wait before it is delivered again, or never. A
// piece the online traffic keeps waiting past the queue's timeout, or
// that finds the queue full, is tried again in place: the chunk stays
// this replica's, and the pieces done are kept.
func (w *batchWorker) score(ctx context.Context, c batchjob.Chunk) ([]byte, time.Duration, error) {
	var rowBytes, n int
	var outBytes []int
	var out []byte
	for start := 0; start < c.Rows; start += n {
		// The serving state is held a piece at a time, so that a reload
		// waits for one piece, not the whole chunk.
		st := w.s.acquireState()
		v, after, err := chunkVersion(st, c)
		if err == nil && out == nil {
			if rowBytes, outBytes, err = chunkLayout(v, c); err == nil {
				out = make([]byte, c.Rows*outBase(outBytes, len(outBytes)))
			} else {
				after = never
			}
		}
		if err == nil {
			n = min(pieceRows(v), c.Rows-start)
			err = runPiece(ctx, v, c.Data[start*rowBytes:(start+n)*rowBytes], n, func(j int, data []byte) {
				base := c.Rows * outBase(outBytes, j)
				copy(out[base+start*outBytes[j]:base+(start+n)*outBytes[j]], data)
			})
			after = time.Second
			if errors.Is(err, batcher.ErrBadPriority) {
				after = never
			}
		}
		st.release()
		if errors.Is(err, batcher.ErrDeadline) || errors.Is(err, batcher.ErrQueueFull) {
			sleepCtx(ctx, 200*time.Millisecond)
			n = 0 // the piece again
			continue
		}
		if err != nil {
			return nil, after, err
		}
	}
	return out, 0, nil
}

// pieceRows returns the rows of a chunk's piece on v: its max_batch_size,
// else batchPieceRows. It is read for each piece, so that a reload that
// lowers max_batch_size mid-chunk applies at once.
func pieceRows(v *version) int {
	if mb := v.cfg.Batching.MaxBatchSize; mb > 0 {
		return mb
	}
	return batchPieceRows
}

// chunkVersion returns the loaded version of st that chunk c names.
func chunkVersion(st *state, c batchjob.Chunk) (*version, time.Duration, error) {
	var v *version
	if m := st.model(c.Model); m != nil {
		v = m.version([]byte(c.Version))
	}
	switch {
	case v == nil:
		return nil, 2 * time.Second, fmt.Errorf("version %s of model %q is not loaded here", c.Version, c.Model)
	case v.batcher == nil:
		return nil, 2 * time.Second, fmt.Errorf("version %s of model %q is not batched here", c.Version, c.Model)
	}
	return v, 0, nil
}

// chunkLayout checks chunk c against version v and returns the bytes of
// an input row and of each output's row.
func chunkLayout(v *version, c batchjob.Chunk) (rowBytes int, outBytes []int, err error) {
	ins := v.rt.Inputs()
	if len(ins) != 1 || len(ins[0].Shape) != 2 || ins[0].Shape[1] < 1 {
		return 0, nil, fmt.Errorf("model %q takes %d inputs, a chunk fills one of shape [batch, features]", c.Model, len(ins))
	}
	rowBytes = int(ins[0].Shape[1]) * ins[0].DataType.Size()
	if len(c.Data) != c.Rows*rowBytes {
		return 0, nil, fmt.Errorf("chunk %d holds %d bytes, want %d rows of %d", c.Index, len(c.Data), c.Rows, rowBytes)
	}
	for _, o := range v.rt.Outputs() {
		n := o.DataType.Size()
		for _, d := range o.Shape[1:] {
			if d < 1 {
				return 0, nil, fmt.Errorf("output %q of model %q has a dynamic shape %v beyond the batch: a chunk's outputs must be sized ahead", o.Name, c.Model, o.Shape)
			}
			n *= int(d)
		}
		outBytes = append(outBytes, n)
	}
	return rowBytes, outBytes, nil
}

// outBase returns the bytes per row of the outputs before output j.
func outBase(outBytes []int, j int) int {
	n := 0
	for _, b := range outBytes[:j] {
		n += b
	}
	return n
}

// runPiece runs the n rows of in through v's batcher at batchJobPriority
// and hands each output's data to got before the request is released.
func runPiece(ctx context.Context, v *version, in []byte, n int, got func(j int, data []byte)) error {
	req := batcher.AcquireRequest()
	defer batcher.ReleaseRequest(req)
	req.Rows, req.Priority = n, batchJobPriority
	req.Inputs = append(req.Inputs, in)
	if err := v.batcher.Do(ctx, req); err != nil {
		return err
	}
	for j, data := range req.Outputs {
		got(j, data)
	}
	return nil
}
