//go:build !race

package v2codec

import (
	"testing"

	"github.com/infergate/infergate/runtime"
)

// The V2 codec is on every request's path: in steady state, with pooled
// requests and a reused response buffer, it must not allocate.
func TestInferCodecAllocations(t *testing.T) {
	// f runs fn once to warm the pool and buffers, then wants it to allocate nothing.
	f := func(name string, fn func()) {
		t.Helper()
		fn()
		if n := testing.AllocsPerRun(100, fn); n != 0 {
			t.Fatalf("%s: expected 0 allocations, got %f", name, n)
		}
	}
	decode := func(body []byte, headerLen int, inputs []runtime.TensorInfo) func() {
		return func() {
			r := AcquireRequest()
			if err := r.Decode(body, headerLen, anyValues, inputs, codecClassifierOutputs); err != nil {
				panic(err)
			}
			ReleaseRequest(r)
		}
	}
	f("decode FP32 [1,32]", decode(codecFP32Body(1), -1, codecFeatures32))
	f("decode FP32 [4,32]", decode(codecFP32Body(4), -1, codecFeatures32))

	nested := []byte(`{"id":"n","parameters":{"timeout":100,"priority":1},"outputs":[{"name":"probabilities","parameters":{"binary_data":true}}],` +
		`"inputs":[{"name":"y","datatype":"INT32","shape":[2],"data":[1,-2]},{"name":"x","datatype":"FP32","shape":[2,3],"data":[[1,2,3],[4.5,5e-3,-6]]}]}`)
	f("decode nested with parameters and outputs", decode(nested, -1, codecXY))
	dataFirst := []byte(`{"inputs":[{"data":[[1,2,3]],"shape":[1,3],"datatype":"FP32","name":"x"},{"data":[7],"name":"y","datatype":"INT32","shape":[1]}]}`)
	f("decode data before the name, datatype and shape", decode(dataFirst, -1, codecXY))

	header := `{"inputs":[{"name":"features","datatype":"FP32","shape":[4,32],"parameters":{"binary_data_size":512}}]}`
	binaryBody := append([]byte(header), make([]byte, 512)...)
	f("decode binary FP32 [4,32]", decode(binaryBody, len(header), codecFeatures32))

	probs := make([]float32, 4*2)
	for i := range probs {
		probs[i] = float32(i+1) / 9
	}
	results := []runtime.Tensor{
		{DataType: runtime.INT64, Shape: []int64{4}, Data: codecLE([]int64{1, 0, 1, 1})},
		{DataType: runtime.FP32, Shape: []int64{4, 2}, Data: codecLE(probs)},
	}
	selected := &Request{ID: []byte("a-request-id-longer-than-32-bytes-0123456789"), Outputs: []RequestedOutput{{Index: 1}}}
	var dst []byte
	f("encode FP32 [4,2]", func() {
		dst, _ = AppendInferResponse(dst[:0], "model", "1", selected, codecClassifierOutputs, results, nil)
	})
	all := &Request{BinaryOutput: true}
	f("encode binary", func() {
		dst, _ = AppendInferResponse(dst[:0], "model", "1", all, codecClassifierOutputs, results, nil)
	})
	f("encode metadata and errors", func() {
		dst = AppendModelMetadata(dst[:0], "model", []string{"1"}, "onnxruntime_onnx", codecFeatures32, codecClassifierOutputs)
		dst = AppendServerMetadata(dst[:0], "infergate", "1.0", []string{"binary_tensor_data"})
		dst = AppendError(dst[:0], "input \"x\":\tbad\n")
	})
}
