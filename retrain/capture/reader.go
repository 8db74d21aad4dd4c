package capture

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"os"
	"path/filepath"
	"time"

	"github.com/klauspost/compress/zstd"
)

// Example is one labeled row of captured traffic: the row's values of each
// input and output tensor, flat, and its label.
type Example struct {
	ID string
	// Row is the row's index in its request of Rows rows.
	Row, Rows int
	Time      time.Time
	Version   string
	Inputs    map[string][]float64
	Outputs   map[string][]float64
	// Label is the row's label and LabelTime when the request's label was
	// recorded.
	Label     json.RawMessage
	LabelTime time.Time
}

// Records returns the captured records of model under dir (the state_dir)
// whose Time is not before since, oldest first, reading complete segments
// only (never a .tmp). Tensor data comes back as []float64. The sequence
// stops after yielding an error.
func Records(dir, model string, since time.Time) iter.Seq2[Record, error] {
	return func(yield func(Record, error) bool) {
		if err := checkModel(model); err != nil {
			yield(Record{}, fmt.Errorf("cannot read captured traffic of model %q: %w", model, err))
			return
		}
		mdir := filepath.Join(dir, "capture", model)
		files, err := listFiles(mdir, segmentPrefix, segmentSuffix)
		if err != nil {
			yield(Record{}, err)
			return
		}
		for i, f := range files {
			// A segment's records were all taken before the next segment began.
			if i+1 < len(files) && files[i+1].start.Before(since) {
				continue
			}
			if !readSegment(filepath.Join(mdir, f.name), since, yield) {
				return
			}
		}
	}
}

func readSegment(path string, since time.Time, yield func(Record, error) bool) bool {
	fail := func(err error) bool {
		yield(Record{}, fmt.Errorf("cannot read capture segment %q: %w", path, err))
		return false
	}
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return true // deleted by retention meanwhile
	}
	if err != nil {
		return fail(err)
	}
	defer f.Close()
	dec, err := zstd.NewReader(f, zstd.WithDecoderConcurrency(1))
	if err != nil {
		return fail(err)
	}
	defer dec.Close()
	br := bufio.NewReaderSize(dec, 1<<16)
	for n := 1; ; n++ {
		line, err := br.ReadBytes('\n')
		if err == io.EOF && len(line) == 0 {
			return true
		}
		if err != nil {
			return fail(err)
		}
		var r Record
		if err := json.Unmarshal(line, &r); err != nil {
			return fail(fmt.Errorf("line %d: %w", n, err))
		}
		if !r.Time.Before(since) && !yield(r, nil) {
			return false
		}
	}
}

// Examples returns the labeled rows of model's captured traffic under dir
// whose time is not before since, oldest first. Labels are joined by request
// id; of several labels for one id the latest recorded wins (by Time, then
// by order of recording). Unlabeled requests are left out.
//
// A request's rows are the first dimension of its inputs, when every input
// has the same one; otherwise the request is one row holding the whole
// tensors. A label that is a JSON array with exactly one entry per row
// labels the rows one by one (so a one-row request's label [3] is 3); any
// other label is the label of every row, as it is. To give the rows of an
// N-row request one array each, send an array of N arrays.
func Examples(dir, model string, since time.Time) iter.Seq2[Example, error] {
	return func(yield func(Example, error) bool) {
		labels, err := readLabels(dir, model)
		if err != nil {
			yield(Example{}, err)
			return
		}
		for r, err := range Records(dir, model, since) {
			if err != nil {
				yield(Example{}, err)
				return
			}
			if lb, ok := labels[r.ID]; ok && r.ID != "" && !yieldRows(&r, lb, yield) {
				return
			}
		}
	}
}

// ReadLabeled returns every example that Examples yields.
func ReadLabeled(dir, model string, since time.Time) ([]Example, error) {
	var out []Example
	for ex, err := range Examples(dir, model, since) {
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
			ID: r.ID, Row: i, Rows: rows, Time: r.Time, Version: r.Version,
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

// readLabels returns model's latest label by request id. A last line
// without its newline is a write that a crash cut short (and that was never
// acknowledged), so it is skipped.
func readLabels(dir, model string) (map[string]Label, error) {
	if err := checkModel(model); err != nil {
		return nil, fmt.Errorf("cannot read labels of model %q: %w", model, err)
	}
	mdir := filepath.Join(dir, "capture", model)
	files, err := listFiles(mdir, labelPrefix, labelSuffix)
	if err != nil {
		return nil, err
	}
	labels := make(map[string]Label)
	for _, f := range files {
		path := filepath.Join(mdir, f.name)
		data, err := os.ReadFile(path)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("cannot read label file: %w", err)
		}
		if i := bytes.LastIndexByte(data, '\n'); i+1 < len(data) {
			data = data[:i+1]
		}
		for n, line := 1, []byte(nil); len(data) > 0; n++ {
			line, data, _ = bytes.Cut(data, []byte{'\n'})
			var lb Label
			if err := json.Unmarshal(line, &lb); err != nil {
				return nil, fmt.Errorf("cannot read label file %q: line %d: %w", path, n, err)
			}
			if old, ok := labels[lb.ID]; !ok || !lb.Time.Before(old.Time) {
				labels[lb.ID] = lb
			}
		}
	}
	return labels, nil
}
