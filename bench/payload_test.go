package bench

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"testing"

	"github.com/infergate/infergate/runtime"
)

const metadataDoc = `{"name":"m","versions":["1"],"platform":"onnx_onnxv1",
 "inputs":[{"name":"x","datatype":"FP32","shape":[-1,8]},
           {"name":"ids","datatype":"INT64","shape":[-1,3]},
           {"name":"mask","datatype":"BOOL","shape":[-1,2,-1]}],
 "outputs":[{"name":"y","datatype":"FP32","shape":[-1,2]}]}`

type v2Request struct {
	Inputs []struct {
		Name     string            `json:"name"`
		Shape    []int64           `json:"shape"`
		DataType string            `json:"datatype"`
		Data     []json.RawMessage `json:"data"`
	} `json:"inputs"`
}

func TestGenerateRequestFromMetadata(t *testing.T) {
	inputs, err := ParseMetadata([]byte(metadataDoc))
	if err != nil {
		t.Fatal(err)
	}
	p, err := GenerateRequest(inputs, 4, 1, false)
	if err != nil {
		t.Fatal(err)
	}
	body, rows := p.Body, p.Rows
	if p.HeaderLength != 0 {
		t.Errorf("a JSON body has header length %d, want 0", p.HeaderLength)
	}
	if rows != 4 || RequestRows(body) != 4 {
		t.Errorf("got %d rows, RequestRows %d; want 4", rows, RequestRows(body))
	}
	var req v2Request
	if err := json.Unmarshal(body, &req); err != nil {
		t.Fatalf("generated body is not JSON: %v\n%s", err, body)
	}
	f := func(i int, name, datatype string, shape []int64, check func(json.RawMessage) bool) {
		t.Helper()
		in := req.Inputs[i]
		if in.Name != name || in.DataType != datatype || !slicesEqual(in.Shape, shape) {
			t.Fatalf("input %d: got %s %s%v, want %s %s%v", i, in.Name, in.DataType, in.Shape, name, datatype, shape)
		}
		if want := runtime.Elements(shape); len(in.Data) != want {
			t.Fatalf("input %s: got %d values, want %d", name, len(in.Data), want)
		}
		for _, v := range in.Data {
			if !check(v) {
				t.Fatalf("input %s: value %s is not a valid %s", name, v, datatype)
			}
		}
	}
	f(0, "x", "FP32", []int64{4, 8}, func(v json.RawMessage) bool {
		var x float64
		return json.Unmarshal(v, &x) == nil && x >= -1 && x < 1 && float64(float32(x)) == x
	})
	f(1, "ids", "INT64", []int64{4, 3}, func(v json.RawMessage) bool {
		var n int64
		return json.Unmarshal(v, &n) == nil && n >= 0 && n < 100
	})
	f(2, "mask", "BOOL", []int64{4, 2, 1}, func(v json.RawMessage) bool {
		var b bool
		return json.Unmarshal(v, &b) == nil
	})

	again, _ := GenerateRequest(inputs, 4, 1, false)
	other, _ := GenerateRequest(inputs, 4, 2, false)
	if !bytes.Equal(body, again.Body) || bytes.Equal(body, other.Body) {
		t.Error("the same seed must give the same body and another seed another")
	}
}

func TestGenerateRequestFixedBatch(t *testing.T) {
	inputs, err := ParseMetadata([]byte(`{"inputs":[{"name":"x","datatype":"FP64","shape":[2,3]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	p, err := GenerateRequest(inputs, 16, 7, false)
	if err != nil || p.Rows != 2 || !strings.Contains(string(p.Body), `"shape":[2,3]`) {
		t.Fatalf("got %d rows, %v: %s; want the model's fixed shape [2,3]", p.Rows, err, p.Body)
	}
}

// TestGenerateBinaryRequest: the binary body is a JSON header naming each
// tensor's byte size, followed by the same values the JSON body holds.
func TestGenerateBinaryRequest(t *testing.T) {
	inputs, err := ParseMetadata([]byte(`{"inputs":[{"name":"x","datatype":"FP32","shape":[-1,3]},{"name":"m","datatype":"BOOL","shape":[-1]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	p, err := GenerateRequest(inputs, 2, 5, true)
	if err != nil {
		t.Fatal(err)
	}
	header := string(p.Body[:p.HeaderLength])
	want := `{"inputs":[{"name":"x","shape":[2,3],"datatype":"FP32","parameters":{"binary_data_size":24}},` +
		`{"name":"m","shape":[2],"datatype":"BOOL","parameters":{"binary_data_size":2}}]}`
	if header != want || len(p.Body) != p.HeaderLength+26 || p.Rows != 2 {
		t.Fatalf("got header %s, %d bytes, %d rows; want %s, %d bytes, 2 rows", header, len(p.Body), p.Rows, want, len(want)+26)
	}
	asJSON, _ := GenerateRequest(inputs, 2, 5, false)
	var req v2Request
	if err := json.Unmarshal(asJSON.Body, &req); err != nil {
		t.Fatal(err)
	}
	data := p.Body[p.HeaderLength:]
	for i, v := range req.Inputs[0].Data {
		var x float32
		json.Unmarshal(v, &x)
		if got := math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:])); got != x {
			t.Fatalf("x[%d]: binary %v, JSON %v", i, got, x)
		}
	}
	r := Request{Header: map[string]string{"Accept-Encoding": "gzip"}}
	p.Into(&r)
	if r.ContentType != "application/octet-stream" || r.Header[HeaderLengthHeader] != strconv.Itoa(p.HeaderLength) || r.Header["Accept-Encoding"] != "gzip" {
		t.Fatalf("Into set content type %q and headers %v", r.ContentType, r.Header)
	}
}

func TestParseMetadataErrors(t *testing.T) {
	f := func(doc, want string) {
		t.Helper()
		_, err := ParseMetadata([]byte(doc))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseMetadata(%s): got %v, want an error about %q", doc, err, want)
		}
	}
	f(`{`, "cannot parse")
	f(`{"inputs":[]}`, "no inputs")
	f(`{"inputs":[{"name":"x","datatype":"STRING","shape":[1]}]}`, "datatype")
	f(`{"inputs":[{"name":"x","datatype":"FP32","shape":[-2]}]}`, "invalid shape")
}

func TestRandomTensor(t *testing.T) {
	info := runtime.TensorInfo{Name: "x", DataType: runtime.FP32, Shape: []int64{runtime.Dynamic, 8}}
	tensor := RandomTensor(info, 3, 1)
	if !slicesEqual(tensor.Shape, []int64{3, 8}) || len(tensor.Data) != 3*8*4 {
		t.Fatalf("got shape %v and %d bytes, want [3 8] and 96", tensor.Shape, len(tensor.Data))
	}
	for i := 0; i < len(tensor.Data); i += 4 {
		if x := math.Float32frombits(binary.LittleEndian.Uint32(tensor.Data[i:])); x < -1 || x >= 1 {
			t.Fatalf("value %g out of [-1, 1)", x)
		}
	}
	b := RandomTensor(runtime.TensorInfo{DataType: runtime.BOOL, Shape: []int64{runtime.Dynamic}}, 64, 1)
	for _, v := range b.Data {
		if v > 1 {
			t.Fatalf("BOOL byte %d is neither 0 nor 1", v)
		}
	}
}

func TestFloat16Bits(t *testing.T) {
	f := func(x float32, want uint16) {
		t.Helper()
		if got := float16Bits(x); got != want {
			t.Errorf("float16Bits(%g) = %#04x, want %#04x", x, got, want)
		}
	}
	f(0, 0)
	f(0.5, 0x3800)
	f(-1, 0xbc00)
	f(1.0/64, 0x2400)
	f(-0.984375, 0xbbe0) // -63/64
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
