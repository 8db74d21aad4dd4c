package table

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/valyala/fastjson"
)

var nan = math.NaN()

// textSource reads a CSV or JSON-lines table a record at a time, in row
// groups of groupRows rows, looking one record ahead to know where the
// table ends.
type textSource struct {
	f         *os.File
	cols      []Column
	groupRows int64
	// at is the next row of the current group; row the table's rows read.
	at, row int64
	// next reads a record into the source's own state and reports false at
	// the end of the file; cell returns a column's value of that record.
	next   func() (bool, error)
	number func(col int) (x float64, null bool, err error)
	value  func(col int) Value
	// ahead is set while a record waits in the state, read ahead.
	ahead bool
	done  bool
}

func (s *textSource) columns() []Column { return s.cols }
func (s *textSource) rows() int64       { return -1 }
func (s *textSource) close() error      { return s.f.Close() }

// fill reads ahead when no record waits.
func (s *textSource) fill() error {
	if s.ahead || s.done {
		return nil
	}
	ok, err := s.next()
	if err != nil {
		return fmt.Errorf("row %d: %w", s.row+1, err)
	}
	s.ahead, s.done = ok, !ok
	return nil
}

func (s *textSource) read(c *Chunk, numbers, values []int, max int) (bool, error) {
	if err := s.fill(); err != nil {
		return false, err
	}
	if !s.ahead {
		return false, io.EOF
	}
	n := 0
	for n < max && s.at < s.groupRows && s.ahead {
		for k, col := range numbers {
			x, null, err := s.number(col)
			if err != nil {
				return false, fmt.Errorf("row %d, column %q: %w", s.row+1, s.cols[col].Name, err)
			}
			c.Numbers[k][n], c.Nulls[k][n] = x, null
		}
		for k, col := range values {
			c.Values[k][n] = s.value(col)
		}
		n++
		s.at++
		s.row++
		s.ahead = false
		if err := s.fill(); err != nil {
			return false, err
		}
	}
	c.Rows = n
	if s.at < s.groupRows && s.ahead {
		return false, nil
	}
	s.at = 0
	return true, nil
}

func (s *textSource) skipGroup() (int64, error) {
	if err := s.fill(); err != nil {
		return 0, err
	}
	if !s.ahead {
		return 0, io.EOF
	}
	var n int64
	for s.at < s.groupRows && s.ahead {
		n++
		s.at++
		s.row++
		s.ahead = false
		if err := s.fill(); err != nil {
			return 0, err
		}
	}
	s.at = 0
	return n, nil
}

// nullSpellings are the cells a number column reads as null besides an
// empty one: how R, pandas, SQL clients and MySQL (\N) write a missing
// value.
var nullSpellings = map[string]bool{
	"NULL": true, "null": true, "Null": true, "NA": true, "N/A": true, "n/a": true, "#N/A": true,
	"<NA>": true, "None": true, `\N`: true,
}

// parseNumber parses a CSV cell: empty or a null spelling is null, true
// and false are 1 and 0.
func parseNumber(cell string) (float64, bool, error) {
	t := strings.TrimSpace(cell)
	if len(t) == 0 {
		return nan, true, nil
	}
	x, err := strconv.ParseFloat(t, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		if nullSpellings[t] {
			return nan, true, nil
		}
		if b, err := strconv.ParseBool(t); err == nil && len(t) > 1 { // true, false; not 1, t
			return float64(boolIndex(b)), false, nil
		}
		return 0, false, fmt.Errorf("%q is not a number", cell)
	}
	return x, false, nil
}

func boolIndex(b bool) int {
	if b {
		return 1
	}
	return 0
}

// skipBOM passes over a UTF-8 byte order mark at the start of br, which
// Excel and PowerShell write before UTF-8 text.
func skipBOM(br *bufio.Reader) {
	if b, err := br.Peek(3); err == nil && string(b) == "\ufeff" {
		br.Discard(3)
	}
}

func openCSV(f *os.File, groupRows int) (*textSource, error) {
	br := bufio.NewReaderSize(f, 256<<10)
	skipBOM(br)
	r := csv.NewReader(br)
	r.ReuseRecord = true
	header, err := r.Read()
	if errors.Is(err, io.EOF) {
		return nil, errors.New("the file is empty: no header row")
	}
	if err != nil {
		return nil, fmt.Errorf("cannot read the header row: %w", err)
	}
	if len(header) == 1 {
		for _, sep := range []string{";", "\t", "|"} {
			if strings.Contains(header[0], sep) {
				return nil, fmt.Errorf("the header row %q is one column: CSV is read separated by commas, and this file seems separated by %q; write it with commas", header[0], sep)
			}
		}
	}
	s := &textSource{f: f, groupRows: int64(groupRows)}
	seen := map[string]bool{}
	for _, name := range header {
		name = strings.TrimSpace(name) // "id, age" names age
		if seen[name] {
			return nil, fmt.Errorf("the header names column %q twice", name)
		}
		seen[name] = true
		s.cols = append(s.cols, Column{Name: name, Kind: String, Optional: true})
	}
	var record []string
	s.next = func() (bool, error) {
		var err error
		record, err = r.Read()
		if errors.Is(err, io.EOF) {
			return false, nil
		}
		if pe, ok := errors.AsType[*csv.ParseError](err); ok && errors.Is(pe.Err, csv.ErrFieldCount) {
			return false, fmt.Errorf("line %d has %d fields, the header names %d", pe.StartLine, len(record), len(header))
		}
		return err == nil, err
	}
	s.number = func(col int) (float64, bool, error) { return parseNumber(record[col]) }
	s.value = func(col int) Value { return TextValue([]byte(record[col])) }
	return s, nil
}

func openJSONL(f *os.File, groupRows int) (*textSource, error) {
	br := bufio.NewReaderSize(f, 256<<10)
	skipBOM(br)
	sc := bufio.NewScanner(br)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	var (
		p    fastjson.Parser
		obj  *fastjson.Object
		line int
	)
	s := &textSource{f: f, groupRows: int64(groupRows)}
	s.next = func() (bool, error) {
		for sc.Scan() {
			line++
			b := bytes.TrimSpace(sc.Bytes())
			if len(b) == 0 {
				continue
			}
			v, err := p.ParseBytes(b)
			if err != nil {
				return false, fmt.Errorf("line %d is not JSON: %w", line, err)
			}
			if obj, err = v.Object(); err != nil {
				return false, fmt.Errorf("line %d is not a JSON object", line)
			}
			return true, nil
		}
		return false, sc.Err()
	}
	ok, err := s.next()
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, errors.New("the file is empty: no JSON object")
	}
	s.ahead = true
	var twice []string
	obj.Visit(func(key []byte, v *fastjson.Value) {
		if slices.ContainsFunc(s.cols, func(c Column) bool { return c.Name == string(key) }) {
			twice = append(twice, strconv.Quote(string(key)))
		}
		s.cols = append(s.cols, Column{Name: string(key), Kind: jsonKind(v), Optional: true})
	})
	if len(twice) > 0 {
		return nil, fmt.Errorf("line %d, whose keys name the columns, has key %s twice", line, strings.Join(twice, ", "))
	}
	s.number = func(col int) (float64, bool, error) {
		v := obj.Get(s.cols[col].Name)
		switch {
		case v == nil || v.Type() == fastjson.TypeNull:
			return nan, true, nil
		case v.Type() == fastjson.TypeNumber:
			return v.GetFloat64(), false, nil
		case v.Type() == fastjson.TypeTrue:
			return 1, false, nil
		case v.Type() == fastjson.TypeFalse:
			return 0, false, nil
		case v.Type() == fastjson.TypeString:
			// Read as a CSV cell: "NaN" and "Infinity" as pandas writes
			// them, an INT64 or NUMERIC as BigQuery does ("20000"), "" as
			// null.
			x, null, err := parseNumber(string(v.GetStringBytes()))
			if err != nil {
				return 0, false, fmt.Errorf("%s is text, not a number", v)
			}
			return x, null, nil
		}
		return 0, false, fmt.Errorf("%s is not a number", v)
	}
	s.value = func(col int) Value {
		v := obj.Get(s.cols[col].Name)
		switch {
		case v == nil || v.Type() == fastjson.TypeNull:
			return NullValue()
		case v.Type() == fastjson.TypeString:
			return TextValue(bytes.Clone(v.GetStringBytes()))
		}
		return TextValue(v.MarshalTo(nil))
	}
	return s, nil
}

// jsonKind is the kind of a column of a JSON-lines table, from its value
// in the first object.
func jsonKind(v *fastjson.Value) Kind {
	switch v.Type() {
	case fastjson.TypeNumber:
		return Float64
	case fastjson.TypeTrue, fastjson.TypeFalse:
		return Bool
	}
	return String
}
