package trainer

import (
	"fmt"

	"github.com/infergate/infergate/retrain/onnxexport"
)

// Predict runs m on one row of features in pure Go and returns its outputs:
// class probabilities for a classifier with Softmax. It follows the ONNX
// model's arithmetic (each layer's output rounded to float32), so its
// results match ONNX Runtime's to float32 precision.
func Predict(m onnxexport.MLP, row []float32) ([]float32, error) {
	if len(m.Layers) == 0 {
		return nil, fmt.Errorf("cannot predict: the model has no layers")
	}
	if len(row) != m.Layers[0].In {
		return nil, fmt.Errorf("cannot predict: row has %d values, the model takes %d", len(row), m.Layers[0].In)
	}
	x := row
	for i, l := range m.Layers {
		if len(l.Weights) != l.In*l.Out || len(l.Bias) != l.Out || len(x) != l.In {
			return nil, fmt.Errorf("cannot predict: layer %d does not fit its input or its own size", i)
		}
		y := make([]float32, l.Out)
		for j := range y {
			s := float64(l.Bias[j])
			for k, v := range x {
				s += prod(float64(v), float64(l.Weights[k*l.Out+j]))
			}
			if l.Relu {
				s = max(s, 0)
			}
			y[j] = float32(s)
		}
		x = y
	}
	if m.Softmax {
		z := make([]float64, len(x))
		for i, v := range x {
			z[i] = float64(v)
		}
		softmax(z)
		for i, v := range z {
			x[i] = float32(v)
		}
	}
	return x, nil
}

// Accuracy returns the share of d's rows for which m's largest output is
// at the row's label.
func Accuracy(m onnxexport.MLP, d Dataset) (float64, error) {
	if err := d.Validate(); err != nil {
		return 0, fmt.Errorf("cannot score: %w", err)
	}
	if d.Len() == 0 {
		return 0, fmt.Errorf("cannot score: dataset has no rows")
	}
	correct := 0
	for i, row := range d.X {
		out, err := Predict(m, row)
		if err != nil {
			return 0, err
		}
		if argmax32(out) == d.Y[i] {
			correct++
		}
	}
	return float64(correct) / float64(len(d.X)), nil
}

// softmax replaces z with its softmax.
func softmax(z []float64) {
	top := z[0]
	for _, v := range z[1:] {
		top = max(top, v)
	}
	var sum float64
	for i, v := range z {
		z[i] = exp(v - top)
		sum += z[i]
	}
	for i := range z {
		z[i] /= sum
	}
}

func argmax32(v []float32) int {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return best
}
