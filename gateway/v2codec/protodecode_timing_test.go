package v2codec

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/infergate/infergate/gateway/v2codec/inferencepb"
	"github.com/infergate/infergate/runtime"
)

// protoDemoRequest returns the encoding of a gRPC request for the demo
// model: one row of its 8 FP32 features, typed or in raw_input_contents,
// asking for its probabilities.
func protoDemoRequest(raw bool) []byte {
	return protoRowRequest("input", []float32{35, 52000, 24, 1200, 2, 680, 0, 0.3}, raw)
}

// protoRowRequest returns the encoding of a gRPC request of one row of
// the FP32 features row for input name, typed or in raw_input_contents.
func protoRowRequest(name string, row []float32, raw bool) []byte {
	in := &inferencepb.ModelInferRequest_InferInputTensor{Name: name, Datatype: "FP32", Shape: []int64{1, int64(len(row))}}
	m := &inferencepb.ModelInferRequest{
		ModelName: "demo",
		Id:        "req-1",
		Inputs:    []*inferencepb.ModelInferRequest_InferInputTensor{in},
		Outputs:   []*inferencepb.ModelInferRequest_InferRequestedOutputTensor{{Name: "probabilities"}},
	}
	if raw {
		m.RawInputContents = [][]byte{codecLE(row)}
	} else {
		in.Contents = &inferencepb.InferTensorContents{Fp32Contents: row}
	}
	b, err := proto.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}

// protoBenchRequests are the requests the protobuf decoders are timed on,
// with their models' inputs.
func protoBenchRequests() []struct {
	name   string
	body   []byte
	inputs []runtime.TensorInfo
} {
	row := make([]float32, 256)
	for i := range row {
		row[i] = float32(float64(i%97)*0.0371 - 1.7)
	}
	return []struct {
		name   string
		body   []byte
		inputs []runtime.TensorInfo
	}{
		{"demo", protoDemoRequest(false), codecDemoInputs},
		{"demo raw", protoDemoRequest(true), codecDemoInputs},
		{"row256", protoRowRequest("features", row, false), codecFeatures256},
	}
}

// BenchmarkDecodeProtoMessage unmarshals a request into a new generated
// message, as the gRPC codec did, and decodes it with oracleDecodeProto.
func BenchmarkDecodeProtoMessage(b *testing.B) {
	for _, tc := range protoBenchRequests() {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(tc.body)))
			for b.Loop() {
				m := new(inferencepb.ModelInferRequest)
				if err := proto.Unmarshal(tc.body, m); err != nil {
					b.Fatal(err)
				}
				r := AcquireRequest()
				if err := r.oracleDecodeProto(m, anyValues, tc.inputs, codecClassifierOutputs); err != nil {
					b.Fatal(err)
				}
				ReleaseRequest(r)
			}
		})
	}
}

// BenchmarkDecodeProto decodes a request with ParseProto and
// DecodeProto.
func BenchmarkDecodeProto(b *testing.B) {
	for _, tc := range protoBenchRequests() {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(tc.body)))
			for b.Loop() {
				r := AcquireRequest()
				if _, _, err := r.ParseProto(tc.body); err != nil {
					b.Fatal(err)
				}
				if err := r.DecodeProto(anyValues, tc.inputs, codecClassifierOutputs); err != nil {
					b.Fatal(err)
				}
				ReleaseRequest(r)
			}
		})
	}
}
