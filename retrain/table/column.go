package table

import (
	"fmt"
	"math"
	"math/big"
	"path/filepath"
	"strconv"
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
	// unit is a Timestamp's or a TIME's tick (a microsecond when zero),
	// and scale divides the integers of a DECIMAL column into its numbers
	// (0: not a decimal), which have digits decimal digits.
	unit   time.Duration
	scale  float64
	digits int
	// logical is how the column's values are read as numbers and written
	// as text, where its physical type alone does not say.
	logical logical
}

// logical is the Parquet logical type of a column, as far as reading its
// values as numbers or text depends on it.
type logical uint8

// The logical types read otherwise than their physical type: unsigned
// integers (UINT_32 and UINT_64 hold values past the signed range),
// DECIMAL in a (fixed-length) byte array, DATE (days), TIME (ticks since
// midnight) and UUID (16 bytes).
const (
	plain logical = iota
	unsigned
	bytesDecimal
	date
	timeOfDay
	uuid
)

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
	if lt := field.Type().LogicalType(); field.Leaf() && !field.Repeated() && lt != nil {
		switch v := lt.Value.(type) {
		case *format.TimestampType:
			c.unit = unitOf(v.Unit)
		case *format.TimeType: // not numbers a model takes, though INT32 or INT64
			c.Kind, c.unit, c.logical = Other, unitOf(v.Unit), timeOfDay
		case *format.DateType:
			c.Kind, c.logical = Other, date
		case *format.UUIDType:
			c.logical = uuid
		case *format.IntType:
			if !v.IsSigned && c.Kind == Int64 {
				c.logical = unsigned
			}
		case *format.DecimalType:
			switch field.Type().Kind() {
			case parquet.Int32, parquet.Int64:
			case parquet.FixedLenByteArray, parquet.ByteArray: // wider than 18 digits, as DECIMAL(38, s)
				c.logical = bytesDecimal
			default:
				return c
			}
			c.Kind, c.scale, c.digits = Float64, math.Pow10(int(v.Scale)), int(v.Scale)
		}
	}
	return c
}

// unitOf returns the tick of a TIMESTAMP or TIME unit.
func unitOf(u format.TimeUnit) time.Duration {
	switch u.Value.(type) {
	case *format.MilliSeconds:
		return time.Millisecond
	case *format.NanoSeconds:
		return time.Nanosecond
	}
	return time.Microsecond
}

// Nested reports whether c is a Parquet column of nested or repeated
// values (a LIST, STRUCT or MAP), which a table can neither read as
// numbers nor carry.
func (c Column) Nested() bool {
	return c.node != nil && (!c.node.Leaf() || c.node.Repeated())
}

// Described names the values c holds as an error message says it: its
// kind, and a Parquet column's type as its file declares it ("text
// (Parquet BYTE_ARRAY, STRING)", "nested (Parquet LIST)").
func (c Column) Described() string {
	if c.node == nil {
		return c.Kind.String()
	}
	t := c.node.Type()
	lt := ""
	if l := t.LogicalType(); l != nil && l.Value != nil {
		lt = l.Value.String()
	}
	switch {
	case c.Nested() && lt != "":
		return "nested (Parquet " + lt + ")"
	case c.Nested():
		return "nested (Parquet group or repeated)"
	case lt != "":
		return fmt.Sprintf("%s (Parquet %s, %s)", c.Kind, t.Kind(), lt)
	}
	return fmt.Sprintf("%s (Parquet %s)", c.Kind, t.Kind())
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

// plainNumbers reports whether c's values are their numbers as they are
// stored (not unsigned, not a DECIMAL), so that numberOf need not be asked.
func (c *Column) plainNumbers() bool {
	return c.logical != unsigned && c.logical != bytesDecimal && c.scale == 0
}

// numberOf returns v, a non-null value of c, a numeric Parquet column, as
// a float64: an unsigned integer as such, a DECIMAL's integer divided by
// its scale.
func (c *Column) numberOf(v parquet.Value) float64 {
	switch {
	case c.logical == unsigned && v.Kind() == parquet.Int32:
		return float64(v.Uint32())
	case c.logical == unsigned:
		return float64(v.Uint64())
	case c.logical == bytesDecimal:
		if n, ok := smallDecimal(v.ByteArray()); ok && c.digits <= 22 {
			return float64(n) / c.scale // both exact: one rounding, as the text's
		}
		return decimalFloat(v.ByteArray(), c.digits)
	case c.scale != 0:
		if n := v.Int64(); v.Kind() == parquet.Int64 && (n > 1<<53 || n < -1<<53) {
			// Past 2^53 the integer is no float64; its text rounds once.
			x, _ := strconv.ParseFloat(decimalText(big.NewInt(n), c.digits), 64)
			return x
		}
		return number(v) / c.scale
	}
	return number(v)
}

// bigDecimal returns the unscaled integer of a DECIMAL held in a byte
// array: big-endian two's complement.
func bigDecimal(b []byte) *big.Int {
	x := new(big.Int).SetBytes(b)
	if len(b) > 0 && b[0]&0x80 != 0 {
		x.Sub(x, new(big.Int).Lsh(big.NewInt(1), uint(8*len(b))))
	}
	return x
}

// smallDecimal returns the unscaled integer of a DECIMAL held in a byte
// array (big-endian two's complement) when it lies within ±2^53, where a
// float64 holds it exactly; a DECIMAL(38, s) column holds such numbers
// mostly, in 16 bytes.
func smallDecimal(b []byte) (int64, bool) {
	var n int64
	if len(b) > 0 && b[0]&0x80 != 0 {
		n = -1
	}
	if len(b) > 8 {
		for _, x := range b[:len(b)-8] {
			if x != byte(n) {
				return 0, false
			}
		}
		if b[len(b)-8]&0x80 != byte(n)&0x80 {
			return 0, false
		}
		b = b[len(b)-8:]
	}
	for _, x := range b {
		n = n<<8 | int64(x)
	}
	return n, n >= -1<<53 && n <= 1<<53
}

// decimalFloat returns the DECIMAL in b with digits decimal digits as the
// float64 nearest it.
func decimalFloat(b []byte, digits int) float64 {
	x, _ := strconv.ParseFloat(decimalText(bigDecimal(b), digits), 64)
	return x
}

// decimalText writes unscaled with digits decimal digits: 12345, 2 is
// "123.45".
func decimalText(unscaled *big.Int, digits int) string {
	s := unscaled.String()
	if digits <= 0 {
		return s
	}
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	if len(s) <= digits {
		s = strings.Repeat("0", digits-len(s)+1) + s
	}
	s = s[:len(s)-digits] + "." + s[len(s)-digits:]
	if neg {
		s = "-" + s
	}
	return s
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
