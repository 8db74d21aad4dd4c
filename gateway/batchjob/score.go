package batchjob

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"sync"
	"unsafe"

	"github.com/infergate/infergate/retrain/table"
	"github.com/infergate/infergate/runtime"
)

// slots is the number of chunks in flight: one read ahead, one computed,
// one written.
const slots = 3

// slot is a chunk of rows on its way through the pipeline, with what is
// computed from it.
type slot struct {
	chunk table.Chunk
	// valid are the rows of chunk that are scored; rejects the others,
	// with the feature and why.
	valid   []int
	rejects []reject
	// out holds each output's values for the valid rows, as the model
	// wrote them.
	out [][]byte
	// wg counts the batches of the chunk not yet computed.
	wg sync.WaitGroup
}

type reject struct {
	row     int
	feature int
	why     string
}

// batch is a run of a slot's valid rows for one worker.
type batch struct {
	s          *slot
	start, end int
}

// chunkBytes bounds what a chunk's rows hold (their features and outputs),
// so that a wide table's chunks stay small.
const chunkBytes = 4 << 20

// chunkRows returns the rows of a chunk for batches of size on instances
// workers, each row taking rowBytes: a multiple of size, so that a chunk
// makes whole batches, and two batches a worker at least.
func chunkRows(size, rowBytes, instances int) int {
	return size * max(2*instances, chunkBytes/rowBytes/size)
}

// outputBytes returns what a row's outputs take, as the model writes them.
func (p *plan) outputBytes() int {
	n := 0
	for _, o := range p.outputs {
		n += o.perRow * o.info.DataType.Size()
	}
	return n
}

// rowBytes returns what a row of p takes in a slot: a number and a null
// flag a feature, and its outputs' values.
func (p *plan) rowBytes() int {
	return p.width*9 + p.outputBytes()
}

// score runs the rows of the row groups the checkpoint has not done
// through the model, writing each group's output into its part.
func score(ctx context.Context, job *Job, p *plan, cp *checkpoint, rep *Report) error {
	r, err := table.Open(job.In, table.ReadOptions{GroupRows: job.GroupRows})
	if err != nil {
		return err
	}
	defer r.Close()
	if err := r.Select(p.features, job.Carry); err != nil {
		return err
	}
	for range cp.done {
		n, err := r.SkipGroup()
		if err != nil {
			return fmt.Errorf("cannot resume: %w", err)
		}
		rep.RowsResumed += n
	}
	rep.GroupsResumed = cp.done
	if cp.done > 0 {
		fmt.Fprintf(job.Log, "resuming from %s: %d row groups (%d rows) were scored before; starting at row group %d\n",
			cp.dir, cp.done, rep.RowsResumed, cp.done)
	}
	bar := newBar(job.Progress, rep.Rows, "scoring "+filepath.Base(job.In))
	bar.Add64(rep.RowsResumed)
	defer bar.Finish()

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	defer wg.Wait()

	// The workers: one per instance, each on a session of its own, or
	// one per chunk in flight on the fleet.
	workers := job.Run.Instances()
	var fleet *fleetRun
	if job.Fleet != nil {
		if fleet, err = job.Fleet.start(ctx, job, p, cp); err != nil {
			return err
		}
		// After the workers: none may wait for a result stop removes.
		defer func() {
			wg.Wait()
			fleet.stop()
		}()
		workers = job.Fleet.inFlight()
		fmt.Fprintf(job.Log, "fleet job %s: chunks of %d rows on stream %s, %d in flight\n", fleet.id, job.BatchSize, ChunkStream, workers)
	}
	batches := make(chan batch, slots*2)
	defer close(batches)
	for range workers {
		var sess *runtime.Session
		if fleet == nil {
			if sess, err = job.Run.Acquire(ctx); err != nil {
				return fmt.Errorf("cannot score: %w", err)
			}
		}
		w := newWorker(job, p, sess, fleet)
		wg.Go(func() {
			if sess != nil {
				defer job.Run.Release(sess)
			}
			for b := range batches {
				if err := w.run(ctx, b); err != nil {
					cancel(err)
				}
				b.s.wg.Done()
			}
		})
	}
	// A slot holds two batches a worker; on the fleet, where a batch is a
	// whole chunk, one for every other worker: the next slot's chunks are
	// published while the last's are scored.
	perSlot := workers
	if fleet != nil {
		perSlot = max(1, workers/2)
	}

	free, computed := make(chan *slot, slots), make(chan *slot, slots)
	for range slots {
		free <- &slot{}
	}
	// The reader.
	read := make(chan *slot, slots)
	wg.Go(func() {
		defer close(read)
		for {
			var s *slot
			select {
			case s = <-free:
			case <-ctx.Done():
				return
			}
			err := r.Next(&s.chunk, chunkRows(job.BatchSize, p.rowBytes(), perSlot))
			if errors.Is(err, io.EOF) {
				return
			}
			if err == nil {
				err = s.split(p, job)
			}
			if err != nil {
				cancel(err)
				return
			}
			read <- s
		}
	})
	// The writer.
	written := make(chan struct{})
	wg.Go(func() {
		defer close(written)
		if err := writeSlots(ctx, job, p, cp, computed, free, bar); err != nil {
			cancel(err)
		}
	})

	// Each chunk goes to the writer once its batches are computed, in
	// order; a chunk that an error left unfinished goes nowhere.
	inflight := make(chan *slot, slots)
	wg.Go(func() {
		defer close(computed)
		for s := range inflight {
			s.wg.Wait()
			if ctx.Err() == nil {
				computed <- s
			}
		}
	})
	// This goroutine hands the batches of each chunk to the workers, the
	// next chunk's behind the last's, so that they never wait between two.
	for s := range read {
		for i := range s.out {
			o := p.outputs[i]
			s.out[i] = resize(s.out[i], len(s.valid)*o.perRow*o.info.DataType.Size())
		}
		for start := 0; start < len(s.valid); start += job.BatchSize {
			s.wg.Add(1)
			batches <- batch{s, start, min(start+job.BatchSize, len(s.valid))}
		}
		inflight <- s
	}
	close(inflight)
	<-written
	if fleet != nil {
		rep.Fleet = fleet.report()
	}
	if err := context.Cause(ctx); err != nil {
		return fmt.Errorf("cannot score %q: %w", job.In, err)
	}
	return nil
}

// errBadRow is the error of a row with a null or NaN feature, found while
// scoring a file that was not validated first, with no rejects file.
var errBadRow = errors.New("a feature is null or not a number")

// split sorts the rows of s's chunk into valid ones and rejects; a reject
// is an error unless the job keeps them.
func (s *slot) split(p *plan, job *Job) error {
	s.valid, s.rejects = s.valid[:0], s.rejects[:0]
	s.out = resize(s.out, len(p.outputs))
	if allFinite(&s.chunk, p.width) {
		// A column at a time, the common case costs a pass over memory
		// in order, not a row's walk across every column.
		for i := range s.chunk.Rows {
			s.valid = append(s.valid, i)
		}
		return nil
	}
	for i := range s.chunk.Rows {
		if f, why := badFeature(&s.chunk, i, p); f >= 0 {
			if job.Rejects == "" {
				return fmt.Errorf("%w: row %d, column %q: %s (pass --rejects FILE to write such rows there and score the rest)",
					errBadRow, s.chunk.Start+int64(i)+1, p.features[f], why)
			}
			s.rejects = append(s.rejects, reject{i, f, why})
			continue
		}
		s.valid = append(s.valid, i)
	}
	return nil
}

// allFinite reports whether the first width number columns of c hold
// only finite values: no NaN (a null reads as one), no infinity.
func allFinite(c *table.Chunk, width int) bool {
	for _, col := range c.Numbers[:width] {
		var sum float64
		for _, x := range col {
			sum += x - x // 0 for a finite x, NaN for NaN or an infinity
		}
		if sum != 0 {
			return false
		}
	}
	return true
}

// worker runs batches on one session, or as chunks on the fleet, through
// buffers of its own.
type worker struct {
	p     *plan
	sess  *runtime.Session
	fleet *fleetRun
	in32  []float32
	in64  []float64
	ins   []runtime.Tensor
	outs  []runtime.Tensor
	shape [2]int64
}

func newWorker(job *Job, p *plan, sess *runtime.Session, fleet *fleetRun) *worker {
	w := &worker{p: p, sess: sess, fleet: fleet, ins: make([]runtime.Tensor, 1), outs: make([]runtime.Tensor, len(p.outputs))}
	if p.input.DataType == runtime.FP32 {
		w.in32 = make([]float32, job.BatchSize*p.width)
	} else {
		w.in64 = make([]float64, job.BatchSize*p.width)
	}
	return w
}

// run computes batch b and copies its outputs into b's slot.
func (w *worker) run(ctx context.Context, b batch) error {
	c, n, width := &b.s.chunk, b.end-b.start, w.p.width
	var data []byte
	rows := b.s.valid[b.start:b.end]
	if w.in32 != nil {
		x := w.in32[:n*width]
		pack(x, c.Numbers[:width], rows)
		data = unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(x))), len(x)*4)
	} else {
		x := w.in64[:n*width]
		pack(x, c.Numbers[:width], rows)
		data = unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(x))), len(x)*8)
	}
	if w.fleet != nil {
		return w.fleet.run(ctx, data, b)
	}
	w.shape = [2]int64{int64(n), int64(width)}
	w.ins[0] = runtime.Tensor{DataType: w.p.input.DataType, Shape: w.shape[:], Data: data}
	for i, o := range w.p.outputs {
		w.outs[i].DataType = o.info.DataType
	}
	if err := w.sess.Run(w.ins, w.outs); err != nil {
		return fmt.Errorf("cannot run model: %w", err)
	}
	for i, o := range w.p.outputs {
		size := o.perRow * o.info.DataType.Size()
		if got, want := len(w.outs[i].Data), n*size; got != want {
			return fmt.Errorf("output %q holds %d bytes for %d rows, want %d", o.info.Name, got, n, want)
		}
		copy(b.s.out[i][b.start*size:b.end*size], w.outs[i].Data)
	}
	return nil
}

// packTile is the rows a tile of pack takes from each column in turn.
const packTile = 16

// pack fills x, row-major, with the values of cols at rows, converted. It
// goes a tile of rows at a time, a column after another within a tile,
// so that it reads each column's values in order and writes to a few
// rows at once, rather than walking every column for each row.
func pack[T float32 | float64](x []T, cols [][]float64, rows []int) {
	width := len(cols)
	for t := 0; t < len(rows); t += packTile {
		tile := rows[t:min(t+packTile, len(rows))]
		for f, col := range cols {
			for k, row := range tile {
				x[(t+k)*width+f] = T(col[row])
			}
		}
	}
}

// writeSlots writes the computed slots in order, each row group into its
// part, and hands each slot back to the reader.
func writeSlots(ctx context.Context, job *Job, p *plan, cp *checkpoint, computed <-chan *slot, free chan<- *slot, bar progress) error {
	var out, rej *partWriter
	defer func() {
		for _, pw := range []*partWriter{out, rej} {
			if pw != nil {
				pw.abandon()
			}
		}
	}()
	row := make([]table.Value, len(p.columns))
	rejRow := make([]table.Value, len(p.rejects))
	version := table.TextValue([]byte(job.Version))
	for s := range computed {
		var err error
		if out == nil {
			if out, err = cp.newPart("part", s.chunk.Group, p.columns); err != nil {
				return err
			}
			if job.Rejects != "" {
				if rej, err = cp.newPart("rejects", s.chunk.Group, p.rejects); err != nil {
					return err
				}
			}
		}
		c := &s.chunk
		for k, i := range s.valid {
			n := carried(row, c, i)
			for o, op := range p.outputs {
				n += outputValues(row[n:], op, s.out[o], k)
			}
			row[n] = version
			if err := out.w.WriteRow(row); err != nil {
				return err
			}
		}
		for _, rj := range s.rejects {
			rejRow[0] = table.Int64Value(c.Start + int64(rj.row) + 1)
			rejRow[1] = table.TextValue([]byte(p.features[rj.feature]))
			rejRow[2] = table.TextValue([]byte(rj.why))
			carried(rejRow[3:], c, rj.row)
			if err := rej.w.WriteRow(rejRow); err != nil {
				return err
			}
		}
		bar.Add64(int64(c.Rows))
		if c.GroupEnd {
			if rej != nil {
				if err := rej.finish(); err != nil {
					return err
				}
				rej = nil
			}
			if err := out.finish(); err != nil {
				return err
			}
			out = nil
			cp.done++
		}
		select {
		case free <- s:
		case <-ctx.Done():
			return nil
		}
	}
	return nil
}

// carried fills dst with the carried values of row i of c and returns
// how many.
func carried(dst []table.Value, c *table.Chunk, i int) int {
	for k := range c.Values {
		dst[k] = c.Values[k][i]
	}
	return len(c.Values)
}

// outputValues fills dst with output o's values of valid row k from its
// data, and returns how many.
func outputValues(dst []table.Value, o output, data []byte, k int) int {
	size := o.info.DataType.Size()
	base := k * o.perRow * size
	for j := range o.perRow {
		b := data[base+j*size : base+(j+1)*size]
		switch o.info.DataType {
		case runtime.FP32:
			dst[j] = table.Float32Value(math.Float32frombits(binary.LittleEndian.Uint32(b)))
		case runtime.FP64:
			dst[j] = table.Float64Value(math.Float64frombits(binary.LittleEndian.Uint64(b)))
		case runtime.INT64:
			dst[j] = table.Int64Value(int64(binary.LittleEndian.Uint64(b)))
		case runtime.INT32:
			dst[j] = table.Int64Value(int64(int32(binary.LittleEndian.Uint32(b))))
		case runtime.BOOL:
			dst[j] = table.BoolValue(b[0] != 0)
		}
	}
	return o.perRow
}

// resize returns s with n elements, reusing its array when it can.
func resize[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}
