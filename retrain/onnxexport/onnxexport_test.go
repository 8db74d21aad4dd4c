package onnxexport

import (
	"bytes"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	ort "github.com/yalue/onnxruntime_go"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/infergate/infergate/runtime"
)

// session loads model and returns a session over all its inputs and
// outputs, with their declared infos.
func session(t *testing.T, model []byte) (*ort.DynamicAdvancedSession, []ort.InputOutputInfo, []ort.InputOutputInfo) {
	t.Helper()
	ins, outs, err := ort.GetInputOutputInfoWithONNXData(model)
	if err != nil {
		t.Fatalf("ONNX Runtime cannot read the model's inputs and outputs: %s", err)
	}
	names := func(infos []ort.InputOutputInfo) []string {
		var s []string
		for _, info := range infos {
			s = append(s, info.Name)
		}
		return s
	}
	s, err := ort.NewDynamicAdvancedSessionWithONNXData(model, names(ins), names(outs), nil)
	if err != nil {
		t.Fatalf("ONNX Runtime cannot load the model: %s", err)
	}
	t.Cleanup(func() { s.Destroy() })
	return s, ins, outs
}

// checkInfo checks that an input or output is a tensor of type dt and shape
// [batch, width].
func checkInfo(t *testing.T, info ort.InputOutputInfo, name string, dt runtime.DataType, width int64) {
	t.Helper()
	if info.Name != name {
		t.Fatalf("unexpected name %q; want %q", info.Name, name)
	}
	if info.OrtValueType != ort.ONNXTypeTensor {
		t.Fatalf("%s: unexpected value type %s; want a tensor", name, info.OrtValueType)
	}
	if int(info.DataType) != int(dt) {
		t.Fatalf("%s: unexpected element type %s; want %s", name, info.DataType, dt)
	}
	if want := ort.NewShape(-1, width); !info.Dimensions.Equals(want) {
		t.Fatalf("%s: unexpected shape %s; want %s", name, info.Dimensions, want)
	}
}

func newTensor[T ort.TensorData](t *testing.T, shape ort.Shape, data []T) *ort.Tensor[T] {
	t.Helper()
	x, err := ort.NewTensor(shape, data)
	if err != nil {
		t.Fatalf("cannot create tensor: %s", err)
	}
	t.Cleanup(func() { x.Destroy() })
	return x
}

// randomMLP returns an MLP over the layer widths sizes with seeded weights
// scaled so that activations stay near 1.
func randomMLP(seed uint64, sizes []int, relu, softmax bool) MLP {
	r := rand.New(rand.NewPCG(seed, 0))
	var m MLP
	for i := 0; i+1 < len(sizes); i++ {
		l := Dense{In: sizes[i], Out: sizes[i+1], Relu: relu}
		scale := 2 / math.Sqrt(float64(l.In))
		for range l.In * l.Out {
			l.Weights = append(l.Weights, float32((r.Float64()-0.5)*scale))
		}
		for range l.Out {
			l.Bias = append(l.Bias, float32(r.Float64()-0.5))
		}
		m.Layers = append(m.Layers, l)
	}
	m.Softmax = softmax
	return m
}

// forward is the reference forward pass of m over one row, in float64.
func forward(m MLP, row []float32) []float64 {
	x := make([]float64, len(row))
	for i, v := range row {
		x[i] = float64(v)
	}
	for _, l := range m.Layers {
		y := make([]float64, l.Out)
		for j := range y {
			y[j] = float64(l.Bias[j])
			for i := range x {
				y[j] += x[i] * float64(l.Weights[i*l.Out+j])
			}
			if l.Relu {
				y[j] = max(y[j], 0)
			}
		}
		x = y
	}
	if m.Softmax {
		top := slices.Max(x)
		var sum float64
		for i := range x {
			x[i] = math.Exp(x[i] - top)
			sum += x[i]
		}
		for i := range x {
			x[i] /= sum
		}
	}
	return x
}

func TestMLPMatchesForwardPass(t *testing.T) {
	f := func(sizes []int, relu, softmax bool, inputName, outputName string) {
		t.Helper()
		m := randomMLP(uint64(len(sizes)), sizes, relu, softmax)
		m.InputName, m.OutputName = inputName, outputName
		model, err := m.Marshal()
		if err != nil {
			t.Fatalf("cannot marshal: %s", err)
		}
		s, ins, outs := session(t, model)
		wantIn, wantOut := cmpOr(inputName, "input"), cmpOr(outputName, "output")
		if len(ins) != 1 || len(outs) != 1 {
			t.Fatalf("unexpected %d inputs and %d outputs; want 1 and 1", len(ins), len(outs))
		}
		in, out := sizes[0], sizes[len(sizes)-1]
		checkInfo(t, ins[0], wantIn, runtime.FP32, int64(in))
		checkInfo(t, outs[0], wantOut, runtime.FP32, int64(out))

		const batch = 5
		r := rand.New(rand.NewPCG(7, 7))
		x := make([]float32, batch*in)
		for i := range x {
			x[i] = float32(r.NormFloat64() * 2)
		}
		input := newTensor(t, ort.NewShape(batch, int64(in)), x)
		output := newTensor(t, ort.NewShape(batch, int64(out)), make([]float32, batch*out))
		if err := s.Run([]ort.Value{input}, []ort.Value{output}); err != nil {
			t.Fatalf("cannot run: %s", err)
		}
		got := output.GetData()
		for b := range batch {
			want := forward(m, x[b*in:(b+1)*in])
			for j, w := range want {
				if g := float64(got[b*out+j]); math.Abs(g-w) > 1e-5*max(1, math.Abs(w)) {
					t.Fatalf("row %d, output %d: got %v; want %v", b, j, g, w)
				}
			}
		}
	}

	// Linear regression.
	f([]int{3, 1}, false, false, "", "")
	// Logistic (softmax) regression.
	f([]int{8, 2}, false, true, "features", "probabilities")
	// Hidden ReLU layers without and with softmax.
	f([]int{8, 16, 3}, true, false, "", "")
	f([]int{8, 16, 8, 4}, true, true, "x", "")
	// ReLU on the last layer makes the output the Relu node's.
	f([]int{5, 4}, true, false, "", "y")
}

func cmpOr(s, fallback string) string {
	if s == "" {
		return fallback
	}
	return s
}

// elements returns n elements of type dt as little-endian bytes, each a
// small value valid for the type (0 or 1 for BOOL).
func elements(dt runtime.DataType, n int) []byte {
	var b []byte
	for i := range n {
		v := i%13 - 6
		switch dt {
		case runtime.BOOL:
			b = append(b, byte(i%2))
		case runtime.INT8, runtime.UINT8:
			b = append(b, byte(v))
		case runtime.INT16, runtime.UINT16:
			b = binary.LittleEndian.AppendUint16(b, uint16(v))
		case runtime.INT32, runtime.UINT32:
			b = binary.LittleEndian.AppendUint32(b, uint32(v))
		case runtime.INT64, runtime.UINT64:
			b = binary.LittleEndian.AppendUint64(b, uint64(v))
		case runtime.FP16:
			// 0x3C00 is 1.0; stepping the mantissa gives finite values.
			b = binary.LittleEndian.AppendUint16(b, 0x3C00+uint16(i))
		case runtime.FP32:
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(float32(v)/4))
		case runtime.FP64:
			b = binary.LittleEndian.AppendUint64(b, math.Float64bits(float64(v)/3))
		default:
			panic("BUG: unexpected type " + dt.String())
		}
	}
	return b
}

func TestEchoRoundTrips(t *testing.T) {
	f := func(dt runtime.DataType, width int) {
		t.Helper()
		model, err := Echo(dt, width)
		if err != nil {
			t.Fatalf("%s: cannot build: %s", dt, err)
		}
		s, ins, outs := session(t, model)
		if len(ins) != 1 || len(outs) != 1 {
			t.Fatalf("%s: unexpected %d inputs and %d outputs; want 1 and 1", dt, len(ins), len(outs))
		}
		checkInfo(t, ins[0], "input", dt, int64(width))
		checkInfo(t, outs[0], "output", dt, int64(width))

		const batch = 3
		shape := ort.NewShape(batch, int64(width))
		data := elements(dt, batch*width)
		input, err := ort.NewCustomDataTensor(shape, data, ort.TensorElementDataType(dt))
		if err != nil {
			t.Fatalf("%s: cannot create input: %s", dt, err)
		}
		defer input.Destroy()
		output, err := ort.NewCustomDataTensor(shape, make([]byte, len(data)), ort.TensorElementDataType(dt))
		if err != nil {
			t.Fatalf("%s: cannot create output: %s", dt, err)
		}
		defer output.Destroy()
		if err := s.Run([]ort.Value{input}, []ort.Value{output}); err != nil {
			t.Fatalf("%s: cannot run: %s", dt, err)
		}
		if got := output.GetData(); !bytes.Equal(got, data) {
			t.Fatalf("%s: output differs from input\ngot  %v\nwant %v", dt, got, data)
		}
	}

	f(runtime.FP32, 8)
	f(runtime.FP64, 3)
	f(runtime.FP16, 4)
	f(runtime.INT8, 5)
	f(runtime.INT16, 2)
	f(runtime.INT32, 1)
	f(runtime.INT64, 7)
	f(runtime.UINT8, 6)
	f(runtime.UINT16, 2)
	f(runtime.UINT32, 3)
	f(runtime.UINT64, 2)
	f(runtime.BOOL, 9)
}

func TestEchoErrors(t *testing.T) {
	f := func(dt runtime.DataType, width int, want string) {
		t.Helper()
		_, err := Echo(dt, width)
		if err == nil || err.Error() != want {
			t.Fatalf("unexpected error %v; want %q", err, want)
		}
	}

	f(runtime.Invalid, 1, "cannot build echo model: unsupported element type DataType(0)")
	f(runtime.DataType(8), 1, "cannot build echo model: unsupported element type DataType(8)")
	f(runtime.FP32, 0, "cannot build echo model: width must be positive, got 0")
}

func TestPairComputes(t *testing.T) {
	model, err := Pair()
	if err != nil {
		t.Fatalf("cannot build: %s", err)
	}
	s, ins, outs := session(t, model)
	if len(ins) != 2 || len(outs) != 2 {
		t.Fatalf("unexpected %d inputs and %d outputs; want 2 and 2", len(ins), len(outs))
	}
	checkInfo(t, ins[0], "a", runtime.FP32, 4)
	checkInfo(t, ins[1], "b", runtime.INT64, 2)
	checkInfo(t, outs[0], "a_sum", runtime.FP32, 1)
	checkInfo(t, outs[1], "b_out", runtime.INT64, 2)

	a := newTensor(t, ort.NewShape(3, 4), []float32{1, 2, 3, 4, -1, 0.5, 0.25, 0, 10, 20, 30, 40})
	b := newTensor(t, ort.NewShape(3, 2), []int64{1, -2, 1 << 40, 0, -7, 9})
	aSum := newTensor(t, ort.NewShape(3, 1), make([]float32, 3))
	bOut := newTensor(t, ort.NewShape(3, 2), make([]int64, 6))
	if err := s.Run([]ort.Value{a, b}, []ort.Value{aSum, bOut}); err != nil {
		t.Fatalf("cannot run: %s", err)
	}
	if got, want := aSum.GetData(), []float32{10, -0.25, 100}; !slices.Equal(got, want) {
		t.Fatalf("unexpected a_sum %v; want %v", got, want)
	}
	if got, want := bOut.GetData(), b.GetData(); !slices.Equal(got, want) {
		t.Fatalf("unexpected b_out %v; want %v", got, want)
	}
}

func TestMetadataReadable(t *testing.T) {
	m := randomMLP(1, []int{2, 2}, false, true)
	m.Metadata = map[string]string{
		"infergate.features": "age,income",
		"b":                  "",
		"a":                  "ünïcode, commas = fine",
	}
	model, err := m.Marshal()
	if err != nil {
		t.Fatalf("cannot marshal: %s", err)
	}
	md, err := ort.GetModelMetadataWithONNXData(model)
	if err != nil {
		t.Fatalf("cannot read metadata: %s", err)
	}
	defer md.Destroy()
	if got, err := md.GetProducerName(); err != nil || got != "infergate" {
		t.Fatalf("unexpected producer name %q (error %v); want %q", got, err, "infergate")
	}
	f := func(key, want string, wantOK bool) {
		t.Helper()
		got, ok, err := md.LookupCustomMetadataMap(key)
		if err != nil {
			t.Fatalf("cannot look up %q: %s", key, err)
		}
		if got != want || ok != wantOK {
			t.Fatalf("key %q: got %q, %v; want %q, %v", key, got, ok, want, wantOK)
		}
	}

	f("infergate.features", "age,income", true)
	f("a", "ünïcode, commas = fine", true)
	f("b", "", true)
	f("missing", "", false)
}

func TestMarshalDeterministic(t *testing.T) {
	f := func(build func() ([]byte, error)) {
		t.Helper()
		first, err := build()
		if err != nil {
			t.Fatalf("cannot build: %s", err)
		}
		for range 5 {
			again, err := build()
			if err != nil {
				t.Fatalf("cannot build: %s", err)
			}
			if !bytes.Equal(first, again) {
				t.Fatalf("building twice gave different bytes")
			}
		}
	}

	f(func() ([]byte, error) {
		m := randomMLP(3, []int{8, 16, 2}, true, true)
		// Enough keys that map iteration order would show.
		m.Metadata = map[string]string{}
		for _, k := range []string{"k", "j", "i", "h", "g", "f", "e", "d", "c", "b", "a"} {
			m.Metadata[k] = k + k
		}
		return m.Marshal()
	})
	f(func() ([]byte, error) { return Echo(runtime.INT64, 3) })
	f(Pair)
}

// TestModelHeader checks the top-level ModelProto fields without ONNX
// Runtime, so that it runs everywhere.
func TestModelHeader(t *testing.T) {
	model, err := Echo(runtime.FP32, 1)
	if err != nil {
		t.Fatalf("cannot build: %s", err)
	}
	var ir, opset uint64
	var producer string
	for b := model; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			t.Fatalf("cannot parse tag: %s", protowire.ParseError(n))
		}
		b = b[n:]
		switch {
		case num == modelIRVersion && typ == protowire.VarintType:
			ir, n = protowire.ConsumeVarint(b)
		case num == modelProducerName && typ == protowire.BytesType:
			producer, n = protowire.ConsumeString(b)
		case num == modelOpsetImport && typ == protowire.BytesType:
			var v []byte
			v, n = protowire.ConsumeBytes(b)
			if num, typ, m := protowire.ConsumeTag(v); m > 0 && num == opsetVersionField && typ == protowire.VarintType {
				opset, _ = protowire.ConsumeVarint(v[m:])
			}
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			t.Fatalf("cannot parse field %d: %s", num, protowire.ParseError(n))
		}
		b = b[n:]
	}
	if ir != 8 || opset != 17 || producer != "infergate" {
		t.Fatalf("unexpected ir_version %d, opset %d, producer %q; want 8, 17, %q", ir, opset, producer, "infergate")
	}
}

func TestMLPMarshalErrors(t *testing.T) {
	f := func(m MLP, want string) {
		t.Helper()
		model, err := m.Marshal()
		if err == nil {
			t.Fatalf("expected error %q; got a %d-byte model", want, len(model))
		}
		if err.Error() != want {
			t.Fatalf("unexpected error\ngot  %q\nwant %q", err, want)
		}
	}
	dense := func(in, out int) Dense {
		return Dense{In: in, Out: out, Weights: make([]float32, in*out), Bias: make([]float32, out)}
	}
	nan := dense(2, 2)
	nan.Weights[3] = float32(math.NaN())
	inf := dense(2, 2)
	inf.Bias[1] = float32(math.Inf(-1))
	short := dense(3, 4)
	short.Weights = short.Weights[:10]
	noBias := dense(3, 4)
	noBias.Bias = nil

	f(MLP{}, "cannot marshal mlp: no layers")
	f(MLP{Layers: []Dense{dense(0, 2)}}, "cannot marshal mlp: layer 0: In and Out must be positive, got In 0, Out 2")
	f(MLP{Layers: []Dense{dense(4, 3), dense(4, 2)}}, "cannot marshal mlp: layer 1: In is 4, but layer 0 has Out 3")
	f(MLP{Layers: []Dense{dense(2, 3), short}}, "cannot marshal mlp: layer 1: Weights has 10 values, want In*Out = 3*4 = 12")
	f(MLP{Layers: []Dense{dense(2, 3), noBias}}, "cannot marshal mlp: layer 1: Bias has 0 values, want Out = 4")
	f(MLP{Layers: []Dense{nan}}, "cannot marshal mlp: layer 0: Weights[3] is NaN")
	f(MLP{Layers: []Dense{inf}}, "cannot marshal mlp: layer 0: Bias[1] is -Inf")
	f(MLP{InputName: "x", OutputName: "x", Layers: []Dense{dense(1, 1)}}, `cannot marshal mlp: input and output are both named "x"`)
	f(MLP{InputName: "output", Layers: []Dense{dense(1, 1)}}, `cannot marshal mlp: input and output are both named "output"`)
	f(MLP{OutputName: "mlp/0/gemm", Layers: []Dense{dense(1, 1)}}, `cannot marshal mlp: name "mlp/0/gemm" uses the reserved prefix "mlp/"`)
	f(MLP{Layers: []Dense{dense(1, 1)}, Metadata: map[string]string{"": "x"}}, "cannot marshal mlp: metadata has an empty key")
}
