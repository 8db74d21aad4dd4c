//go:build !race

package v2codec

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/infergate/infergate/gateway/v2codec/inferencepb"
)

// The gRPC ModelInfer path decodes every request with ParseProto and
// DecodeProto: with pooled requests, they must not allocate.
func TestDecodeProtoAllocations(t *testing.T) {
	f := func(name string, b []byte) {
		t.Helper()
		decode := func() {
			r := AcquireRequest()
			if _, _, err := r.ParseProto(b); err != nil {
				panic(err)
			}
			if err := r.DecodeProto(anyValues, codecDemoInputs, codecClassifierOutputs); err != nil {
				panic(err)
			}
			ReleaseRequest(r)
		}
		decode()
		if n := testing.AllocsPerRun(100, decode); n != 0 {
			t.Fatalf("%s: expected 0 allocations, got %f", name, n)
		}
	}
	f("typed FP32 [1,8]", protoDemoRequest(false))
	f("raw FP32 [1,8]", protoDemoRequest(true))

	// Parameters, and an output's, which DecodeProto sorts by key.
	m := &inferencepb.ModelInferRequest{
		Id: "a-request-id-longer-than-32-bytes-0123456789",
		Parameters: map[string]*inferencepb.InferParameter{
			"timeout":  {ParameterChoice: &inferencepb.InferParameter_Int64Param{Int64Param: 2500}},
			"priority": {ParameterChoice: &inferencepb.InferParameter_Uint64Param{Uint64Param: 2}},
		},
		Inputs: []*inferencepb.ModelInferRequest_InferInputTensor{{Name: "input", Datatype: "FP32", Shape: []int64{2, 8},
			Contents: &inferencepb.InferTensorContents{Fp32Contents: make([]float32, 16)}}},
		Outputs: []*inferencepb.ModelInferRequest_InferRequestedOutputTensor{{Name: "probabilities",
			Parameters: map[string]*inferencepb.InferParameter{
				"classification": {ParameterChoice: &inferencepb.InferParameter_Int64Param{Int64Param: 1}},
				"binary_data":    {ParameterChoice: &inferencepb.InferParameter_BoolParam{BoolParam: true}},
			}}, {Name: "label"}},
	}
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	f("parameters and output parameters", b)
}
