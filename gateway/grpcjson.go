package gateway

import (
	"encoding/base64"
	"encoding/json"
	"math"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// appendTritonJSON appends m as Triton's REST API writes its model
// configuration and statistics: protobuf's JSON mapping with the .proto's
// field names and every scalar field, set or not, but 64-bit integers as
// JSON numbers, where protojson writes them as strings that Triton's HTTP
// clients (perf_analyzer's among them) do not read. Unset messages and
// oneofs are left out; enums are written by name, map keys as strings in
// order.
func appendTritonJSON(dst []byte, m protoreflect.Message) []byte {
	dst = append(dst, '{')
	fields := m.Descriptor().Fields()
	first := true
	for i := range fields.Len() {
		fd := fields.Get(i)
		unsetMessage := fd.Kind() == protoreflect.MessageKind && !fd.IsList() && !fd.IsMap() && !m.Has(fd)
		if unsetMessage || fd.ContainingOneof() != nil && !m.Has(fd) {
			continue
		}
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = appendJSONText(dst, string(fd.Name()))
		dst = append(dst, ':')
		v := m.Get(fd)
		switch {
		case fd.IsList():
			l := v.List()
			dst = append(dst, '[')
			for j := range l.Len() {
				if j > 0 {
					dst = append(dst, ',')
				}
				dst = appendTritonValue(dst, fd, l.Get(j))
			}
			dst = append(dst, ']')
		case fd.IsMap():
			var keys []protoreflect.MapKey
			v.Map().Range(func(k protoreflect.MapKey, _ protoreflect.Value) bool {
				keys = append(keys, k)
				return true
			})
			slices.SortFunc(keys, func(a, b protoreflect.MapKey) int { return strings.Compare(a.String(), b.String()) })
			dst = append(dst, '{')
			for j, k := range keys {
				if j > 0 {
					dst = append(dst, ',')
				}
				dst = appendJSONText(dst, k.String())
				dst = append(dst, ':')
				dst = appendTritonValue(dst, fd.MapValue(), v.Map().Get(k))
			}
			dst = append(dst, '}')
		default:
			dst = appendTritonValue(dst, fd, v)
		}
	}
	return append(dst, '}')
}

// appendTritonValue appends one value of field fd (an element, for a list).
func appendTritonValue(dst []byte, fd protoreflect.FieldDescriptor, v protoreflect.Value) []byte {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return strconv.AppendBool(dst, v.Bool())
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind,
		protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return strconv.AppendInt(dst, v.Int(), 10)
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind, protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return strconv.AppendUint(dst, v.Uint(), 10)
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		// As protojson writes what JSON numbers cannot hold.
		switch f := v.Float(); {
		case math.IsNaN(f):
			return append(dst, `"NaN"`...)
		case math.IsInf(f, 1):
			return append(dst, `"Infinity"`...)
		case math.IsInf(f, -1):
			return append(dst, `"-Infinity"`...)
		}
		bits := 64
		if fd.Kind() == protoreflect.FloatKind {
			bits = 32
		}
		return strconv.AppendFloat(dst, v.Float(), 'g', -1, bits)
	case protoreflect.StringKind:
		return appendJSONText(dst, v.String())
	case protoreflect.BytesKind:
		return appendJSONText(dst, base64.StdEncoding.EncodeToString(v.Bytes()))
	case protoreflect.EnumKind:
		if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
			return appendJSONText(dst, string(ev.Name()))
		}
		return strconv.AppendInt(dst, int64(v.Enum()), 10)
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return appendTritonJSON(dst, v.Message())
	}
	panic("BUG: appendTritonValue of field kind " + fd.Kind().String())
}

// appendJSONText appends s as a JSON string.
func appendJSONText(dst []byte, s string) []byte {
	b, _ := json.Marshal(s) // a string always encodes
	return append(dst, b...)
}
