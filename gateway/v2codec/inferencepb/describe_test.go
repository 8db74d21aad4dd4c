package inferencepb

import (
	"fmt"
	"sort"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// describeFile lists what fd defines as the lines of the golden table: each
// service and its methods, each message (nested ones included, map entries
// left out as protoc makes those), field, enum and enum value, in a form
// that names the wire-visible facts: full names, numbers, labels, types and
// oneof membership. The lines come back sorted.
func describeFile(fd protoreflect.FileDescriptor) []string {
	var lines []string
	add := func(format string, args ...any) { lines = append(lines, fmt.Sprintf(format, args...)) }
	var enums func(protoreflect.EnumDescriptors)
	enums = func(es protoreflect.EnumDescriptors) {
		for i := range es.Len() {
			e := es.Get(i)
			add("enum %s", e.FullName())
			for j := range e.Values().Len() {
				v := e.Values().Get(j)
				add("value %s.%s = %d", e.FullName(), v.Name(), v.Number())
			}
		}
	}
	var messages func(protoreflect.MessageDescriptors)
	messages = func(ms protoreflect.MessageDescriptors) {
		for i := range ms.Len() {
			m := ms.Get(i)
			if m.IsMapEntry() {
				continue
			}
			add("message %s", m.FullName())
			for j := range m.Fields().Len() {
				f := m.Fields().Get(j)
				line := fmt.Sprintf("field %s = %d %s", f.FullName(), f.Number(), fieldType(f))
				if o := f.ContainingOneof(); o != nil && !o.IsSynthetic() {
					line += " oneof " + string(o.Name())
				}
				lines = append(lines, line)
			}
			enums(m.Enums())
			messages(m.Messages())
		}
	}
	for i := range fd.Services().Len() {
		s := fd.Services().Get(i)
		add("service %s", s.FullName())
		for j := range s.Methods().Len() {
			m := s.Methods().Get(j)
			stream := func(b bool) string {
				if b {
					return "stream "
				}
				return ""
			}
			add("rpc %s(%s%s) returns (%s%s)", m.FullName(),
				stream(m.IsStreamingClient()), m.Input().FullName(),
				stream(m.IsStreamingServer()), m.Output().FullName())
		}
	}
	enums(fd.Enums())
	messages(fd.Messages())
	sort.Strings(lines)
	return lines
}

// fieldType spells f's label and type as a .proto file does: "map<K, V>",
// "repeated T" or "T", with messages and enums by full name.
func fieldType(f protoreflect.FieldDescriptor) string {
	if f.IsMap() {
		return fmt.Sprintf("map<%s, %s>", kindName(f.MapKey()), kindName(f.MapValue()))
	}
	if f.Cardinality() == protoreflect.Repeated {
		return "repeated " + kindName(f)
	}
	return kindName(f)
}

// kindName is f's element type: a scalar's keyword, or a message's or
// enum's full name.
func kindName(f protoreflect.FieldDescriptor) string {
	switch f.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return string(f.Message().FullName())
	case protoreflect.EnumKind:
		return string(f.Enum().FullName())
	}
	return strings.ToLower(f.Kind().String())
}
