package export

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/infergate/infergate/retrain/capture"
)

// Kind is the type of a tensor's columns.
type Kind int

// The kinds of columns, by the datatype of their tensor.
const (
	// Float is a 32-bit float: FP32 and FP16.
	Float Kind = iota + 1
	// Double is a 64-bit float: FP64.
	Double
	// Int64 holds every integer datatype, INT8 to UINT64.
	Int64
	// Bool is BOOL.
	Bool
)

// String names k as the Parquet physical type it is written as.
func (k Kind) String() string {
	switch k {
	case Float:
		return "FLOAT"
	case Double:
		return "DOUBLE"
	case Int64:
		return "INT64"
	case Bool:
		return "BOOLEAN"
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// KindOf returns the kind of the columns of a tensor of a V2 datatype.
func KindOf(datatype string) (Kind, error) {
	switch datatype {
	case "FP32", "FP16":
		return Float, nil
	case "FP64":
		return Double, nil
	case "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64":
		return Int64, nil
	case "BOOL":
		return Bool, nil
	}
	return 0, fmt.Errorf("datatype %q has no column type", datatype)
}

// Tensor is a captured tensor and the columns its values of a row go to,
// one column per value.
type Tensor struct {
	Name    string
	Kind    Kind
	Columns []string
}

// Layout is the columns of an export beside its fixed ones (see
// FixedColumns): a row's input values, then its output values, each
// tensor in the order listed. A Layout is plain data.
type Layout struct {
	Inputs, Outputs []Tensor
}

// FixedColumns are the columns every export has: these four first, then
// the tensors' columns, then "label".
var FixedColumns = []string{"id", "time", "version", "replica", "label"}

// NewLayout lays out the columns of rows like first, whose tensors have
// the datatypes of rec (the record first is a row of); features are the
// feature names of the model's reference, nil without one.
//
// Inputs and outputs are taken in the order of their names. The features
// name the columns of the one input that has as many values a row as there
// are features, in order; a feature named "<tensor>[<i>]" (how a
// reference names the columns of a model without feature names), or none
// such input, leaves the columns "<input>_<i>". An output with one value a
// row is one column named for it, a wider one "<output>_<i>". A name
// already taken (by a fixed column, or an earlier one) gets "_2", "_3"...
func NewLayout(rec *capture.Record, first *capture.Example, features []string) (Layout, error) {
	var l Layout
	var err error
	if l.Inputs, err = tensorsOf("input", rec.Inputs, first.Inputs); err != nil {
		return Layout{}, err
	}
	if l.Outputs, err = tensorsOf("output", rec.Outputs, first.Outputs); err != nil {
		return Layout{}, err
	}
	named := -1
	for i, t := range l.Inputs {
		if len(features) > 0 && len(t.Columns) == len(features) {
			if named >= 0 {
				named = -1 // two inputs of that width: features name neither
				break
			}
			named = i
		}
	}
	taken := make(map[string]bool)
	for _, name := range FixedColumns {
		taken[name] = true
	}
	for i, t := range l.Inputs {
		for j := range t.Columns {
			name := t.Name + "_" + strconv.Itoa(j)
			if f := features; i == named && f[j] != "" && !positional(f[j]) {
				name = f[j]
			}
			t.Columns[j] = unique(taken, name)
		}
	}
	for _, t := range l.Outputs {
		for j := range t.Columns {
			name := t.Name
			if len(t.Columns) > 1 {
				name += "_" + strconv.Itoa(j)
			}
			t.Columns[j] = unique(taken, name)
		}
	}
	return l, nil
}

// tensorsOf returns the tensors of a row's values, by name, typed by the
// datatypes of ts.
func tensorsOf(what string, ts map[string]capture.Tensor, row map[string][]float64) ([]Tensor, error) {
	out := make([]Tensor, 0, len(row))
	for _, name := range slices.Sorted(maps.Keys(row)) {
		t, ok := ts[name]
		if !ok {
			return nil, fmt.Errorf("cannot lay out the columns of %s %q: its record has no such tensor", what, name)
		}
		kind, err := KindOf(t.Datatype)
		if err != nil {
			return nil, fmt.Errorf("cannot lay out the columns of %s %q: %w", what, name, err)
		}
		out = append(out, Tensor{Name: name, Kind: kind, Columns: make([]string, len(row[name]))})
	}
	return out, nil
}

// positional reports whether a feature name is of the form "<tensor>[<i>]".
func positional(name string) bool {
	open := strings.LastIndexByte(name, '[')
	if open <= 0 || !strings.HasSuffix(name, "]") {
		return false
	}
	_, err := strconv.Atoi(name[open+1 : len(name)-1])
	return err == nil
}

// unique returns name, or name_2, name_3... the first not taken, and
// takes it.
func unique(taken map[string]bool, name string) string {
	n := name
	for k := 2; taken[n]; k++ {
		n = name + "_" + strconv.Itoa(k)
	}
	taken[n] = true
	return n
}

// Columns returns the names of every column of an export of l, in order.
func (l Layout) Columns() []string {
	out := append([]string(nil), FixedColumns[:4]...)
	for _, ts := range [][]Tensor{l.Inputs, l.Outputs} {
		for _, t := range ts {
			out = append(out, t.Columns...)
		}
	}
	return append(out, FixedColumns[4])
}

// fits returns why ex's values do not fit l's columns, or nil.
func (l Layout) fits(ex *capture.Example) error {
	f := func(what string, ts []Tensor, values map[string][]float64) error {
		for _, t := range ts {
			if v, ok := values[t.Name]; !ok || len(v) != len(t.Columns) {
				return fmt.Errorf("%s %q has %d values, the export has %d columns for it", what, t.Name, len(v), len(t.Columns))
			}
		}
		if len(values) != len(ts) {
			return fmt.Errorf("%d %ss, the export has columns for %d", len(values), what, len(ts))
		}
		return nil
	}
	err := f("input", l.Inputs, ex.Inputs)
	if err == nil {
		err = f("output", l.Outputs, ex.Outputs)
	}
	if err != nil {
		return fmt.Errorf("row %d of request %q (version %s) does not fit the export's columns, which the first row set: %w", ex.Row, ex.ID, ex.Version, err)
	}
	return nil
}
