package table

import (
	"bufio"
	"cmp"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"os"
	"strconv"
	"time"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/compress/zstd"
)

// zstdCodec compresses every Parquet file written, sharing its pool of
// encoders (a codec of each writer's own would allocate their history
// windows afresh for each file).
var zstdCodec = &zstd.Codec{}

// WriteOptions configure a Writer.
type WriteOptions struct {
	// RowGroupRows and RowGroupBytes bound a Parquet row group, which is
	// kept in memory, its pages compressed, until it is complete: once it
	// holds RowGroupRows rows (default 131072) or RowGroupBytes bytes of
	// values as they take in memory before encoding (default 32MiB).
	RowGroupRows  int64
	RowGroupBytes int64
	// CreatedBy names the writer in a Parquet file's footer.
	CreatedBy string
}

func (o WriteOptions) withDefaults() WriteOptions {
	if o.RowGroupRows <= 0 {
		o.RowGroupRows = 128 << 10
	}
	if o.RowGroupBytes <= 0 {
		o.RowGroupBytes = 32 << 20
	}
	if o.CreatedBy == "" {
		o.CreatedBy = "infergate"
	}
	return o
}

// Writer writes rows of a table's columns in one format to an io.Writer.
// It is not safe for concurrent use.
type Writer struct {
	cols []Column
	o    WriteOptions
	rows int64

	pq                    *parquet.Writer
	row                   parquet.Row
	groupRows, groupBytes int64
	// kinds are the columns' physical types, which their values must have.
	kinds []parquet.Kind

	csv    *csv.Writer
	record []string
	text   []byte

	jsonl *bufio.Writer
	names [][]byte // the JSON-quoted column names
}

// NewWriter returns a Writer of rows of cols in format f to w. Close
// writes what it holds back (a Parquet file's footer); w is not closed.
func NewWriter(w io.Writer, f Format, cols []Column, o WriteOptions) (*Writer, error) {
	tw := &Writer{cols: cols, o: o.withDefaults()}
	switch f {
	case Parquet:
		schema := parquet.NewSchema("table", Schema(cols))
		cfg, err := parquet.NewWriterConfig(schema, parquet.Compression(zstdCodec),
			parquet.MaxRowsPerRowGroup(tw.o.RowGroupRows), parquet.CreatedBy(tw.o.CreatedBy, "", ""))
		if err != nil {
			return nil, fmt.Errorf("cannot write parquet: %w", err)
		}
		tw.pq = parquet.NewWriter(w, cfg)
		for _, c := range cols {
			tw.kinds = append(tw.kinds, c.parquetNode().Type().Kind())
		}
	case CSV:
		tw.csv = csv.NewWriter(w)
		header := make([]string, len(cols))
		for i, c := range cols {
			header[i] = c.Name
		}
		if err := tw.csv.Write(header); err != nil {
			return nil, fmt.Errorf("cannot write csv: %w", err)
		}
		tw.record = make([]string, len(cols))
	case JSONL:
		tw.jsonl = bufio.NewWriterSize(w, 64<<10)
		for _, c := range cols {
			q, _ := json.Marshal(c.Name) // cannot fail for a string
			tw.names = append(tw.names, q)
		}
	default:
		return nil, fmt.Errorf("cannot write format %q: want parquet, csv or jsonl", f)
	}
	return tw, nil
}

// Columns returns the columns the writer writes.
func (w *Writer) Columns() []Column { return w.cols }

// Rows returns the rows written so far.
func (w *Writer) Rows() int64 { return w.rows }

// WriteRow writes one row: a value of each column, in order, of the
// column's physical type (Int64 as INT64, Float32 as FLOAT, Timestamp as
// INT64 microseconds, text as a byte array) or null. NaN and infinities
// are written as null in CSV and JSON lines.
func (w *Writer) WriteRow(values []Value) error {
	if len(values) != len(w.cols) {
		return fmt.Errorf("BUG: a row of %d values for %d columns", len(values), len(w.cols))
	}
	var err error
	switch {
	case w.pq != nil:
		err = w.writeParquet(values)
	case w.csv != nil:
		for i, v := range values {
			w.text = appendText(w.text[:0], w.cols[i], v, false)
			w.record[i] = string(w.text)
		}
		err = w.csv.Write(w.record)
	default:
		b := append(w.text[:0], '{')
		for i, v := range values {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(append(b, w.names[i]...), ':')
			b = appendText(b, w.cols[i], v, true)
		}
		w.text = append(b, '}', '\n')
		_, err = w.jsonl.Write(w.text)
	}
	if err != nil {
		return fmt.Errorf("cannot write a row: %w", err)
	}
	w.rows++
	return nil
}

func (w *Writer) writeParquet(values []Value) error {
	row := w.row[:0]
	size := int64(0)
	for i, v := range values {
		def := 0
		if !v.IsNull() {
			if v.Kind() != w.kinds[i] {
				return fmt.Errorf("column %q holds %s values, not %s", w.cols[i].Name, w.kinds[i], v.Kind())
			}
			if w.cols[i].Optional {
				def = 1
			}
			size += 8
			if k := v.Kind(); k == parquet.ByteArray || k == parquet.FixedLenByteArray {
				size += int64(len(v.ByteArray()))
			}
		} else if !w.cols[i].Optional {
			return fmt.Errorf("column %q cannot hold a null", w.cols[i].Name)
		}
		row = append(row, v.Level(0, def, i))
	}
	w.row = row
	if _, err := w.pq.WriteRows([]parquet.Row{row}); err != nil {
		return err
	}
	w.groupRows++
	w.groupBytes += size
	if w.groupRows >= w.o.RowGroupRows || w.groupBytes >= w.o.RowGroupBytes {
		if err := w.pq.Flush(); err != nil {
			return err
		}
		w.groupRows, w.groupBytes = 0, 0
	}
	return nil
}

// copyFiles bounds the Parquet files CopyParquet holds open at once.
const copyFiles = 64

// CopyParquet writes the rows of the Parquet files at paths, in order,
// which Writers of w's columns wrote, after the rows written so far (which
// it writes out first, as a row group of their own). Consecutive row
// groups are handed to parquet-go together, up to about RowGroupRows rows:
// it splices one that makes a row group alone in as it is compressed,
// without decoding a value, and packs smaller ones into one row group
// column by column, so that a file of many small parts is not as
// fragmented as they are.
func (w *Writer) CopyParquet(paths []string) error {
	if w.pq == nil {
		return errors.New("BUG: CopyParquet into a table that is not Parquet")
	}
	var (
		files  []*os.File
		groups []parquet.RowGroup
		rows   int64
	)
	closeFiles := func() {
		for _, f := range files {
			f.Close()
		}
		files, groups, rows = files[:0], groups[:0], 0
	}
	defer closeFiles()
	flush := func() error {
		var n int64
		var err error
		switch len(groups) {
		case 0: // parts of no rows
			closeFiles()
			return nil
		case 1:
			n, err = w.pq.WriteRowGroup(groups[0])
		default:
			n, err = w.pq.WriteRowGroup(parquet.MultiRowGroup(groups...))
		}
		w.rows += n
		w.groupRows, w.groupBytes = 0, 0
		if err != nil {
			err = fmt.Errorf("cannot copy the rows of %q to %q: %w", files[0].Name(), files[len(files)-1].Name(), err)
		}
		closeFiles()
		return err
	}
	for _, path := range paths {
		if rows >= w.o.RowGroupRows || len(files) >= copyFiles {
			if err := flush(); err != nil {
				return err
			}
		}
		f, err := os.Open(path)
		if err != nil {
			return fmt.Errorf("cannot copy the rows of %q: %w", path, err)
		}
		files = append(files, f)
		st, err := f.Stat()
		if err != nil {
			return fmt.Errorf("cannot copy the rows of %q: %w", path, err)
		}
		pf, err := parquet.OpenFile(f, st.Size())
		if err != nil {
			return fmt.Errorf("cannot copy the rows of %q: %w", path, err)
		}
		for _, rg := range pf.RowGroups() {
			groups = append(groups, rg)
			rows += rg.NumRows()
		}
	}
	return flush()
}

// Close writes out what the writer holds: the last row group and the
// footer of a Parquet file, buffered CSV or JSON lines.
func (w *Writer) Close() error {
	var err error
	switch {
	case w.pq != nil:
		err = w.pq.Close()
	case w.csv != nil:
		w.csv.Flush()
		err = w.csv.Error()
	default:
		err = w.jsonl.Flush()
	}
	if err != nil {
		return fmt.Errorf("cannot finish writing a table: %w", err)
	}
	return nil
}

// appendText appends v, of column c, as text: as JSON when asJSON (text
// quoted, null for a null or a number that is not finite), else as a CSV
// cell (empty for those). A decimal is written as its number with its
// scale's digits, a DATE as 2006-01-02, a TIME as 15:04:05.999999999, a
// timestamp in RFC 3339, an unsigned integer as such, a UUID as
// 8-4-4-4-12 hex digits, another fixed-length byte array in hex.
func appendText(b []byte, c Column, v Value, asJSON bool) []byte {
	null := "null"
	if !asJSON {
		null = ""
	}
	if v.IsNull() {
		return append(b, null...)
	}
	finite := func(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }
	quote := func(text []byte) []byte {
		if asJSON {
			return strconv.AppendQuote(b, string(text))
		}
		return append(b, text...)
	}
	switch c.logical {
	case bytesDecimal:
		return append(b, decimalText(bigDecimal(v.ByteArray()), c.digits)...)
	case uuid:
		if u := v.ByteArray(); len(u) == 16 {
			h := hex.AppendEncode(nil, u)
			return quote(fmt.Appendf(nil, "%s-%s-%s-%s-%s", h[:8], h[8:12], h[12:16], h[16:20], h[20:]))
		}
	}
	switch v.Kind() {
	case parquet.Boolean:
		return strconv.AppendBool(b, v.Boolean())
	case parquet.Int32, parquet.Int64:
		n := v.Int64()
		if v.Kind() == parquet.Int32 {
			n = int64(v.Int32())
		}
		switch {
		case c.Kind == Timestamp:
			t := time.Unix(0, 0).Add(time.Duration(n) * cmp.Or(c.unit, time.Microsecond))
			return quote(t.UTC().AppendFormat(nil, "2006-01-02T15:04:05.999999999Z07:00"))
		case c.logical == date:
			return quote(time.Unix(n*86400, 0).UTC().AppendFormat(nil, "2006-01-02"))
		case c.logical == timeOfDay:
			t := time.Unix(0, 0).Add(time.Duration(n) * cmp.Or(c.unit, time.Microsecond))
			return quote(t.UTC().AppendFormat(nil, "15:04:05.999999999"))
		case c.logical == unsigned && v.Kind() == parquet.Int32:
			return strconv.AppendUint(b, uint64(v.Uint32()), 10)
		case c.logical == unsigned:
			return strconv.AppendUint(b, v.Uint64(), 10)
		case c.scale != 0:
			return append(b, decimalText(big.NewInt(n), c.digits)...)
		}
		return strconv.AppendInt(b, n, 10)
	case parquet.FixedLenByteArray:
		return quote(hex.AppendEncode(nil, v.ByteArray()))
	case parquet.Int96:
		if asJSON {
			return strconv.AppendQuote(b, v.Int96().String())
		}
		return append(b, v.Int96().String()...)
	case parquet.Float:
		if x := float64(v.Float()); !finite(x) {
			return append(b, null...)
		}
		return strconv.AppendFloat(b, float64(v.Float()), 'g', -1, 32)
	case parquet.Double:
		if !finite(v.Double()) {
			return append(b, null...)
		}
		return strconv.AppendFloat(b, v.Double(), 'g', -1, 64)
	}
	if asJSON {
		q, _ := json.Marshal(string(v.ByteArray())) // invalid UTF-8 becomes U+FFFD
		return append(b, q...)
	}
	return append(b, v.ByteArray()...)
}
