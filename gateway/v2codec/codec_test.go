package v2codec

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/infergate/infergate/runtime"
	"github.com/valyala/fastjson"
)

// The models the codec tests decode against.
var (
	codecXY = []runtime.TensorInfo{
		{Name: "x", DataType: runtime.FP32, Shape: []int64{runtime.Dynamic, 3}},
		{Name: "y", DataType: runtime.INT32, Shape: []int64{runtime.Dynamic}},
	}
	codecClassifierOutputs = []runtime.TensorInfo{
		{Name: "label", DataType: runtime.INT64, Shape: []int64{runtime.Dynamic}},
		{Name: "probabilities", DataType: runtime.FP32, Shape: []int64{runtime.Dynamic, 2}},
	}
	codecFeatures32 = []runtime.TensorInfo{
		{Name: "features", DataType: runtime.FP32, Shape: []int64{runtime.Dynamic, 32}},
	}
)

// codecLE returns the little-endian bytes of values, each of a fixed-size type.
func codecLE(values ...any) []byte {
	var b []byte
	for _, v := range values {
		var err error
		if b, err = binary.Append(b, binary.LittleEndian, v); err != nil {
			panic(err)
		}
	}
	return b
}

// codecDecode decodes body, failing the test on error; the request goes
// back to the pool when the test ends.
func codecDecode(t *testing.T, body []byte, headerLen int, inputs, outputs []runtime.TensorInfo) *Request {
	t.Helper()
	r := AcquireRequest()
	t.Cleanup(func() { ReleaseRequest(r) })
	if err := r.Decode(body, headerLen, anyValues, inputs, outputs); err != nil {
		t.Fatalf("cannot decode %s: %s", body, err)
	}
	return r
}

// codecFP32Body returns a request for codecFeatures32 of the given rows.
func codecFP32Body(rows int) []byte {
	b := []byte(`{"id":"bench-1","inputs":[{"name":"features","datatype":"FP32","shape":[`)
	b = strconv.AppendInt(b, int64(rows), 10)
	b = append(b, `,32],"data":[`...)
	for i := range rows * 32 {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendFloat(b, float64(i)*0.173-2.5, 'f', -1, 32)
	}
	return append(b, `]}]}`...)
}

// codecResponseAsRequest turns a response's outputs into a request's inputs,
// binary data included, so that decoding it checks what was encoded.
func codecResponseAsRequest(t testing.TB, resp []byte, headerLen int) ([]byte, int) {
	t.Helper()
	header, tail := resp, []byte(nil)
	if headerLen >= 0 {
		header, tail = resp[:headerLen], resp[headerLen:]
	}
	if !json.Valid(header) {
		t.Fatalf("response is not valid JSON: %s", header)
	}
	v, err := fastjson.ParseBytes(header)
	if err != nil {
		t.Fatalf("cannot parse response %s: %s", header, err)
	}
	req := append([]byte(`{"inputs":`), v.Get("outputs").MarshalTo(nil)...)
	req = append(req, '}')
	if headerLen < 0 {
		return req, -1
	}
	n := len(req)
	return append(req, tail...), n
}

func TestDecodeInferRequestDatatypes(t *testing.T) {
	// f decodes data as a [3] tensor of dt, checks its bytes, then encodes it
	// back and checks the JSON.
	f := func(dt runtime.DataType, data string, want []byte, wantJSON string) {
		t.Helper()
		model := []runtime.TensorInfo{{Name: "v", DataType: dt, Shape: []int64{runtime.Dynamic}}}
		body := `{"inputs":[{"name":"v","datatype":"` + dt.String() + `","shape":[3],"data":` + data + `}]}`
		r := codecDecode(t, []byte(body), -1, model, model)
		got := r.Inputs[0]
		if got.DataType != dt || !slices.Equal(got.Shape, []int64{3}) || !bytes.Equal(got.Data, want) {
			t.Fatalf("%s %s: got %s%v % x, want % x", dt, data, got.DataType, got.Shape, got.Data, want)
		}
		if s := string(appendTensorData(nil, got)); s != wantJSON {
			t.Fatalf("%s %s: encoded as %s, want %s", dt, data, s, wantJSON)
		}
	}
	f(runtime.BOOL, `[true,false,true]`, []byte{1, 0, 1}, `[true,false,true]`)
	f(runtime.UINT8, `[0,255,7]`, []byte{0, 255, 7}, `[0,255,7]`)
	f(runtime.INT8, `[-128,127,-0]`, codecLE(int8(-128), int8(127), int8(0)), `[-128,127,0]`)
	f(runtime.UINT16, `[0,65535,258]`, codecLE(uint16(0), uint16(65535), uint16(258)), `[0,65535,258]`)
	f(runtime.INT16, `[-32768,32767,-1]`, codecLE(int16(-32768), int16(32767), int16(-1)), `[-32768,32767,-1]`)
	f(runtime.UINT32, `[0,4294967295,1]`, codecLE(uint32(0), uint32(4294967295), uint32(1)), `[0,4294967295,1]`)
	f(runtime.INT32, `[-2147483648,2147483647,-5]`, codecLE(int32(math.MinInt32), int32(math.MaxInt32), int32(-5)), `[-2147483648,2147483647,-5]`)
	f(runtime.UINT64, `[-0,18446744073709551615,1]`, codecLE(uint64(0), uint64(math.MaxUint64), uint64(1)), `[0,18446744073709551615,1]`)
	f(runtime.INT64, `[-9223372036854775808,9223372036854775807,-1]`, codecLE(int64(math.MinInt64), int64(math.MaxInt64), int64(-1)), `[-9223372036854775808,9223372036854775807,-1]`)
	f(runtime.FP16, `[1,-2,65504]`, codecLE(uint16(0x3c00), uint16(0xc000), uint16(0x7bff)), `[1,-2,65504]`)
	f(runtime.FP16, `[0.1,6e-8,1e-9]`, codecLE(uint16(0x2e66), uint16(0x0001), uint16(0)), `[0.099975586,5.9604645e-8,0]`)
	f(runtime.FP32, `[0.1,-1.5,3.4028234663852886e38]`, codecLE(float32(0.1), float32(-1.5), float32(math.MaxFloat32)), `[0.1,-1.5,3.4028235e+38]`)
	f(runtime.FP32, `[1e-7,123456789,-0]`, codecLE(float32(1e-7), float32(123456789), float32(math.Copysign(0, -1))), `[1e-7,123456790,-0]`)
	f(runtime.FP32, `[1e-50,-1e-50,16777217]`, codecLE(float32(0), float32(math.Copysign(0, -1)), float32(16777216)), `[0,-0,16777216]`)
	f(runtime.FP64, `[0.1,-1e-300,1.7976931348623157e308]`, codecLE(0.1, -1e-300, math.MaxFloat64), `[0.1,-1e-300,1.7976931348623157e+308]`)
	f(runtime.FP64, `[5e-324,0.000001,1e21]`, codecLE(5e-324, 0.000001, 1e21), `[5e-324,0.000001,1e+21]`)
}

func TestAppendInferResponse(t *testing.T) {
	body := `{"id":"req-1","inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"data":[1,2,3]},{"name":"y","datatype":"INT32","shape":[1],"data":[4]}]}`
	r := codecDecode(t, []byte(body), -1, codecXY, codecClassifierOutputs)
	results := []runtime.Tensor{
		{DataType: runtime.INT64, Shape: []int64{1}, Data: codecLE(int64(1))},
		{DataType: runtime.FP32, Shape: []int64{1, 2}, Data: codecLE(float32(0.1), float32(0.9))},
	}
	got, headerLen := AppendInferResponse([]byte("prefix"), "m", "1", r, codecClassifierOutputs, results, nil)
	want := `prefix{"model_name":"m","model_version":"1","id":"req-1","outputs":[` +
		`{"name":"label","datatype":"INT64","shape":[1],"data":[1]},` +
		`{"name":"probabilities","datatype":"FP32","shape":[1,2],"data":[0.1,0.9]}]}`
	if string(got) != want || headerLen != -1 {
		t.Fatalf("got %s (header %d), want %s", got, headerLen, want)
	}

	// Without an id and with an output selection.
	body = `{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"data":[1,2,3]},{"name":"y","datatype":"INT32","shape":[1],"data":[4]}],"outputs":[{"name":"probabilities"}]}`
	r = codecDecode(t, []byte(body), -1, codecXY, codecClassifierOutputs)
	got, _ = AppendInferResponse(nil, "m", "2", r, codecClassifierOutputs, results, nil)
	want = `{"model_name":"m","model_version":"2","outputs":[{"name":"probabilities","datatype":"FP32","shape":[1,2],"data":[0.1,0.9]}]}`
	if string(got) != want {
		t.Fatalf("got %s, want %s", got, want)
	}

	// Non-finite floats have no JSON form.
	nonFinite := []runtime.Tensor{
		{DataType: runtime.INT64, Shape: []int64{0}, Data: nil},
		{DataType: runtime.FP32, Shape: []int64{1, 2}, Data: codecLE(float32(math.NaN()), float32(math.Inf(-1)))},
	}
	r = codecDecode(t, []byte(`{"inputs":[{"name":"x","datatype":"FP32","shape":[0,3],"data":[]},{"name":"y","datatype":"INT32","shape":[0],"data":[]}]}`), -1, codecXY, codecClassifierOutputs)
	got, _ = AppendInferResponse(nil, "m", "1", r, codecClassifierOutputs, nonFinite, nil)
	want = `{"model_name":"m","model_version":"1","outputs":[{"name":"label","datatype":"INT64","shape":[0],"data":[]},{"name":"probabilities","datatype":"FP32","shape":[1,2],"data":[null,null]}]}`
	if string(got) != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}

func TestDecodeNestedData(t *testing.T) {
	// f decodes data for a tensor of shape and checks it equals flat.
	f := func(shape string, data string, flat ...float32) {
		t.Helper()
		model := []runtime.TensorInfo{{Name: "v", DataType: runtime.FP32, Shape: []int64{-1, -1, -1}[:strings.Count(shape, ",")+1]}}
		body := `{"inputs":[{"name":"v","datatype":"FP32","shape":` + shape + `,"data":` + data + `}]}`
		r := codecDecode(t, []byte(body), -1, model, model)
		want := []byte{}
		for _, v := range flat {
			want = append(want, codecLE(v)...)
		}
		if got := r.Inputs[0]; runtime.FormatShape(got.Shape) != shape || !bytes.Equal(got.Data, want) {
			t.Fatalf("%s %s: got %v % x, want % x", shape, data, got.Shape, got.Data, want)
		}
	}
	f(`[2,3]`, `[[1,2,3],[4,5,6]]`, 1, 2, 3, 4, 5, 6)
	f(`[2,3]`, `[1,2,3,4,5,6]`, 1, 2, 3, 4, 5, 6)
	f(`[2,1,2]`, `[[[1,2]],[[3,4]]]`, 1, 2, 3, 4)
	f(`[2,1,2]`, `[1,2,3,4]`, 1, 2, 3, 4)
	f(`[1,1,1]`, `[[[7]]]`, 7)
	f(`[2,0]`, `[[],[]]`)
	f(`[0,3]`, `[]`)
	f(`[3]`, `[1,2,3]`, 1, 2, 3)
}

func TestDecodeMultipleInputs(t *testing.T) {
	model := []runtime.TensorInfo{
		{Name: "ids", DataType: runtime.INT64, Shape: []int64{-1, 4}},
		{Name: "mask", DataType: runtime.BOOL, Shape: []int64{-1, 4}},
		{Name: "scale", DataType: runtime.FP32, Shape: []int64{1}},
	}
	// In another order than the model's, and "ids" nested.
	body := `{"inputs":[
		{"name":"scale","datatype":"FP32","shape":[1],"data":[0.5]},
		{"name":"ids","datatype":"INT64","shape":[2,4],"data":[[1,2,3,4],[5,6,7,8]]},
		{"name":"mask","datatype":"BOOL","shape":[2,4],"data":[true,true,false,false,true,false,true,false]}
	],"unknown_extension":{"ignored":[1,2]}}`
	r := codecDecode(t, []byte(body), -1, model, codecClassifierOutputs)
	want := []runtime.Tensor{
		{DataType: runtime.INT64, Shape: []int64{2, 4}, Data: codecLE([]int64{1, 2, 3, 4, 5, 6, 7, 8})},
		{DataType: runtime.BOOL, Shape: []int64{2, 4}, Data: []byte{1, 1, 0, 0, 1, 0, 1, 0}},
		{DataType: runtime.FP32, Shape: []int64{1}, Data: codecLE(float32(0.5))},
	}
	codecCheckTensors(t, r.Inputs, want)

	// The decoded inputs survive a trip through the response encoder.
	resp, headerLen := AppendInferResponse(nil, "m", "1", &Request{}, model, r.Inputs, nil)
	req, headerLen := codecResponseAsRequest(t, resp, headerLen)
	codecCheckTensors(t, codecDecode(t, req, headerLen, model, nil).Inputs, want)
}

func codecCheckTensors(t *testing.T, got, want []runtime.Tensor) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d tensors, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.DataType != w.DataType || !slices.Equal(g.Shape, w.Shape) || !bytes.Equal(g.Data, w.Data) {
			t.Fatalf("tensor %d: got %s%v % x, want %s%v % x", i, g.DataType, g.Shape, g.Data, w.DataType, w.Shape, w.Data)
		}
	}
}

func TestDecodeParametersAndID(t *testing.T) {
	inputs := `"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"data":[1,2,3]},{"name":"y","datatype":"INT32","shape":[1],"data":[4]}]`
	// f decodes a request with the given top-level members and checks what they set.
	f := func(members string, wantID []byte, timeout time.Duration, priority int, binaryOutput bool) {
		t.Helper()
		body := "{" + members + inputs + "}"
		r := codecDecode(t, []byte(body), -1, codecXY, codecClassifierOutputs)
		if !bytes.Equal(r.ID, wantID) || (r.ID == nil) != (wantID == nil) || r.Timeout != timeout || r.Priority != priority || r.BinaryOutput != binaryOutput {
			t.Fatalf("%s: got id %q timeout %s priority %d binary %v", members, r.ID, r.Timeout, r.Priority, r.BinaryOutput)
		}
	}
	f(``, nil, 0, 0, false)
	f(`"id":"",`, []byte{}, 0, 0, false)
	f(`"id":"req-\u00e9\"1\"",`, []byte("req-é\"1\""), 0, 0, false)
	f(`"parameters":{"timeout":1500},`, nil, 1500*time.Microsecond, 0, false)
	f(`"parameters":{"priority":3,"binary_data_output":true,"custom":"passed"},`, nil, 0, 3, true)
	f(`"id":"a","parameters":{"timeout":0,"priority":0,"binary_data_output":false},`, []byte("a"), 0, 0, false)

	// The id is echoed, escaped as JSON needs.
	r := codecDecode(t, []byte(`{"id":"a\"b\\c\n\u0001é",`+inputs+`}`), -1, codecXY, codecClassifierOutputs)
	results := []runtime.Tensor{
		{DataType: runtime.INT64, Shape: []int64{1}, Data: codecLE(int64(1))},
		{DataType: runtime.FP32, Shape: []int64{1, 2}, Data: codecLE(float32(0.25), float32(0.75))},
	}
	resp, _ := AppendInferResponse(nil, "m", "1", r, codecClassifierOutputs, results, nil)
	var decoded struct{ ID string }
	if err := json.Unmarshal(resp, &decoded); err != nil || decoded.ID != "a\"b\\c\n\x01é" {
		t.Fatalf("response %s: id %q, err %v", resp, decoded.ID, err)
	}
}

func TestDecodeOutputSelection(t *testing.T) {
	inputs := `"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"data":[1,2,3]},{"name":"y","datatype":"INT32","shape":[1],"data":[4]}]`
	// f decodes the outputs member and checks the selection.
	f := func(members string, want ...RequestedOutput) {
		t.Helper()
		r := codecDecode(t, []byte("{"+members+inputs+"}"), -1, codecXY, codecClassifierOutputs)
		if len(r.Outputs) != len(want) {
			t.Fatalf("%s: got %v, want %v", members, r.Outputs, want)
		}
		for i := range want {
			if r.Outputs[i] != want[i] {
				t.Fatalf("%s: got %v, want %v", members, r.Outputs, want)
			}
		}
	}
	f(``)
	f(`"outputs":[],`)
	f(`"outputs":[{"name":"probabilities"}],`, RequestedOutput{Index: 1})
	f(`"outputs":[{"name":"probabilities"},{"name":"label","parameters":{"binary_data":true}}],`,
		RequestedOutput{Index: 1}, RequestedOutput{Index: 0, Binary: true})
	// binary_data_output is every output's default; an output's own binary_data wins.
	f(`"parameters":{"binary_data_output":true},"outputs":[{"name":"label"},{"name":"probabilities","parameters":{"binary_data":false}}],`,
		RequestedOutput{Index: 0, Binary: true}, RequestedOutput{Index: 1})
	f(`"outputs":[{"name":"probabilities","parameters":{"classification":2}}],`, RequestedOutput{Index: 1, Classes: 2})
	f(`"outputs":[{"name":"probabilities","parameters":{"binary_data":true,"classification":1}},{"name":"label"}],`,
		RequestedOutput{Index: 1, Binary: true, Classes: 1}, RequestedOutput{Index: 0})
}

func TestBinaryInputs(t *testing.T) {
	model := []runtime.TensorInfo{
		{Name: "x", DataType: runtime.FP32, Shape: []int64{-1, 2}},
		{Name: "y", DataType: runtime.INT32, Shape: []int64{-1}},
		{Name: "h", DataType: runtime.FP16, Shape: []int64{2}},
		{Name: "m", DataType: runtime.BOOL, Shape: []int64{-1}},
	}
	x := codecLE(float32(1.5), float32(math.NaN()), float32(-3), float32(math.Inf(1)))
	h := codecLE(uint16(0x3c00), uint16(0x7bff))
	m := []byte{1, 0, 1}
	// Binary data follows the JSON in request order (h before x), whatever the model's order.
	header := `{"inputs":[` +
		`{"name":"h","datatype":"FP16","shape":[2],"parameters":{"binary_data_size":4}},` +
		`{"name":"y","datatype":"INT32","shape":[2],"data":[7,8]},` +
		`{"name":"x","datatype":"FP32","shape":[2,2],"parameters":{"binary_data_size":16}},` +
		`{"name":"m","datatype":"BOOL","shape":[3],"parameters":{"binary_data_size":3}}]}`
	body := append([]byte(header), h...)
	body = append(body, x...)
	body = append(body, m...)
	r := codecDecode(t, body, len(header), model, nil)
	want := []runtime.Tensor{
		{DataType: runtime.FP32, Shape: []int64{2, 2}, Data: x},
		{DataType: runtime.INT32, Shape: []int64{2}, Data: codecLE(int32(7), int32(8))},
		{DataType: runtime.FP16, Shape: []int64{2}, Data: h},
		{DataType: runtime.BOOL, Shape: []int64{3}, Data: m},
	}
	codecCheckTensors(t, r.Inputs, want)

	// A JSON-only request with the header set is fine too.
	header = `{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"data":[1,2,3]},{"name":"y","datatype":"INT32","shape":[1],"data":[4]}]}`
	codecDecode(t, []byte(header), len(header), codecXY, nil)

	// Binary outputs carry NaN and infinities exactly; a round trip keeps every bit.
	resp, headerLen := AppendInferResponse(nil, "m", "1", &Request{BinaryOutput: true}, model, r.Inputs, nil)
	req, headerLen := codecResponseAsRequest(t, resp, headerLen)
	codecCheckTensors(t, codecDecode(t, req, headerLen, model, nil).Inputs, want)
}

func TestBinaryOutputs(t *testing.T) {
	inputs := `"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"data":[1,2,3]},{"name":"y","datatype":"INT32","shape":[1],"data":[4]}]`
	label := codecLE(int64(1), int64(0))
	probs := codecLE(float32(0.25), float32(0.75), float32(0.5), float32(0.5))
	results := []runtime.Tensor{
		{DataType: runtime.INT64, Shape: []int64{2}, Data: label},
		{DataType: runtime.FP32, Shape: []int64{2, 2}, Data: probs},
	}
	// f encodes the response for a request with members and checks it.
	f := func(members, wantJSON string, wantTail []byte) {
		t.Helper()
		r := codecDecode(t, []byte("{"+members+inputs+"}"), -1, codecXY, codecClassifierOutputs)
		resp, headerLen := AppendInferResponse(nil, "m", "1", r, codecClassifierOutputs, results, nil)
		if wantTail == nil {
			if headerLen != -1 || string(resp) != wantJSON {
				t.Fatalf("%s: got %s (header %d), want %s", members, resp, headerLen, wantJSON)
			}
			return
		}
		if headerLen != len(wantJSON) || string(resp[:headerLen]) != wantJSON || !bytes.Equal(resp[headerLen:], wantTail) {
			t.Fatalf("%s: got %q (header %d), want %s + % x", members, resp, headerLen, wantJSON, wantTail)
		}
	}
	const prefix = `{"model_name":"m","model_version":"1","outputs":[`
	labelJSON := `{"name":"label","datatype":"INT64","shape":[2],"data":[1,0]}`
	labelBinary := `{"name":"label","datatype":"INT64","shape":[2],"parameters":{"binary_data_size":16}}`
	probsJSON := `{"name":"probabilities","datatype":"FP32","shape":[2,2],"data":[0.25,0.75,0.5,0.5]}`
	probsBinary := `{"name":"probabilities","datatype":"FP32","shape":[2,2],"parameters":{"binary_data_size":16}}`

	f(``, prefix+labelJSON+","+probsJSON+"]}", nil)
	f(`"parameters":{"binary_data_output":true},`, prefix+labelBinary+","+probsBinary+"]}", append(bytes.Clone(label), probs...))
	f(`"outputs":[{"name":"probabilities","parameters":{"binary_data":true}},{"name":"label"}],`,
		prefix+probsBinary+","+labelJSON+"]}", probs)
	f(`"parameters":{"binary_data_output":true},"outputs":[{"name":"probabilities"},{"name":"label","parameters":{"binary_data":false}}],`,
		prefix+probsBinary+","+labelJSON+"]}", probs)
	f(`"parameters":{"binary_data_output":true},"outputs":[{"name":"probabilities","parameters":{"binary_data":false}}],`,
		prefix+probsJSON+"]}", nil)
}

func TestDecodeDoesNotKeepBody(t *testing.T) {
	body := []byte(`{"id":"keep-me","inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"data":[1,2,3]},{"name":"y","datatype":"INT32","shape":[1],"parameters":{"binary_data_size":4}}]}`)
	headerLen := len(body)
	body = append(body, codecLE(int32(9))...)
	r := codecDecode(t, body, headerLen, codecXY, nil)
	for i := range body {
		body[i] = 'z'
	}
	want := []runtime.Tensor{
		{DataType: runtime.FP32, Shape: []int64{1, 3}, Data: codecLE(float32(1), float32(2), float32(3))},
		{DataType: runtime.INT32, Shape: []int64{1}, Data: codecLE(int32(9))},
	}
	codecCheckTensors(t, r.Inputs, want)
	if string(r.ID) != "keep-me" {
		t.Fatalf("id changed with the body: %q", r.ID)
	}
}

func TestInferRequestReuse(t *testing.T) {
	r := AcquireRequest()
	defer ReleaseRequest(r)
	big := `{"id":"one","parameters":{"timeout":5,"priority":2,"binary_data_output":true},"outputs":[{"name":"label"}],"inputs":[{"name":"x","datatype":"FP32","shape":[2,3],"data":[1,2,3,4,5,6]},{"name":"y","datatype":"INT32","shape":[3],"data":[1,2,3]}]}`
	small := `{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"data":[7,8,9]},{"name":"y","datatype":"INT32","shape":[1],"data":[4]}]}`
	if err := r.Decode([]byte(big), -1, anyValues, codecXY, codecClassifierOutputs); err != nil {
		t.Fatal(err)
	}
	ReleaseRequest(r)
	r = AcquireRequest()
	// A failed decode leaves nothing behind for the next one either.
	if err := r.Decode([]byte(`{"id":"x","inputs":[{"name":"y"}]}`), -1, anyValues, codecXY, codecClassifierOutputs); err == nil {
		t.Fatal("want an error")
	}
	if err := r.Decode([]byte(small), -1, anyValues, codecXY, codecClassifierOutputs); err != nil {
		t.Fatal(err)
	}
	if r.ID != nil || len(r.Outputs) != 0 || r.Timeout != 0 || r.Priority != 0 || r.BinaryOutput {
		t.Fatalf("state left from an earlier request: %+v", r)
	}
	codecCheckTensors(t, r.Inputs, []runtime.Tensor{
		{DataType: runtime.FP32, Shape: []int64{1, 3}, Data: codecLE(float32(7), float32(8), float32(9))},
		{DataType: runtime.INT32, Shape: []int64{1}, Data: codecLE(int32(4))},
	})
}

func TestInferRequestDropsHugeBuffers(t *testing.T) {
	model := []runtime.TensorInfo{{Name: "v", DataType: runtime.UINT8, Shape: []int64{-1}}}
	size := maxPooledTensorBytes + 1
	header := `{"inputs":[{"name":"v","datatype":"UINT8","shape":[` + strconv.Itoa(size) + `],"parameters":{"binary_data_size":` + strconv.Itoa(size) + `}}]}`
	r := &Request{}
	if err := r.Decode(append([]byte(header), make([]byte, size)...), len(header), anyValues, model, nil); err != nil {
		t.Fatal(err)
	}
	r.reset()
	if kept := r.Inputs[:1][0].Data; kept != nil {
		t.Fatalf("reset kept a %d-byte tensor buffer", cap(kept))
	}
}

func TestDecodeInferRequestErrors(t *testing.T) {
	const (
		x = `{"name":"x","datatype":"FP32","shape":[1,3],"data":[1,2,3]}`
		y = `{"name":"y","datatype":"INT32","shape":[1],"data":[4]}`
	)
	// f decodes body for codecXY and codecClassifierOutputs and wants an
	// error containing want.
	f := func(body string, headerLen int, want string) {
		t.Helper()
		r := AcquireRequest()
		defer ReleaseRequest(r)
		err := r.Decode([]byte(body), headerLen, anyValues, codecXY, codecClassifierOutputs)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("decoding %.200s: got error %v, want one containing %q", body, err, want)
		}
	}
	// v decodes one input "v" of dt and shape [-1] (or model shape) with
	// shape and data, and wants an error containing want.
	v := func(dt, modelShape, shape, data, want string) {
		t.Helper()
		var dims []int64
		if err := json.Unmarshal([]byte(modelShape), &dims); err != nil {
			t.Fatal(err)
		}
		parsed, _ := runtime.ParseDataType([]byte(dt))
		model := []runtime.TensorInfo{{Name: "v", DataType: parsed, Shape: dims}}
		body := `{"inputs":[{"name":"v","datatype":"` + dt + `","shape":` + shape + `,"data":` + data + `}]}`
		r := AcquireRequest()
		defer ReleaseRequest(r)
		err := r.Decode([]byte(body), -1, anyValues, model, nil)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("decoding %s: got error %v, want one containing %q", body, err, want)
		}
	}

	// JSON itself.
	f(``, -1, "invalid JSON")
	f(`{"inputs":[`+x, -1, "invalid JSON")
	f(`{"inputs":[`+x+`,`+y+`]} trailing`, -1, "invalid JSON")
	f(`{"inputs":[`+x+`,`+y+`],}`, -1, "invalid JSON")
	f(`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"data":[1,NaN,3]},`+y+`]}`, -1, "invalid JSON")
	f(`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"data":[1,Infinity,3]},`+y+`]}`, -1, "invalid JSON")
	f(`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"data":[1,02,3]},`+y+`]}`, -1, "invalid JSON")
	f(`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"data":[1,0x2,3]},`+y+`]}`, -1, "invalid JSON")
	f(`{"id":"bad \x escape","inputs":[`+x+`,`+y+`]}`, -1, "invalid JSON")
	f("{\"id\":\"control \x01 char\",\"inputs\":["+x+","+y+"]}", -1, "invalid JSON")
	f(`{"inputs":`+strings.Repeat("[", 100000)+strings.Repeat("]", 100000)+`}`, -1, "invalid JSON")

	// The request's structure.
	f(`[1,2]`, -1, "the request must be a JSON object, got array")
	f(`{}`, -1, `missing "inputs"`)
	f(`{"inputs":{}}`, -1, `"inputs" must be an array, got object`)
	f(`{"inputs":[]}`, -1, `"inputs" is empty (the model takes "x", "y")`)
	f(`{"id":5,"inputs":[`+x+`,`+y+`]}`, -1, `"id" must be a string, got number`)
	f(`{"parameters":[],"inputs":[`+x+`,`+y+`]}`, -1, `"parameters" must be an object, got array`)
	f(`{"parameters":{"timeout":-5},"inputs":[`+x+`,`+y+`]}`, -1, "parameters.timeout: want a non-negative integer number of microseconds, got -5")
	f(`{"parameters":{"timeout":"5s"},"inputs":[`+x+`,`+y+`]}`, -1, `parameters.timeout: want a non-negative integer number of microseconds, got string "5s"`)
	f(`{"parameters":{"timeout":9223372036854775807},"inputs":[`+x+`,`+y+`]}`, -1, "parameters.timeout")
	f(`{"parameters":{"priority":1.5},"inputs":[`+x+`,`+y+`]}`, -1, "parameters.priority: want a non-negative integer, got 1.5")
	f(`{"parameters":{"binary_data_output":"yes"},"inputs":[`+x+`,`+y+`]}`, -1, `parameters.binary_data_output: want true or false, got string "yes"`)

	// Inputs by name.
	f(`{"inputs":[5]}`, -1, "inputs[0]: want an object, got number")
	f(`{"inputs":[{"datatype":"FP32","shape":[1,3],"data":[1,2,3]}]}`, -1, `inputs[0]: missing "name"`)
	f(`{"inputs":[{"name":3}]}`, -1, `inputs[0]: "name" must be a string, got number`)
	f(`{"inputs":[{"name":"foo","datatype":"FP32","shape":[1],"data":[1]}]}`, -1, `unknown input "foo" (the model takes "x", "y")`)
	f(`{"inputs":[`+x+`,`+x+`,`+y+`]}`, -1, `input "x": duplicated`)
	f(`{"inputs":[`+x+`]}`, -1, `missing input "y"`)

	// Datatypes and shapes.
	f(`{"inputs":[{"name":"x","datatype":"FP64","shape":[1,3],"data":[1,2,3]},`+y+`]}`, -1, `input "x": datatype FP64 does not match the model's FP32`)
	f(`{"inputs":[{"name":"x","datatype":"BYTES","shape":[1,3],"data":["a","b","c"]},`+y+`]}`, -1, `input "x": datatype BYTES is not supported`)
	f(`{"inputs":[{"name":"x","datatype":"FLOAT","shape":[1,3],"data":[1,2,3]},`+y+`]}`, -1, `input "x": unknown datatype "FLOAT"`)
	f(`{"inputs":[{"name":"x","datatype":32,"shape":[1,3],"data":[1,2,3]},`+y+`]}`, -1, `input "x": "datatype" must be a string, got number`)
	f(`{"inputs":[{"name":"x","shape":[1,3],"data":[1,2,3]},`+y+`]}`, -1, `input "x": missing "datatype"`)
	f(`{"inputs":[{"name":"x","datatype":"FP32","data":[1,2,3]},`+y+`]}`, -1, `input "x": missing "shape"`)
	f(`{"inputs":[{"name":"x","datatype":"FP32","shape":"1,3","data":[1,2,3]},`+y+`]}`, -1, `input "x": "shape" must be an array, got string`)
	f(`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,-3],"data":[1,2,3]},`+y+`]}`, -1, `input "x": shape[1]: want a non-negative integer, got -3`)
	f(`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3.5],"data":[1,2,3]},`+y+`]}`, -1, `input "x": shape[1]: want a non-negative integer, got 3.5`)
	f(`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,99999999999999999999],"data":[1,2,3]},`+y+`]}`, -1, `input "x": shape[1]: want a non-negative integer`)
	f(`{"inputs":[{"name":"x","datatype":"FP32","shape":[3],"data":[1,2,3]},`+y+`]}`, -1, `input "x": shape [3] has rank 1 but the model's [-1,3] has rank 2`)
	f(`{"inputs":[{"name":"x","datatype":"FP32","shape":[2,8],"data":[1,2,3]},`+y+`]}`, -1, `input "x": shape [2,8] does not match the model's [-1,3]`)
	v("FP32", `[-1,-1]`, `[1000000000000,1000000000000]`, `[1]`, `input "v": shape [1000000000000,1000000000000] holds too many elements`)
	v("FP32", `[-1,-1]`, `[1000000,1000000]`, `[1]`, `input "v": shape [1000000,1000000] has 1000000000000 elements but data holds 1`)
	v("FP32", `[-1,-1]`, `[1000000,1000000]`, `[[1]]`, `input "v": data holds 1 values but shape [1000000,1000000] needs 1000000 there`)

	// Data.
	f(`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3]},`+y+`]}`, -1, `input "x": missing "data"`)
	f(`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"data":"abc"},`+y+`]}`, -1, `input "x": "data" must be an array, got string`)
	f(`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"data":[1,2,3,4]},`+y+`]}`, -1, `input "x": shape [1,3] has 3 elements but data holds 4`)
	f(`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"data":[1,"NaN",3]},`+y+`]}`, -1, `input "x": data[1]: want a number, got string "NaN"`)
	f(`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"data":[1,null,3]},`+y+`]}`, -1, `input "x": data[1]: want a number, got null`)
	f(`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"data":[1,[2],3]},`+y+`]}`, -1, `input "x": data[1]: want a number, got array`)
	v("FP32", `[-1,3]`, `[2,3]`, `[[1,2,3],[4,5]]`, `input "v": data[1] holds 2 values but shape [2,3] needs 3 there`)
	v("FP32", `[-1,3]`, `[2,3]`, `[[1,2,3],4]`, `input "v": data[1]: want an array of 3 values (shape [2,3]), got 4`)
	v("FP32", `[-1,3]`, `[2,3]`, `[[1,2,3]]`, `input "v": data holds 1 values but shape [2,3] needs 2 there`)
	v("FP32", `[-1,3]`, `[1,3]`, `[[[1],[2],[3]]]`, `input "v": data[0][0]: want a number, got array`)
	v("FP32", `[-1,3]`, `[1,3]`, `[[1,true,3]]`, `input "v": data[0][1]: want a number, got boolean`)
	v("FP32", `[-1]`, `[2]`, `[1e39,1]`, `input "v": data[0]: 1e39 is out of range for FP32`)
	v("FP64", `[-1]`, `[2]`, `[1,-1e309]`, `input "v": data[1]: -1e309 is out of range for FP64`)
	v("FP16", `[-1]`, `[2]`, `[1,65520]`, `input "v": data[1]: 65520 is out of range for FP16`)
	v("BOOL", `[-1]`, `[2]`, `[true,1]`, `input "v": data[1]: want true or false, got 1`)
	v("UINT8", `[-1]`, `[3]`, `[1,2,300]`, `input "v": data[2]: 300 is out of range for UINT8`)
	v("UINT8", `[-1]`, `[1]`, `[-1]`, `input "v": data[0]: -1 is out of range for UINT8`)
	v("INT8", `[-1]`, `[1]`, `[-129]`, `input "v": data[0]: -129 is out of range for INT8`)
	v("UINT16", `[-1]`, `[1]`, `[65536]`, `input "v": data[0]: 65536 is out of range for UINT16`)
	v("INT16", `[-1]`, `[1]`, `[32768]`, `input "v": data[0]: 32768 is out of range for INT16`)
	v("INT32", `[-1]`, `[2]`, `[1,1.5]`, `input "v": data[1]: want an integer, got 1.5`)
	v("INT32", `[-1]`, `[1]`, `[2147483648]`, `input "v": data[0]: 2147483648 is out of range for INT32`)
	v("INT32", `[-1]`, `[1]`, `["5"]`, `input "v": data[0]: want an integer, got string "5"`)
	v("UINT32", `[-1]`, `[1]`, `[4294967296]`, `input "v": data[0]: 4294967296 is out of range for UINT32`)
	v("INT64", `[-1]`, `[1]`, `[1e3]`, `input "v": data[0]: want an integer, got 1e3`)
	v("INT64", `[-1]`, `[1]`, `[9223372036854775808]`, `input "v": data[0]: 9223372036854775808 is out of range for INT64`)
	v("UINT64", `[-1]`, `[1]`, `[-1]`, `input "v": data[0]: -1 is out of range for UINT64`)
	v("UINT64", `[-1]`, `[1]`, `[18446744073709551616]`, `input "v": data[0]: 18446744073709551616 is out of range for UINT64`)

	// Binary tensor data.
	xBinary := func(size string) string {
		return `{"name":"x","datatype":"FP32","shape":[1,3],"parameters":{"binary_data_size":` + size + `}}`
	}
	// fb decodes header followed by tail zero bytes, the header's length given.
	fb := func(header string, tail int, want string) {
		t.Helper()
		f(header+strings.Repeat("\x00", tail), len(header), want)
	}
	f(`{"inputs":[`+xBinary("12")+`,`+y+`]}`, -1, `input "x": parameters.binary_data_size needs the Inference-Header-Content-Length header`)
	fb(`{"inputs":[`+xBinary("8")+`,`+y+`]}`, 8, `input "x": binary_data_size 8 does not match shape [1,3] of FP32 (12 bytes)`)
	fb(`{"inputs":[`+xBinary("12")+`,`+y+`]}`, 4, `input "x": binary data needs 12 bytes but only 4 are left after the JSON`)
	fb(`{"inputs":[`+xBinary("12")+`,`+y+`]}`, 16, `the binary data after the JSON holds 16 bytes but the inputs' binary_data_size add up to 12`)
	fb(`{"inputs":[`+x+`,`+y+`]}`, 1, `the binary data after the JSON holds 1 bytes but the inputs' binary_data_size add up to 0`)
	fb(`{"inputs":[`+xBinary("-12")+`,`+y+`]}`, 12, `input "x": parameters.binary_data_size: want a non-negative integer, got -12`)
	fb(`{"inputs":[`+xBinary("1.2e1")+`,`+y+`]}`, 12, `input "x": parameters.binary_data_size: want a non-negative integer, got 1.2e1`)
	fb(`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"data":[1,2,3],"parameters":{"binary_data_size":12}},`+y+`]}`, 12, `input "x": has both "data" and parameters.binary_data_size`)
	fb(`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"data":[1,2,3],"parameters":7},`+y+`]}`, 0, `input "x": "parameters" must be an object, got number`)
	boolModel := []runtime.TensorInfo{{Name: "m", DataType: runtime.BOOL, Shape: []int64{-1}}}
	boolHeader := `{"inputs":[{"name":"m","datatype":"BOOL","shape":[3],"parameters":{"binary_data_size":3}}]}`
	r := AcquireRequest()
	defer ReleaseRequest(r)
	if err := r.Decode(append([]byte(boolHeader), 1, 0, 2), len(boolHeader), anyValues, boolModel, nil); err == nil ||
		!strings.Contains(err.Error(), `input "m": binary BOOL element 2 is 2, want 0 or 1`) {
		t.Fatalf("binary BOOL 2: got error %v", err)
	}
	f(`{"inputs":[`+x+`,`+y+`]}`, 1000, "Inference-Header-Content-Length 1000 exceeds the body's")

	// Outputs.
	f(`{"inputs":[`+x+`,`+y+`],"outputs":[{"name":"z"}]}`, -1, `unknown output "z" (the model gives "label", "probabilities")`)
	f(`{"inputs":[`+x+`,`+y+`],"outputs":[{"name":"label"},{"name":"label"}]}`, -1, `output "label": requested twice`)
	f(`{"inputs":[`+x+`,`+y+`],"outputs":{"name":"label"}}`, -1, `"outputs" must be an array, got object`)
	f(`{"inputs":[`+x+`,`+y+`],"outputs":["label"]}`, -1, `outputs[0]: want an object, got string`)
	f(`{"inputs":[`+x+`,`+y+`],"outputs":[{}]}`, -1, `outputs[0]: missing "name"`)
	f(`{"inputs":[`+x+`,`+y+`],"outputs":[{"name":"label","parameters":{"binary_data":"yes"}}]}`, -1, `output "label": parameters.binary_data: want true or false, got string "yes"`)
	f(`{"inputs":[`+x+`,`+y+`],"outputs":[{"name":"label","parameters":[]}]}`, -1, `output "label": "parameters" must be an object, got array`)

	// Output parameters: binary_data and classification, nothing else.
	out := func(params string) string {
		return `{"inputs":[` + x + `,` + y + `],"outputs":[{"name":"probabilities","parameters":` + params + `}]}`
	}
	f(out(`{"shared_memory_region":"r"}`), -1, `output "probabilities": unsupported parameter "shared_memory_region" (an output takes binary_data and classification)`)
	f(out(`{"classification":0}`), -1, `output "probabilities": parameters.classification: want an integer of at least 1, got 0`)
	f(out(`{"classification":1.5}`), -1, `output "probabilities": parameters.classification: want an integer of at least 1, got 1.5`)
	f(out(`{"classification":"2"}`), -1, `output "probabilities": parameters.classification: want an integer of at least 1, got string "2"`)
	f(out(`{"classification":3}`), -1, `output "probabilities": parameters.classification asks for 3 classes but the output has 2`)
	f(`{"inputs":[`+x+`,`+y+`],"outputs":[{"name":"label","parameters":{"classification":1}}]}`, -1,
		`output "label": parameters.classification needs a [batch, classes] FP32 or FP64 output, not INT64[-1]`)
}

func TestFloat64ToHalf(t *testing.T) {
	// f checks the half bits of v.
	f := func(v float64, want uint16) {
		t.Helper()
		if got := float64ToHalf(v); got != want {
			t.Fatalf("float64ToHalf(%g) = %#04x, want %#04x", v, got, want)
		}
	}
	f(0, 0)
	f(math.Copysign(0, -1), 0x8000)
	f(1, 0x3c00)
	f(-2, 0xc000)
	f(0.5, 0x3800)
	f(0.1, 0x2e66)
	f(1.0/3, 0x3555)
	f(65504, 0x7bff)        // largest half
	f(65519.99, 0x7bff)     // just below the midpoint to infinity
	f(65520, 0x7c00)        // the midpoint rounds to even: infinity
	f(1e10, 0x7c00)         // overflow
	f(-1e10, 0xfc00)        // negative overflow
	f(math.Inf(1), 0x7c00)  // infinity
	f(math.Inf(-1), 0xfc00) // negative infinity
	f(0x1p-14, 0x0400)      // smallest normal
	f(0x1p-24, 0x0001)      // smallest subnormal
	f(0x1p-25, 0x0000)      // half of it: a tie, to even (0)
	f(0x1.8p-24, 0x0002)    // 1.5 units: a tie, to even (2)
	f(0x1.0000000000001p-25, 0x0001)
	f(0x1p-26, 0x0000)
	f(0x1.ffcp-15, 0x0400)       // the largest subnormal plus half a unit: a tie, to even (the smallest normal)
	f(1+0x1p-11, 0x3c00)         // a tie between 1 and its successor: to even (1)
	f(1+3*0x1p-11, 0x3c02)       // a tie between 0x3c01 and 0x3c02: to even
	f(1+0x1p-11+0x1p-40, 0x3c01) // just above a tie rounds up
	f(2047, 0x67ff)              // exact
	f(2049, 0x6800)              // a tie between 2048 and 2050: to even (2048)
	f(5e-324, 0)                 // a float64 subnormal
	f(math.SmallestNonzeroFloat64, 0)
	if h := float64ToHalf(math.NaN()); h&0x7c00 != 0x7c00 || h&0x3ff == 0 {
		t.Fatalf("float64ToHalf(NaN) = %#04x, want a NaN", h)
	}

	// Every finite half converts to a float32 and back to itself; the
	// midpoint between two neighbours rounds to the even one; and a hair
	// either side of the midpoint rounds to the nearer one.
	for h := range uint32(0x7c00) {
		for _, sign := range []uint16{0, 0x8000} {
			bits := uint16(h) | sign
			v := float64(HalfToFloat32(bits))
			if got := float64ToHalf(v); got != bits {
				t.Fatalf("half %#04x = %g converts back to %#04x", bits, v, got)
			}
			if h == 0x7bff {
				continue
			}
			next := float64(HalfToFloat32(bits + 1))
			mid := (v + next) / 2 // exact: halves have few bits
			even := bits
			if bits&1 == 1 {
				even = bits + 1
			}
			if got := float64ToHalf(mid); got != even {
				t.Fatalf("midpoint %g of %#04x and %#04x converts to %#04x, want %#04x", mid, bits, bits+1, got, even)
			}
			if got := float64ToHalf(math.Nextafter(mid, v)); got != bits {
				t.Fatalf("just below midpoint %g converts to %#04x, want %#04x", mid, got, bits)
			}
			if got := float64ToHalf(math.Nextafter(mid, next)); got != bits+1 {
				t.Fatalf("just above midpoint %g converts to %#04x, want %#04x", mid, got, bits+1)
			}
		}
	}
}

func TestHalfToFloat32(t *testing.T) {
	// f checks the float32 of half bits h.
	f := func(h uint16, want float32) {
		t.Helper()
		if got := HalfToFloat32(h); math.Float32bits(got) != math.Float32bits(want) {
			t.Fatalf("HalfToFloat32(%#04x) = %g, want %g", h, got, want)
		}
	}
	f(0x0000, 0)
	f(0x8000, float32(math.Copysign(0, -1)))
	f(0x3c00, 1)
	f(0xc000, -2)
	f(0x7bff, 65504)
	f(0x0400, 0x1p-14)
	f(0x0001, 0x1p-24)
	f(0x83ff, -0x1.ff8p-15)
	f(0x7c00, float32(math.Inf(1)))
	f(0xfc00, float32(math.Inf(-1)))
	if v := HalfToFloat32(0x7e00); !math.IsNaN(float64(v)) {
		t.Fatalf("HalfToFloat32(0x7e00) = %g, want NaN", v)
	}
}

func TestAppendFloat(t *testing.T) {
	// f checks the JSON of v as a float of bitSize bits.
	f := func(v float64, bitSize int, want string) {
		t.Helper()
		if got := string(appendFloat(nil, v, bitSize)); got != want {
			t.Fatalf("appendFloat(%g, %d) = %s, want %s", v, bitSize, got, want)
		}
	}
	f(0, 64, "0")
	f(math.Copysign(0, -1), 64, "-0")
	f(float64(float32(0.1)), 32, "0.1")
	f(0.1, 64, "0.1")
	f(float64(float32(0.1)), 64, "0.10000000149011612")
	f(1e-6, 64, "0.000001")
	f(9.99e-7, 64, "9.99e-7")
	f(1e20, 64, "100000000000000000000")
	f(1e21, 64, "1e+21")
	f(-1.5e-300, 64, "-1.5e-300")
	f(float64(float32(1e-7)), 32, "1e-7")
	f(float64(float32(3e38)), 32, "3e+38")
	f(math.NaN(), 64, "null")
	f(math.Inf(1), 32, "null")
	f(math.Inf(-1), 64, "null")
}

func TestAppendJSONString(t *testing.T) {
	// f checks the JSON of s and that encoding/json reads it back as want.
	f := func(s, wantJSON, want string) {
		t.Helper()
		got := appendJSONString([]byte("x"), s)
		if string(got[1:]) != wantJSON {
			t.Fatalf("appendJSONString(%q) = %s, want %s", s, got[1:], wantJSON)
		}
		var back string
		if err := json.Unmarshal(got[1:], &back); err != nil || back != want {
			t.Fatalf("%s reads back as %q (%v), want %q", got[1:], back, err, want)
		}
	}
	f("", `""`, "")
	f("plain", `"plain"`, "plain")
	f(`a"b\c`, `"a\"b\\c"`, `a"b\c`)
	f("line\nbreak\r\ttab", `"line\nbreak\r\ttab"`, "line\nbreak\r\ttab")
	f("\x00\x01\x1f\x7f", `"\u0000\u0001\u001f`+"\x7f"+`"`, "\x00\x01\x1f\x7f")
	f("héllo, 世界 🙂", `"héllo, 世界 🙂"`, "héllo, 世界 🙂")
	f("bad \xff byte", `"bad \ufffd byte"`, "bad \ufffd byte")
	f("cut \xe4\xb8", `"cut \ufffd\ufffd"`, "cut \ufffd\ufffd")
	f("</script>", `"</script>"`, "</script>")
}

func TestAppendMetadata(t *testing.T) {
	// f checks that got is want and valid JSON.
	f := func(got []byte, want string) {
		t.Helper()
		if string(got) != want || !json.Valid(got) {
			t.Fatalf("got %s, want %s", got, want)
		}
	}
	f(AppendModelMetadata(nil, "iris", []string{"1", "2"}, "onnxruntime_onnx", codecXY, codecClassifierOutputs),
		`{"name":"iris","versions":["1","2"],"platform":"onnxruntime_onnx",`+
			`"inputs":[{"name":"x","datatype":"FP32","shape":[-1,3]},{"name":"y","datatype":"INT32","shape":[-1]}],`+
			`"outputs":[{"name":"label","datatype":"INT64","shape":[-1]},{"name":"probabilities","datatype":"FP32","shape":[-1,2]}]}`)
	f(AppendModelMetadata(nil, "empty", nil, "onnxruntime_onnx", nil, nil),
		`{"name":"empty","versions":[],"platform":"onnxruntime_onnx","inputs":[],"outputs":[]}`)
	f(AppendServerMetadata(nil, "infergate", "0.1.0", []string{"binary_tensor_data", "drift"}),
		`{"name":"infergate","version":"0.1.0","extensions":["binary_tensor_data","drift"]}`)
	f(AppendError(nil, `input "x": datatype FP64 does not match the model's FP32`),
		`{"error":"input \"x\": datatype FP64 does not match the model's FP32"}`)
}

func BenchmarkDecodeInferRequest(b *testing.B) {
	for _, rows := range []int{1, 4, 64} {
		body := codecFP32Body(rows)
		b.Run("rows="+strconv.Itoa(rows), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					r := AcquireRequest()
					if err := r.Decode(body, -1, anyValues, codecFeatures32, codecClassifierOutputs); err != nil {
						panic(err)
					}
					ReleaseRequest(r)
				}
			})
		})
	}
}

func BenchmarkAppendInferResponse(b *testing.B) {
	r := &Request{ID: []byte("bench-1")}
	probs := make([]float32, 64*2)
	for i := range probs {
		probs[i] = float32(i) / 128
	}
	results := []runtime.Tensor{
		{DataType: runtime.INT64, Shape: []int64{64}, Data: make([]byte, 64*8)},
		{DataType: runtime.FP32, Shape: []int64{64, 2}, Data: codecLE(probs)},
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		var dst []byte
		for pb.Next() {
			dst, _ = AppendInferResponse(dst[:0], "m", "1", r, codecClassifierOutputs, results, nil)
		}
	})
}

// anyValues lets a decode in tests take a JSON of any size.
const anyValues = math.MaxInt32
