package v2codec

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/infergate/infergate/gateway/v2codec/inferencepb"
	"github.com/infergate/infergate/runtime"
)

// protoModel takes one input of each datatype that has typed contents,
// shaped [-1, 2], and gives two outputs.
var protoModel = struct{ inputs, outputs []runtime.TensorInfo }{
	inputs: []runtime.TensorInfo{
		{Name: "b", DataType: runtime.BOOL, Shape: []int64{-1, 2}},
		{Name: "i8", DataType: runtime.INT8, Shape: []int64{-1, 2}},
		{Name: "i16", DataType: runtime.INT16, Shape: []int64{-1, 2}},
		{Name: "i32", DataType: runtime.INT32, Shape: []int64{-1, 2}},
		{Name: "i64", DataType: runtime.INT64, Shape: []int64{-1, 2}},
		{Name: "u8", DataType: runtime.UINT8, Shape: []int64{-1, 2}},
		{Name: "u16", DataType: runtime.UINT16, Shape: []int64{-1, 2}},
		{Name: "u32", DataType: runtime.UINT32, Shape: []int64{-1, 2}},
		{Name: "u64", DataType: runtime.UINT64, Shape: []int64{-1, 2}},
		{Name: "f32", DataType: runtime.FP32, Shape: []int64{-1, 2}},
		{Name: "f64", DataType: runtime.FP64, Shape: []int64{-1, 2}},
	},
	outputs: []runtime.TensorInfo{
		{Name: "y", DataType: runtime.FP32, Shape: []int64{-1, 2}},
		{Name: "k", DataType: runtime.INT64, Shape: []int64{-1}},
	},
}

// protoAll is a request for protoModel with typed contents, and restAll
// the same request in JSON.
func protoAll() *inferencepb.ModelInferRequest {
	in := func(name, dt string, c *inferencepb.InferTensorContents) *inferencepb.ModelInferRequest_InferInputTensor {
		return &inferencepb.ModelInferRequest_InferInputTensor{Name: name, Datatype: dt, Shape: []int64{1, 2}, Contents: c}
	}
	return &inferencepb.ModelInferRequest{
		Id: "req-1",
		Parameters: map[string]*inferencepb.InferParameter{
			"timeout":  {ParameterChoice: &inferencepb.InferParameter_Int64Param{Int64Param: 2500}},
			"priority": {ParameterChoice: &inferencepb.InferParameter_Uint64Param{Uint64Param: 2}},
		},
		Inputs: []*inferencepb.ModelInferRequest_InferInputTensor{
			in("f64", "FP64", &inferencepb.InferTensorContents{Fp64Contents: []float64{-1.5, 1e300}}),
			in("b", "BOOL", &inferencepb.InferTensorContents{BoolContents: []bool{true, false}}),
			in("i8", "INT8", &inferencepb.InferTensorContents{IntContents: []int32{-128, 127}}),
			in("i16", "INT16", &inferencepb.InferTensorContents{IntContents: []int32{-32768, 32767}}),
			in("i32", "INT32", &inferencepb.InferTensorContents{IntContents: []int32{math.MinInt32, math.MaxInt32}}),
			in("i64", "INT64", &inferencepb.InferTensorContents{Int64Contents: []int64{math.MinInt64, math.MaxInt64}}),
			in("u8", "UINT8", &inferencepb.InferTensorContents{UintContents: []uint32{0, 255}}),
			in("u16", "UINT16", &inferencepb.InferTensorContents{UintContents: []uint32{1, 65535}}),
			in("u32", "UINT32", &inferencepb.InferTensorContents{UintContents: []uint32{2, math.MaxUint32}}),
			in("u64", "UINT64", &inferencepb.InferTensorContents{Uint64Contents: []uint64{3, math.MaxUint64}}),
			in("f32", "FP32", &inferencepb.InferTensorContents{Fp32Contents: []float32{0.1, -3.25}}),
		},
		Outputs: []*inferencepb.ModelInferRequest_InferRequestedOutputTensor{{Name: "k"}},
	}
}

const restAll = `{"id":"req-1","parameters":{"timeout":2500,"priority":2},"inputs":[
{"name":"f64","datatype":"FP64","shape":[1,2],"data":[-1.5,1e300]},
{"name":"b","datatype":"BOOL","shape":[1,2],"data":[true,false]},
{"name":"i8","datatype":"INT8","shape":[1,2],"data":[-128,127]},
{"name":"i16","datatype":"INT16","shape":[1,2],"data":[-32768,32767]},
{"name":"i32","datatype":"INT32","shape":[1,2],"data":[-2147483648,2147483647]},
{"name":"i64","datatype":"INT64","shape":[1,2],"data":[-9223372036854775808,9223372036854775807]},
{"name":"u8","datatype":"UINT8","shape":[1,2],"data":[0,255]},
{"name":"u16","datatype":"UINT16","shape":[1,2],"data":[1,65535]},
{"name":"u32","datatype":"UINT32","shape":[1,2],"data":[2,4294967295]},
{"name":"u64","datatype":"UINT64","shape":[1,2],"data":[3,18446744073709551615]},
{"name":"f32","datatype":"FP32","shape":[1,2],"data":[0.1,-3.25]}],
"outputs":[{"name":"k"}]}`

// TestDecodeProtoMatchesREST decodes the same request from protobuf, typed
// and raw, and from JSON: the three give the same Request.
func TestDecodeProtoMatchesREST(t *testing.T) {
	want := AcquireRequest()
	defer ReleaseRequest(want)
	if err := want.Decode([]byte(restAll), -1, 1000, protoModel.inputs, protoModel.outputs); err != nil {
		t.Fatalf("Decode: %v", err)
	}
	typed, err := decodeProtoBoth(t, protoAll(), 1000, protoModel.inputs, protoModel.outputs)
	if err != nil {
		t.Fatalf("DecodeProto: %v", err)
	}
	// The same request with every input in raw_input_contents, the bytes
	// that the typed decode produced.
	raw := protoAll()
	for _, in := range raw.Inputs {
		idx := tensorIndex(protoModel.inputs, []byte(in.Name))
		raw.RawInputContents = append(raw.RawInputContents, bytes.Clone(typed.Inputs[idx].Data))
		in.Contents = nil
	}
	fromRaw, err := decodeProtoBoth(t, raw, 1000, protoModel.inputs, protoModel.outputs)
	if err != nil {
		t.Fatalf("DecodeProto of raw contents: %v", err)
	}
	if typed.RawContents || !fromRaw.RawContents {
		t.Errorf("RawContents: typed %t, raw %t", typed.RawContents, fromRaw.RawContents)
	}
	for name, got := range map[string]*Request{"typed": typed, "raw": fromRaw} {
		if string(got.ID) != "req-1" || got.Timeout != 2500*time.Microsecond || got.Priority != 2 {
			t.Errorf("%s: id %q timeout %v priority %d, want req-1 2.5ms 2", name, got.ID, got.Timeout, got.Priority)
		}
		if len(got.Outputs) != 1 || got.Outputs[0].Index != 1 {
			t.Errorf("%s: outputs %+v, want k (index 1)", name, got.Outputs)
		}
		for i := range want.Inputs {
			w, g := want.Inputs[i], got.Inputs[i]
			if w.DataType != g.DataType || !slicesEqual(w.Shape, g.Shape) || !bytes.Equal(w.Data, g.Data) {
				t.Errorf("%s: input %s: got %v %v %x, want %v %v %x", name, protoModel.inputs[i].Name,
					g.DataType, g.Shape, g.Data, w.DataType, w.Shape, w.Data)
			}
		}
	}
}

func slicesEqual(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// protoErrorCase is a change to protoAll that DecodeProto refuses, and
// the error it gives.
type protoErrorCase struct {
	name   string
	change func(m *inferencepb.ModelInferRequest)
	want   string
}

// protoErrorCases returns a case for each refusal of DecodeProto.
func protoErrorCases() []protoErrorCase {
	return []protoErrorCase{
		{"no inputs", func(m *inferencepb.ModelInferRequest) { m.Inputs = nil }, `"inputs" is empty (the model takes "b", "i8"`},
		{"missing input", func(m *inferencepb.ModelInferRequest) { m.Inputs = m.Inputs[1:] }, `missing input "f64"`},
		{"unknown input", func(m *inferencepb.ModelInferRequest) { m.Inputs[0].Name = "zz" }, `unknown input "zz" (the model takes`},
		{"no name", func(m *inferencepb.ModelInferRequest) { m.Inputs[0].Name = "" }, `inputs[0]: missing "name"`},
		{"duplicate", func(m *inferencepb.ModelInferRequest) { m.Inputs[1] = m.Inputs[0] }, `input "f64": duplicated`},
		{"no datatype", func(m *inferencepb.ModelInferRequest) { m.Inputs[0].Datatype = "" }, `input "f64": missing "datatype"`},
		{"bytes", func(m *inferencepb.ModelInferRequest) { m.Inputs[0].Datatype = "BYTES" }, `datatype BYTES is not supported`},
		{"unknown datatype", func(m *inferencepb.ModelInferRequest) { m.Inputs[0].Datatype = "FP8" }, `input "f64": unknown datatype "FP8"`},
		{"wrong datatype", func(m *inferencepb.ModelInferRequest) { m.Inputs[0].Datatype = "FP32" }, `input "f64": datatype FP32 does not match the model's FP64`},
		{"rank", func(m *inferencepb.ModelInferRequest) { m.Inputs[0].Shape = []int64{2} }, `input "f64": shape [2] has rank 1 but the model's [-1,2] has rank 2`},
		{"shape", func(m *inferencepb.ModelInferRequest) { m.Inputs[0].Shape = []int64{2, 1} }, `input "f64": shape [2,1] does not match the model's [-1,2]`},
		{"negative dim", func(m *inferencepb.ModelInferRequest) { m.Inputs[0].Shape = []int64{-1, 2} }, `input "f64": shape[0]: want a non-negative integer, got -1`},
		{"huge shape", func(m *inferencepb.ModelInferRequest) { m.Inputs[0].Shape = []int64{1 << 62, 2} }, `input "f64": shape [4611686018427387904,2] holds too many elements`},
		{"too many values", func(m *inferencepb.ModelInferRequest) { m.Inputs[0].Shape = []int64{1000, 2} }, `request too large for the model`},
		{"count", func(m *inferencepb.ModelInferRequest) { m.Inputs[0].Shape = []int64{2, 2} }, `input "f64": shape [2,2] has 4 elements but fp64_contents holds 2`},
		{"wrong field", func(m *inferencepb.ModelInferRequest) {
			m.Inputs[0].Contents = &inferencepb.InferTensorContents{Fp32Contents: []float32{1, 2}}
		}, `input "f64": datatype FP64 takes fp64_contents, got fp32_contents`},
		{"no contents", func(m *inferencepb.ModelInferRequest) { m.Inputs[0].Contents = nil }, `shape [1,2] has 2 elements but fp64_contents holds 0`},
		{"int8 range", func(m *inferencepb.ModelInferRequest) { m.Inputs[2].Contents.IntContents[1] = 128 }, `input "i8": int_contents[1]: 128 is out of range for INT8`},
		{"uint16 range", func(m *inferencepb.ModelInferRequest) { m.Inputs[7].Contents.UintContents[0] = 70000 }, `input "u16": uint_contents[0]: 70000 is out of range for UINT16`},
		{"timeout", func(m *inferencepb.ModelInferRequest) {
			m.Parameters["timeout"] = &inferencepb.InferParameter{ParameterChoice: &inferencepb.InferParameter_Int64Param{Int64Param: -1}}
		}, `parameters.timeout: want a non-negative integer number of microseconds, got int64_param -1`},
		{"priority", func(m *inferencepb.ModelInferRequest) {
			m.Parameters["priority"] = &inferencepb.InferParameter{ParameterChoice: &inferencepb.InferParameter_StringParam{StringParam: "high"}}
		}, `parameters.priority: want a non-negative integer, got string_param "high"`},
		{"unknown output", func(m *inferencepb.ModelInferRequest) { m.Outputs[0].Name = "zz" }, `unknown output "zz" (the model gives "y", "k")`},
		{"output twice", func(m *inferencepb.ModelInferRequest) { m.Outputs = append(m.Outputs, m.Outputs[0]) }, `output "k": requested twice`},
		{"output parameter", func(m *inferencepb.ModelInferRequest) {
			m.Outputs[0].Parameters = map[string]*inferencepb.InferParameter{"top": {}}
		}, `output "k": unsupported parameter "top" (an output takes binary_data and classification)`},
		{"classification of INT64", func(m *inferencepb.ModelInferRequest) {
			m.Outputs[0].Parameters = map[string]*inferencepb.InferParameter{"classification": {ParameterChoice: &inferencepb.InferParameter_Int64Param{Int64Param: 1}}}
		}, `output "k": parameters.classification needs a [batch, classes] FP32 or FP64 output, not INT64[-1]`},
		{"classification 0", func(m *inferencepb.ModelInferRequest) {
			m.Outputs[0].Parameters = map[string]*inferencepb.InferParameter{"classification": {ParameterChoice: &inferencepb.InferParameter_Int64Param{Int64Param: 0}}}
		}, `output "k": parameters.classification: want an integer of at least 1, got int64_param 0`},
		{"raw count", func(m *inferencepb.ModelInferRequest) { m.RawInputContents = [][]byte{{1}} }, `raw_input_contents holds 1 entries but the request has 11 inputs`},
		{"raw and typed", func(m *inferencepb.ModelInferRequest) { m.RawInputContents = make([][]byte, 11) }, `input "f64": has both contents and raw_input_contents`},
		{"raw size", func(m *inferencepb.ModelInferRequest) {
			m.RawInputContents = make([][]byte, 11)
			m.Inputs[0].Contents = nil
			m.RawInputContents[0] = make([]byte, 15)
		}, `input "f64": raw_input_contents[0] holds 15 bytes but shape [1,2] of FP64 needs 16`},
		{"raw bool", func(m *inferencepb.ModelInferRequest) {
			m.RawInputContents = make([][]byte, 11)
			m.Inputs[0].Contents, m.Inputs[1].Contents = nil, nil
			m.RawInputContents[0] = make([]byte, 16)
			m.RawInputContents[1] = []byte{1, 2}
		}, `input "b": raw BOOL element 1 is 2, want 0 or 1`},
	}
}

// TestDecodeProtoErrors checks each refusal, and that the texts shared
// with the REST decoder are the same, decoding the message and its
// encoding (DecodeProto).
func TestDecodeProtoErrors(t *testing.T) {
	for _, tc := range protoErrorCases() {
		t.Run(tc.name, func(t *testing.T) {
			m := protoAll()
			tc.change(m)
			_, err := decodeProtoBoth(t, m, 1000, protoModel.inputs, protoModel.outputs)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
			if errors.Is(err, ErrTooManyValues) != (tc.name == "too many values") {
				t.Errorf("errors.Is(%v, ErrTooManyValues) = %t", err, !(tc.name == "too many values"))
			}
		})
	}
}

// TestDecodeProtoFP16 takes FP16 raw and refuses it typed, which has no
// field for it.
func TestDecodeProtoFP16(t *testing.T) {
	inputs := []runtime.TensorInfo{{Name: "h", DataType: runtime.FP16, Shape: []int64{-1, 2}}}
	m := &inferencepb.ModelInferRequest{
		Inputs: []*inferencepb.ModelInferRequest_InferInputTensor{{Name: "h", Datatype: "FP16", Shape: []int64{1, 2},
			Contents: &inferencepb.InferTensorContents{Fp32Contents: []float32{1, 2}}}},
	}
	if _, err := decodeProtoBoth(t, m, 10, inputs, nil); err == nil || !strings.Contains(err.Error(), "FP16 has no typed contents field; send it in raw_input_contents") {
		t.Fatalf("typed FP16: got %v", err)
	}
	m.Inputs[0].Contents = nil
	m.RawInputContents = [][]byte{{0x00, 0x3c, 0x00, 0xc0}} // 1, -2
	r, err := decodeProtoBoth(t, m, 10, inputs, nil)
	if err != nil {
		t.Fatalf("raw FP16: %v", err)
	}
	if got := r.Inputs[0].Data; !bytes.Equal(got, m.RawInputContents[0]) {
		t.Errorf("raw FP16 data %x, want %x", got, m.RawInputContents[0])
	}
}

// TestProtoInferResponse encodes responses typed and raw, with and without
// a selection, and checks them against the results.
func TestProtoInferResponse(t *testing.T) {
	le := binary.LittleEndian
	y := runtime.Tensor{DataType: runtime.FP32, Shape: []int64{1, 2}}
	y.Data = le.AppendUint32(le.AppendUint32(nil, math.Float32bits(0.25)), math.Float32bits(-7))
	k := runtime.Tensor{DataType: runtime.INT64, Shape: []int64{1}, Data: le.AppendUint64(nil, 42)}
	results := []runtime.Tensor{y, k}

	r := AcquireRequest()
	defer ReleaseRequest(r)
	r.ID = []byte("abc")
	resp := decodeResponse(t, "m", "3", r, false, protoModel.outputs, results)
	if resp.ModelName != "m" || resp.ModelVersion != "3" || resp.Id != "abc" || len(resp.Outputs) != 2 || resp.RawOutputContents != nil {
		t.Fatalf("typed response: %v", resp)
	}
	if got := resp.Outputs[0].Contents.GetFp32Contents(); len(got) != 2 || got[0] != 0.25 || got[1] != -7 ||
		resp.Outputs[0].Datatype != "FP32" || !slicesEqual(resp.Outputs[0].Shape, []int64{1, 2}) {
		t.Errorf("output y: %v", resp.Outputs[0])
	}
	if got := resp.Outputs[1].Contents.GetInt64Contents(); len(got) != 1 || got[0] != 42 || resp.Outputs[1].Name != "k" {
		t.Errorf("output k: %v", resp.Outputs[1])
	}

	r.Outputs = append(r.Outputs, RequestedOutput{Index: 1})
	resp = decodeResponse(t, "m", "3", r, true, protoModel.outputs, results)
	if len(resp.Outputs) != 1 || resp.Outputs[0].Name != "k" || resp.Outputs[0].Contents != nil ||
		len(resp.RawOutputContents) != 1 || !bytes.Equal(resp.RawOutputContents[0], k.Data) {
		t.Fatalf("raw selected response: %v", resp)
	}

	// FP16 has no typed field: the whole response goes raw.
	h := runtime.Tensor{DataType: runtime.FP16, Shape: []int64{1}, Data: []byte{0, 0x3c}}
	plain := AcquireRequest()
	defer ReleaseRequest(plain)
	resp = decodeResponse(t, "m", "1", plain, false, []runtime.TensorInfo{{Name: "h", DataType: runtime.FP16}}, []runtime.Tensor{h})
	if len(resp.RawOutputContents) != 1 || resp.Outputs[0].Contents != nil {
		t.Errorf("FP16 response: %v", resp)
	}
}

// TestDecodeProtoMalformed feeds 10,000 corrupted encodings of a valid
// request: each either fails to parse or decodes or is refused with an
// error, none panics, and ParseProto and DecodeProto agree with
// proto.Unmarshal and oracleDecodeProto on every one.
func TestDecodeProtoMalformed(t *testing.T) {
	good, err := proto.Marshal(protoAll())
	if err != nil {
		t.Fatal(err)
	}
	seed := uint64(1)
	next := func() uint64 { seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17; return seed }
	parsed := 0
	for range 10000 {
		b := bytes.Clone(good)
		for range 1 + next()%4 {
			switch next() % 3 {
			case 0:
				b[next()%uint64(len(b))] = byte(next())
			case 1:
				b = b[:next()%uint64(len(b)+1)]
			default:
				at := next() % uint64(len(b)+1)
				b = append(b[:at:at], append([]byte{byte(next())}, b[at:]...)...)
			}
			if len(b) == 0 {
				b = append(b, byte(next()))
			}
		}
		if compareProtoWire(t, b, 1000, protoModel.inputs, protoModel.outputs) {
			parsed++
		}
	}
	t.Logf("%d of 10000 corrupted messages parsed as protobuf", parsed)
}
