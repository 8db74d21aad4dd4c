package v2codec

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math"
	"slices"
	"testing"

	"github.com/infergate/infergate/runtime"
)

// The models a fuzzed body is decoded against: one input, several of mixed
// types, and integer and float types of every width.
var codecFuzzModels = [][]runtime.TensorInfo{
	{
		{Name: "x", DataType: runtime.FP32, Shape: []int64{-1, 2}},
	},
	{
		{Name: "x", DataType: runtime.FP32, Shape: []int64{-1, 2}},
		{Name: "m", DataType: runtime.BOOL, Shape: []int64{-1}},
		{Name: "h", DataType: runtime.FP16, Shape: []int64{2}},
	},
	{
		{Name: "k", DataType: runtime.INT8, Shape: []int64{2, -1}},
		{Name: "u", DataType: runtime.UINT64, Shape: []int64{-1}},
		{Name: "d", DataType: runtime.FP64, Shape: []int64{-1}},
		{Name: "w", DataType: runtime.UINT16, Shape: []int64{-1, -1, -1}},
	},
}

func FuzzDecodeInferRequest(f *testing.F) {
	// Seeds with a binary tail are sent with the header's length.
	seeds := []struct{ header, tail string }{
		{`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,2],"data":[1.5,-2]}]}`, ""},
		{`{"id":"1","parameters":{"timeout":10,"binary_data_output":true},"outputs":[{"name":"label"}],"inputs":[{"name":"x","datatype":"FP32","shape":[2,2],"data":[[1,2],[3,4]]}]}`, ""},
		{`{"inputs":[{"name":"x","datatype":"FP32","shape":[2,2],"data":[1,2,3,4]},{"name":"m","datatype":"BOOL","shape":[3],"data":[true,false,true]},{"name":"h","datatype":"FP16","shape":[2],"data":[0.1,65504]}]}`, ""},
		{`{"inputs":[{"name":"k","datatype":"INT8","shape":[2,1],"data":[[-128],[127]]},{"name":"u","datatype":"UINT64","shape":[1],"data":[18446744073709551615]},{"name":"d","datatype":"FP64","shape":[2],"data":[1e-300,-0]},{"name":"w","datatype":"UINT16","shape":[1,2,1],"data":[[[1],[65535]]]}]}`, ""},
		{`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,2],"parameters":{"binary_data_size":8}}]}`, "\x00\x00\xc0\x7f\x00\x00\x80\xff"},
		{`{"inputs":[{"name":"h","datatype":"FP16","shape":[2],"parameters":{"binary_data_size":4}},{"name":"x","datatype":"FP32","shape":[0,2],"data":[]},{"name":"m","datatype":"BOOL","shape":[2],"parameters":{"binary_data_size":2}}]}`, "\x00\x7c\x01\x00\x01\x00"},
		{`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,2],"data":[1,"NaN"]}]}`, ""},
		{`{"inputs":[{"name":"x","datatype":"FP32","shape":[1000000000000,1000000000000],"data":[[1]]}]}`, ""},
		{`{"inputs":[{"name":"x","datatype":"FP32","shape":[2,2],"data":[[1,2],[3]]}]}`, ""},
		{`{"inputs":[{"name":"k","datatype":"INT8","shape":[2,1],"data":[300,1.5]}]}`, ""},
		{`{"inputs":[{"name":"x","datatype":"BYTES","shape":[1],"data":["a"]}]}`, ""},
		{`{"inputs":[`, ""},
		{`[[[[[[[[[[`, ""},
	}
	for _, s := range seeds {
		headerLen := -1
		if s.tail != "" {
			headerLen = len(s.header)
		}
		f.Add([]byte(s.header+s.tail), headerLen)
	}
	f.Fuzz(func(t *testing.T, body []byte, headerLen int) {
		for _, model := range codecFuzzModels {
			r := AcquireRequest()
			if err := r.Decode(body, headerLen, anyValues, model, codecClassifierOutputs); err == nil {
				codecCheckDecoded(t, r, model)
			}
			ReleaseRequest(r)
		}
	})
}

// codecCheckDecoded checks that a decoded request agrees with the model and
// that its inputs, encoded as a response, decode back to the same tensors.
func codecCheckDecoded(t *testing.T, r *Request, model []runtime.TensorInfo) {
	t.Helper()
	if len(r.Inputs) != len(model) {
		t.Fatalf("decoded %d inputs for a model of %d", len(r.Inputs), len(model))
	}
	for i, info := range model {
		in := r.Inputs[i]
		if in.DataType != info.DataType || len(in.Shape) != len(info.Shape) {
			t.Fatalf("input %q decoded as %s%v for the model's %s", info.Name, in.DataType, in.Shape, info)
		}
		for j, d := range info.Shape {
			if d != runtime.Dynamic && d != in.Shape[j] {
				t.Fatalf("input %q decoded as %v for the model's %s", info.Name, in.Shape, info)
			}
		}
		if n := runtime.Elements(in.Shape); n < 0 || len(in.Data) != n*in.DataType.Size() {
			t.Fatalf("input %q of shape %v holds %d bytes", info.Name, in.Shape, len(in.Data))
		}
	}
	for _, o := range r.Outputs {
		if o.Index < 0 || o.Index >= len(codecClassifierOutputs) {
			t.Fatalf("output index %d out of range", o.Index)
		}
	}

	// Binary outputs keep every bit; JSON keeps every finite value.
	codecCheckReencoded(t, r.Inputs, model, true)
	if codecAllFinite(r.Inputs) {
		codecCheckReencoded(t, r.Inputs, model, false)
	}
}

func codecCheckReencoded(t *testing.T, inputs []runtime.Tensor, model []runtime.TensorInfo, bin bool) {
	t.Helper()
	resp, headerLen := AppendInferResponse(nil, "m", "1", &Request{BinaryOutput: bin}, model, inputs, nil)
	if !bin && !json.Valid(resp) {
		t.Fatalf("response is not valid JSON: %s", resp)
	}
	req, headerLen := codecResponseAsRequest(t, resp, headerLen)
	back := AcquireRequest()
	defer ReleaseRequest(back)
	if err := back.Decode(req, headerLen, anyValues, model, nil); err != nil {
		t.Fatalf("cannot decode the re-encoded %s: %s", req, err)
	}
	for i := range inputs {
		a, b := inputs[i], back.Inputs[i]
		if a.DataType != b.DataType || !slices.Equal(a.Shape, b.Shape) || !bytes.Equal(a.Data, b.Data) {
			t.Fatalf("input %q changed in a round trip (binary %v): %s%v % x became %s%v % x",
				model[i].Name, bin, a.DataType, a.Shape, a.Data, b.DataType, b.Shape, b.Data)
		}
	}
}

// codecAllFinite reports whether no float in tensors is NaN or infinite.
func codecAllFinite(tensors []runtime.Tensor) bool {
	le := binary.LittleEndian
	for _, t := range tensors {
		size := t.DataType.Size()
		for off := 0; off < len(t.Data); off += size {
			var f float64
			switch t.DataType {
			case runtime.FP16:
				f = float64(HalfToFloat32(le.Uint16(t.Data[off:])))
			case runtime.FP32:
				f = float64(math.Float32frombits(le.Uint32(t.Data[off:])))
			case runtime.FP64:
				f = math.Float64frombits(le.Uint64(t.Data[off:]))
			default:
				continue
			}
			if math.IsNaN(f) || math.IsInf(f, 0) {
				return false
			}
		}
	}
	return true
}
