package v2codec

// This file keeps the decoder that Request.decode replaced, which
// checked the JSON with Scanner, parsed it with fastjson and had strconv
// parse each number's re-marshalled text, as the oracle of a differential
// fuzz test: the one-pass decoder must accept exactly what it accepted,
// decode it to the same tensors, and refuse the rest with the same status.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/infergate/infergate/runtime"
	"github.com/valyala/fastjson"
)

// oracleRequest is one V2 inference request decoded by the former decoder;
// a fresh one for each request.
type oracleRequest struct {
	// ID is the request's "id", copied out of the body; nil when absent.
	ID []byte

	// Inputs holds one tensor per model input, in the model's input order.
	Inputs []runtime.Tensor

	// Outputs is the "outputs" selection in request order; empty means all
	// of the model's outputs, each binary when BinaryOutput is set.
	Outputs []RequestedOutput

	// Timeout is parameters.timeout (microseconds in the request); 0 when absent.
	Timeout time.Duration

	// Priority is parameters.priority; 0 when absent.
	Priority int

	// BinaryOutput is parameters.binary_data_output (Triton's binary tensor
	// extension): outputs are sent as raw bytes after the JSON unless an
	// output's own binary_data parameter says otherwise.
	BinaryOutput bool

	parser  fastjson.Parser
	scanner Scanner

	// id backs ID across requests, so that an "id" costs no allocation.
	id []byte

	// number holds the text of the JSON number being converted.
	number []byte

	// path is the index path of the nested "data" value being decoded, kept
	// only to name a bad value in an error.
	path []int

	// Values is the number of JSON values scan counted.
	Values int

	// header and bin are the body's JSON and binary parts between scan and
	// parse; binary is set when the body has the binary extension's layout.
	header, bin []byte
	binary      bool

	// jsonLen is the length of the last JSON header parsed.
	jsonLen int
}

// scan checks body's JSON strictly and counts its values (r.Values), so
// that what parsing will cost is known before it runs. headerLen is the
// value of the Inference-Header-Content-Length header (Triton's binary
// tensor extension), or -1 when absent. When present, body[:headerLen] is
// the JSON and the rest holds the binary data of the inputs whose
// parameters carry binary_data_size, in request order.
//
// The JSON may hold at most maxValues values (see requestValueLimit);
// beyond that scan stops, with an error wrapping ErrTooManyValues (HTTP
// 413). Every other error of scan and parse describes a bad request (HTTP
// 400). r keeps views of body until parse returns.
func (r *oracleRequest) scan(body []byte, headerLen, maxValues int) error {
	r.header, r.bin = body, nil
	if headerLen >= 0 {
		if headerLen > len(body) {
			return fmt.Errorf("Inference-Header-Content-Length %d exceeds the body's %d bytes", headerLen, len(body))
		}
		r.header, r.bin = body[:headerLen], body[headerLen:]
	}
	r.binary = headerLen >= 0
	r.jsonLen = len(r.header)
	values, err := r.scanner.Scan(r.header, maxValues)
	if errors.Is(err, ErrTooManyValues) {
		return fmt.Errorf("request too large for the model: its JSON holds more than %d values, "+
			"more than the model's inputs take at max_batch_size rows: %w", maxValues, ErrTooManyValues)
	}
	if err != nil {
		return fmt.Errorf("invalid JSON: %s", err)
	}
	r.Values = values
	return nil
}

// parse decodes the JSON that scan checked into r. It runs after scan
// because the parser is lenient (it takes NaN, 01, bad escapes or duplicate
// keys) and its tree costs about a hundred bytes a value.
func (r *oracleRequest) parse(inputs, outputs []runtime.TensorInfo) error {
	defer func() { r.header, r.bin = nil, nil }()
	// The parser copies the header, so no Value points into the body.
	root, err := r.parser.ParseBytes(r.header)
	if err != nil {
		return fmt.Errorf("invalid JSON: %s", err)
	}
	obj, err := root.Object()
	if err != nil {
		return fmt.Errorf("the request must be a JSON object, got %s", oracleJSONType(root))
	}

	if err := r.decodeID(obj.Get("id")); err != nil {
		return err
	}
	// Parameters come before outputs: binary_data_output is each output's default.
	if err := r.decodeParameters(obj.Get("parameters")); err != nil {
		return err
	}
	if err := r.decodeInputs(obj.Get("inputs"), r.bin, r.binary, inputs); err != nil {
		return err
	}
	return r.decodeOutputs(obj.Get("outputs"), outputs)
}

func (r *oracleRequest) decodeID(v *fastjson.Value) error {
	if v == nil {
		return nil
	}
	s, err := v.StringBytes()
	if err != nil {
		return fmt.Errorf(`"id" must be a string, got %s`, oracleJSONType(v))
	}
	if r.id == nil {
		// A non-nil buffer, so that "id": "" is present but empty.
		r.id = make([]byte, 0, 64)
	}
	r.id = append(r.id[:0], s...)
	r.ID = r.id
	return nil
}

func (r *oracleRequest) decodeParameters(v *fastjson.Value) error {
	if v == nil {
		return nil
	}
	params, err := v.Object()
	if err != nil {
		return fmt.Errorf(`"parameters" must be an object, got %s`, oracleJSONType(v))
	}
	if p := params.Get("timeout"); p != nil {
		us, ok := r.nonNegativeInt(p)
		if !ok || us > math.MaxInt64/int64(time.Microsecond) {
			return fmt.Errorf("parameters.timeout: want a non-negative integer number of microseconds, got %s", r.describe(p))
		}
		r.Timeout = time.Duration(us) * time.Microsecond
	}
	if p := params.Get("priority"); p != nil {
		n, ok := r.nonNegativeInt(p)
		if !ok || n > math.MaxInt32 {
			return fmt.Errorf("parameters.priority: want a non-negative integer, got %s", r.describe(p))
		}
		r.Priority = int(n)
	}
	if p := params.Get("binary_data_output"); p != nil {
		b, err := p.Bool()
		if err != nil {
			return fmt.Errorf("parameters.binary_data_output: want true or false, got %s", r.describe(p))
		}
		r.BinaryOutput = b
	}
	return nil
}

func (r *oracleRequest) decodeInputs(v *fastjson.Value, bin []byte, binaryAllowed bool, model []runtime.TensorInfo) error {
	if v == nil {
		return errors.New(`missing "inputs"`)
	}
	items, err := v.Array()
	if err != nil {
		return fmt.Errorf(`"inputs" must be an array, got %s`, oracleJSONType(v))
	}
	if len(items) == 0 {
		return fmt.Errorf(`"inputs" is empty (the model takes %s)`, quotedNames(model))
	}

	// Reslicing within capacity brings back the tensors of earlier requests
	// with their buffers; DataType Invalid marks an input not yet seen.
	r.Inputs = slices.Grow(r.Inputs[:0], len(model))[:len(model)]
	for i := range r.Inputs {
		t := &r.Inputs[i]
		t.DataType = runtime.Invalid
		t.Shape = t.Shape[:0]
		t.Data = t.Data[:0]
	}

	// Binary tensors follow the JSON in the order their inputs appear in the request.
	offset := 0
	for i, item := range items {
		if offset, err = r.decodeInput(i, item, bin, offset, binaryAllowed, model); err != nil {
			return err
		}
	}
	if offset != len(bin) {
		return fmt.Errorf("the binary data after the JSON holds %d bytes but the inputs' binary_data_size add up to %d", len(bin), offset)
	}
	for i := range model {
		if r.Inputs[i].DataType == runtime.Invalid {
			return fmt.Errorf("missing input %q", model[i].Name)
		}
	}
	return nil
}

// decodeInput decodes inputs[i] into the tensor of the model input it names.
// offset is where its binary data would begin in bin; it returns where the
// next input's would.
func (r *oracleRequest) decodeInput(i int, item *fastjson.Value, bin []byte, offset int, binaryAllowed bool, model []runtime.TensorInfo) (int, error) {
	obj, err := item.Object()
	if err != nil {
		return offset, fmt.Errorf("inputs[%d]: want an object, got %s", i, oracleJSONType(item))
	}
	nameValue := obj.Get("name")
	if nameValue == nil {
		return offset, fmt.Errorf(`inputs[%d]: missing "name"`, i)
	}
	name, err := nameValue.StringBytes()
	if err != nil {
		return offset, fmt.Errorf(`inputs[%d]: "name" must be a string, got %s`, i, oracleJSONType(nameValue))
	}
	idx := tensorIndex(model, name)
	if idx < 0 {
		return offset, fmt.Errorf("unknown input %q (the model takes %s)", name, quotedNames(model))
	}
	info := model[idx]
	t := &r.Inputs[idx]
	if t.DataType != runtime.Invalid {
		return offset, fmt.Errorf("input %q: duplicated", info.Name)
	}

	if t.DataType, err = oracleDecodeDataType(obj.Get("datatype"), info); err != nil {
		return offset, err
	}
	if err := r.decodeShape(obj.Get("shape"), t, info); err != nil {
		return offset, err
	}
	elements := runtime.Elements(t.Shape)

	binarySize, hasBinary, err := r.decodeBinarySize(obj.Get("parameters"), info.Name)
	if err != nil {
		return offset, err
	}
	data := obj.Get("data")
	switch {
	case hasBinary && data != nil:
		return offset, fmt.Errorf(`input %q: has both "data" and parameters.binary_data_size`, info.Name)
	case hasBinary && !binaryAllowed:
		return offset, fmt.Errorf("input %q: parameters.binary_data_size needs the Inference-Header-Content-Length header", info.Name)
	case hasBinary:
		return r.decodeBinaryData(t, info.Name, elements, binarySize, bin, offset)
	case data == nil:
		return offset, fmt.Errorf(`input %q: missing "data"`, info.Name)
	}
	return offset, r.decodeData(data, t, info.Name, elements)
}

func oracleDecodeDataType(v *fastjson.Value, info runtime.TensorInfo) (runtime.DataType, error) {
	if v == nil {
		return runtime.Invalid, fmt.Errorf(`input %q: missing "datatype"`, info.Name)
	}
	name, err := v.StringBytes()
	if err != nil {
		return runtime.Invalid, fmt.Errorf(`input %q: "datatype" must be a string, got %s`, info.Name, oracleJSONType(v))
	}
	dt, ok := runtime.ParseDataType(name)
	switch {
	case string(name) == "BYTES":
		return runtime.Invalid, fmt.Errorf("input %q: datatype BYTES is not supported (infergate serves BOOL, integer and floating-point tensors)", info.Name)
	case !ok:
		return runtime.Invalid, fmt.Errorf("input %q: unknown datatype %q", info.Name, name)
	case dt != info.DataType:
		return runtime.Invalid, fmt.Errorf("input %q: datatype %s does not match the model's %s", info.Name, dt, info.DataType)
	}
	return dt, nil
}

func (r *oracleRequest) decodeShape(v *fastjson.Value, t *runtime.Tensor, info runtime.TensorInfo) error {
	if v == nil {
		return fmt.Errorf(`input %q: missing "shape"`, info.Name)
	}
	dims, err := v.Array()
	if err != nil {
		return fmt.Errorf(`input %q: "shape" must be an array, got %s`, info.Name, oracleJSONType(v))
	}
	for j, d := range dims {
		n, ok := r.nonNegativeInt(d)
		if !ok {
			return fmt.Errorf("input %q: shape[%d]: want a non-negative integer, got %s", info.Name, j, r.describe(d))
		}
		t.Shape = append(t.Shape, n)
	}
	if len(t.Shape) != len(info.Shape) {
		return fmt.Errorf("input %q: shape %s has rank %d but the model's %s has rank %d",
			info.Name, runtime.FormatShape(t.Shape), len(t.Shape), runtime.FormatShape(info.Shape), len(info.Shape))
	}
	for j, want := range info.Shape {
		if want != runtime.Dynamic && want != t.Shape[j] {
			return fmt.Errorf("input %q: shape %s does not match the model's %s",
				info.Name, runtime.FormatShape(t.Shape), runtime.FormatShape(info.Shape))
		}
	}
	if runtime.Elements(t.Shape) < 0 {
		return fmt.Errorf("input %q: shape %s holds too many elements", info.Name, runtime.FormatShape(t.Shape))
	}
	return nil
}

// decodeBinarySize returns the input's parameters.binary_data_size, if any.
func (r *oracleRequest) decodeBinarySize(v *fastjson.Value, name string) (size int64, ok bool, err error) {
	if v == nil {
		return 0, false, nil
	}
	params, err := v.Object()
	if err != nil {
		return 0, false, fmt.Errorf(`input %q: "parameters" must be an object, got %s`, name, oracleJSONType(v))
	}
	p := params.Get("binary_data_size")
	if p == nil {
		return 0, false, nil
	}
	size, ok = r.nonNegativeInt(p)
	if !ok {
		return 0, false, fmt.Errorf("input %q: parameters.binary_data_size: want a non-negative integer, got %s", name, r.describe(p))
	}
	return size, true, nil
}

func (r *oracleRequest) decodeBinaryData(t *runtime.Tensor, name string, elements int, size int64, bin []byte, offset int) (int, error) {
	// elements is at most 1<<40 and an element at most 8 bytes: no overflow.
	want := int64(elements) * int64(t.DataType.Size())
	if size != want {
		return offset, fmt.Errorf("input %q: binary_data_size %d does not match shape %s of %s (%d bytes)",
			name, size, runtime.FormatShape(t.Shape), t.DataType, want)
	}
	if want > int64(len(bin)-offset) {
		return offset, fmt.Errorf("input %q: binary data needs %d bytes but only %d are left after the JSON", name, want, len(bin)-offset)
	}
	end := offset + int(want)
	t.Data = append(t.Data[:0], bin[offset:end]...)
	if t.DataType == runtime.BOOL {
		// The extension encodes true as 1 and false as 0; anything else would
		// reach the model as an undefined bool.
		for j, b := range t.Data {
			if b > 1 {
				return offset, fmt.Errorf("input %q: binary BOOL element %d is %d, want 0 or 1", name, j, b)
			}
		}
	}
	return end, nil
}

// decodeData decodes "data", flat or nested to match the shape, into t.Data.
func (r *oracleRequest) decodeData(v *fastjson.Value, t *runtime.Tensor, name string, elements int) error {
	items, err := v.Array()
	if err != nil {
		return fmt.Errorf(`input %q: "data" must be an array, got %s`, name, oracleJSONType(v))
	}
	size := t.DataType.Size()
	if len(items) > 0 && items[0].Type() == fastjson.TypeArray && len(t.Shape) > 1 {
		// Each JSON value takes at least a byte of the header, so growing to
		// the shape's size first cannot be made to allocate more than the
		// body justifies.
		if elements <= r.jsonLen {
			t.Data = slices.Grow(t.Data[:0], elements*size)
		}
		r.path = r.path[:0]
		return r.decodeNested(items, t, name, 0)
	}

	if len(items) != elements {
		return fmt.Errorf("input %q: shape %s has %d elements but data holds %d", name, runtime.FormatShape(t.Shape), elements, len(items))
	}
	t.Data = slices.Grow(t.Data[:0], elements*size)
	for j, item := range items {
		if t.Data, err = r.appendValue(t.Data, t.DataType, item); err != nil {
			return fmt.Errorf("input %q: data[%d]: %w", name, j, err)
		}
	}
	return nil
}

// decodeNested decodes items, the nested data at depth, which must hold
// t.Shape[depth] values: arrays above the last dimension, scalars in it.
func (r *oracleRequest) decodeNested(items []*fastjson.Value, t *runtime.Tensor, name string, depth int) error {
	if want := t.Shape[depth]; int64(len(items)) != want {
		return fmt.Errorf("input %q: %s holds %d values but shape %s needs %d there",
			name, r.dataPath(), len(items), runtime.FormatShape(t.Shape), want)
	}
	last := depth == len(t.Shape)-1
	for j, item := range items {
		r.path = append(r.path, j)
		if last {
			var err error
			if t.Data, err = r.appendValue(t.Data, t.DataType, item); err != nil {
				return fmt.Errorf("input %q: %s: %w", name, r.dataPath(), err)
			}
		} else {
			sub, err := item.Array()
			if err != nil {
				return fmt.Errorf("input %q: %s: want an array of %d values (shape %s), got %s",
					name, r.dataPath(), t.Shape[depth+1], runtime.FormatShape(t.Shape), r.describe(item))
			}
			if err := r.decodeNested(sub, t, name, depth+1); err != nil {
				return err
			}
		}
		r.path = r.path[:len(r.path)-1]
	}
	return nil
}

// dataPath names the value at r.path, such as "data[1][0]".
func (r *oracleRequest) dataPath() string {
	var b strings.Builder
	b.WriteString("data")
	for _, j := range r.path {
		fmt.Fprintf(&b, "[%d]", j)
	}
	return b.String()
}

// appendValue appends the little-endian bytes of JSON value v as a dt.
func (r *oracleRequest) appendValue(dst []byte, dt runtime.DataType, v *fastjson.Value) ([]byte, error) {
	switch dt {
	case runtime.BOOL:
		switch v.Type() {
		case fastjson.TypeTrue:
			return append(dst, 1), nil
		case fastjson.TypeFalse:
			return append(dst, 0), nil
		}
		return dst, fmt.Errorf("want true or false, got %s", r.describe(v))
	case runtime.FP32:
		s, ok := r.numberText(v)
		if !ok {
			return dst, fmt.Errorf("want a number, got %s", r.describe(v))
		}
		// Parsing at 32 bits rounds the decimal once, straight to float32.
		f, err := strconv.ParseFloat(s, 32)
		if err != nil {
			return dst, fmt.Errorf("%s is out of range for FP32", s)
		}
		return binary.LittleEndian.AppendUint32(dst, math.Float32bits(float32(f))), nil
	case runtime.FP64:
		s, ok := r.numberText(v)
		if !ok {
			return dst, fmt.Errorf("want a number, got %s", r.describe(v))
		}
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return dst, fmt.Errorf("%s is out of range for FP64", s)
		}
		return binary.LittleEndian.AppendUint64(dst, math.Float64bits(f)), nil
	case runtime.FP16:
		s, ok := r.numberText(v)
		if !ok {
			return dst, fmt.Errorf("want a number, got %s", r.describe(v))
		}
		// Rounding to float64 first could differ from rounding the decimal
		// straight to half only within 2^-53 of a half-way point.
		f, err := strconv.ParseFloat(s, 64)
		h := float64ToHalf(f)
		if err != nil || h&0x7fff == 0x7c00 {
			return dst, fmt.Errorf("%s is out of range for FP16", s)
		}
		return binary.LittleEndian.AppendUint16(dst, h), nil
	}
	return r.appendInteger(dst, dt, v)
}

// appendInteger appends JSON integer v as the integer type dt. Numbers with a
// fraction or an exponent are refused even where integral (1.0, 1e3), as
// Triton does: they are usually floats sent to the wrong input.
func (r *oracleRequest) appendInteger(dst []byte, dt runtime.DataType, v *fastjson.Value) ([]byte, error) {
	s, ok := r.numberText(v)
	if !ok || strings.ContainsAny(s, ".eE") {
		return dst, fmt.Errorf("want an integer, got %s", r.describe(v))
	}
	if s == "-0" {
		s = "0" // valid JSON, and 0 even for the unsigned types
	}
	var n uint64
	if dt == runtime.UINT64 {
		u, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return dst, fmt.Errorf("%s is out of range for %s", s, dt)
		}
		n = u
	} else {
		i, err := strconv.ParseInt(s, 10, 64)
		lo, hi := integerRange(dt)
		if err != nil || i < lo || i > hi {
			return dst, fmt.Errorf("%s is out of range for %s", s, dt)
		}
		n = uint64(i) // two's complement; the byte order below keeps the low bytes
	}
	switch dt.Size() {
	case 1:
		return append(dst, byte(n)), nil
	case 2:
		return binary.LittleEndian.AppendUint16(dst, uint16(n)), nil
	case 4:
		return binary.LittleEndian.AppendUint32(dst, uint32(n)), nil
	case 8:
		return binary.LittleEndian.AppendUint64(dst, n), nil
	}
	panic("BUG: appendInteger called for " + dt.String())
}

// nonNegativeInt returns v as a non-negative JSON integer.
func (r *oracleRequest) nonNegativeInt(v *fastjson.Value) (int64, bool) {
	s, ok := r.numberText(v)
	if s == "-0" {
		s = "0"
	}
	if !ok || strings.ContainsAny(s, ".eE-") {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}

// numberText returns the JSON text of number v, valid until the next call.
// strconv parses it rather than fastjson, whose float parser is not
// correctly rounded; the strict validation in decode ensures the text is a
// JSON number and not NaN, Inf or a hexadecimal float strconv would take.
func (r *oracleRequest) numberText(v *fastjson.Value) (string, bool) {
	if v.Type() != fastjson.TypeNumber {
		return "", false
	}
	r.number = v.MarshalTo(r.number[:0])
	// strconv copies the text into any error it returns, so nothing keeps
	// this view of r.number past the next call.
	return bytesToString(r.number), true
}

// describe says what v is in an error: a number's text, a string's start,
// else its JSON type.
func (r *oracleRequest) describe(v *fastjson.Value) string {
	switch v.Type() {
	case fastjson.TypeNumber:
		s, _ := r.numberText(v)
		return strings.Clone(s)
	case fastjson.TypeString:
		s, _ := v.StringBytes()
		const maxShown = 32
		if len(s) > maxShown {
			return fmt.Sprintf("string %q...", s[:maxShown])
		}
		return fmt.Sprintf("string %q", s)
	}
	return oracleJSONType(v)
}

// jsonType names the JSON type of v.
func oracleJSONType(v *fastjson.Value) string {
	switch v.Type() {
	case fastjson.TypeTrue, fastjson.TypeFalse:
		return "boolean"
	default:
		return v.Type().String()
	}
}

func (r *oracleRequest) decodeOutputs(v *fastjson.Value, model []runtime.TensorInfo) error {
	if v == nil {
		return nil
	}
	items, err := v.Array()
	if err != nil {
		return fmt.Errorf(`"outputs" must be an array, got %s`, oracleJSONType(v))
	}
	for i, item := range items {
		obj, err := item.Object()
		if err != nil {
			return fmt.Errorf("outputs[%d]: want an object, got %s", i, oracleJSONType(item))
		}
		nameValue := obj.Get("name")
		if nameValue == nil {
			return fmt.Errorf(`outputs[%d]: missing "name"`, i)
		}
		name, err := nameValue.StringBytes()
		if err != nil {
			return fmt.Errorf(`outputs[%d]: "name" must be a string, got %s`, i, oracleJSONType(nameValue))
		}
		idx := tensorIndex(model, name)
		if idx < 0 {
			return fmt.Errorf("unknown output %q (the model gives %s)", name, quotedNames(model))
		}
		for _, o := range r.Outputs {
			if o.Index == idx {
				return fmt.Errorf("output %q: requested twice", model[idx].Name)
			}
		}
		out := RequestedOutput{Index: idx, Binary: r.BinaryOutput}
		if p := obj.Get("parameters"); p != nil {
			params, err := p.Object()
			if err != nil {
				return fmt.Errorf(`output %q: "parameters" must be an object, got %s`, model[idx].Name, oracleJSONType(p))
			}
			if b := params.Get("binary_data"); b != nil {
				if out.Binary, err = b.Bool(); err != nil {
					return fmt.Errorf("output %q: parameters.binary_data: want true or false, got %s", model[idx].Name, r.describe(b))
				}
			}
			if c := params.Get("classification"); c != nil {
				info := model[idx]
				k, ok := r.nonNegativeInt(c)
				switch {
				case !ok || k < 1:
					return fmt.Errorf("output %q: parameters.classification: want an integer of at least 1, got %s", info.Name, r.describe(c))
				case len(info.Shape) != 2 || info.DataType != runtime.FP32 && info.DataType != runtime.FP64:
					return fmt.Errorf("output %q: parameters.classification needs a [batch, classes] FP32 or FP64 output", info.Name)
				case info.Shape[1] != runtime.Dynamic && k > info.Shape[1] || k > maxClasses:
					return fmt.Errorf("output %q: parameters.classification asks for %d classes", info.Name, k)
				}
				out.Classes = int(k)
			}
			var unknown error
			params.Visit(func(key []byte, _ *fastjson.Value) {
				if k := string(key); unknown == nil && k != "binary_data" && k != "classification" {
					unknown = fmt.Errorf("output %q: unsupported parameter %q", model[idx].Name, k)
				}
			})
			if unknown != nil {
				return unknown
			}
		}
		r.Outputs = append(r.Outputs, out)
	}
	return nil
}
