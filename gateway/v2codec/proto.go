package v2codec

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/infergate/infergate/gateway/v2codec/inferencepb"
	"github.com/infergate/infergate/runtime"
)

// DecodeProto fills r from m, a gRPC ModelInferRequest for a model of
// these inputs and outputs, as Decode fills it from a JSON body: each
// input's shape and datatype are checked against the model's with Decode's
// limits and error texts, and its elements come from its typed contents
// or, when the request has raw_input_contents (Triton's extension), from
// the little-endian bytes there, one entry per input in request order.
//
// The inputs may hold at most maxValues elements in all; beyond that
// DecodeProto fails with an error wrapping ErrTooManyValues (gRPC
// ResourceExhausted, HTTP 413). Every other error describes a bad request
// (InvalidArgument). Unlike Decode, DecodeProto leaves r.Values and
// r.WellFormed alone: a protobuf message that parsed is well formed. r
// keeps no view of m.
func (r *Request) DecodeProto(m *inferencepb.ModelInferRequest, maxValues int, inputs, outputs []runtime.TensorInfo) error {
	r.reset()
	if m.Id != "" {
		if r.id == nil {
			r.id = make([]byte, 0, 64)
		}
		r.id = append(r.id[:0], m.Id...)
		r.ID = r.id
	}
	if err := r.protoParameters(m.Parameters); err != nil {
		return err
	}
	if len(m.Inputs) == 0 {
		return fmt.Errorf(`"inputs" is empty (the model takes %s)`, quotedNames(inputs))
	}
	raw := m.RawInputContents
	if len(raw) > 0 && len(raw) != len(m.Inputs) {
		return fmt.Errorf("raw_input_contents holds %d entries but the request has %d inputs; send one entry per input, or none", len(raw), len(m.Inputs))
	}
	r.Inputs = slices.Grow(r.Inputs[:0], len(inputs))[:len(inputs)]
	for k := range r.Inputs {
		t := &r.Inputs[k]
		t.DataType = runtime.Invalid
		t.Shape = t.Shape[:0]
		t.Data = t.Data[:0]
	}
	values := 0
	for j, in := range m.Inputs {
		t, info, err := r.protoInputHead(j, in, inputs)
		if err != nil {
			return err
		}
		elements := runtime.Elements(t.Shape)
		if values += elements; values > maxValues {
			return fmt.Errorf("request too large for the model: its inputs hold more than %d values, "+
				"more than the model's inputs take at max_batch_size rows: %w", maxValues, ErrTooManyValues)
		}
		if len(raw) > 0 {
			err = r.protoRawInput(t, info.Name, j, elements, in, raw[j])
		} else {
			err = protoContents(t, info.Name, elements, in.Contents)
		}
		if err != nil {
			return err
		}
	}
	for i := range inputs {
		if r.Inputs[i].DataType == runtime.Invalid {
			return fmt.Errorf("missing input %q", inputs[i].Name)
		}
	}
	return r.protoOutputs(m.Outputs, outputs)
}

// protoParameters reads the request's parameters: timeout (microseconds)
// and priority, as int64_param or uint64_param; binary_data_output, which
// has no meaning in gRPC, is accepted as a bool and ignored, and other
// parameters are passed over as the REST decoder passes them.
func (r *Request) protoParameters(params map[string]*inferencepb.InferParameter) error {
	if p, ok := params["timeout"]; ok {
		us, ok := protoNonNegative(p)
		if !ok || us > math.MaxInt64/int64(time.Microsecond) {
			return fmt.Errorf("parameters.timeout: want a non-negative integer number of microseconds, got %s", describeParameter(p))
		}
		r.Timeout = time.Duration(us) * time.Microsecond
	}
	if p, ok := params["priority"]; ok {
		n, ok := protoNonNegative(p)
		if !ok || n > math.MaxInt32 {
			return fmt.Errorf("parameters.priority: want a non-negative integer, got %s", describeParameter(p))
		}
		r.Priority = int(n)
	}
	if p, ok := params["binary_data_output"]; ok {
		if _, ok := p.GetParameterChoice().(*inferencepb.InferParameter_BoolParam); !ok {
			return fmt.Errorf("parameters.binary_data_output: want true or false, got %s", describeParameter(p))
		}
	}
	return nil
}

// protoNonNegative returns p's value where it is a non-negative integer.
func protoNonNegative(p *inferencepb.InferParameter) (int64, bool) {
	switch v := p.GetParameterChoice().(type) {
	case *inferencepb.InferParameter_Int64Param:
		return v.Int64Param, v.Int64Param >= 0
	case *inferencepb.InferParameter_Uint64Param:
		return int64(min(v.Uint64Param, math.MaxInt64)), true
	}
	return 0, false
}

// describeParameter names p's kind and value for an error.
func describeParameter(p *inferencepb.InferParameter) string {
	switch v := p.GetParameterChoice().(type) {
	case *inferencepb.InferParameter_BoolParam:
		return fmt.Sprintf("bool_param %t", v.BoolParam)
	case *inferencepb.InferParameter_Int64Param:
		return fmt.Sprintf("int64_param %d", v.Int64Param)
	case *inferencepb.InferParameter_Uint64Param:
		return fmt.Sprintf("uint64_param %d", v.Uint64Param)
	case *inferencepb.InferParameter_DoubleParam:
		return fmt.Sprintf("double_param %g", v.DoubleParam)
	case *inferencepb.InferParameter_StringParam:
		return fmt.Sprintf("string_param %q", v.StringParam)
	}
	return "a parameter with no value"
}

// protoInputHead checks the name, datatype and shape of inputs[j] and
// returns the tensor they decode into, its shape set.
func (r *Request) protoInputHead(j int, in *inferencepb.ModelInferRequest_InferInputTensor, model []runtime.TensorInfo) (*runtime.Tensor, runtime.TensorInfo, error) {
	if in.Name == "" {
		return nil, runtime.TensorInfo{}, fmt.Errorf(`inputs[%d]: missing "name"`, j)
	}
	idx := tensorIndex(model, []byte(in.Name))
	if idx < 0 {
		return nil, runtime.TensorInfo{}, fmt.Errorf("unknown input %q (the model takes %s)", in.Name, quotedNames(model))
	}
	info := model[idx]
	t := &r.Inputs[idx]
	if t.DataType != runtime.Invalid {
		return nil, info, fmt.Errorf("input %q: duplicated", info.Name)
	}
	dt, ok := runtime.ParseDataType([]byte(in.Datatype))
	switch {
	case in.Datatype == "":
		return nil, info, fmt.Errorf(`input %q: missing "datatype"`, info.Name)
	case in.Datatype == "BYTES":
		return nil, info, fmt.Errorf("input %q: datatype BYTES is not supported (infergate serves BOOL, integer and floating-point tensors)", info.Name)
	case !ok:
		return nil, info, fmt.Errorf("input %q: unknown datatype %q", info.Name, in.Datatype)
	case dt != info.DataType:
		return nil, info, fmt.Errorf("input %q: datatype %s does not match the model's %s", info.Name, dt, info.DataType)
	}
	t.DataType = dt
	for k, d := range in.Shape {
		if d < 0 {
			return nil, info, fmt.Errorf("input %q: shape[%d]: want a non-negative integer, got %d", info.Name, k, d)
		}
	}
	t.Shape = append(t.Shape[:0], in.Shape...)
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
// entry b.
func (r *Request) protoRawInput(t *runtime.Tensor, name string, j, elements int, in *inferencepb.ModelInferRequest_InferInputTensor, b []byte) error {
	if in.Contents != nil {
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

// contentsLengths returns the number of elements in each of c's fields.
func contentsLengths(c *inferencepb.InferTensorContents) [len(contentsFields)]int {
	return [...]int{len(c.GetBoolContents()), len(c.GetIntContents()), len(c.GetInt64Contents()), len(c.GetUintContents()),
		len(c.GetUint64Contents()), len(c.GetFp32Contents()), len(c.GetFp64Contents()), len(c.GetBytesContents())}
}

// protoContents stores the typed contents c of an input of t's datatype
// and shape in t.Data, little-endian.
func protoContents(t *runtime.Tensor, name string, elements int, c *inferencepb.InferTensorContents) error {
	field := contentsField(t.DataType)
	if field < 0 {
		return fmt.Errorf("input %q: %s has no typed contents field; send it in raw_input_contents", name, t.DataType)
	}
	lengths := contentsLengths(c)
	for k, n := range lengths {
		if k != field && n > 0 {
			return fmt.Errorf("input %q: datatype %s takes %s, got %s", name, t.DataType, contentsFields[field], contentsFields[k])
		}
	}
	if n := lengths[field]; n != elements {
		return fmt.Errorf("input %q: shape %s has %d elements but %s holds %d", name, runtime.FormatShape(t.Shape), elements, contentsFields[field], n)
	}
	le := binary.LittleEndian
	t.Data = slices.Grow(t.Data[:0], elements*t.DataType.Size())
	switch t.DataType {
	case runtime.BOOL:
		for _, v := range c.BoolContents {
			b := byte(0)
			if v {
				b = 1
			}
			t.Data = append(t.Data, b)
		}
	case runtime.INT8, runtime.INT16, runtime.INT32:
		lo, hi := integerRange(t.DataType)
		for k, v := range c.IntContents {
			if int64(v) < lo || int64(v) > hi {
				return fmt.Errorf("input %q: int_contents[%d]: %d is out of range for %s", name, k, v, t.DataType)
			}
			t.Data = appendSized(t.Data, t.DataType.Size(), uint32(v))
		}
	case runtime.UINT8, runtime.UINT16, runtime.UINT32:
		_, hi := integerRange(t.DataType)
		for k, v := range c.UintContents {
			if int64(v) > hi {
				return fmt.Errorf("input %q: uint_contents[%d]: %d is out of range for %s", name, k, v, t.DataType)
			}
			t.Data = appendSized(t.Data, t.DataType.Size(), v)
		}
	case runtime.INT64:
		for _, v := range c.Int64Contents {
			t.Data = le.AppendUint64(t.Data, uint64(v))
		}
	case runtime.UINT64:
		for _, v := range c.Uint64Contents {
			t.Data = le.AppendUint64(t.Data, v)
		}
	case runtime.FP32:
		for _, v := range c.Fp32Contents {
			t.Data = le.AppendUint32(t.Data, math.Float32bits(v))
		}
	case runtime.FP64:
		for _, v := range c.Fp64Contents {
			t.Data = le.AppendUint64(t.Data, math.Float64bits(v))
		}
	}
	return nil
}

// protoOutputs reads the request's output selection. An output's
// classification parameter (int64_param or uint64_param) asks for its top
// classes, as in REST (CheckClassification); its binary_data parameter,
// which has no meaning in gRPC, is accepted as a bool and ignored; any
// other output parameter is refused, by name.
func (r *Request) protoOutputs(req []*inferencepb.ModelInferRequest_InferRequestedOutputTensor, model []runtime.TensorInfo) error {
	for k, o := range req {
		if o.GetName() == "" {
			return fmt.Errorf(`outputs[%d]: missing "name"`, k)
		}
		idx := tensorIndex(model, []byte(o.Name))
		if idx < 0 {
			return fmt.Errorf("unknown output %q (the model gives %s)", o.Name, quotedNames(model))
		}
		for _, prev := range r.Outputs {
			if prev.Index == idx {
				return fmt.Errorf("output %q: requested twice", model[idx].Name)
			}
		}
		out := RequestedOutput{Index: idx}
		for _, key := range sortedKeys(o.Parameters) {
			p := o.Parameters[key]
			switch key {
			case "binary_data":
				if _, ok := p.GetParameterChoice().(*inferencepb.InferParameter_BoolParam); !ok {
					return fmt.Errorf("output %q: parameters.binary_data: want true or false, got %s", model[idx].Name, describeParameter(p))
				}
			case "classification":
				k, ok := protoNonNegative(p)
				if !ok || k < 1 {
					return fmt.Errorf("output %q: parameters.classification: want an integer of at least 1, got %s", model[idx].Name, describeParameter(p))
				}
				if err := CheckClassification(model[idx], k); err != nil {
					return err
				}
				out.Classes = int(k)
			default:
				return fmt.Errorf("output %q: unsupported parameter %q (an output takes binary_data and classification)", model[idx].Name, key)
			}
		}
		r.Outputs = append(r.Outputs, out)
		r.outputSet = append(r.outputSet, false)
	}
	return nil
}

// sortedKeys returns m's keys in order, so that the first bad parameter
// named is the same on every try.
func sortedKeys(m map[string]*inferencepb.InferParameter) []string {
	if len(m) == 0 {
		return nil
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
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
