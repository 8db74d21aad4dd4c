package v2codec

import (
	"math"
	"slices"

	"github.com/infergate/infergate/gateway/v2codec/inferencepb"
	"github.com/infergate/infergate/runtime"
)

// oracleDecodeProto is the decoder of the unmarshalled message that
// ParseProto and DecodeProto replaced, kept as their oracle: it fills r from m, a gRPC ModelInferRequest for a model of
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
// keeps no view of m. DecodeProto does the same from the encoded
// message, without unmarshalling it.
func (r *Request) oracleDecodeProto(m *inferencepb.ModelInferRequest, maxValues int, inputs, outputs []runtime.TensorInfo) error {
	r.reset()
	raw := m.RawInputContents
	r.RawContents = len(raw) > 0
	r.setID([]byte(m.Id))
	param := func(key string) *paramValue {
		p, ok := m.Parameters[key]
		if !ok {
			return nil
		}
		v := paramOf(p)
		return &v
	}
	if err := r.protoParameters(param("timeout"), param("priority"), param("binary_data_output")); err != nil {
		return err
	}
	if err := r.protoInputCount(len(m.Inputs), len(raw), inputs); err != nil {
		return err
	}
	values := 0
	for j, in := range m.Inputs {
		t, info, err := r.protoInputHead(j, []byte(in.Name), []byte(in.Datatype), in.Shape, inputs)
		if err != nil {
			return err
		}
		elements := runtime.Elements(t.Shape)
		if values += elements; values > maxValues {
			return errProtoTooManyValues(maxValues)
		}
		if len(raw) > 0 {
			err = protoRawInput(t, info.Name, j, elements, in.Contents != nil, raw[j])
		} else {
			err = protoContents(t, info.Name, elements, in.Contents)
		}
		if err != nil {
			return err
		}
	}
	if err := r.protoMissingInput(inputs); err != nil {
		return err
	}
	return r.protoOutputs(m.Outputs, outputs)
}

// paramOf returns p's value.
func paramOf(p *inferencepb.InferParameter) paramValue {
	switch v := p.GetParameterChoice().(type) {
	case *inferencepb.InferParameter_BoolParam:
		if v.BoolParam {
			return paramValue{kind: paramBool, bits: 1}
		}
		return paramValue{kind: paramBool}
	case *inferencepb.InferParameter_Int64Param:
		return paramValue{kind: paramInt64, bits: uint64(v.Int64Param)}
	case *inferencepb.InferParameter_Uint64Param:
		return paramValue{kind: paramUint64, bits: v.Uint64Param}
	case *inferencepb.InferParameter_DoubleParam:
		return paramValue{kind: paramDouble, bits: math.Float64bits(v.DoubleParam)}
	case *inferencepb.InferParameter_StringParam:
		return paramValue{kind: paramString, str: []byte(v.StringParam)}
	}
	return paramValue{}
}

// contentsLengths returns the number of elements in each of c's fields.
func contentsLengths(c *inferencepb.InferTensorContents) [len(contentsFields)]int {
	return [...]int{len(c.GetBoolContents()), len(c.GetIntContents()), len(c.GetInt64Contents()), len(c.GetUintContents()),
		len(c.GetUint64Contents()), len(c.GetFp32Contents()), len(c.GetFp64Contents()), len(c.GetBytesContents())}
}

// protoContents stores the typed contents c of an input of t's datatype
// and shape in t.Data, little-endian.
func protoContents(t *runtime.Tensor, name string, elements int, c *inferencepb.InferTensorContents) error {
	lengths := contentsLengths(c)
	field, err := protoContentsField(t, name, elements, &lengths)
	if err != nil {
		return err
	}
	for k := range elements {
		var v uint64
		switch field {
		case 0:
			if c.BoolContents[k] {
				v = 1
			}
		case 1:
			v = uint64(c.IntContents[k])
		case 2:
			v = uint64(c.Int64Contents[k])
		case 3:
			v = uint64(c.UintContents[k])
		case 4:
			v = c.Uint64Contents[k]
		case 5:
			v = uint64(math.Float32bits(c.Fp32Contents[k]))
		case 6:
			v = math.Float64bits(c.Fp64Contents[k])
		}
		if err := appendProtoElement(t, name, k, v); err != nil {
			return err
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
		idx, err := r.protoOutputHead(k, []byte(o.GetName()), model)
		if err != nil {
			return err
		}
		out := RequestedOutput{Index: idx}
		for _, key := range sortedKeys(o.GetParameters()) {
			if err := protoOutputParameter(model[idx], []byte(key), paramOf(o.Parameters[key]), &out); err != nil {
				return err
			}
		}
		r.addOutput(out)
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
