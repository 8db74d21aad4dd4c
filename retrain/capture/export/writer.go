package export

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"reflect"
	"strconv"
	"time"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/compress"
	"github.com/parquet-go/parquet-go/compress/zstd"
	"github.com/parquet-go/parquet-go/encoding"

	"github.com/infergate/infergate/retrain/capture"
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

// Options bound the row groups of a Parquet export. A row group is kept in
// memory, its pages compressed, until it is complete; it is complete once
// it holds RowGroupRows rows or RowGroupBytes bytes of values (as they take
// in memory, before encoding), whichever comes first.
type Options struct {
	// RowGroupRows defaults to 131072.
	RowGroupRows int64
	// RowGroupBytes defaults to 32MiB (a row group takes about 3 times
	// that in memory while it fills).
	RowGroupBytes int64
}

func (o Options) withDefaults() Options {
	if o.RowGroupRows <= 0 {
		o.RowGroupRows = 128 << 10
	}
	if o.RowGroupBytes <= 0 {
		o.RowGroupBytes = 32 << 20
	}
	return o
}

// Writer writes rows of captured traffic in one format to an io.Writer.
// It is not safe for concurrent use.
type Writer struct {
	layout Layout
	o      Options
	rows   int64

	// jsonl writes JSON lines, built in line; nil for Parquet.
	jsonl *bufio.Writer
	line  []byte

	// pq writes Parquet, one row of values at a time through row;
	// groupRows and groupBytes are what its open row group holds.
	pq                    *parquet.Writer
	row                   parquet.Row
	groupRows, groupBytes int64
	// label holds the compacted label of the row being written.
	label bytes.Buffer
}

// NewWriter returns a Writer of rows laid out by l, in format f, to w.
// Close writes what it holds back (the Parquet footer); w is not closed.
func NewWriter(w io.Writer, f Format, l Layout, o Options) (*Writer, error) {
	ew := &Writer{layout: l, o: o.withDefaults()}
	switch f {
	case JSONL:
		ew.jsonl = bufio.NewWriterSize(w, 64<<10)
	case Parquet:
		schema := parquet.NewSchema("capture", l.schema())
		cfg, err := parquet.NewWriterConfig(schema, parquet.Compression(&zstd.Codec{}),
			parquet.MaxRowsPerRowGroup(ew.o.RowGroupRows), parquet.CreatedBy("infergate capture export", "", ""))
		if err != nil {
			return nil, fmt.Errorf("cannot write parquet: %w", err)
		}
		ew.pq = parquet.NewWriter(w, cfg)
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
	row := w.row[:0]
	col := 0
	add := func(v parquet.Value, definition int) {
		row = append(row, v.Level(0, definition, col))
		col++
	}
	size := int64(len(ex.ID) + len(ex.Version) + len(ex.Replica) + w.label.Len() + 8)
	add(parquet.ByteArrayValue([]byte(ex.ID)), 0)
	add(parquet.Int64Value(exportTime(ex.Time).UnixMicro()), 0)
	add(parquet.ByteArrayValue([]byte(ex.Version)), 0)
	add(parquet.ByteArrayValue([]byte(ex.Replica)), 0)
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
				add(pv, 0)
				size += 8
			}
		}
	}
	if w.label.Len() > 0 {
		add(parquet.ByteArrayValue(w.label.Bytes()), 1)
	} else {
		add(parquet.NullValue(), 0)
	}
	w.row = row
	if _, err := w.pq.WriteRows([]parquet.Row{row}); err != nil {
		return fmt.Errorf("cannot write the export: %w", err)
	}
	w.groupRows++
	w.groupBytes += size
	if w.groupRows >= w.o.RowGroupRows || w.groupBytes >= w.o.RowGroupBytes {
		if err := w.pq.Flush(); err != nil {
			return fmt.Errorf("cannot write the export: %w", err)
		}
		w.groupRows, w.groupBytes = 0, 0
	}
	return nil
}

// parquetValue returns v as a value of kind k; an integer or boolean
// column cannot hold NaN, which a captured null is.
func parquetValue(k Kind, v float64) (parquet.Value, error) {
	switch k {
	case Float:
		return parquet.FloatValue(float32(v)), nil
	case Double:
		return parquet.DoubleValue(v), nil
	}
	if math.IsNaN(v) {
		return parquet.Value{}, fmt.Errorf("a %s column cannot hold a missing value", k)
	}
	if k == Bool {
		return parquet.BooleanValue(v != 0), nil
	}
	return parquet.Int64Value(int64(v)), nil
}

// schema returns the Parquet schema of l's columns, in order.
func (l Layout) schema() parquet.Node {
	dict := func(n parquet.Node) parquet.Node { return parquet.Encoded(n, &parquet.RLEDictionary) }
	g := group{
		{"id", parquet.String()},
		{"time", parquet.Timestamp(parquet.Microsecond)},
		{"version", dict(parquet.String())},
		{"replica", dict(parquet.String())},
	}
	for _, ts := range [][]Tensor{l.Inputs, l.Outputs} {
		for _, t := range ts {
			var leaf parquet.Node
			switch t.Kind {
			case Float:
				leaf = parquet.Leaf(parquet.FloatType)
			case Double:
				leaf = parquet.Leaf(parquet.DoubleType)
			case Int64:
				leaf = parquet.Leaf(parquet.Int64Type)
			case Bool:
				leaf = parquet.Leaf(parquet.BooleanType)
			default:
				panic(fmt.Sprintf("BUG: tensor %q has no column kind", t.Name))
			}
			for _, c := range t.Columns {
				g = append(g, column{c, leaf})
			}
		}
	}
	return append(g, column{"label", parquet.Optional(parquet.String())})
}

// group is a Parquet group whose fields keep the order they are listed in
// (parquet.Group sorts its fields by name, which would scatter a model's
// features).
type group []column

// column is one field of a group.
type column struct {
	name string
	node parquet.Node
}

var _ parquet.Node = group(nil)

// ID is a group's field id: none.
func (g group) ID() int { return 0 }

// String describes the group's fields.
func (g group) String() string {
	var b bytes.Buffer
	b.WriteString("group {")
	for i, c := range g {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s %s", c.name, c.node)
	}
	b.WriteString("}")
	return b.String()
}

// Type is the type of every group.
func (g group) Type() parquet.Type { return parquet.Group{}.Type() }

// Optional is false: the root group is required.
func (g group) Optional() bool { return false }

// Repeated is false: the root group is required.
func (g group) Repeated() bool { return false }

// Required is true: the root group is required.
func (g group) Required() bool { return true }

// Leaf is false for a group.
func (g group) Leaf() bool { return false }

// Fields returns the group's fields in order.
func (g group) Fields() []parquet.Field {
	out := make([]parquet.Field, len(g))
	for i, c := range g {
		out[i] = field{column: c, index: i}
	}
	return out
}

// Encoding is nil: each column has its own.
func (g group) Encoding() encoding.Encoding { return nil }

// Compression is nil: the writer's applies.
func (g group) Compression() compress.Codec { return nil }

// GoType is a struct of the fields' Go types, in order.
func (g group) GoType() reflect.Type {
	fields := make([]reflect.StructField, len(g))
	for i, c := range g {
		fields[i] = reflect.StructField{
			Name: "F" + strconv.Itoa(i), Type: c.node.GoType(),
			Tag: reflect.StructTag(`parquet:` + strconv.Quote(c.name)),
		}
	}
	return reflect.StructOf(fields)
}

// field is a column of a group as parquet.Field, at index among its
// fields.
type field struct {
	column
	index int
}

// ID is the column's field id: none.
func (f field) ID() int { return 0 }

// String describes the column.
func (f field) String() string { return f.name + " " + f.node.String() }

// Type is the column's type.
func (f field) Type() parquet.Type { return f.node.Type() }

// Optional reports whether the column may hold nulls.
func (f field) Optional() bool { return f.node.Optional() }

// Repeated is false: no column repeats.
func (f field) Repeated() bool { return f.node.Repeated() }

// Required reports whether the column holds a value in every row.
func (f field) Required() bool { return f.node.Required() }

// Leaf is true: every column is a leaf.
func (f field) Leaf() bool { return f.node.Leaf() }

// Fields is empty for a leaf.
func (f field) Fields() []parquet.Field { return f.node.Fields() }

// Encoding is the column's encoding, nil for the default.
func (f field) Encoding() encoding.Encoding { return f.node.Encoding() }

// Compression is the column's compression, nil for the writer's.
func (f field) Compression() compress.Codec { return f.node.Compression() }

// GoType is the Go type of the column's values.
func (f field) GoType() reflect.Type { return f.node.GoType() }

// Name is the column's name.
func (f field) Name() string { return f.name }

// Value returns the field of a struct of the group's GoType.
func (f field) Value(base reflect.Value) reflect.Value {
	for base.Kind() == reflect.Interface || base.Kind() == reflect.Pointer {
		if base.IsNil() {
			return reflect.Value{}
		}
		base = base.Elem()
	}
	if base.Kind() != reflect.Struct || base.NumField() <= f.index {
		return reflect.Value{}
	}
	return base.Field(f.index)
}
