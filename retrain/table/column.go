package table

import (
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"time"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/format"
)

// Format is a table's file format.
type Format string

// The formats a table is read and written in.
const (
	Parquet Format = "parquet"
	CSV     Format = "csv"
	JSONL   Format = "jsonl"
)

// FormatOf returns the format a file's extension names: .parquet, .csv,
// .jsonl or .ndjson.
func FormatOf(path string) (Format, error) {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".parquet", ".pq":
		return Parquet, nil
	case ".csv":
		return CSV, nil
	case ".jsonl", ".ndjson":
		return JSONL, nil
	}
	return "", fmt.Errorf("cannot tell the format of %q from its extension: want .parquet, .csv or .jsonl", path)
}

// Kind is the type of a column's values.
type Kind uint8

// The kinds of column. Other is a Parquet column of a type no other kind
// holds (a nested group, a fixed-length byte array, INT96): it can be
// carried through, but not read as numbers.
const (
	String Kind = iota + 1
	Int64
	Float32
	Float64
	Bool
	Timestamp
	Other
)

// String names the kind as an error message says it.
func (k Kind) String() string {
	switch k {
	case String:
		return "text"
	case Int64:
		return "integer"
	case Float32:
		return "float"
	case Float64:
		return "double"
	case Bool:
		return "boolean"
	case Timestamp:
		return "timestamp"
	}
	return "other"
}

// Numeric reports whether a column of kind k holds numbers (booleans as 0
// and 1).
func (k Kind) Numeric() bool { return k >= Int64 && k <= Bool }

// Column is a column of a table.
type Column struct {
	Name string
	Kind Kind
	// Optional columns may hold nulls.
	Optional bool
	// Dictionary asks a Parquet writer to dictionary-encode the column
	// (for few distinct values, as a version's name).
	Dictionary bool

	// node is the column's Parquet type as its file declared it, which a
	// Writer reproduces when the column is carried from a Parquet file
	// into another; nil derives it from Kind.
	node parquet.Node
	// unit is a Timestamp's tick (a microsecond when zero), and scale
	// divides the integers of a DECIMAL column into its numbers (0: not
	// a decimal).
	unit  time.Duration
	scale float64
}

// parquetNode returns c's Parquet type.
func (c Column) parquetNode() parquet.Node {
	n := c.node
	if n == nil {
		switch c.Kind {
		case Int64:
			n = parquet.Int(64)
		case Float32:
			n = parquet.Leaf(parquet.FloatType)
		case Float64:
			n = parquet.Leaf(parquet.DoubleType)
		case Bool:
			n = parquet.Leaf(parquet.BooleanType)
		case Timestamp:
			n = parquet.Timestamp(parquet.Microsecond)
		default:
			n = parquet.String()
		}
		if c.Dictionary {
			n = parquet.Encoded(n, &parquet.RLEDictionary)
		}
		if c.Optional {
			n = parquet.Optional(n)
		}
	}
	return n
}

// columnOf returns the column of a Parquet file's field.
func columnOf(field parquet.Field) Column {
	c := Column{Name: field.Name(), Kind: kindOf(field), Optional: field.Optional(), node: field}
	if lt := field.Type().LogicalType(); field.Leaf() && lt != nil {
		switch v := lt.Value.(type) {
		case *format.TimestampType:
			switch v.Unit.Value.(type) {
			case *format.MilliSeconds:
				c.unit = time.Millisecond
			case *format.NanoSeconds:
				c.unit = time.Nanosecond
			}
		case *format.DecimalType:
			if c.Kind == Int64 { // INT32 or INT64; a fixed-length one is Other
				c.Kind, c.scale = Float64, math.Pow10(int(v.Scale))
			}
		}
	}
	return c
}

// kindOf returns the kind of a Parquet column of type n.
func kindOf(n parquet.Node) Kind {
	if !n.Leaf() || n.Repeated() {
		return Other
	}
	t := n.Type()
	if lt := t.LogicalType(); lt != nil {
		if _, ok := lt.Value.(*format.TimestampType); ok {
			return Timestamp
		}
	}
	switch t.Kind() {
	case parquet.Boolean:
		return Bool
	case parquet.Int32, parquet.Int64:
		return Int64
	case parquet.Float:
		return Float32
	case parquet.Double:
		return Float64
	case parquet.ByteArray:
		return String
	}
	return Other
}

// number returns v, a non-null value of a numeric Parquet column, as a
// float64.
func number(v parquet.Value) float64 {
	switch v.Kind() {
	case parquet.Boolean:
		if v.Boolean() {
			return 1
		}
		return 0
	case parquet.Int32:
		return float64(v.Int32())
	case parquet.Int64:
		return float64(v.Int64())
	case parquet.Float:
		return float64(v.Float())
	}
	return v.Double()
}

// Value is one value of a table, as Parquet holds it: a null, or a value
// of a column's physical type (text as a byte array).
type Value = parquet.Value

// TextValue returns s as a text value.
func TextValue(s []byte) Value { return parquet.ByteArrayValue(s) }

// NullValue returns a null.
func NullValue() Value { return parquet.NullValue() }

// Float32Value, Float64Value, Int64Value and BoolValue return x as a
// value of a Float32, Float64, Int64 or Bool column.
func Float32Value(x float32) Value { return parquet.FloatValue(x) }
func Float64Value(x float64) Value { return parquet.DoubleValue(x) }
func Int64Value(x int64) Value     { return parquet.Int64Value(x) }
func BoolValue(x bool) Value       { return parquet.BooleanValue(x) }
