package v2codec

import (
	"bytes"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/infergate/infergate/gateway/v2codec/inferencepb"
	"github.com/infergate/infergate/runtime"
)

// decodeProtoBoth decodes m with oracleDecodeProto and its encoding with
// ParseProto and DecodeProto, fails t unless the two agree, and
// returns the wire decoder's request (released when t ends) and error.
func decodeProtoBoth(t testing.TB, m *inferencepb.ModelInferRequest, maxValues int, inputs, outputs []runtime.TensorInfo) (*Request, error) {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatalf("cannot marshal the request: %v", err)
	}
	want := AcquireRequest()
	got := AcquireRequest()
	t.Cleanup(func() { ReleaseRequest(want); ReleaseRequest(got) })
	wantErr := want.oracleDecodeProto(m, maxValues, inputs, outputs)
	model, version, err := got.ParseProto(b)
	if err != nil {
		t.Fatalf("ParseProto of a marshalled request: %v", err)
	}
	if string(model) != m.ModelName || string(version) != m.ModelVersion {
		t.Errorf("ParseProto gave model %q version %q, want %q %q", model, version, m.ModelName, m.ModelVersion)
	}
	gotErr := got.DecodeProto(maxValues, inputs, outputs)
	if diff := diffProtoDecodes(want, wantErr, got, gotErr); diff != "" {
		t.Fatalf("DecodeProto differs from the oracle: %s", diff)
	}
	return got, gotErr
}

// compareProtoWire checks that ParseProto refuses b exactly when
// proto.Unmarshal does, and that DecodeProto then decodes it as
// oracleDecodeProto decodes the unmarshalled message; it returns whether b
// parsed.
func compareProtoWire(t testing.TB, b []byte, maxValues int, inputs, outputs []runtime.TensorInfo) bool {
	t.Helper()
	var m inferencepb.ModelInferRequest
	unmarshalErr := proto.Unmarshal(b, &m)
	got := AcquireRequest()
	defer ReleaseRequest(got)
	model, version, parseErr := got.ParseProto(b)
	if (unmarshalErr == nil) != (parseErr == nil) {
		t.Fatalf("%x: proto.Unmarshal: %v, but ParseProto: %v", b, unmarshalErr, parseErr)
	}
	if parseErr != nil {
		return false
	}
	if string(model) != m.ModelName || string(version) != m.ModelVersion {
		t.Fatalf("%x: ParseProto gave model %q version %q, want %q %q", b, model, version, m.ModelName, m.ModelVersion)
	}
	want := AcquireRequest()
	defer ReleaseRequest(want)
	wantErr := want.oracleDecodeProto(&m, maxValues, inputs, outputs)
	gotErr := got.DecodeProto(maxValues, inputs, outputs)
	if diff := diffProtoDecodes(want, wantErr, got, gotErr); diff != "" {
		t.Fatalf("%x: DecodeProto differs from the oracle: %s", b, diff)
	}
	if gotErr == nil {
		results := make([]runtime.Tensor, len(outputs))
		for i, info := range outputs {
			results[i] = runtime.Tensor{DataType: info.DataType, Shape: []int64{1, 2}[:len(info.Shape)]}
			results[i].Data = make([]byte, runtime.Elements(results[i].Shape)*info.DataType.Size())
		}
		AppendProtoInferResponse(nil, "m", "1", got, outputs, results, nil)
	}
	return true
}

// diffProtoDecodes describes how the request and error of DecodeProto
// (got) differ from those of oracleDecodeProto (want), or returns "".
func diffProtoDecodes(want *Request, wantErr error, got *Request, gotErr error) string {
	if (wantErr == nil) != (gotErr == nil) || wantErr != nil && wantErr.Error() != gotErr.Error() {
		return fmt.Sprintf("error %v, want %v", gotErr, wantErr)
	}
	if wantErr != nil {
		return ""
	}
	switch {
	case !bytes.Equal(got.ID, want.ID) || (got.ID == nil) != (want.ID == nil):
		return fmt.Sprintf("ID %q, want %q", got.ID, want.ID)
	case got.Timeout != want.Timeout || got.Priority != want.Priority:
		return fmt.Sprintf("timeout %v priority %d, want %v %d", got.Timeout, got.Priority, want.Timeout, want.Priority)
	case got.RawContents != want.RawContents || got.BinaryOutput != want.BinaryOutput:
		return fmt.Sprintf("RawContents %t BinaryOutput %t, want %t %t", got.RawContents, got.BinaryOutput, want.RawContents, want.BinaryOutput)
	case !slices.Equal(got.Outputs, want.Outputs) || !slices.Equal(got.outputSet, want.outputSet):
		return fmt.Sprintf("outputs %+v, want %+v", got.Outputs, want.Outputs)
	case len(got.Inputs) != len(want.Inputs):
		return fmt.Sprintf("%d inputs, want %d", len(got.Inputs), len(want.Inputs))
	}
	for i := range want.Inputs {
		w, g := want.Inputs[i], got.Inputs[i]
		if w.DataType != g.DataType || !slices.Equal(w.Shape, g.Shape) || !bytes.Equal(w.Data, g.Data) {
			return fmt.Sprintf("input %d: %v %v %x, want %v %v %x", i, g.DataType, g.Shape, g.Data, w.DataType, w.Shape, w.Data)
		}
	}
	return ""
}

// wireEncoding says how handEncode lays out a request.
type wireEncoding struct {
	// packed sends repeated scalars packed, else one field each.
	packed bool

	// split sends each input's shape half packed and half not, and its
	// contents in two messages, each with half of every field.
	split bool

	// noise adds unknown fields, groups and known fields of unexpected
	// wire types, which decoders skip, to every message.
	noise bool
}

// appendWireNoise appends fields that a decoder of a message of the known
// fields known skips: unknown fields of each wire type, a nested group,
// and each known field with a wire type it does not have.
func appendWireNoise(b []byte, known ...protowire.Number) []byte {
	b = protowire.AppendTag(b, 99, protowire.VarintType)
	b = protowire.AppendVarint(b, 1<<40)
	b = protowire.AppendTag(b, 98, protowire.Fixed32Type)
	b = protowire.AppendFixed32(b, 7)
	b = protowire.AppendTag(b, 97, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, 7)
	b = protowire.AppendTag(b, 96, protowire.BytesType)
	b = protowire.AppendBytes(b, []byte{0xff, 0xfe}) // not UTF-8, and unchecked
	b = protowire.AppendTag(b, 100, protowire.StartGroupType)
	b = protowire.AppendTag(b, 1, protowire.VarintType)
	b = protowire.AppendVarint(b, 5)
	b = protowire.AppendTag(b, 2, protowire.StartGroupType)
	b = protowire.AppendTag(b, 2, protowire.EndGroupType)
	b = protowire.AppendTag(b, 100, protowire.EndGroupType)
	for _, num := range known {
		// A group: a known field never has this wire type here.
		b = protowire.AppendTag(b, num, protowire.StartGroupType)
		b = protowire.AppendTag(b, num, protowire.EndGroupType)
		b = protowire.AppendTag(b, num, protowire.Fixed32Type)
		b = protowire.AppendFixed32(b, 1)
	}
	return b
}

// appendWireString appends field num of the bytes wire type holding s.
func appendWireString(b []byte, num protowire.Number, s []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, s)
}

// encodeWireParam encodes p as an InferParameter.
func encodeWireParam(p *inferencepb.InferParameter, e wireEncoding) []byte {
	var b []byte
	if e.noise {
		b = appendWireNoise(b, 4) // double_param
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendBytes(b, []byte("x")) // bool_param of the wrong type
	}
	switch v := p.GetParameterChoice().(type) {
	case *inferencepb.InferParameter_BoolParam:
		b = protowire.AppendTag(b, 1, protowire.VarintType)
		b = protowire.AppendVarint(b, protowire.EncodeBool(v.BoolParam))
	case *inferencepb.InferParameter_Int64Param:
		b = protowire.AppendTag(b, 2, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(v.Int64Param))
	case *inferencepb.InferParameter_StringParam:
		b = appendWireString(b, 3, []byte(v.StringParam))
	case *inferencepb.InferParameter_DoubleParam:
		b = protowire.AppendTag(b, 4, protowire.Fixed64Type)
		b = protowire.AppendFixed64(b, math.Float64bits(v.DoubleParam))
	case *inferencepb.InferParameter_Uint64Param:
		b = protowire.AppendTag(b, 5, protowire.VarintType)
		b = protowire.AppendVarint(b, v.Uint64Param)
	}
	return b
}

// appendWireParams appends the map params as field num, in key order.
func appendWireParams(b []byte, num protowire.Number, params map[string]*inferencepb.InferParameter, e wireEncoding) []byte {
	keys := sortedKeys(params)
	for _, k := range keys {
		var entry []byte
		if e.noise {
			entry = appendWireNoise(entry)
			entry = protowire.AppendTag(entry, 1, protowire.VarintType) // a key of the wrong type
			entry = protowire.AppendVarint(entry, 3)
		}
		entry = appendWireString(entry, 1, []byte(k))
		entry = appendWireString(entry, 2, encodeWireParam(params[k], e))
		b = appendWireString(b, num, entry)
	}
	return b
}

// appendWireVarints appends the values vs of field num, packed or not.
func appendWireVarints(b []byte, num protowire.Number, vs []uint64, packed bool) []byte {
	if len(vs) == 0 {
		return b
	}
	if !packed {
		for _, v := range vs {
			b = protowire.AppendTag(b, num, protowire.VarintType)
			b = protowire.AppendVarint(b, v)
		}
		return b
	}
	var p []byte
	for _, v := range vs {
		p = protowire.AppendVarint(p, v)
	}
	return appendWireString(b, num, p)
}

// appendWireFixed appends the values vs of field num, fixed of size 4 or
// 8 bytes, packed or not.
func appendWireFixed(b []byte, num protowire.Number, vs []uint64, size int, packed bool) []byte {
	if len(vs) == 0 {
		return b
	}
	typ := protowire.Fixed64Type
	if size == 4 {
		typ = protowire.Fixed32Type
	}
	if !packed {
		for _, v := range vs {
			b = protowire.AppendTag(b, num, typ)
			if size == 4 {
				b = protowire.AppendFixed32(b, uint32(v))
			} else {
				b = protowire.AppendFixed64(b, v)
			}
		}
		return b
	}
	var p []byte
	for _, v := range vs {
		if size == 4 {
			p = protowire.AppendFixed32(p, uint32(v))
		} else {
			p = protowire.AppendFixed64(p, v)
		}
	}
	return appendWireString(b, num, p)
}

// contentsWireValues returns the elements of each of c's scalar fields
// as the wire carries them.
func contentsWireValues(c *inferencepb.InferTensorContents) [7][]uint64 {
	var vs [7][]uint64
	for _, v := range c.GetBoolContents() {
		vs[0] = append(vs[0], protowire.EncodeBool(v))
	}
	for _, v := range c.GetIntContents() {
		vs[1] = append(vs[1], uint64(v))
	}
	for _, v := range c.GetInt64Contents() {
		vs[2] = append(vs[2], uint64(v))
	}
	for _, v := range c.GetUintContents() {
		vs[3] = append(vs[3], uint64(v))
	}
	for _, v := range c.GetUint64Contents() {
		vs[4] = append(vs[4], v)
	}
	for _, v := range c.GetFp32Contents() {
		vs[5] = append(vs[5], uint64(math.Float32bits(v)))
	}
	for _, v := range c.GetFp64Contents() {
		vs[6] = append(vs[6], math.Float64bits(v))
	}
	return vs
}

// encodeWireContents encodes the elements vs[k][lo(k):hi(k)] of each field
// as an InferTensorContents.
func encodeWireContents(vs [7][]uint64, half int, e wireEncoding) []byte {
	var b []byte
	if e.noise {
		b = appendWireNoise(b, 1, 7)                        // a fixed32 of field 6 would be an fp32_contents element
		b = protowire.AppendTag(b, 6, protowire.VarintType) // fp32_contents of the wrong type
		b = protowire.AppendVarint(b, 1)
	}
	for k, v := range vs {
		switch half {
		case 1:
			v = v[:len(v)/2]
		case 2:
			v = v[len(v)/2:]
		}
		num := protowire.Number(k + 1)
		if _, size := scalarWireType(k); size > 0 {
			b = appendWireFixed(b, num, v, size, e.packed)
		} else {
			b = appendWireVarints(b, num, v, e.packed)
		}
	}
	return b
}

// handEncode encodes m as e says.
func handEncode(m *inferencepb.ModelInferRequest, e wireEncoding) []byte {
	var b []byte
	if e.noise {
		b = appendWireNoise(b, 1, 3, 4, 5, 6, 7)
	}
	b = appendWireString(b, 1, []byte(m.ModelName))
	b = appendWireString(b, 2, []byte(m.ModelVersion))
	b = appendWireString(b, 3, []byte(m.Id))
	b = appendWireParams(b, 4, m.Parameters, e)
	for _, in := range m.Inputs {
		var ib []byte
		if e.noise {
			ib = appendWireNoise(ib, 1, 2, 3, 4, 5)
		}
		ib = appendWireString(ib, 1, []byte(in.Name))
		ib = appendWireString(ib, 2, []byte(in.Datatype))
		shape := make([]uint64, len(in.Shape))
		for k, d := range in.Shape {
			shape[k] = uint64(d)
		}
		if e.split {
			ib = appendWireVarints(ib, 3, shape[:len(shape)/2], true)
			ib = appendWireVarints(ib, 3, shape[len(shape)/2:], false)
		} else {
			ib = appendWireVarints(ib, 3, shape, e.packed)
		}
		ib = appendWireParams(ib, 4, in.Parameters, e)
		if in.Contents != nil {
			vs := contentsWireValues(in.Contents)
			if e.split {
				ib = appendWireString(ib, 5, encodeWireContents(vs, 1, e))
				ib = appendWireString(ib, 5, encodeWireContents(vs, 2, e))
			} else {
				ib = appendWireString(ib, 5, encodeWireContents(vs, 0, e))
			}
		}
		b = appendWireString(b, 5, ib)
	}
	for _, o := range m.Outputs {
		var ob []byte
		if e.noise {
			ob = appendWireNoise(ob, 1, 2)
		}
		ob = appendWireString(ob, 1, []byte(o.Name))
		ob = appendWireParams(ob, 2, o.Parameters, e)
		b = appendWireString(b, 6, ob)
	}
	for _, raw := range m.RawInputContents {
		b = appendWireString(b, 7, raw)
	}
	return b
}

// wireEncodings lists every layout of handEncode.
func wireEncodings() []wireEncoding {
	var es []wireEncoding
	for _, packed := range []bool{false, true} {
		for _, split := range []bool{false, true} {
			for _, noise := range []bool{false, true} {
				es = append(es, wireEncoding{packed: packed, split: split, noise: noise})
			}
		}
	}
	return es
}

// protoAllRaw is protoAll with its inputs in raw_input_contents.
func protoAllRaw() *inferencepb.ModelInferRequest {
	m := protoAll()
	for _, in := range m.Inputs {
		dt, _ := runtime.ParseDataType([]byte(in.Datatype))
		m.RawInputContents = append(m.RawInputContents, make([]byte, 2*dt.Size()))
		in.Contents = nil
	}
	m.RawInputContents[1][0] = 1 // BOOL true
	m.ModelName, m.ModelVersion = "m", "2"
	m.Outputs[0].Parameters = map[string]*inferencepb.InferParameter{"binary_data": {ParameterChoice: &inferencepb.InferParameter_BoolParam{BoolParam: true}}}
	return m
}

// entry encodes a map<string, InferParameter> entry of these fields as
// field num.
func entry(num protowire.Number, fields ...[]byte) []byte {
	return appendWireString(nil, num, bytes.Join(fields, nil))
}

// keyField and valueField encode a map entry's key and value.
func keyField(k string) []byte       { return appendWireString(nil, 1, []byte(k)) }
func valueField(param []byte) []byte { return appendWireString(nil, 2, param) }

// int64Param, uint64Param, boolParam and stringParam encode an
// InferParameter's member.
func int64Param(v int64) []byte {
	return protowire.AppendVarint(protowire.AppendTag(nil, 2, protowire.VarintType), uint64(v))
}
func uint64Param(v uint64) []byte {
	return protowire.AppendVarint(protowire.AppendTag(nil, 5, protowire.VarintType), v)
}
func boolParam(v uint64) []byte {
	return protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), v)
}
func stringParam(s string) []byte { return appendWireString(nil, 3, []byte(s)) }

// protoWireSeeds returns encodings of protoAll and of variants of it:
// hand-encoded layouts, repeated map keys and values, invalid UTF-8, every
// refusal of TestDecodeProtoErrors, and malformed messages.
func protoWireSeeds(t testing.TB) [][]byte {
	marshal := func(m *inferencepb.ModelInferRequest) []byte {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	all := marshal(protoAll())
	seeds := [][]byte{all, marshal(protoAllRaw()), {}, all[:len(all)/2]}
	for _, e := range wireEncodings() {
		seeds = append(seeds, handEncode(protoAll(), e), handEncode(protoAllRaw(), e))
	}
	for _, tc := range protoErrorCases() {
		m := protoAll()
		tc.change(m)
		seeds = append(seeds, marshal(m))
	}
	// Parameters: the last entry of a key wins; a value seen twice is
	// merged, its oneof keeping the last member set; an entry may lack its
	// key or value.
	params := func(entries ...[]byte) []byte { return append(bytes.Clone(all), bytes.Join(entries, nil)...) }
	seeds = append(seeds,
		params(entry(4, keyField("timeout"), valueField(int64Param(-1))), entry(4, keyField("timeout"), valueField(uint64Param(7)))),
		params(entry(4, keyField("timeout"), valueField(int64Param(5)), valueField(boolParam(2)))),
		params(entry(4, keyField("priority"), valueField(int64Param(5)), valueField(nil))),
		params(entry(4, valueField(int64Param(5)), keyField("priority"), keyField("timeout"))),
		params(entry(4, keyField("priority"))),
		params(entry(4, valueField(stringParam("x")))),
		params(entry(4, keyField("binary_data_output"), valueField(boolParam(0)))),
		params(entry(4, keyField("binary_data_output"), valueField(append(boolParam(1), stringParam("no")...)))),
		params(entry(4, keyField("priority"), valueField(protowire.AppendFixed64(protowire.AppendTag(nil, 4, protowire.Fixed64Type), math.Float64bits(2.5))))),
	)
	// Outputs: their parameters are checked in key order, the last entry
	// of a key winning.
	output := func(name string, entries ...[]byte) []byte {
		o := appendWireString(nil, 1, []byte(name))
		return params(appendWireString(nil, 6, append(o, bytes.Join(entries, nil)...)))
	}
	seeds = append(seeds,
		output("y", entry(2, keyField("classification"), valueField(stringParam("two"))), entry(2, keyField("classification"), valueField(uint64Param(2)))),
		output("y", entry(2, keyField("classification"), valueField(int64Param(2))), entry(2, keyField("binary_data"), valueField(int64Param(1)))),
		output("y", entry(2, keyField("zz"), valueField(nil)), entry(2, keyField("binary_data"), valueField(int64Param(1)))),
		output("y", entry(2, keyField("binary_data"), valueField(int64Param(1))), entry(2, keyField("binary_data"), valueField(boolParam(1)))),
		output("y", entry(2, keyField("classification"), valueField(int64Param(3)))),
		output("y", entry(2, keyField("classification"))),
		output("", entry(2, keyField("classification"))),
	)
	// Invalid UTF-8 in each string field, and bytes fields that may hold it.
	bad := []byte{'a', 0xff}
	m := protoAll()
	m.Outputs[0].Parameters = map[string]*inferencepb.InferParameter{"binary_data": {ParameterChoice: &inferencepb.InferParameter_BoolParam{BoolParam: true}}}
	m.Inputs[0].Parameters = map[string]*inferencepb.InferParameter{"p": {ParameterChoice: &inferencepb.InferParameter_StringParam{StringParam: "v"}}}
	good := handEncode(m, wireEncoding{packed: true})
	for _, s := range []string{"req-1", "timeout", "binary_data", "f64", "FP64", "p", "v", "k"} {
		if i := bytes.Index(good, []byte(s)); i >= 0 {
			b := bytes.Clone(good)
			copy(b[i:], bad)
			seeds = append(seeds, b)
		}
	}
	seeds = append(seeds,
		appendWireString(appendWireString(nil, 1, bad), 2, []byte("1")),
		appendWireString(bytes.Clone(all), 7, bad),
		appendWireString(nil, 2, bad),
		params(entry(4, keyField("x"), valueField(stringParam(string(bad))))),
		params(entry(4, keyField("x"), valueField(append(stringParam(string(bad)), int64Param(1)...)))),
		output("y", entry(2, keyField("binary_data"), valueField(stringParam(string(bad))))),
		appendWireString(nil, 5, entry(4, keyField(string(bad)))),
		appendWireString(nil, 5, append(appendWireString(nil, 1, []byte("b")), appendWireString(nil, 5, appendWireString(nil, 8, bad))...)),
	)
	// Malformed: field number 0 or too large, a stray end of group, groups
	// that end wrong, reserved wire types, truncated values, packed floats
	// of a length that is no multiple of their size.
	seeds = append(seeds,
		[]byte{0x00},
		protowire.AppendVarint(nil, uint64(protowire.MaxValidNumber+1)<<3),
		protowire.AppendVarint(nil, uint64(protowire.MaxValidNumber)<<3|0),
		protowire.AppendTag(nil, 5, protowire.EndGroupType),
		protowire.AppendTag(protowire.AppendTag(nil, 9, protowire.StartGroupType), 8, protowire.EndGroupType),
		protowire.AppendTag(nil, 9, protowire.StartGroupType),
		[]byte{0x0e}, []byte{0x0f},
		[]byte{0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02},
		[]byte{0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
		appendWireString(nil, 5, appendWireString(nil, 5, appendWireString(nil, 6, make([]byte, 5)))),
		appendWireString(nil, 5, appendWireString(nil, 5, appendWireString(nil, 7, make([]byte, 12)))),
		appendWireString(nil, 5, appendWireString(nil, 3, []byte{0x80})),
		appendWireString(nil, 5, appendWireString(nil, 4, protowire.AppendTag(nil, 5, protowire.EndGroupType))),
		appendWireString(nil, 4, appendWireString(nil, 2, []byte{0x00})),
		appendWireString(nil, 6, appendWireString(nil, 2, appendWireString(nil, 2, []byte{0x1a, 0x05}))),
	)
	return seeds
}

// FuzzDecodeProto checks ParseProto and DecodeProto against
// proto.Unmarshal and oracleDecodeProto on any bytes: ParseProto fails
// exactly when proto.Unmarshal does, and DecodeProto then gives the same
// request or the same error as the oracle; a request it accepts encodes a
// response.
func FuzzDecodeProto(f *testing.F) {
	for _, b := range protoWireSeeds(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		compareProtoWire(t, b, 1<<16, protoModel.inputs, protoModel.outputs)
	})
}

// TestDecodeProtoLayouts decodes protoAll in every layout of
// handEncode: packed or not, split in halves, with fields to skip; each
// gives the oracle's request for the marshalled message.
func TestDecodeProtoLayouts(t *testing.T) {
	want, err := decodeProtoBoth(t, protoAll(), 1000, protoModel.inputs, protoModel.outputs)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range wireEncodings() {
		r := AcquireRequest()
		model, _, err := r.ParseProto(handEncode(protoAll(), e))
		if err != nil || len(model) != 0 {
			t.Fatalf("%+v: ParseProto: model %q, %v", e, model, err)
		}
		err = r.DecodeProto(1000, protoModel.inputs, protoModel.outputs)
		if diff := diffProtoDecodes(want, nil, r, err); diff != "" {
			t.Errorf("%+v: %s", e, diff)
		}
		ReleaseRequest(r)
	}
}

// TestDecodeProtoSemantics checks, beyond agreeing with the oracle,
// the outcome of the seeds that exercise protobuf's merging rules.
func TestDecodeProtoSemantics(t *testing.T) {
	all, err := proto.Marshal(protoAll())
	if err != nil {
		t.Fatal(err)
	}
	f := func(name string, extra []byte, want string) {
		t.Helper()
		b := append(bytes.Clone(all), extra...)
		if !compareProtoWire(t, b, 1000, protoModel.inputs, protoModel.outputs) {
			t.Fatalf("%s: does not parse", name)
		}
		r := AcquireRequest()
		defer ReleaseRequest(r)
		if _, _, err := r.ParseProto(b); err != nil {
			t.Fatal(err)
		}
		got := "ok"
		if err := r.DecodeProto(1000, protoModel.inputs, protoModel.outputs); err != nil {
			got = err.Error()
		} else {
			got = fmt.Sprintf("ok %v %d", r.Timeout, r.Priority)
			for _, o := range r.Outputs {
				got += fmt.Sprintf(" %d:%d", o.Index, o.Classes)
			}
		}
		if !strings.Contains(got, want) {
			t.Errorf("%s: got %q, want %q", name, got, want)
		}
	}
	f("last key wins", entry(4, keyField("timeout"), valueField(int64Param(-1))), "parameters.timeout: want a non-negative integer number of microseconds, got int64_param -1")
	f("last key wins again", append(entry(4, keyField("timeout"), valueField(int64Param(-1))), entry(4, keyField("timeout"), valueField(uint64Param(7)))...), "ok 7µs 2")
	f("values merge", entry(4, keyField("priority"), valueField(int64Param(5)), valueField(stringParam("x"))), `got string_param "x"`)
	f("an empty value keeps the last", entry(4, keyField("priority"), valueField(int64Param(5)), valueField(nil)), "ok 2.5ms 5")
	f("no value", entry(4, keyField("priority")), "got a parameter with no value")
	f("bool is any non-zero varint", entry(4, keyField("binary_data_output"), valueField(boolParam(1<<40))), "ok 2.5ms 2")
	output := entry(6, keyField("y"),
		entry(2, keyField("zz"), valueField(nil)), entry(2, keyField("classification"), valueField(int64Param(2))))
	f("output parameters in key order", output, `output "y": unsupported parameter "zz"`)
	output = entry(6, keyField("y"),
		entry(2, keyField("classification"), valueField(stringParam("x"))), entry(2, keyField("binary_data"), valueField(boolParam(1))),
		entry(2, keyField("classification"), valueField(uint64Param(2))))
	f("the last output parameter of a key wins", output, "ok 2.5ms 2 1:0 0:2")
}

// TestParseProtoPoolsBoundedScratch parses a message of a million empty
// inputs (two bytes each): once the request is reset, it keeps no more
// than maxPooledWireItems entries of any kind for the next message.
func TestParseProtoPoolsBoundedScratch(t *testing.T) {
	b := bytes.Repeat([]byte{0x2a, 0x00}, 1<<20)
	r := AcquireRequest()
	defer ReleaseRequest(r)
	if _, _, err := r.ParseProto(b); err != nil {
		t.Fatal(err)
	}
	if len(r.wire.inputs) != 1<<20 {
		t.Fatalf("parsed %d inputs, want %d", len(r.wire.inputs), 1<<20)
	}
	r.reset()
	if c := cap(r.wire.inputs); c > maxPooledWireItems {
		t.Errorf("a reset request keeps room for %d inputs, want at most %d", c, maxPooledWireItems)
	}
}
