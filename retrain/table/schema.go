package table

import (
	"bytes"
	"fmt"
	"reflect"
	"strconv"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/compress"
	"github.com/parquet-go/parquet-go/encoding"
)

// Schema returns the Parquet schema of cols, a group whose fields keep the
// order they are listed in (parquet.Group sorts its fields by name, which
// would scatter a model's features).
func Schema(cols []Column) parquet.Node { return group(cols) }

// group is a Parquet group of columns in order.
type group []Column

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
		fmt.Fprintf(&b, "%s %s", c.Name, c.parquetNode())
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
		out[i] = field{name: c.Name, node: c.parquetNode(), index: i}
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
			Name: "F" + strconv.Itoa(i), Type: c.parquetNode().GoType(),
			Tag: reflect.StructTag(`parquet:` + strconv.Quote(c.Name)),
		}
	}
	return reflect.StructOf(fields)
}

// field is a column of a group as parquet.Field, at index among its
// fields.
type field struct {
	name  string
	node  parquet.Node
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

// Repeated reports whether the column repeats (never in a written table).
func (f field) Repeated() bool { return f.node.Repeated() }

// Required reports whether the column holds a value in every row.
func (f field) Required() bool { return f.node.Required() }

// Leaf reports whether the column is a leaf.
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
