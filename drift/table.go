package drift

import (
	"bufio"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/valyala/fastjson"
)

// ReadTable reads the named columns of a CSV file (with a header row) or
// of JSON lines (one object per line) from r; format is "csv" or "jsonl".
// It returns one slice of values per name. An empty field, NA, NaN or
// JSON null is a missing value (NaN); true and false read as 1 and 0.
func ReadTable(r io.Reader, format string, names []string) ([][]float64, error) {
	switch format {
	case "csv":
		return readCSV(r, names)
	case "jsonl":
		return readJSONLines(r, names)
	}
	return nil, fmt.Errorf("cannot read table: unknown format %q, want csv or jsonl", format)
}

func readCSV(r io.Reader, names []string) ([][]float64, error) {
	cr := csv.NewReader(bufio.NewReaderSize(r, 1<<16))
	cr.ReuseRecord = true
	header, err := cr.Read()
	if err != nil {
		return nil, fmt.Errorf("cannot read CSV header: %w", err)
	}
	index := make([]int, len(names))
	for i, name := range names {
		if index[i] = slices.Index(header, name); index[i] < 0 {
			return nil, fmt.Errorf("cannot read CSV: no column %q in the header %v", name, header)
		}
	}
	columns := make([][]float64, len(names))
	for line := 2; ; line++ {
		record, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return columns, nil
		}
		if err != nil {
			return nil, fmt.Errorf("cannot read CSV: %w", err)
		}
		for i, col := range index {
			x, err := parseValue(record[col])
			if err != nil {
				return nil, fmt.Errorf("cannot read CSV line %d, column %q: %w", line, names[i], err)
			}
			columns[i] = append(columns[i], x)
		}
	}
}

func readJSONLines(r io.Reader, names []string) ([][]float64, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 1<<16), 64<<20)
	var p fastjson.Parser
	columns := make([][]float64, len(names))
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		obj, err := p.Parse(text)
		if err != nil {
			return nil, fmt.Errorf("cannot read JSON line %d: %w", line, err)
		}
		for i, name := range names {
			x, err := jsonValue(obj.Get(name))
			if err != nil {
				return nil, fmt.Errorf("cannot read JSON line %d, key %q: %w", line, name, err)
			}
			columns[i] = append(columns[i], x)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("cannot read JSON lines: %w", err)
	}
	return columns, nil
}

func parseValue(s string) (float64, error) {
	switch s = strings.TrimSpace(s); strings.ToLower(s) {
	case "", "na", "nan", "null":
		return math.NaN(), nil
	case "true":
		return 1, nil
	case "false":
		return 0, nil
	}
	x, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a number", s)
	}
	return x, nil
}

func jsonValue(v *fastjson.Value) (float64, error) {
	if v == nil {
		return 0, errors.New("missing")
	}
	switch v.Type() {
	case fastjson.TypeNull:
		return math.NaN(), nil
	case fastjson.TypeNumber:
		return v.Float64()
	case fastjson.TypeTrue:
		return 1, nil
	case fastjson.TypeFalse:
		return 0, nil
	case fastjson.TypeString:
		return parseValue(string(v.GetStringBytes()))
	}
	return 0, fmt.Errorf("%s is not a number", v.Type())
}
