package v2codec

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/infergate/infergate/runtime"
)

// setID copies id, the request's id, into r.ID, or leaves r.ID nil when
// it is empty.
func (r *Request) setID(id []byte) {
	if len(id) == 0 {
		return
	}
	if r.id == nil {
		r.id = make([]byte, 0, 64)
	}
	r.id = append(r.id[:0], id...)
	r.ID = r.id
}

// protoInputCount checks that the request has inputs, and one
// raw_input_contents entry per input when it has any, then readies
// r.Inputs for the model's inputs, none of them seen yet.
func (r *Request) protoInputCount(n, raw int, inputs []runtime.TensorInfo) error {
	if n == 0 {
		return fmt.Errorf(`"inputs" is empty (the model takes %s)`, quotedNames(inputs))
	}
	if raw > 0 && raw != n {
		return fmt.Errorf("raw_input_contents holds %d entries but the request has %d inputs; send one entry per input, or none", raw, n)
	}
	r.Inputs = slices.Grow(r.Inputs[:0], len(inputs))[:len(inputs)]
	for k := range r.Inputs {
		t := &r.Inputs[k]
		t.DataType = runtime.Invalid
		t.Shape = t.Shape[:0]
		t.Data = t.Data[:0]
	}
	return nil
}

// errProtoTooManyValues is the error for inputs holding more than
// maxValues elements in all.
func errProtoTooManyValues(maxValues int) error {
	return fmt.Errorf("request too large for the model: its inputs hold more than %d values, "+
		"more than the model's inputs take at max_batch_size rows: %w", maxValues, ErrTooManyValues)
}

// protoMissingInput names the first model input that the request left out.
func (r *Request) protoMissingInput(inputs []runtime.TensorInfo) error {
	for i := range inputs {
		if r.Inputs[i].DataType == runtime.Invalid {
			return fmt.Errorf("missing input %q", inputs[i].Name)
		}
	}
	return nil
}

// paramKind says which member of an InferParameter's parameter_choice is
// set.
type paramKind uint8

const (
	paramNone paramKind = iota
	paramBool
	paramInt64
	paramString
	paramDouble
	paramUint64
)

// paramValue is an InferParameter's value, as the generated message and
// the wire decoder both give it.
type paramValue struct {
	// kind is the member set; paramNone for a parameter with no value.
	kind paramKind

	// bits is the value of a bool (0 or 1), int64, uint64 or double (its
	// IEEE 754 bits) member.
	bits uint64

	// str is string_param's value.
	str []byte
}

// protoParameters reads the request's parameters (nil when absent):
// timeout (microseconds) and priority, as int64_param or uint64_param;
// binary_data_output, which has no meaning in gRPC, is accepted as a bool
// and ignored, and other parameters are passed over as the REST decoder
// passes them.
func (r *Request) protoParameters(timeout, priority, binaryDataOutput *paramValue) error {
	if p := timeout; p != nil {
		us, ok := protoNonNegative(*p)
		if !ok || us > math.MaxInt64/int64(time.Microsecond) {
			return fmt.Errorf("parameters.timeout: want a non-negative integer number of microseconds, got %s", describeParameter(*p))
		}
		r.Timeout = time.Duration(us) * time.Microsecond
	}
	if p := priority; p != nil {
		n, ok := protoNonNegative(*p)
		if !ok || n > math.MaxInt32 {
			return fmt.Errorf("parameters.priority: want a non-negative integer, got %s", describeParameter(*p))
		}
		r.Priority = int(n)
	}
	if p := binaryDataOutput; p != nil && p.kind != paramBool {
		return fmt.Errorf("parameters.binary_data_output: want true or false, got %s", describeParameter(*p))
	}
	return nil
}

// protoNonNegative returns p's value where it is a non-negative integer.
func protoNonNegative(p paramValue) (int64, bool) {
	switch p.kind {
	case paramInt64:
		return int64(p.bits), int64(p.bits) >= 0
	case paramUint64:
		return int64(min(p.bits, math.MaxInt64)), true
	}
	return 0, false
}

// describeParameter names p's kind and value for an error.
func describeParameter(p paramValue) string {
	switch p.kind {
	case paramBool:
		return fmt.Sprintf("bool_param %t", p.bits != 0)
	case paramInt64:
		return fmt.Sprintf("int64_param %d", int64(p.bits))
	case paramUint64:
		return fmt.Sprintf("uint64_param %d", p.bits)
	case paramDouble:
		return fmt.Sprintf("double_param %g", math.Float64frombits(p.bits))
	case paramString:
		return fmt.Sprintf("string_param %q", p.str)
	}
	return "a parameter with no value"
}

// protoInputHead checks the name, datatype and shape of inputs[j] and
// returns the tensor they decode into, its shape set.
func (r *Request) protoInputHead(j int, name, datatype []byte, shape []int64, model []runtime.TensorInfo) (*runtime.Tensor, runtime.TensorInfo, error) {
	if len(name) == 0 {
		return nil, runtime.TensorInfo{}, fmt.Errorf(`inputs[%d]: missing "name"`, j)
	}
	idx := tensorIndex(model, name)
	if idx < 0 {
		return nil, runtime.TensorInfo{}, fmt.Errorf("unknown input %q (the model takes %s)", name, quotedNames(model))
	}
	info := model[idx]
	t := &r.Inputs[idx]
	if t.DataType != runtime.Invalid {
		return nil, info, fmt.Errorf("input %q: duplicated", info.Name)
	}
	dt, ok := runtime.ParseDataType(datatype)
	switch {
	case len(datatype) == 0:
		return nil, info, fmt.Errorf(`input %q: missing "datatype"`, info.Name)
	case string(datatype) == "BYTES":
		return nil, info, fmt.Errorf("input %q: datatype BYTES is not supported (infergate serves BOOL, integer and floating-point tensors)", info.Name)
	case !ok:
		return nil, info, fmt.Errorf("input %q: unknown datatype %q", info.Name, datatype)
	case dt != info.DataType:
		return nil, info, fmt.Errorf("input %q: datatype %s does not match the model's %s", info.Name, dt, info.DataType)
	}
	t.DataType = dt
	for k, d := range shape {
		if d < 0 {
			return nil, info, fmt.Errorf("input %q: shape[%d]: want a non-negative integer, got %d", info.Name, k, d)
		}
	}
	t.Shape = append(t.Shape[:0], shape...)
	if len(t.Shape) != len(info.Shape) {
		return nil, info, fmt.Errorf("input %q: shape %s has rank %d but the model's %s has rank %d",
			info.Name, runtime.FormatShape(t.Shape), len(t.Shape), runtime.FormatShape(info.Shape), len(info.Shape))
	}
	for k, want := range info.Shape {
		if want != runtime.Dynamic && want != t.Shape[k] {
			return nil, info, fmt.Errorf("input %q: shape %s does not match the model's %s",
				info.Name, runtime.FormatShape(t.Shape), runtime.FormatShape(info.Shape))
		}
	}
	if runtime.Elements(t.Shape) < 0 {
		return nil, info, fmt.Errorf("input %q: shape %s holds too many elements", info.Name, runtime.FormatShape(t.Shape))
	}
	return t, info, nil
}

// protoRawInput copies inputs[j]'s elements from its raw_input_contents
// entry b; hasContents says that the input also came with contents.
func protoRawInput(t *runtime.Tensor, name string, j, elements int, hasContents bool, b []byte) error {
	if hasContents {
		return fmt.Errorf("input %q: has both contents and raw_input_contents", name)
	}
	// elements is at most 1<<40 and an element at most 8 bytes: no overflow.
	want := int64(elements) * int64(t.DataType.Size())
	if int64(len(b)) != want {
		return fmt.Errorf("input %q: raw_input_contents[%d] holds %d bytes but shape %s of %s needs %d",
			name, j, len(b), runtime.FormatShape(t.Shape), t.DataType, want)
	}
	t.Data = append(t.Data[:0], b...)
	if t.DataType == runtime.BOOL {
		for k, v := range t.Data {
			if v > 1 {
				return fmt.Errorf("input %q: raw BOOL element %d is %d, want 0 or 1", name, k, v)
			}
		}
	}
	return nil
}

// contentsFields names InferTensorContents' fields in field order, for
// errors.
var contentsFields = [...]string{"bool_contents", "int_contents", "int64_contents", "uint_contents",
	"uint64_contents", "fp32_contents", "fp64_contents", "bytes_contents"}

// contentsField returns the index in contentsFields of the field that
// carries dt, or -1 for FP16, which has none.
func contentsField(dt runtime.DataType) int {
	switch dt {
	case runtime.BOOL:
		return 0
	case runtime.INT8, runtime.INT16, runtime.INT32:
		return 1
	case runtime.INT64:
		return 2
	case runtime.UINT8, runtime.UINT16, runtime.UINT32:
		return 3
	case runtime.UINT64:
		return 4
	case runtime.FP32:
		return 5
	case runtime.FP64:
		return 6
	}
	return -1
}

// protoContentsField checks the lengths of the typed contents of an input
// of t's datatype and shape, and returns the index of the field that
// holds its elements; it readies t.Data for them.
func protoContentsField(t *runtime.Tensor, name string, elements int, lengths *[len(contentsFields)]int) (int, error) {
	field := contentsField(t.DataType)
	if field < 0 {
		return 0, fmt.Errorf("input %q: %s has no typed contents field; send it in raw_input_contents", name, t.DataType)
	}
	for k, n := range lengths {
		if k != field && n > 0 {
			return 0, fmt.Errorf("input %q: datatype %s takes %s, got %s", name, t.DataType, contentsFields[field], contentsFields[k])
		}
	}
	if n := lengths[field]; n != elements {
		return 0, fmt.Errorf("input %q: shape %s has %d elements but %s holds %d", name, runtime.FormatShape(t.Shape), elements, contentsFields[field], n)
	}
	t.Data = slices.Grow(t.Data[:0], elements*t.DataType.Size())
	return field, nil
}

// appendProtoElement appends element k of an input of t's datatype to t.Data,
// little-endian; v is the element as its contents field carries it on the
// wire: a varint (bool, int32 sign-extended, uint32, int64, uint64) or the
// bits of a float or double.
func appendProtoElement(t *runtime.Tensor, name string, k int, v uint64) error {
	switch t.DataType {
	case runtime.BOOL:
		b := byte(0)
		if v != 0 {
			b = 1
		}
		t.Data = append(t.Data, b)
	case runtime.INT8, runtime.INT16, runtime.INT32:
		lo, hi := integerRange(t.DataType)
		if i := int32(v); int64(i) < lo || int64(i) > hi {
			return fmt.Errorf("input %q: int_contents[%d]: %d is out of range for %s", name, k, i, t.DataType)
		}
		t.Data = appendSized(t.Data, t.DataType.Size(), uint32(v))
	case runtime.UINT8, runtime.UINT16, runtime.UINT32:
		_, hi := integerRange(t.DataType)
		if u := uint32(v); int64(u) > hi {
			return fmt.Errorf("input %q: uint_contents[%d]: %d is out of range for %s", name, k, u, t.DataType)
		}
		t.Data = appendSized(t.Data, t.DataType.Size(), uint32(v))
	case runtime.FP32:
		t.Data = binary.LittleEndian.AppendUint32(t.Data, uint32(v))
	default: // INT64, UINT64, FP64
		t.Data = binary.LittleEndian.AppendUint64(t.Data, v)
	}
	return nil
}

// protoOutputHead checks the name of outputs[k] and returns the index of
// the model output it names.
func (r *Request) protoOutputHead(k int, name []byte, model []runtime.TensorInfo) (int, error) {
	if len(name) == 0 {
		return 0, fmt.Errorf(`outputs[%d]: missing "name"`, k)
	}
	idx := tensorIndex(model, name)
	if idx < 0 {
		return 0, fmt.Errorf("unknown output %q (the model gives %s)", name, quotedNames(model))
	}
	for _, prev := range r.Outputs {
		if prev.Index == idx {
			return 0, fmt.Errorf("output %q: requested twice", model[idx].Name)
		}
	}
	return idx, nil
}

// protoOutputParameter applies an output's parameter key of value p to
// out, the output of the model's info; the parameters of an output must
// come in sorted key order, so that the first bad one named is the same on
// every try.
func protoOutputParameter(info runtime.TensorInfo, key []byte, p paramValue, out *RequestedOutput) error {
	switch string(key) {
	case "binary_data":
		if p.kind != paramBool {
			return fmt.Errorf("output %q: parameters.binary_data: want true or false, got %s", info.Name, describeParameter(p))
		}
	case "classification":
		k, ok := protoNonNegative(p)
		if !ok || k < 1 {
			return fmt.Errorf("output %q: parameters.classification: want an integer of at least 1, got %s", info.Name, describeParameter(p))
		}
		if err := CheckClassification(info, k); err != nil {
			return err
		}
		out.Classes = int(k)
	default:
		return fmt.Errorf("output %q: unsupported parameter %q (an output takes binary_data and classification)", info.Name, key)
	}
	return nil
}

// addOutput appends out to the request's output selection.
func (r *Request) addOutput(out RequestedOutput) {
	r.Outputs = append(r.Outputs, out)
	r.outputSet = append(r.outputSet, false)
}

// protoOutput returns the model output index of the response's i-th
// output and the classes asked of it (0: its values).
func (r *Request) protoOutput(i int) (index, classes int) {
	if len(r.Outputs) == 0 {
		return i, 0
	}
	return r.Outputs[i].Index, r.Outputs[i].Classes
}

// appendSized appends v, which fits, to dst as a little-endian integer of
// size bytes (1, 2 or 4).
func appendSized(dst []byte, size int, v uint32) []byte {
	switch size {
	case 1:
		return append(dst, byte(v))
	case 2:
		return binary.LittleEndian.AppendUint16(dst, uint16(v))
	}
	return binary.LittleEndian.AppendUint32(dst, v)
}
