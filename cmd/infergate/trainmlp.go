package main

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"

	"github.com/infergate/infergate/retrain/onnxexport"
)

// mlpModel is an MLP through the given layer widths (input first, classes
// last) with Relu between layers, Softmax at the end and seeded random
// (Glorot-uniform) weights: the bench suite's heavy model and the GPU
// check's models. Its weights are drawn layer by layer, weights before
// biases, so a seed and widths always give the same bytes.
func mlpModel(seed uint64, widths []int) ([]byte, error) {
	if len(widths) < 2 {
		return nil, fmt.Errorf("cannot build an MLP of widths %v: want an input width and at least one layer", widths)
	}
	rng := rand.New(rand.NewPCG(seed, 1))
	dense := func(in, out int, relu bool) onnxexport.Dense {
		limit := math.Sqrt(6 / float64(in+out))
		w := make([]float32, in*out)
		for i := range w {
			w[i] = float32((2*rng.Float64() - 1) * limit)
		}
		b := make([]float32, out)
		for i := range b {
			b[i] = float32((2*rng.Float64() - 1) * 0.01)
		}
		return onnxexport.Dense{In: in, Out: out, Weights: w, Bias: b, Relu: relu}
	}
	layers := make([]onnxexport.Dense, len(widths)-1)
	for i := range layers {
		layers[i] = dense(widths[i], widths[i+1], i < len(layers)-1)
	}
	return onnxexport.MLP{Layers: layers, Softmax: true}.Marshal()
}

// writeMLP writes mlpModel(seed, widths) as version 1 of the model folder out.
func writeMLP(out string, seed uint64, widths []int) error {
	onnx, err := mlpModel(seed, widths)
	if err != nil {
		return err
	}
	path := filepath.Join(out, "1", "model.onnx")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("cannot create %q: %w", filepath.Dir(path), err)
	}
	if err := os.WriteFile(path, onnx, 0o644); err != nil {
		return fmt.Errorf("cannot write %q: %w", path, err)
	}
	fmt.Printf("wrote %s (%d bytes, MLP %v)\n", path, len(onnx), widths)
	return nil
}
