package capture

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/infergate/infergate/retrain/engine"
)

// Example is one row of captured traffic: the row's values of each input
// and output tensor, flat, and its label.
type Example struct {
	ID string
	// Row is the row's index in its request of Rows rows.
	Row, Rows int
	Time      time.Time
	Version   string
	// Replica is the gateway replica that answered.
	Replica string
	Inputs  map[string][]float64
	Outputs map[string][]float64
	// Label is the row's label and LabelTime when the request's label was
	// recorded; Label is nil for an unlabeled row.
	Label     json.RawMessage
	LabelTime time.Time
}

// clockSlack is how far before a record's time the block holding it may be
// stamped by the engine, whose clock is not the replica's.
const clockSlack = time.Minute

// Records returns the captured records of model whose Time is not before
// since, oldest block first, from every replica, as the stream holds them
// when the call begins (records shipped later are left for the next read).
// Tensor data comes back as []float64. The sequence stops after yielding an
// error.
func Records(ctx context.Context, conn *engine.Conn, model string, since time.Time) iter.Seq2[Record, error] {
	return func(yield func(Record, error) bool) {
		s := captureOf(model, "")
		dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1))
		if err != nil {
			yield(Record{}, err)
			return
		}
		defer dec.Close()
		var plain []byte
		for msg, err := range readStream(ctx, conn, s.name, since.Add(-clockSlack)) {
			if err != nil {
				yield(Record{}, fmt.Errorf("cannot read captured traffic of model %q: %w", model, err))
				return
			}
			if plain, err = dec.DecodeAll(msg.Data(), plain[:0]); err != nil {
				yield(Record{}, fmt.Errorf("cannot read captured traffic of model %q: block on %s: %w", model, msg.Subject(), err))
				return
			}
			if !readBlock(plain, since, yield) {
				return
			}
		}
	}
}

// readBlock yields the records of one block's JSON lines not before since.
func readBlock(data []byte, since time.Time, yield func(Record, error) bool) bool {
	br := bufio.NewReader(bytes.NewReader(data))
	for n := 1; ; n++ {
		line, err := br.ReadBytes('\n')
		if err == io.EOF && len(line) == 0 {
			return true
		}
		var r Record
		if err := json.Unmarshal(line, &r); err != nil {
			yield(Record{}, fmt.Errorf("cannot read captured record: line %d of its block: %w", n, err))
			return false
		}
		if !r.Time.Before(since) && !yield(r, nil) {
			return false
		}
	}
}

// readStream yields the messages of stream name stamped at or after start,
// up to the last one it held when the call began; none when the stream
// does not exist.
func readStream(ctx context.Context, conn *engine.Conn, name string, start time.Time) iter.Seq2[jetstream.Msg, error] {
	return func(yield func(jetstream.Msg, error) bool) {
		if conn == nil {
			yield(nil, errNoEngine)
			return
		}
		st, err := conn.JS.Stream(ctx, name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return
		}
		if err != nil {
			yield(nil, fmt.Errorf("cannot open stream %s: %w", name, err))
			return
		}
		last := st.CachedInfo().State.LastSeq
		if st.CachedInfo().State.Msgs == 0 {
			return
		}
		cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
		if !start.IsZero() {
			cfg = jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &start}
		}
		cons, err := st.OrderedConsumer(ctx, cfg)
		if err != nil {
			yield(nil, fmt.Errorf("cannot read stream %s: %w", name, err))
			return
		}
		it, err := cons.Messages(jetstream.PullMaxMessages(256))
		if err != nil {
			yield(nil, fmt.Errorf("cannot read stream %s: %w", name, err))
			return
		}
		defer it.Stop()
		// Nothing delivered and nothing pending: no message at or after
		// start.
		if info, err := cons.Info(ctx); err == nil && info.NumPending == 0 && info.Delivered.Consumer == 0 {
			return
		}
		for {
			next, cancel := context.WithTimeout(ctx, opTimeout)
			msg, err := it.Next(jetstream.NextContext(next))
			cancel()
			if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
				return // none after start, or the rest deleted by retention meanwhile
			}
			if err != nil {
				yield(nil, fmt.Errorf("cannot read stream %s: %w", name, err))
				return
			}
			meta, err := msg.Metadata()
			if err != nil {
				yield(nil, fmt.Errorf("cannot read stream %s: %w", name, err))
				return
			}
			if !yield(msg, nil) || meta.Sequence.Stream >= last || meta.NumPending == 0 {
				return
			}
		}
	}
}

// Query chooses the rows Examples yields.
type Query struct {
	Model string
	// Since leaves out rows captured before it.
	Since time.Time
	// Unlabeled keeps the rows no label has arrived for, with a nil Label.
	Unlabeled bool
}

// Examples returns the rows of q.Model's captured traffic, oldest first,
// with labels joined by request id; of several labels for one id the
// latest recorded wins (by Time, then by order of recording). Unlabeled
// requests are left out unless q.Unlabeled.
//
// A request's rows are the first dimension of its inputs, when every input
// has the same one; otherwise the request is one row holding the whole
// tensors. A label that is a JSON array with exactly one entry per row
// labels the rows one by one (so a one-row request's label [3] is 3); any
// other label is the label of every row, as it is. To give the rows of an
// N-row request one array each, send an array of N arrays.
func Examples(ctx context.Context, conn *engine.Conn, q Query) iter.Seq2[Example, error] {
	return func(yield func(Example, error) bool) {
		labels, err := ReadLabels(ctx, conn, q.Model, q.Since)
		if err != nil {
			yield(Example{}, err)
			return
		}
		for r, err := range Records(ctx, conn, q.Model, q.Since) {
			if err != nil {
				yield(Example{}, err)
				return
			}
			lb, ok := labels[r.ID]
			if (ok && r.ID != "" || q.Unlabeled) && !yieldRows(&r, lb, yield) {
				return
			}
		}
	}
}

// ReadLabeled returns the labeled rows of model captured since since.
func ReadLabeled(ctx context.Context, conn *engine.Conn, model string, since time.Time) ([]Example, error) {
	var out []Example
	for ex, err := range Examples(ctx, conn, Query{Model: model, Since: since}) {
		if err != nil {
			return nil, err
		}
		out = append(out, ex)
	}
	return out, nil
}

func yieldRows(r *Record, lb Label, yield func(Example, error) bool) bool {
	rows := requestRows(r.Inputs)
	var perRow []json.RawMessage
	if t := bytes.TrimSpace(lb.Label); len(t) > 0 && t[0] == '[' {
		if json.Unmarshal(t, &perRow) != nil || len(perRow) != rows {
			perRow = nil
		}
	}
	for i := range rows {
		ex := Example{
			ID: r.ID, Row: i, Rows: rows, Time: r.Time, Version: r.Version, Replica: r.Replica,
			Inputs: rowValues(r.Inputs, i, rows), Outputs: rowValues(r.Outputs, i, rows),
			Label: lb.Label, LabelTime: lb.Time,
		}
		if perRow != nil {
			ex.Label = perRow[i]
		}
		if !yield(ex, nil) {
			return false
		}
	}
	return true
}

// requestRows is the first dimension shared by every input, or 1.
func requestRows(inputs map[string]Tensor) int {
	rows := 0
	for _, t := range inputs {
		data, _ := t.Data.([]float64)
		if len(t.Shape) == 0 || t.Shape[0] < 1 || rows != 0 && int(t.Shape[0]) != rows || len(data)%int(t.Shape[0]) != 0 {
			return 1
		}
		rows = int(t.Shape[0])
	}
	return max(rows, 1)
}

// rowValues is row i of each tensor with rows rows, or the whole tensor.
func rowValues(ts map[string]Tensor, i, rows int) map[string][]float64 {
	out := make(map[string][]float64, len(ts))
	for name, t := range ts {
		data, _ := t.Data.([]float64)
		if rows > 1 && len(t.Shape) > 0 && int(t.Shape[0]) == rows && len(data)%rows == 0 {
			width := len(data) / rows
			data = data[i*width : (i+1)*width : (i+1)*width]
		}
		out[name] = data
	}
	return out
}

// ReadLabels returns model's latest label by request id, from every
// replica, of the labels recorded since since (zero: all): a label comes
// after its request, so those of the requests captured since since are
// among them.
func ReadLabels(ctx context.Context, conn *engine.Conn, model string, since time.Time) (map[string]Label, error) {
	start := since
	if !since.IsZero() {
		start = since.Add(-clockSlack)
	}
	labels := make(map[string]Label)
	for msg, err := range readStream(ctx, conn, labelsOf(model, "").name, start) {
		if err != nil {
			return nil, fmt.Errorf("cannot read labels of model %q: %w", model, err)
		}
		data := msg.Data()
		for n, line := 1, []byte(nil); len(data) > 0; n++ {
			line, data, _ = bytes.Cut(data, []byte{'\n'})
			var lb Label
			if err := json.Unmarshal(line, &lb); err != nil {
				return nil, fmt.Errorf("cannot read labels of model %q: line %d of a message on %s: %w", model, n, msg.Subject(), err)
			}
			if old, ok := labels[lb.ID]; !ok || !lb.Time.Before(old.Time) {
				labels[lb.ID] = lb
			}
		}
	}
	return labels, nil
}
