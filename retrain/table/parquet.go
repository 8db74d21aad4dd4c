package table

import (
	"errors"
	"fmt"
	"io"
	"os"
	"unsafe"

	"github.com/parquet-go/parquet-go"
)

// parquetSource reads a Parquet file's row groups, each selected column
// through its own cursor over the column chunk's pages, in step.
type parquetSource struct {
	f    *os.File
	pf   *parquet.File
	cols []Column
	// leaves are the column indices of cols in the file's leaf columns
	// (-1 for a column that is not a leaf).
	leaves []int
	group  int
	// at is the next row of the group to read; cursors read the group's
	// selected columns, numbers then values (nil until the group's first
	// read).
	at      int64
	cursors []*cursor
	buf     []parquet.Value
}

func openParquet(f *os.File) (*parquetSource, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() == 0 {
		return nil, errors.New("the file is empty")
	}
	pf, err := parquet.OpenFile(f, st.Size(), parquet.SkipPageIndex(true), parquet.SkipBloomFilters(true))
	if err != nil {
		return nil, fmt.Errorf("not a Parquet file: %w", err)
	}
	s := &parquetSource{f: f, pf: pf}
	for _, field := range pf.Schema().Fields() {
		c := columnOf(field)
		leaf := -1
		if field.Leaf() && !field.Repeated() {
			if l, ok := pf.Schema().Lookup(field.Name()); ok {
				leaf = l.ColumnIndex
			}
		}
		s.cols, s.leaves = append(s.cols, c), append(s.leaves, leaf)
	}
	return s, nil
}

func (s *parquetSource) columns() []Column { return s.cols }
func (s *parquetSource) rows() int64       { return s.pf.NumRows() }
func (s *parquetSource) close() error {
	s.closeCursors()
	return s.f.Close()
}

func (s *parquetSource) read(c *Chunk, numbers, values []int, max int) (bool, error) {
	groups := s.pf.RowGroups()
	if s.group == len(groups) {
		return false, io.EOF
	}
	rg := groups[s.group]
	if rg.NumRows() == 0 { // an empty group is one chunk of no rows
		s.nextGroup()
		return true, nil
	}
	if s.cursors == nil {
		for _, i := range append(numbers[:len(numbers):len(numbers)], values...) {
			if s.leaves[i] < 0 {
				return false, fmt.Errorf("column %q is not a plain column (a nested group or repeated values)", s.cols[i].Name)
			}
			s.cursors = append(s.cursors, &cursor{pages: rg.ColumnChunks()[s.leaves[i]].Pages(), col: &s.cols[i]})
		}
	}
	n := int(min(int64(max), rg.NumRows()-s.at))
	if cap(s.buf) < n {
		s.buf = make([]parquet.Value, n)
	}
	buf := s.buf[:n]
	for k, i := range numbers {
		if err := s.cursors[k].readNumbers(c.Numbers[k][:n], c.Nulls[k][:n], buf); err != nil {
			return false, fmt.Errorf("column %q, row group %d: %w", s.cols[i].Name, s.group, err)
		}
	}
	for k, i := range values {
		if err := s.cursors[len(numbers)+k].read(buf); err != nil {
			return false, fmt.Errorf("column %q, row group %d: %w", s.cols[i].Name, s.group, err)
		}
		dst := c.Values[k]
		for r, v := range buf {
			dst[r] = v.Clone() // the page's memory is reused
		}
	}
	c.Rows = n
	s.at += int64(n)
	if s.at < rg.NumRows() {
		return false, nil
	}
	s.nextGroup()
	return true, nil
}

func (s *parquetSource) skipGroup() (int64, error) {
	groups := s.pf.RowGroups()
	if s.group == len(groups) {
		return 0, io.EOF
	}
	n := groups[s.group].NumRows() - s.at
	s.nextGroup()
	return n, nil
}

func (s *parquetSource) nextGroup() {
	s.closeCursors()
	s.group++
	s.at = 0
}

func (s *parquetSource) closeCursors() {
	for _, c := range s.cursors {
		c.close()
	}
	s.cursors = nil
}

// cursor reads one column chunk's values, a page after another.
type cursor struct {
	pages  parquet.Pages
	values parquet.ValueReader
	// col is the column read, whose type says how its values are numbers.
	col *Column
}

// read fills dst with the column's next values.
func (c *cursor) read(dst []parquet.Value) error {
	for n := 0; n < len(dst); {
		if err := c.open(len(dst) - n); err != nil {
			return err
		}
		m, err := c.values.ReadValues(dst[n:])
		n += m
		if errors.Is(err, io.EOF) {
			// Not released to the page pool: values already read may
			// still point into it.
			c.values = nil
		} else if err != nil {
			return err
		}
	}
	return nil
}

func (c *cursor) close() { c.pages.Close() }

// open reads the column's next page, unless one is open; the chunk ending
// while want values are still to be read is an error.
func (c *cursor) open(want int) error {
	if c.values != nil {
		return nil
	}
	p, err := c.pages.ReadPage()
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("the column chunk ends %d values early", want)
	}
	if err != nil {
		return err
	}
	c.values = p.Values()
	return nil
}

// readNumbers fills nums with the column's next values as numbers, and
// nulls with whether each is null (its number NaN). FLOAT and DOUBLE pages
// without nulls are copied as they are; others go through buf, a value
// at a time.
func (c *cursor) readNumbers(nums []float64, nulls []bool, buf []parquet.Value) error {
	for n := 0; n < len(nums); {
		if err := c.open(len(nums) - n); err != nil {
			return err
		}
		var m int
		var err error
		switch r := c.values.(type) {
		case parquet.DoubleReader:
			m, err = r.ReadDoubles(nums[n:])
			clear(nulls[n : n+m])
		case parquet.FloatReader:
			f32 := unsafe.Slice((*float32)(unsafe.Pointer(unsafe.SliceData(nums[n:]))), len(nums)-n)
			m, err = r.ReadFloats(f32[:(len(nums) - n)])
			// Widen in place, from the last: float32 i sits in the bytes
			// of float64 i/2, which no earlier float64 overwrites.
			for i := m - 1; i >= 0; i-- {
				nums[n+i] = float64(f32[i])
			}
			clear(nulls[n : n+m])
		default:
			m, err = r.ReadValues(buf[:len(nums)-n])
			plain := c.col.plainNumbers()
			for i, v := range buf[:m] {
				nulls[n+i] = v.IsNull()
				switch {
				case nulls[n+i]:
					nums[n+i] = nan
				case plain:
					nums[n+i] = number(v)
				default:
					nums[n+i] = c.col.numberOf(v)
				}
			}
		}
		n += m
		if errors.Is(err, io.EOF) {
			c.values = nil
		} else if err != nil {
			return err
		}
	}
	return nil
}
