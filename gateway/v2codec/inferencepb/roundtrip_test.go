package inferencepb

import (
	"encoding/binary"
	"math"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// TestModelInferRequestRoundTrip marshals requests with typed and with raw
// contents and checks that unmarshalling gives them back whole.
func TestModelInferRequestRoundTrip(t *testing.T) {
	f := func(name string, req *ModelInferRequest) {
		t.Helper()
		data, err := proto.Marshal(req)
		if err != nil {
			t.Fatalf("%s: cannot marshal: %v", name, err)
		}
		var got ModelInferRequest
		if err := proto.Unmarshal(data, &got); err != nil {
			t.Fatalf("%s: cannot unmarshal: %v", name, err)
		}
		if !proto.Equal(&got, req) {
			t.Fatalf("%s: unexpected round trip\ngot  %v\nwant %v", name, &got, req)
		}
		// Deterministic marshalling of the copy gives the same bytes: nothing
		// went to unknown fields.
		again, err := proto.MarshalOptions{Deterministic: true}.Marshal(&got)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := proto.MarshalOptions{Deterministic: true}.Marshal(req)
		if string(again) != string(want) || len(got.ProtoReflect().GetUnknown()) != 0 {
			t.Fatalf("%s: the round trip changed the encoding", name)
		}
	}
	params := map[string]*InferParameter{
		"timeout":  {ParameterChoice: &InferParameter_Int64Param{Int64Param: 250000}},
		"priority": {ParameterChoice: &InferParameter_Uint64Param{Uint64Param: 2}},
		"tag":      {ParameterChoice: &InferParameter_StringParam{StringParam: "a/b"}},
		"trace":    {ParameterChoice: &InferParameter_BoolParam{BoolParam: true}},
		"scale":    {ParameterChoice: &InferParameter_DoubleParam{DoubleParam: 0.5}},
	}
	outputs := []*ModelInferRequest_InferRequestedOutputTensor{{
		Name:       "probabilities",
		Parameters: map[string]*InferParameter{"classification": {ParameterChoice: &InferParameter_Int64Param{Int64Param: 3}}},
	}}
	f("typed", &ModelInferRequest{
		ModelName:    "demo",
		ModelVersion: "2",
		Id:           "req-1",
		Parameters:   params,
		Inputs: []*ModelInferRequest_InferInputTensor{
			{Name: "x", Datatype: "FP32", Shape: []int64{2, 3}, Contents: &InferTensorContents{
				Fp32Contents: []float32{1.5, -0, float32(math.Inf(1)), math.SmallestNonzeroFloat32, math.MaxFloat32, 7},
			}},
			{Name: "d", Datatype: "FP64", Shape: []int64{1}, Contents: &InferTensorContents{Fp64Contents: []float64{math.Pi}}},
			{Name: "i", Datatype: "INT32", Shape: []int64{2}, Contents: &InferTensorContents{IntContents: []int32{math.MinInt32, 1}}},
			{Name: "l", Datatype: "INT64", Shape: []int64{1}, Contents: &InferTensorContents{Int64Contents: []int64{math.MaxInt64}}},
			{Name: "u", Datatype: "UINT8", Shape: []int64{1}, Contents: &InferTensorContents{UintContents: []uint32{255}}},
			{Name: "q", Datatype: "UINT64", Shape: []int64{1}, Contents: &InferTensorContents{Uint64Contents: []uint64{math.MaxUint64}}},
			{Name: "b", Datatype: "BOOL", Shape: []int64{2}, Contents: &InferTensorContents{BoolContents: []bool{true, false}},
				Parameters: map[string]*InferParameter{"binary_data": {ParameterChoice: &InferParameter_BoolParam{}}}},
			{Name: "s", Datatype: "BYTES", Shape: []int64{2}, Contents: &InferTensorContents{BytesContents: [][]byte{[]byte("héllo"), {}}}},
		},
		Outputs: outputs,
	})
	raw := make([]byte, 0, 24)
	for _, v := range []float32{1, 2, 3, 4, 5, 6} {
		raw = binary.LittleEndian.AppendUint32(raw, math.Float32bits(v))
	}
	f("raw", &ModelInferRequest{
		ModelName: "demo",
		Id:        "req-2",
		Inputs: []*ModelInferRequest_InferInputTensor{
			{Name: "x", Datatype: "FP32", Shape: []int64{2, 3}},
			{Name: "h", Datatype: "FP16", Shape: []int64{1}},
		},
		Outputs:          outputs,
		RawInputContents: [][]byte{raw, {0x00, 0x3c}},
	})
}

// TestWireNumbers decodes a request written field by field with protowire,
// by the numbers the protocol publishes, so the Go names are checked against
// the wire independently of the generated marshaller.
func TestWireNumbers(t *testing.T) {
	var contents []byte
	contents = protowire.AppendTag(contents, 6, protowire.BytesType) // fp32_contents, packed
	contents = protowire.AppendVarint(contents, 8)
	contents = binary.LittleEndian.AppendUint32(contents, math.Float32bits(0.25))
	contents = binary.LittleEndian.AppendUint32(contents, math.Float32bits(-2))

	var param []byte
	param = protowire.AppendTag(param, 5, protowire.VarintType) // uint64_param
	param = protowire.AppendVarint(param, 9)
	var entry []byte
	entry = protowire.AppendTag(entry, 1, protowire.BytesType) // map key
	entry = protowire.AppendString(entry, "priority")
	entry = protowire.AppendTag(entry, 2, protowire.BytesType) // map value
	entry = protowire.AppendBytes(entry, param)

	var input []byte
	input = protowire.AppendTag(input, 1, protowire.BytesType)
	input = protowire.AppendString(input, "x")
	input = protowire.AppendTag(input, 2, protowire.BytesType)
	input = protowire.AppendString(input, "FP32")
	input = protowire.AppendTag(input, 3, protowire.BytesType) // shape, packed
	input = protowire.AppendBytes(input, protowire.AppendVarint(protowire.AppendVarint(nil, 1), 2))
	input = protowire.AppendTag(input, 5, protowire.BytesType)
	input = protowire.AppendBytes(input, contents)

	var output []byte
	output = protowire.AppendTag(output, 1, protowire.BytesType)
	output = protowire.AppendString(output, "y")

	var msg []byte
	for _, fld := range []struct {
		num protowire.Number
		val []byte
	}{
		{1, []byte("demo")}, {2, []byte("3")}, {3, []byte("abc")}, {4, entry},
		{5, input}, {6, output}, {7, []byte{1, 2, 3, 4}},
	} {
		msg = protowire.AppendTag(msg, fld.num, protowire.BytesType)
		msg = protowire.AppendBytes(msg, fld.val)
	}
	var req ModelInferRequest
	if err := proto.Unmarshal(msg, &req); err != nil {
		t.Fatalf("cannot unmarshal: %v", err)
	}
	want := &ModelInferRequest{
		ModelName: "demo", ModelVersion: "3", Id: "abc",
		Parameters: map[string]*InferParameter{"priority": {ParameterChoice: &InferParameter_Uint64Param{Uint64Param: 9}}},
		Inputs: []*ModelInferRequest_InferInputTensor{{
			Name: "x", Datatype: "FP32", Shape: []int64{1, 2},
			Contents: &InferTensorContents{Fp32Contents: []float32{0.25, -2}},
		}},
		Outputs:          []*ModelInferRequest_InferRequestedOutputTensor{{Name: "y"}},
		RawInputContents: [][]byte{{1, 2, 3, 4}},
	}
	if !proto.Equal(&req, want) || len(req.ProtoReflect().GetUnknown()) != 0 {
		t.Fatalf("unexpected request\ngot  %v\nwant %v", &req, want)
	}
}
