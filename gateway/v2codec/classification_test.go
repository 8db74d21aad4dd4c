package v2codec

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math"
	"strings"
	"testing"

	"github.com/infergate/infergate/runtime"
)

// classTensor builds a [rows, len(rows[0])] tensor of dt from rows.
func classTensor(dt runtime.DataType, rows ...[]float64) runtime.Tensor {
	t := runtime.Tensor{DataType: dt, Shape: []int64{int64(len(rows)), int64(len(rows[0]))}}
	for _, row := range rows {
		for _, v := range row {
			if dt == runtime.FP32 {
				t.Data = binary.LittleEndian.AppendUint32(t.Data, math.Float32bits(float32(v)))
			} else {
				t.Data = binary.LittleEndian.AppendUint64(t.Data, math.Float64bits(v))
			}
		}
	}
	return t
}

// splitBytes splits Triton's binary BYTES elements.
func splitBytes(t *testing.T, b []byte) []string {
	t.Helper()
	var out []string
	for len(b) > 0 {
		if len(b) < 4 {
			t.Fatalf("%d bytes left, less than a length", len(b))
		}
		n := binary.LittleEndian.Uint32(b)
		if int(n) > len(b)-4 {
			t.Fatalf("element of %d bytes, %d left", n, len(b)-4)
		}
		out = append(out, string(b[4:4+n]))
		b = b[4+n:]
	}
	return out
}

func TestAppendClassification(t *testing.T) {
	f := func(tensor runtime.Tensor, k int, labels []string, want ...string) {
		t.Helper()
		got, shape := AppendClassification([]byte("prefix"), tensor, k, labels)
		if !bytes.HasPrefix(got, []byte("prefix")) {
			t.Fatalf("lost dst: %q", got)
		}
		elems := splitBytes(t, got[len("prefix"):])
		if strings.Join(elems, " ") != strings.Join(want, " ") {
			t.Fatalf("k %d labels %q: got %q, want %q", k, labels, elems, want)
		}
		if rows := tensor.Shape[0]; shape != [2]int64{rows, int64(len(want)) / max(rows, 1)} && rows > 0 {
			t.Fatalf("shape %v for %d elements of %d rows", shape, len(want), rows)
		}
	}
	probs := classTensor(runtime.FP32, []float64{0.1, 0.7, 0.2}, []float64{0.5, 0.25, 0.25})
	f(probs, 1, nil, "0.7:1", "0.5:0")
	// Ties go to the lower index; the score is FP32's shortest form.
	f(probs, 2, nil, "0.7:1", "0.2:2", "0.5:0", "0.25:1")
	f(probs, 3, []string{"cat", "dog", "bird"}, "0.7:1:dog", "0.2:2:bird", "0.1:0:cat", "0.5:0:cat", "0.25:1:dog", "0.25:2:bird")
	// Labels that stop short label the classes they name.
	f(probs, 2, []string{"cat", "dog"}, "0.7:1:dog", "0.2:2", "0.5:0:cat", "0.25:1:dog")
	// k past a dynamic class count gives every class.
	f(probs, 5, nil, "0.7:1", "0.2:2", "0.1:0", "0.5:0", "0.25:1", "0.25:2")
	// FP64 keeps its precision; NaN goes last, infinities in their order.
	f(classTensor(runtime.FP64, []float64{math.NaN(), math.Nextafter(0.3, 1), math.Inf(-1), math.Inf(1)}), 4, nil,
		"+Inf:3", "0.30000000000000004:1", "-Inf:2", "NaN:0")
	// No rows, no elements.
	empty := runtime.Tensor{DataType: runtime.FP32, Shape: []int64{0, 3}}
	if got, shape := AppendClassification(nil, empty, 2, nil); len(got) != 0 || shape != [2]int64{0, 2} {
		t.Fatalf("empty: %q %v", got, shape)
	}
}

func TestAppendInferResponseClassification(t *testing.T) {
	label := runtime.Tensor{DataType: runtime.INT64, Shape: []int64{2}, Data: make([]byte, 16)}
	label.Data[8] = 1
	probs := classTensor(runtime.FP32, []float64{0.25, 0.75}, []float64{0.875, 0.125})
	results := []runtime.Tensor{label, probs}
	labels := [][]string{nil, {"no", "yes"}}

	// JSON: the classified output is a BYTES tensor of [rows, k] strings.
	r := &Request{Outputs: []RequestedOutput{{Index: 1, Classes: 1}, {Index: 0}}}
	got, headerLen := AppendInferResponse(nil, "m", "1", r, codecClassifierOutputs, results, labels)
	want := `{"model_name":"m","model_version":"1","outputs":[{"name":"probabilities","datatype":"BYTES","shape":[2,1],"data":["0.75:1:yes","0.875:0:no"]},{"name":"label","datatype":"INT64","shape":[2],"data":[0,1]}]}`
	if string(got) != want || headerLen != -1 {
		t.Fatalf("got %s (%d), want %s", got, headerLen, want)
	}
	// Without labels, and k = 2.
	r.Outputs[0].Classes = 2
	got, _ = AppendInferResponse(nil, "m", "1", r, codecClassifierOutputs, results, nil)
	if !bytes.Contains(got, []byte(`"datatype":"BYTES","shape":[2,2],"data":["0.75:1","0.25:0","0.875:0","0.125:1"]}`)) {
		t.Fatalf("got %s", got)
	}

	// Binary: the elements follow the JSON in Triton's binary BYTES layout,
	// in output order with the other binary outputs.
	r = &Request{Outputs: []RequestedOutput{{Index: 0, Binary: true}, {Index: 1, Binary: true, Classes: 2}}}
	got, headerLen = AppendInferResponse(nil, "m", "1", r, codecClassifierOutputs, results, labels)
	if headerLen < 0 {
		t.Fatal("no binary part")
	}
	var resp struct {
		Outputs []struct {
			Name, Datatype string
			Shape          []int64
			Parameters     struct {
				BinaryDataSize int `json:"binary_data_size"`
			}
		}
	}
	if err := json.Unmarshal(got[:headerLen], &resp); err != nil {
		t.Fatalf("%v: %s", err, got[:headerLen])
	}
	o := resp.Outputs[1]
	if o.Name != "probabilities" || o.Datatype != "BYTES" || len(o.Shape) != 2 || o.Shape[0] != 2 || o.Shape[1] != 2 {
		t.Fatalf("output %+v", o)
	}
	bin := got[headerLen:]
	if resp.Outputs[0].Parameters.BinaryDataSize != 16 || !bytes.Equal(bin[:16], label.Data) || 16+o.Parameters.BinaryDataSize != len(bin) {
		t.Fatalf("binary part %q for sizes %+v", bin, resp.Outputs)
	}
	if elems := strings.Join(splitBytes(t, bin[16:]), " "); elems != "0.75:1:yes 0.25:0:no 0.875:0:no 0.125:1:yes" {
		t.Fatalf("binary elements %q", elems)
	}
}

// TestClassificationRoundTrip decodes a request with classification and
// encodes its answer, as the handler does.
func TestClassificationRoundTrip(t *testing.T) {
	body := `{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"data":[1,2,3]},{"name":"y","datatype":"INT32","shape":[1],"data":[4]}],` +
		`"parameters":{"binary_data_output":true},"outputs":[{"name":"probabilities","parameters":{"classification":1,"binary_data":false}}]}`
	r := codecDecode(t, []byte(body), -1, codecXY, codecClassifierOutputs)
	results := []runtime.Tensor{
		{DataType: runtime.INT64, Shape: []int64{1}, Data: make([]byte, 8)},
		classTensor(runtime.FP32, []float64{0.5, 0.5}),
	}
	got, headerLen := AppendInferResponse(nil, "m", "1", r, codecClassifierOutputs, results, [][]string{nil, {"a", "b"}})
	if headerLen != -1 || !bytes.Contains(got, []byte(`"data":["0.5:0:a"]`)) {
		t.Fatalf("got %s (%d)", got, headerLen)
	}
}

func TestCheckClassification(t *testing.T) {
	f := func(info runtime.TensorInfo, k int64, want string) {
		t.Helper()
		err := CheckClassification(info, k)
		if want == "" && err != nil || want != "" && (err == nil || err.Error() != want) {
			t.Fatalf("%s, %d: got %v, want %q", info, k, err, want)
		}
	}
	dyn := runtime.TensorInfo{Name: "p", DataType: runtime.FP64, Shape: []int64{runtime.Dynamic, runtime.Dynamic}}
	fixed := runtime.TensorInfo{Name: "p", DataType: runtime.FP32, Shape: []int64{4, 3}}
	f(dyn, 1, "")
	f(dyn, maxClasses, "")
	f(dyn, maxClasses+1, `output "p": parameters.classification asks for 1048577 classes, more than 1048576`)
	f(fixed, 3, "")
	f(fixed, 4, `output "p": parameters.classification asks for 4 classes but the output has 3`)
	f(fixed, 0, `output "p": parameters.classification: want an integer of at least 1, got 0`)
	f(runtime.TensorInfo{Name: "p", DataType: runtime.FP16, Shape: []int64{-1, 3}}, 1,
		`output "p": parameters.classification needs a [batch, classes] FP32 or FP64 output, not FP16[-1,3]`)
	f(runtime.TensorInfo{Name: "p", DataType: runtime.FP32, Shape: []int64{-1, 3, 1}}, 1,
		`output "p": parameters.classification needs a [batch, classes] FP32 or FP64 output, not FP32[-1,3,1]`)
}
