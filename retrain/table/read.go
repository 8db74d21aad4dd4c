package table

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
)

// DefaultGroupRows is the rows of a row group of a CSV or JSON-lines
// table, which have none of their own.
const DefaultGroupRows = 64 << 10

// Chunk is a run of consecutive rows of one row group, holding the
// selected columns (Reader.Select).
type Chunk struct {
	// Group is the index of the row group, from 0; Start the index in the
	// table of the chunk's first row, from 0.
	Group int
	Start int64
	Rows  int
	// GroupEnd is set on the last chunk of a row group.
	GroupEnd bool
	// Numbers holds each selected number column's values, NaN where Nulls
	// says the file holds a null.
	Numbers [][]float64
	Nulls   [][]bool
	// Values holds each selected column of other values, carried as the
	// file holds them: text as byte arrays, nulls as null values.
	Values [][]Value
}

// Reader reads a table a row group at a time, in chunks. It is not safe
// for concurrent use.
type Reader struct {
	path    string
	format  Format
	src     source
	numbers []int
	values  []int
	group   int
	start   int64
}

// source is what a Reader reads one format through.
type source interface {
	columns() []Column
	// rows returns the table's rows, -1 when the file does not say.
	rows() int64
	// read fills c's selected columns with up to max rows of the current
	// group, from its row at, and reports whether they end the group; io.EOF
	// when no group is left.
	read(c *Chunk, numbers, values []int, max int) (groupEnd bool, err error)
	// skipGroup passes over the rest of the current group and returns its
	// rows; io.EOF when no group is left.
	skipGroup() (int64, error)
	close() error
}

// ReadOptions configure Open.
type ReadOptions struct {
	// GroupRows is the rows of a row group of a CSV or JSON-lines table
	// (default DefaultGroupRows). A Parquet file has its own.
	GroupRows int
}

// Open opens the table at path, in the format its extension names, and
// reads its columns: a Parquet file's schema, a CSV file's header, or the
// keys of a JSON-lines file's first object.
func Open(path string, o ReadOptions) (*Reader, error) {
	format, err := FormatOf(path)
	if err != nil {
		return nil, err
	}
	if o.GroupRows <= 0 {
		o.GroupRows = DefaultGroupRows
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cannot open table: %w", err)
	}
	var src source
	switch format {
	case Parquet:
		src, err = openParquet(f)
	case CSV:
		src, err = openCSV(f, o.GroupRows)
	case JSONL:
		src, err = openJSONL(f, o.GroupRows)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("cannot read table %q: %w", path, err)
	}
	return &Reader{path: path, format: format, src: src}, nil
}

// Format returns the table's format.
func (r *Reader) Format() Format { return r.format }

// Columns returns the table's columns in the file's order.
func (r *Reader) Columns() []Column { return r.src.columns() }

// Rows returns the table's rows as its file states them: a Parquet file's
// count, -1 for CSV and JSON lines, which are counted only by reading.
func (r *Reader) Rows() int64 { return r.src.rows() }

// Select chooses the columns that chunks hold: numbers, read as float64
// (a CSV cell or a JSON value that is not a number is an error naming its
// row and column), and values, carried as the file holds them. Every
// name must be a column of the table, and none a nested one (a Parquet
// LIST, STRUCT or MAP).
func (r *Reader) Select(numbers, values []string) error {
	index := func(name string) (int, error) {
		i := slices.IndexFunc(r.Columns(), func(c Column) bool { return c.Name == name })
		if i < 0 {
			return 0, fmt.Errorf("table %q has no column %q", r.path, name)
		}
		return i, nil
	}
	r.numbers, r.values = r.numbers[:0], r.values[:0]
	for _, name := range numbers {
		i, err := index(name)
		if err != nil {
			return err
		}
		if c := r.Columns()[i]; r.format == Parquet && !c.Kind.Numeric() {
			return fmt.Errorf("column %q of table %q holds %s values, not numbers", name, r.path, c.Described())
		}
		r.numbers = append(r.numbers, i)
	}
	for _, name := range values {
		i, err := index(name)
		if err != nil {
			return err
		}
		if c := r.Columns()[i]; c.Nested() {
			return fmt.Errorf("column %q of table %q holds %s values: a table reads and writes plain columns only", name, r.path, c.Described())
		}
		r.values = append(r.values, i)
	}
	return nil
}

// Next fills c with the next chunk of at most max rows; io.EOF after the
// last. A chunk never spans two row groups.
func (r *Reader) Next(c *Chunk, max int) error {
	c.Numbers = resize(c.Numbers, len(r.numbers))
	c.Nulls = resize(c.Nulls, len(r.numbers))
	c.Values = resize(c.Values, len(r.values))
	for i := range c.Numbers {
		c.Numbers[i] = slices.Grow(c.Numbers[i][:0], max)[:max]
		c.Nulls[i] = slices.Grow(c.Nulls[i][:0], max)[:max]
	}
	for i := range c.Values {
		c.Values[i] = slices.Grow(c.Values[i][:0], max)[:max]
	}
	c.Group, c.Start, c.Rows = r.group, r.start, 0
	end, err := r.src.read(c, r.numbers, r.values, max)
	if err != nil {
		if !errors.Is(err, io.EOF) {
			err = fmt.Errorf("cannot read table %q: %w", r.path, err)
		}
		return err
	}
	for i := range c.Numbers {
		c.Numbers[i], c.Nulls[i] = c.Numbers[i][:c.Rows], c.Nulls[i][:c.Rows]
	}
	for i := range c.Values {
		c.Values[i] = c.Values[i][:c.Rows]
	}
	c.GroupEnd = end
	r.start += int64(c.Rows)
	if end {
		r.group++
	}
	return nil
}

// SkipGroup passes over the rest of the current row group without
// returning its rows (a Parquet file's without reading them) and returns
// how many it held; io.EOF when no group is left.
func (r *Reader) SkipGroup() (int64, error) {
	n, err := r.src.skipGroup()
	if err != nil {
		if !errors.Is(err, io.EOF) {
			err = fmt.Errorf("cannot read table %q: %w", r.path, err)
		}
		return 0, err
	}
	r.start += n
	r.group++
	return n, nil
}

// Close closes the file.
func (r *Reader) Close() error { return r.src.close() }

// resize returns s with n elements, keeping those it has.
func resize[T any](s []T, n int) []T {
	if cap(s) < n {
		s = append(s[:cap(s)], make([]T, n-cap(s))...)
	}
	return s[:n]
}

// ReadAll reads every column of the table at path into memory, as
// values: for small tables (a test's, a report's), not for data.
func ReadAll(path string) ([]string, [][]Value, error) {
	r, err := Open(path, ReadOptions{})
	if err != nil {
		return nil, nil, err
	}
	defer r.Close()
	var names []string
	for _, c := range r.Columns() {
		names = append(names, c.Name)
	}
	if err := r.Select(nil, names); err != nil {
		return nil, nil, err
	}
	var rows [][]Value
	var c Chunk
	for {
		err := r.Next(&c, 4096)
		if errors.Is(err, io.EOF) {
			return names, rows, nil
		}
		if err != nil {
			return nil, nil, err
		}
		for i := range c.Rows {
			row := make([]Value, len(names))
			for k := range names {
				row[k] = c.Values[k][i]
			}
			rows = append(rows, row)
		}
	}
}
