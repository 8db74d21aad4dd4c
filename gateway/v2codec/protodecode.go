package v2codec

import (
	"errors"
	"fmt"
	"slices"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/infergate/infergate/runtime"
)

// The wire decoder reads an encoded ModelInferRequest in two passes
// without unmarshalling it: ParseProto checks the whole message as
// proto.Unmarshal checks it and notes where its fields lie, as views of
// the message kept in reusable slices of the Request; DecodeProto then
// runs the request's checks (proto.go) on those views and copies the elements
// straight from the wire into the tensors. Protobuf's rules hold: the last
// occurrence of a singular scalar or string wins, a singular message seen
// twice is merged, repeated scalars come packed or not, a known field of
// an unexpected wire type is an unknown field, and a map entry's last
// occurrence of a key wins.

// Field numbers of the messages of a ModelInferRequest
// (inferencepb/grpc_service.proto).
const (
	fieldRequestModelName        = 1
	fieldRequestModelVersion     = 2
	fieldRequestID               = 3
	fieldRequestParameters       = 4
	fieldRequestInputs           = 5
	fieldRequestOutputs          = 6
	fieldRequestRawInputContents = 7

	fieldInputName       = 1
	fieldInputDatatype   = 2
	fieldInputShape      = 3
	fieldInputParameters = 4
	fieldInputContents   = 5

	fieldOutputName       = 1
	fieldOutputParameters = 2

	fieldEntryKey   = 1
	fieldEntryValue = 2

	fieldParamBool   = 1
	fieldParamInt64  = 2
	fieldParamString = 3
	fieldParamDouble = 4
	fieldParamUint64 = 5

	// fieldContentsBytes is bytes_contents, the last of InferTensorContents'
	// fields, which are numbered from 1 in contentsFields' order.
	fieldContentsBytes = 8
)

// protoWire is what ParseProto found in an encoded ModelInferRequest: views
// of the message, in slices that a Request reuses.
type protoWire struct {
	// id is the request's id.
	id []byte

	// params holds the entries of the request's parameters in message
	// order; the last entry of a key is its value.
	params []wireParam

	// inputs and outputs hold the request's inputs and outputs in order.
	inputs  []wireInput
	outputs []wireOutput

	// shapes holds the shape dimensions of all the inputs, contents the
	// encoded contents messages of all the inputs, and outputParams the
	// parameter entries of all the outputs: each input and output owns a
	// range of them.
	shapes       []int64
	contents     [][]byte
	outputParams []wireParam

	// raw holds the entries of raw_input_contents.
	raw [][]byte
}

// wireParam is an entry of a map<string, InferParameter>.
type wireParam struct {
	key   []byte
	value paramValue
}

// wireInput is an InferInputTensor.
type wireInput struct {
	name, datatype []byte

	// shape and contents are the ranges of protoWire.shapes and
	// protoWire.contents that the input owns.
	shape, contents [2]int

	// hasContents says that the input came with contents, even empty.
	hasContents bool

	// lengths counts the elements of each field of its contents, in
	// contentsFields' order.
	lengths [len(contentsFields)]int
}

// wireOutput is an InferRequestedOutputTensor.
type wireOutput struct {
	name []byte

	// params is the range of protoWire.outputParams that the output owns.
	params [2]int
}

// maxPooledWireItems bounds the entries each of a protoWire's slices keeps
// for the next message once the last is done with: a message of millions
// of empty inputs (two bytes each on the wire) must not leave their
// entries pinned in the pool.
const maxPooledWireItems = 1 << 10

// reset empties w, dropping its views of the last message; it keeps its
// slices unless they grew past maxPooledWireItems.
func (w *protoWire) reset() {
	w.id = nil
	w.params, w.inputs, w.outputs = reuse(w.params), reuse(w.inputs), reuse(w.outputs)
	w.shapes, w.contents, w.outputParams, w.raw = reuse(w.shapes), reuse(w.contents), reuse(w.outputParams), reuse(w.raw)
}

// reuse returns s emptied, its elements cleared, or nil when it grew past
// maxPooledWireItems.
func reuse[T any](s []T) []T {
	if cap(s) > maxPooledWireItems {
		return nil
	}
	clear(s)
	return s[:0]
}

// errWireInvalidUTF8 is the error for a string field that is not valid
// UTF-8, which proto3 refuses.
var errWireInvalidUTF8 = errors.New("string field holds invalid UTF-8")

// ParseProto checks b as proto.Unmarshal would check an encoded
// ModelInferRequest and notes where its fields lie (views of b, no
// copies) for DecodeProto; it returns the model_name and
// model_version that b names (views of b). b must stay unchanged until
// DecodeProto returns. ParseProto fails exactly when proto.Unmarshal
// fails; its error describes a bad request (InvalidArgument), and r must
// then not be passed to DecodeProto.
func (r *Request) ParseProto(b []byte) (model, version []byte, err error) {
	w := &r.wire
	w.reset()
	for len(b) > 0 {
		num, typ, _, v, n := consumeWireField(b)
		if n < 0 {
			return nil, nil, wireError("ModelInferRequest", n)
		}
		b = b[n:]
		switch {
		case typ != protowire.BytesType:
		case num == fieldRequestModelName, num == fieldRequestModelVersion, num == fieldRequestID:
			if !utf8.Valid(v) {
				return nil, nil, fmt.Errorf("cannot parse ModelInferRequest: field %d: %w", num, errWireInvalidUTF8)
			}
			switch num {
			case fieldRequestModelName:
				model = v
			case fieldRequestModelVersion:
				version = v
			default:
				w.id = v
			}
		case num == fieldRequestParameters:
			if w.params, err = appendWireParam(w.params, v); err != nil {
				return nil, nil, fmt.Errorf("cannot parse ModelInferRequest parameters: %w", err)
			}
		case num == fieldRequestInputs:
			if err := w.parseInput(v); err != nil {
				return nil, nil, fmt.Errorf("cannot parse ModelInferRequest inputs[%d]: %w", len(w.inputs), err)
			}
		case num == fieldRequestOutputs:
			if err := w.parseOutput(v); err != nil {
				return nil, nil, fmt.Errorf("cannot parse ModelInferRequest outputs[%d]: %w", len(w.outputs), err)
			}
		case num == fieldRequestRawInputContents:
			w.raw = append(w.raw, v)
		}
	}
	return model, version, nil
}

// consumeWireTag parses a field's tag at the start of b, which must number
// a valid field and cannot end a group (no message of a ModelInferRequest
// is a group); n is its length, or a negative protowire error code.
func consumeWireTag(b []byte) (num protowire.Number, typ protowire.Type, n int) {
	tag, n := protowire.ConsumeVarint(b)
	if n < 0 {
		return 0, 0, n
	}
	if f := tag >> 3; f < uint64(protowire.MinValidNumber) || f > uint64(protowire.MaxValidNumber) {
		return 0, 0, errCodeFieldNumber
	}
	num, typ = protowire.Number(tag>>3), protowire.Type(tag&7)
	if typ == protowire.EndGroupType {
		return 0, 0, errCodeEndGroup
	}
	return num, typ, n
}

// Error codes of protowire.ParseError that consumeWireTag returns; each is
// the code protowire itself gives for the same fault.
var (
	_, _, errCodeFieldNumber = protowire.ConsumeTag([]byte{0})
	errCodeEndGroup          = protowire.ConsumeFieldValue(1, protowire.EndGroupType, nil)
)

// wireError is the error for a message whose encoding protowire refused
// with code n.
func wireError(message string, n int) error {
	return fmt.Errorf("cannot parse %s: %w", message, protowire.ParseError(n))
}

// consumeWireField parses the field at the start of b, its tag included:
// x is the value of a field of the varint, fixed32 or fixed64 wire type, v
// that of a field of the bytes wire type (a group is consumed whole), and
// n the field's length, or a negative protowire error code.
func consumeWireField(b []byte) (num protowire.Number, typ protowire.Type, x uint64, v []byte, n int) {
	num, typ, n = consumeWireTag(b)
	if n < 0 {
		return 0, 0, 0, nil, n
	}
	var m int
	switch typ {
	case protowire.VarintType:
		x, m = protowire.ConsumeVarint(b[n:])
	case protowire.Fixed32Type:
		var x32 uint32
		x32, m = protowire.ConsumeFixed32(b[n:])
		x = uint64(x32)
	case protowire.Fixed64Type:
		x, m = protowire.ConsumeFixed64(b[n:])
	case protowire.BytesType:
		v, m = protowire.ConsumeBytes(b[n:])
	default:
		m = protowire.ConsumeFieldValue(num, typ, b[n:])
	}
	if m < 0 {
		return 0, 0, 0, nil, m
	}
	return num, typ, x, v, n + m
}

// parseInput checks the encoded InferInputTensor b and appends it to
// w.inputs.
func (w *protoWire) parseInput(b []byte) error {
	in := wireInput{shape: [2]int{len(w.shapes), 0}, contents: [2]int{len(w.contents), 0}}
	var err error
	for len(b) > 0 {
		num, typ, x, v, n := consumeWireField(b)
		if n < 0 {
			return wireError("InferInputTensor", n)
		}
		b = b[n:]
		switch {
		case num == fieldInputShape && typ == protowire.VarintType:
			w.shapes = append(w.shapes, int64(x))
		case typ != protowire.BytesType:
		case num == fieldInputName, num == fieldInputDatatype:
			if !utf8.Valid(v) {
				return fmt.Errorf("field %d: %w", num, errWireInvalidUTF8)
			}
			if num == fieldInputName {
				in.name = v
			} else {
				in.datatype = v
			}
		case num == fieldInputShape:
			for len(v) > 0 {
				x, m := protowire.ConsumeVarint(v)
				if m < 0 {
					return wireError("InferInputTensor shape", m)
				}
				w.shapes = append(w.shapes, int64(x))
				v = v[m:]
			}
		case num == fieldInputParameters:
			if _, _, err = parseWireEntry(v); err != nil {
				return fmt.Errorf("parameters: %w", err)
			}
		case num == fieldInputContents:
			if err := countContents(v, &in.lengths); err != nil {
				return fmt.Errorf("contents: %w", err)
			}
			w.contents = append(w.contents, v)
			in.hasContents = true
		}
	}
	in.shape[1], in.contents[1] = len(w.shapes), len(w.contents)
	w.inputs = append(w.inputs, in)
	return nil
}

// scalarWireType returns the wire type of the unpacked elements of
// InferTensorContents' field of index k in contentsFields, and their size
// in bytes when they are fixed (0 for varints).
func scalarWireType(k int) (protowire.Type, int) {
	switch k {
	case 5:
		return protowire.Fixed32Type, 4
	case 6:
		return protowire.Fixed64Type, 8
	}
	return protowire.VarintType, 0
}

// countContents checks the encoded InferTensorContents b and adds the
// number of elements of each of its fields to lengths.
func countContents(b []byte, lengths *[len(contentsFields)]int) error {
	for len(b) > 0 {
		num, typ, _, v, n := consumeWireField(b)
		if n < 0 {
			return wireError("InferTensorContents", n)
		}
		b = b[n:]
		if num < 1 || num > fieldContentsBytes {
			continue
		}
		k := int(num) - 1
		if num == fieldContentsBytes {
			if typ == protowire.BytesType {
				lengths[k]++
			}
			continue
		}
		scalar, size := scalarWireType(k)
		switch {
		case typ == scalar:
			lengths[k]++
		case typ != protowire.BytesType:
		case size > 0:
			if len(v)%size != 0 {
				return wireError("InferTensorContents "+contentsFields[k], errCodeTruncated)
			}
			lengths[k] += len(v) / size
		default:
			for len(v) > 0 {
				_, m := protowire.ConsumeVarint(v)
				if m < 0 {
					return wireError("InferTensorContents "+contentsFields[k], m)
				}
				lengths[k]++
				v = v[m:]
			}
		}
	}
	return nil
}

// errCodeTruncated is protowire's error code for a value cut short.
var errCodeTruncated = protowire.ConsumeFieldValue(1, protowire.Fixed32Type, nil)

// parseOutput checks the encoded InferRequestedOutputTensor b and appends
// it to w.outputs.
func (w *protoWire) parseOutput(b []byte) error {
	out := wireOutput{params: [2]int{len(w.outputParams), 0}}
	var err error
	for len(b) > 0 {
		num, typ, _, v, n := consumeWireField(b)
		if n < 0 {
			return wireError("InferRequestedOutputTensor", n)
		}
		b = b[n:]
		switch {
		case typ != protowire.BytesType:
		case num == fieldOutputName:
			if !utf8.Valid(v) {
				return fmt.Errorf("field %d: %w", num, errWireInvalidUTF8)
			}
			out.name = v
		case num == fieldOutputParameters:
			if w.outputParams, err = appendWireParam(w.outputParams, v); err != nil {
				return fmt.Errorf("parameters: %w", err)
			}
		}
	}
	out.params[1] = len(w.outputParams)
	w.outputs = append(w.outputs, out)
	return nil
}

// appendWireParam checks the encoded map entry b of a map<string,
// InferParameter> and appends it to params.
func appendWireParam(params []wireParam, b []byte) ([]wireParam, error) {
	key, value, err := parseWireEntry(b)
	if err != nil {
		return params, err
	}
	return append(params, wireParam{key: key, value: value}), nil
}

// parseWireEntry checks the encoded map entry b of a map<string,
// InferParameter> and returns its key and value: "" and a parameter with
// no value where the entry lacks them.
func parseWireEntry(b []byte) (key []byte, value paramValue, err error) {
	for len(b) > 0 {
		num, typ, _, v, n := consumeWireField(b)
		if n < 0 {
			return nil, value, wireError("map entry", n)
		}
		b = b[n:]
		switch {
		case typ != protowire.BytesType:
		case num == fieldEntryKey:
			if !utf8.Valid(v) {
				return nil, value, fmt.Errorf("key: %w", errWireInvalidUTF8)
			}
			key = v
		case num == fieldEntryValue:
			// A value seen twice is merged: its oneof keeps the last member set.
			if err := parseWireParam(v, &value); err != nil {
				return nil, value, err
			}
		}
	}
	return key, value, nil
}

// parseWireParam checks the encoded InferParameter b and merges it into p.
func parseWireParam(b []byte, p *paramValue) error {
	for len(b) > 0 {
		num, typ, x, v, n := consumeWireField(b)
		if n < 0 {
			return wireError("InferParameter", n)
		}
		b = b[n:]
		switch {
		case typ == protowire.VarintType && (num == fieldParamBool || num == fieldParamInt64 || num == fieldParamUint64):
			switch num {
			case fieldParamBool:
				*p = paramValue{kind: paramBool}
				if x != 0 {
					p.bits = 1
				}
			case fieldParamInt64:
				*p = paramValue{kind: paramInt64, bits: x}
			default:
				*p = paramValue{kind: paramUint64, bits: x}
			}
		case typ == protowire.Fixed64Type && num == fieldParamDouble:
			*p = paramValue{kind: paramDouble, bits: x}
		case typ == protowire.BytesType && num == fieldParamString:
			if !utf8.Valid(v) {
				return fmt.Errorf("string_param: %w", errWireInvalidUTF8)
			}
			*p = paramValue{kind: paramString, str: v}
		}
	}
	return nil
}

// param returns the value of the last entry of key in params, or nil.
func param(params []wireParam, key string) *paramValue {
	for i := len(params) - 1; i >= 0; i-- {
		if string(params[i].key) == key {
			return &params[i].value
		}
	}
	return nil
}

// DecodeProto fills r from the message that ParseProto parsed, a gRPC
// ModelInferRequest for a model of these inputs and outputs, as Decode
// fills it from a JSON body: each input's shape and datatype are checked
// against the model's with Decode's limits and error texts, and its
// elements come from its typed contents or, when the request has
// raw_input_contents (Triton's extension), from the little-endian bytes
// there, one entry per input in request order. The inputs may hold at
// most maxValues elements in all; beyond that DecodeProto fails with an
// error wrapping ErrTooManyValues (gRPC ResourceExhausted, HTTP 413).
// Every other error describes a bad request (InvalidArgument). Unlike
// Decode, DecodeProto leaves r.Values and r.WellFormed alone: a protobuf
// message that parsed is well formed. It sets r.RawContents
// when the request sent raw_input_contents. r keeps no view of the
// message. In steady state, with pooled requests, it allocates nothing.
func (r *Request) DecodeProto(maxValues int, inputs, outputs []runtime.TensorInfo) error {
	w := &r.wire
	defer w.reset()
	r.resetDecoded()
	r.RawContents = len(w.raw) > 0
	r.setID(w.id)
	if err := r.protoParameters(param(w.params, "timeout"), param(w.params, "priority"), param(w.params, "binary_data_output")); err != nil {
		return err
	}
	if err := r.protoInputCount(len(w.inputs), len(w.raw), inputs); err != nil {
		return err
	}
	values := 0
	for j := range w.inputs {
		in := &w.inputs[j]
		t, info, err := r.protoInputHead(j, in.name, in.datatype, w.shapes[in.shape[0]:in.shape[1]], inputs)
		if err != nil {
			return err
		}
		elements := runtime.Elements(t.Shape)
		if values += elements; values > maxValues {
			return errProtoTooManyValues(maxValues)
		}
		if len(w.raw) > 0 {
			err = protoRawInput(t, info.Name, j, elements, in.hasContents, w.raw[j])
		} else {
			err = wireContents(t, info.Name, elements, in, w.contents[in.contents[0]:in.contents[1]])
		}
		if err != nil {
			return err
		}
	}
	if err := r.protoMissingInput(inputs); err != nil {
		return err
	}
	for k := range w.outputs {
		o := &w.outputs[k]
		idx, err := r.protoOutputHead(k, o.name, outputs)
		if err != nil {
			return err
		}
		out := RequestedOutput{Index: idx}
		// Sorted by key, a key's last entry last: that entry is its value.
		params := w.outputParams[o.params[0]:o.params[1]]
		slices.SortStableFunc(params, func(a, b wireParam) int { return compareBytes(a.key, b.key) })
		for i := range params {
			if i+1 < len(params) && string(params[i+1].key) == string(params[i].key) {
				continue
			}
			if err := protoOutputParameter(outputs[idx], params[i].key, params[i].value, &out); err != nil {
				return err
			}
		}
		r.addOutput(out)
	}
	return nil
}

// compareBytes orders a and b as strings are ordered.
func compareBytes(a, b []byte) int {
	switch {
	case string(a) < string(b):
		return -1
	case string(a) > string(b):
		return 1
	}
	return 0
}

// wireContents stores the elements of in, an input of t's datatype and
// shape, from its encoded contents messages, checked by ParseProto, in
// t.Data, little-endian.
func wireContents(t *runtime.Tensor, name string, elements int, in *wireInput, contents [][]byte) error {
	field, err := protoContentsField(t, name, elements, &in.lengths)
	if err != nil {
		return err
	}
	scalar, size := scalarWireType(field)
	k := 0
	for _, b := range contents {
		for len(b) > 0 {
			num, typ, x, v, n := consumeWireField(b)
			b = b[n:]
			if int(num) != field+1 {
				continue
			}
			switch {
			case typ == scalar:
				if err := appendProtoElement(t, name, k, x); err != nil {
					return err
				}
				k++
			case typ != protowire.BytesType:
			case size > 0:
				// Packed floats and doubles are their little-endian bits.
				t.Data = append(t.Data, v...)
				k += len(v) / size
			default:
				for len(v) > 0 {
					x, m := protowire.ConsumeVarint(v)
					v = v[m:]
					if err := appendProtoElement(t, name, k, x); err != nil {
						return err
					}
					k++
				}
			}
		}
	}
	return nil
}
