package runtime_test

import (
	"context"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/infergate/infergate/retrain/onnxexport"
	"github.com/infergate/infergate/runtime"
)

// TestCachedBindingComputesEachBatch runs two different batches through one
// session and the same buffers, so through one cached I/O binding, on
// whatever provider the test environment settled on (CUDA on a GPU host,
// where inputs are bound afresh on every run, else the CPU): both answers
// are an MLP's outputs for that batch, computed here in float64, within
// 1e-4 + 1e-4*|want| (TF32 is off by default).
func TestCachedBindingComputesEachBatch(t *testing.T) {
	const in, hidden, out, rows = 16, 64, 4, 32
	rng := rand.New(rand.NewPCG(17, 1))
	dense := func(n, m int, relu bool) onnxexport.Dense {
		d := onnxexport.Dense{In: n, Out: m, Weights: make([]float32, n*m), Bias: make([]float32, m), Relu: relu}
		for i := range d.Weights {
			d.Weights[i] = float32(rng.NormFloat64() / math.Sqrt(float64(n)))
		}
		for i := range d.Bias {
			d.Bias[i] = float32(rng.NormFloat64() * 0.1)
		}
		return d
	}
	mlp := onnxexport.MLP{Layers: []onnxexport.Dense{dense(in, hidden, true), dense(hidden, out, false)}}
	model, err := mlp.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "model.onnx"), model, 0o644); err != nil {
		t.Fatal(err)
	}
	env := runtime.SharedTestEnvironment()
	t.Logf("execution provider: %s", env.Provider())
	v, err := env.LoadModelVersion(dir, "mlp", 1, runtime.ModelConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	s, err := v.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer v.Release(s)

	input := runtime.Tensor{DataType: runtime.FP32, Shape: []int64{rows, in}, Data: make([]byte, rows*in*4)}
	outputs := make([]runtime.Tensor, 1)
	var first any
	for batch := range 2 {
		x := make([]float32, rows*in)
		for i := range x {
			x[i] = float32(rng.NormFloat64())
			binary.LittleEndian.PutUint32(input.Data[4*i:], math.Float32bits(x[i]))
		}
		if err := s.Run([]runtime.Tensor{input}, outputs); err != nil {
			t.Fatalf("batch %d: %v", batch, err)
		}
		b := runtime.CachedBinding(s, []runtime.Tensor{input}, outputs)
		if batch == 0 {
			first = b
		}
		if b == nil || b != first {
			t.Fatalf("batch %d did not run through the first batch's cached binding", batch)
		}
		want := forward(mlp, x, rows)
		got := outputs[0]
		if len(got.Data) != rows*out*4 {
			t.Fatalf("batch %d: got %d output bytes, want %d", batch, len(got.Data), rows*out*4)
		}
		for i, w := range want {
			g := float64(math.Float32frombits(binary.LittleEndian.Uint32(got.Data[4*i:])))
			if math.Abs(g-w) > 1e-4+1e-4*math.Abs(w) {
				t.Fatalf("batch %d, output %d (row %d): got %g, want %g", batch, i, i/out, g, w)
			}
		}
	}
}

// forward computes m on rows rows of x in float64.
func forward(m onnxexport.MLP, x []float32, rows int) []float64 {
	act := make([]float64, len(x))
	for i, v := range x {
		act[i] = float64(v)
	}
	for _, l := range m.Layers {
		next := make([]float64, rows*l.Out)
		for r := range rows {
			for o := range l.Out {
				sum := float64(l.Bias[o])
				for i := range l.In {
					sum += act[r*l.In+i] * float64(l.Weights[i*l.Out+o])
				}
				if l.Relu && sum < 0 {
					sum = 0
				}
				next[r*l.Out+o] = sum
			}
		}
		act = next
	}
	return act
}
