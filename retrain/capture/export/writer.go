package export

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strconv"
	"time"

	"github.com/infergate/infergate/retrain/capture"
	"github.com/infergate/infergate/retrain/table"
)

// Format is the file format of an export.
type Format string

// The formats an export is written in.
const (
	Parquet Format = "parquet"
	JSONL   Format = "jsonl"
)

// ParseFormat returns the format s names.
func ParseFormat(s string) (Format, error) {
	switch f := Format(s); f {
	case Parquet, JSONL:
		return f, nil
	}
	return "", fmt.Errorf("unknown format %q: want parquet or jsonl", s)
}

// Options bound the row groups of a Parquet export (see
// table.WriteOptions; CreatedBy is set by the export).
type Options = table.WriteOptions

// Writer writes rows of captured traffic in one format to an io.Writer.
// It is not safe for concurrent use.
type Writer struct {
	layout Layout
	rows   int64

	// jsonl writes JSON lines, built in line; nil for Parquet.
	jsonl *bufio.Writer
	line  []byte

	// pq writes Parquet, one row of values at a time through row.
	pq  *table.Writer
	row []table.Value
	// label holds the compacted label of the row being written.
	label bytes.Buffer
}

// NewWriter returns a Writer of rows laid out by l, in format f, to w.
// Close writes what it holds back (the Parquet footer); w is not closed.
func NewWriter(w io.Writer, f Format, l Layout, o Options) (*Writer, error) {
	ew := &Writer{layout: l}
	switch f {
	case JSONL:
		ew.jsonl = bufio.NewWriterSize(w, 64<<10)
	case Parquet:
		o.CreatedBy = "infergate capture export"
		pq, err := table.NewWriter(w, table.Parquet, l.columns(), o)
		if err != nil {
			return nil, err
		}
		ew.pq = pq
	default:
		return nil, fmt.Errorf("cannot write format %q: want parquet or jsonl", f)
	}
	return ew, nil
}

// Layout returns the layout of the rows the writer writes.
func (w *Writer) Layout() Layout { return w.layout }

// Rows returns the rows written so far.
func (w *Writer) Rows() int64 { return w.rows }

// Write writes ex as one row; an error when its tensors do not have the
// layout's values (another version's tensors, say).
func (w *Writer) Write(ex *capture.Example) error {
	if err := w.layout.fits(ex); err != nil {
		return err
	}
	w.label.Reset()
	if len(bytes.TrimSpace(ex.Label)) > 0 {
		if err := json.Compact(&w.label, ex.Label); err != nil {
			return fmt.Errorf("cannot write the label of request %q: %w", ex.ID, err)
		}
	}
	var err error
	if w.jsonl != nil {
		err = w.writeLine(ex)
	} else {
		err = w.writeRow(ex)
	}
	if err != nil {
		return err
	}
	w.rows++
	return nil
}

// Close writes out what the writer holds: the last row group and the
// footer of a Parquet file, buffered JSON lines.
func (w *Writer) Close() error {
	var err error
	if w.jsonl != nil {
		err = w.jsonl.Flush()
	} else {
		err = w.pq.Close()
	}
	if err != nil {
		return fmt.Errorf("cannot finish the export: %w", err)
	}
	return nil
}

// exportTime is the time of a row as exported: UTC, to the microsecond.
func exportTime(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

// timeLayout writes a row's time in JSON lines, always with microseconds.
const timeLayout = "2006-01-02T15:04:05.000000Z07:00"

func (w *Writer) writeLine(ex *capture.Example) error {
	b := append(w.line[:0], `{"id":`...)
	b = appendString(b, ex.ID)
	b = append(b, `,"time":"`...)
	b = exportTime(ex.Time).AppendFormat(b, timeLayout)
	b = appendString(append(b, `","version":`...), ex.Version)
	b = appendString(append(b, `,"replica":`...), ex.Replica)
	for _, set := range []struct {
		ts     []Tensor
		values map[string][]float64
	}{{w.layout.Inputs, ex.Inputs}, {w.layout.Outputs, ex.Outputs}} {
		for _, t := range set.ts {
			for j, v := range set.values[t.Name] {
				b = appendString(append(b, ','), t.Columns[j])
				b = appendValue(append(b, ':'), t.Kind, v)
			}
		}
	}
	b = append(b, `,"label":`...)
	if w.label.Len() > 0 {
		b = append(b, w.label.Bytes()...)
	} else {
		b = append(b, "null"...)
	}
	w.line = append(b, "}\n"...)
	if _, err := w.jsonl.Write(w.line); err != nil {
		return fmt.Errorf("cannot write the export: %w", err)
	}
	return nil
}

// appendValue appends v as a JSON value of kind k: FP32 at its shortest
// float32 form, NaN and infinities as null.
func appendValue(b []byte, k Kind, v float64) []byte {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return append(b, "null"...)
	}
	switch k {
	case Float:
		return strconv.AppendFloat(b, float64(float32(v)), 'g', -1, 32)
	case Int64:
		return strconv.AppendInt(b, int64(v), 10)
	case Bool:
		return strconv.AppendBool(b, v != 0)
	}
	return strconv.AppendFloat(b, v, 'g', -1, 64)
}

// appendString appends s as a JSON string; invalid UTF-8 becomes U+FFFD.
func appendString(b []byte, s string) []byte {
	q, _ := json.Marshal(s) // cannot fail for a string
	return append(b, q...)
}

func (w *Writer) writeRow(ex *capture.Example) error {
	row := append(w.row[:0],
		table.TextValue([]byte(ex.ID)),
		table.Int64Value(exportTime(ex.Time).UnixMicro()),
		table.TextValue([]byte(ex.Version)),
		table.TextValue([]byte(ex.Replica)))
	for _, set := range []struct {
		ts     []Tensor
		values map[string][]float64
	}{{w.layout.Inputs, ex.Inputs}, {w.layout.Outputs, ex.Outputs}} {
		for _, t := range set.ts {
			for _, v := range set.values[t.Name] {
				pv, err := parquetValue(t.Kind, v)
				if err != nil {
					return fmt.Errorf("cannot write row %d of request %q: %s: %w", ex.Row, ex.ID, t.Name, err)
				}
				row = append(row, pv)
			}
		}
	}
	if w.label.Len() > 0 {
		row = append(row, table.TextValue(w.label.Bytes()))
	} else {
		row = append(row, table.NullValue())
	}
	w.row = row
	if err := w.pq.WriteRow(row); err != nil {
		return fmt.Errorf("cannot write the export: %w", err)
	}
	return nil
}

// parquetValue returns v as a value of kind k; an integer or boolean
// column cannot hold NaN, which a captured null is.
func parquetValue(k Kind, v float64) (table.Value, error) {
	switch k {
	case Float:
		return table.Float32Value(float32(v)), nil
	case Double:
		return table.Float64Value(v), nil
	}
	if math.IsNaN(v) {
		return table.Value{}, fmt.Errorf("a %s column cannot hold a missing value", k)
	}
	if k == Bool {
		return table.BoolValue(v != 0), nil
	}
	return table.Int64Value(int64(v)), nil
}

// columns returns the table columns of l, in order.
func (l Layout) columns() []table.Column {
	cols := []table.Column{
		{Name: "id", Kind: table.String},
		{Name: "time", Kind: table.Timestamp},
		{Name: "version", Kind: table.String, Dictionary: true},
		{Name: "replica", Kind: table.String, Dictionary: true},
	}
	for _, ts := range [][]Tensor{l.Inputs, l.Outputs} {
		for _, t := range ts {
			var kind table.Kind
			switch t.Kind {
			case Float:
				kind = table.Float32
			case Double:
				kind = table.Float64
			case Int64:
				kind = table.Int64
			case Bool:
				kind = table.Bool
			default:
				panic(fmt.Sprintf("BUG: tensor %q has no column kind", t.Name))
			}
			for _, c := range t.Columns {
				cols = append(cols, table.Column{Name: c, Kind: kind})
			}
		}
	}
	return append(cols, table.Column{Name: "label", Kind: table.String, Optional: true})
}
