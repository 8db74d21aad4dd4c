package v2codec

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/infergate/infergate/gateway/v2codec/inferencepb"
	"github.com/infergate/infergate/runtime"
)

// messageInferResponse is the encoder AppendProtoInferResponse replaced, kept
// as its oracle: it builds the gRPC ModelInferResponse for results (one
// tensor per model output, in the model's output order) selected by
// r.Outputs (all outputs when empty), as AppendInferResponse encodes the
// REST one. raw says that the request's inputs came in raw_input_contents:
// the outputs then go in raw_output_contents, one entry per output in
// response order, else in each output's typed contents. FP16, which has no
// typed field, sends every output raw. An output asked for with
// classification comes as AppendClassification's BYTES tensor, labelled by
// labels[index] (nil, or one list per model output), in bytes_contents or
// raw in Triton's layout. The response holds copies: results may be reused
// once it is built.
func messageInferResponse(model, version string, r *Request, raw bool, outputs []runtime.TensorInfo, results []runtime.Tensor, labels [][]string) *inferencepb.ModelInferResponse {
	if len(results) != len(outputs) {
		panic(fmt.Sprintf("BUG: messageInferResponse got %d results for %d outputs", len(results), len(outputs)))
	}
	n := len(r.Outputs)
	if n == 0 {
		n = len(outputs)
	}
	for i := range n {
		if idx, k := r.protoOutput(i); k == 0 && contentsField(results[idx].DataType) < 0 {
			raw = true
		}
	}
	resp := &inferencepb.ModelInferResponse{
		ModelName:    model,
		ModelVersion: version,
		Id:           string(r.ID),
		Outputs:      make([]*inferencepb.ModelInferResponse_InferOutputTensor, n),
	}
	if raw {
		resp.RawOutputContents = make([][]byte, n)
	}
	for i := range n {
		idx, k := r.protoOutput(i)
		t := results[idx]
		if k > 0 {
			c, shape := AppendClassification(nil, t, k, labelsOf(labels, idx))
			out := &inferencepb.ModelInferResponse_InferOutputTensor{Name: outputs[idx].Name, Datatype: "BYTES", Shape: shape[:]}
			if raw {
				resp.RawOutputContents[i] = c
			} else {
				out.Contents = &inferencepb.InferTensorContents{BytesContents: bytesElements(c)}
			}
			resp.Outputs[i] = out
			continue
		}
		if e := runtime.Elements(t.Shape); e < 0 || e*t.DataType.Size() != len(t.Data) || !t.DataType.Valid() {
			panic(fmt.Sprintf("BUG: output %q of %s%s holds %d bytes", outputs[idx].Name, t.DataType, runtime.FormatShape(t.Shape), len(t.Data)))
		}
		out := &inferencepb.ModelInferResponse_InferOutputTensor{
			Name:     outputs[idx].Name,
			Datatype: t.DataType.String(),
			Shape:    slices.Clone(t.Shape),
		}
		if raw {
			resp.RawOutputContents[i] = slices.Clone(t.Data)
		} else {
			out.Contents = typedContents(t)
		}
		resp.Outputs[i] = out
	}
	return resp
}

// bytesElements returns the elements of c, BYTES in Triton's layout (each a
// 4-byte little-endian length and its bytes), as views of c.
func bytesElements(c []byte) [][]byte {
	var elems [][]byte
	for len(c) >= 4 {
		n := binary.LittleEndian.Uint32(c)
		elems = append(elems, c[4:4+n:4+n])
		c = c[4+n:]
	}
	return elems
}

// typedContents returns t's elements in the contents field of its
// datatype, which must have one.
func typedContents(t runtime.Tensor) *inferencepb.InferTensorContents {
	le := binary.LittleEndian
	size := t.DataType.Size()
	n := len(t.Data) / size
	c := &inferencepb.InferTensorContents{}
	switch t.DataType {
	case runtime.BOOL:
		c.BoolContents = make([]bool, n)
		for k, b := range t.Data {
			c.BoolContents[k] = b != 0
		}
	case runtime.INT8:
		c.IntContents = make([]int32, n)
		for k, b := range t.Data {
			c.IntContents[k] = int32(int8(b))
		}
	case runtime.INT16:
		c.IntContents = make([]int32, n)
		for k := range n {
			c.IntContents[k] = int32(int16(le.Uint16(t.Data[2*k:])))
		}
	case runtime.INT32:
		c.IntContents = make([]int32, n)
		for k := range n {
			c.IntContents[k] = int32(le.Uint32(t.Data[4*k:]))
		}
	case runtime.INT64:
		c.Int64Contents = make([]int64, n)
		for k := range n {
			c.Int64Contents[k] = int64(le.Uint64(t.Data[8*k:]))
		}
	case runtime.UINT8:
		c.UintContents = make([]uint32, n)
		for k, b := range t.Data {
			c.UintContents[k] = uint32(b)
		}
	case runtime.UINT16:
		c.UintContents = make([]uint32, n)
		for k := range n {
			c.UintContents[k] = uint32(le.Uint16(t.Data[2*k:]))
		}
	case runtime.UINT32:
		c.UintContents = make([]uint32, n)
		for k := range n {
			c.UintContents[k] = le.Uint32(t.Data[4*k:])
		}
	case runtime.UINT64:
		c.Uint64Contents = make([]uint64, n)
		for k := range n {
			c.Uint64Contents[k] = le.Uint64(t.Data[8*k:])
		}
	case runtime.FP32:
		c.Fp32Contents = make([]float32, n)
		for k := range n {
			c.Fp32Contents[k] = math.Float32frombits(le.Uint32(t.Data[4*k:]))
		}
	case runtime.FP64:
		c.Fp64Contents = make([]float64, n)
		for k := range n {
			c.Fp64Contents[k] = math.Float64frombits(le.Uint64(t.Data[8*k:]))
		}
	default:
		panic("BUG: typedContents called for " + t.DataType.String())
	}
	return c
}

// protoOutputModel gives one output of every datatype, shaped [-1, 3], and
// two FP32 and FP64 outputs that classification may ask of.
var protoOutputModel = func() []runtime.TensorInfo {
	var infos []runtime.TensorInfo
	for _, dt := range []runtime.DataType{runtime.BOOL, runtime.INT8, runtime.INT16, runtime.INT32, runtime.INT64,
		runtime.UINT8, runtime.UINT16, runtime.UINT32, runtime.UINT64, runtime.FP32, runtime.FP64} {
		infos = append(infos, runtime.TensorInfo{Name: "o_" + dt.String(), DataType: dt, Shape: []int64{-1, 3}})
	}
	return infos
}()

// protoResults fills a result of rows rows for each output, its bytes
// drawn from next, kept in each datatype's range.
func protoResults(outputs []runtime.TensorInfo, rows int, next func() uint64) []runtime.Tensor {
	results := make([]runtime.Tensor, len(outputs))
	for i, info := range outputs {
		t := runtime.Tensor{DataType: info.DataType, Shape: []int64{int64(rows), 3}}
		t.Data = make([]byte, rows*3*info.DataType.Size())
		for k := range t.Data {
			t.Data[k] = byte(next())
		}
		switch info.DataType {
		case runtime.BOOL:
			for k := range t.Data {
				t.Data[k] &= 1
			}
		case runtime.FP32:
			for k := 0; k < len(t.Data); k += 4 {
				binary.LittleEndian.PutUint32(t.Data[k:], math.Float32bits(float32(int8(t.Data[k]))/7))
			}
		case runtime.FP64:
			for k := 0; k < len(t.Data); k += 8 {
				binary.LittleEndian.PutUint64(t.Data[k:], math.Float64bits(float64(int8(t.Data[k]))/7))
			}
		}
		results[i] = t
	}
	return results
}

// TestAppendProtoInferResponseMatchesMessage encodes responses of every
// datatype, typed and raw, with and without a selection, with
// classification, and checks each byte for byte against proto.Marshal of
// the message messageInferResponse builds.
func TestAppendProtoInferResponseMatchesMessage(t *testing.T) {
	seed := uint64(7)
	next := func() uint64 { seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17; return seed }
	labels := make([][]string, len(protoOutputModel))
	labels[9] = []string{"cat", "dog", "eel"}
	fp16 := []runtime.TensorInfo{{Name: "h", DataType: runtime.FP16, Shape: []int64{-1, 3}}, protoOutputModel[4]}
	cases := []struct {
		name    string
		id      string
		raw     bool
		rows    int
		outputs []runtime.TensorInfo
		selects []RequestedOutput
	}{
		{name: "typed", id: "req-1", rows: 2, outputs: protoOutputModel},
		{name: "raw", rows: 2, raw: true, outputs: protoOutputModel},
		{name: "no rows", rows: 0, outputs: protoOutputModel},
		{name: "no rows raw", rows: 0, raw: true, outputs: protoOutputModel},
		{name: "selected", id: "x", rows: 3, outputs: protoOutputModel, selects: []RequestedOutput{{Index: 10}, {Index: 0}}},
		{name: "classified", rows: 2, outputs: protoOutputModel, selects: []RequestedOutput{{Index: 9, Classes: 2}, {Index: 10, Classes: 5}, {Index: 3}}},
		{name: "classified raw", rows: 2, raw: true, outputs: protoOutputModel, selects: []RequestedOutput{{Index: 9, Classes: 3}, {Index: 4}}},
		{name: "FP16 goes raw", rows: 2, outputs: fp16},
		{name: "a long output", rows: 100, outputs: protoOutputModel[9:]},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := AcquireRequest()
			defer ReleaseRequest(r)
			r.ID = []byte(c.id)
			r.Outputs = append(r.Outputs, c.selects...)
			r.RawContents = c.raw
			results := protoResults(c.outputs, c.rows, next)
			want, err := proto.Marshal(messageInferResponse("m", "3", r, c.raw, c.outputs, results, labels))
			if err != nil {
				t.Fatal(err)
			}
			got := AppendProtoInferResponse([]byte("kept"), "m", "3", r, c.outputs, results, labels)
			if !bytes.HasPrefix(got, []byte("kept")) || !bytes.Equal(got[4:], want) {
				t.Fatalf("encoded\n%x\nwant proto.Marshal's\n%x", got, want)
			}
		})
	}
}

// decodeResponse encodes a response as AppendProtoInferResponse does and
// parses it back.
func decodeResponse(t *testing.T, model, version string, r *Request, raw bool, outputs []runtime.TensorInfo, results []runtime.Tensor) *inferencepb.ModelInferResponse {
	t.Helper()
	var resp inferencepb.ModelInferResponse
	r.RawContents = raw
	if err := proto.Unmarshal(AppendProtoInferResponse(nil, model, version, r, outputs, results, nil), &resp); err != nil {
		t.Fatalf("the encoded response does not parse: %v", err)
	}
	return &resp
}

// TestAppendProtoInferResponseAllocatesNothing encodes into a buffer that
// has grown.
func TestAppendProtoInferResponseAllocatesNothing(t *testing.T) {
	r := AcquireRequest()
	defer ReleaseRequest(r)
	r.ID = []byte("a3f1c2d4-5b6e-4f70-8a9b-0c1d2e3f4a5b") // longer than Go's 32-byte stack buffer for strings
	results := protoResults(protoOutputModel, 4, func() uint64 { return 3 })
	buf := AppendProtoInferResponse(nil, "m", "1", r, protoOutputModel, results, nil)
	if n := testing.AllocsPerRun(100, func() {
		r.RawContents = false
		buf = AppendProtoInferResponse(buf[:0], "m", "1", r, protoOutputModel, results, nil)
		r.RawContents = true
		buf = AppendProtoInferResponse(buf[:0], "m", "1", r, protoOutputModel, results, nil)
	}); n != 0 {
		t.Errorf("AppendProtoInferResponse allocates %.1f times per run", n)
	}
}
