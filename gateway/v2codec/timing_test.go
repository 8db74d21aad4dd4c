package v2codec

import (
	"strconv"
	"testing"

	"github.com/infergate/infergate/runtime"
)

// codecFeatures256 is one input of 256 FP32 features a row, as the heavy
// benchmark model takes.
var codecFeatures256 = []runtime.TensorInfo{
	{Name: "features", DataType: runtime.FP32, Shape: []int64{runtime.Dynamic, 256}},
}

// codecDemoRequest is the gateway tests' request for the demo model.
const codecDemoRequest = `{"id":"req-1","inputs":[{"name":"input","shape":[2,8],"datatype":"FP32",
 "data":[[35,52000,24,1200,2,680,0,0.3],[61,18000,3,9000,1,540,4,0.95]]}]}`

// codecDemoInputs is the demo model's input: 8 features a row.
var codecDemoInputs = []runtime.TensorInfo{
	{Name: "input", DataType: runtime.FP32, Shape: []int64{runtime.Dynamic, 8}},
}

// codecRowBody returns a request of one row of n FP32 features, nested,
// with values of the spread a scaled feature vector has.
func codecRowBody(n int) []byte {
	b := []byte(`{"id":"bench-1","inputs":[{"name":"features","datatype":"FP32","shape":[1,`)
	b = strconv.AppendInt(b, int64(n), 10)
	b = append(b, `],"data":[[`...)
	for i := range n {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendFloat(b, float64(float32(float64(i%97)*0.0371-1.7)), 'f', -1, 32)
	}
	return append(b, `]]}]}`...)
}

// BenchmarkDecode256 decodes one row of 256 FP32 features, on one goroutine.
func BenchmarkDecode256(b *testing.B) {
	benchmarkDecode(b, codecRowBody(256), codecFeatures256)
}

// BenchmarkDecode8 decodes the demo model's request (two rows of 8
// features), on one goroutine.
func BenchmarkDecode8(b *testing.B) {
	benchmarkDecode(b, []byte(codecDemoRequest), codecDemoInputs)
}

func benchmarkDecode(b *testing.B, body []byte, inputs []runtime.TensorInfo) {
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		r := AcquireRequest()
		if err := r.Decode(body, -1, anyValues, inputs, codecClassifierOutputs); err != nil {
			b.Fatal(err)
		}
		ReleaseRequest(r)
	}
}
