package onnxexport

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/infergate/infergate/runtime"
)

// Dense is one fully connected layer: y = x·W + b, with W row-major
// [In][Out] and b of length Out. Relu applies max(0, y) to the result.
type Dense struct {
	In, Out int
	Weights []float32
	Bias    []float32
	Relu    bool
}

// MLP is a feed-forward classifier or regressor: its layers run in order on
// an FP32 input of shape [batch, Layers[0].In] and give an FP32 output of
// shape [batch, Layers[len(Layers)-1].Out].
type MLP struct {
	// InputName and OutputName name the model's one input and one output.
	// They default to "input" and "output" when empty. Names starting with
	// "mlp/" are reserved for the model's internal values.
	InputName, OutputName string

	// Layers holds at least one layer; each layer's In equals the previous
	// layer's Out.
	Layers []Dense

	// Softmax appends Softmax over axis 1 after the last layer, so a
	// classifier's output holds class probabilities.
	Softmax bool

	// Metadata becomes the model's metadata_props (ONNX Runtime's custom
	// metadata map). Keys must be non-empty.
	Metadata map[string]string
}

const internalPrefix = "mlp/"

// Marshal checks m and returns it as ONNX model bytes. Layers are numbered
// from 0 in its errors, as in m.Layers. Each Dense becomes a Gemm node (plus
// a Relu node when asked); the first dimension of the input and output is
// the symbolic "batch".
func (m MLP) Marshal() ([]byte, error) {
	if err := m.validate(); err != nil {
		return nil, fmt.Errorf("cannot marshal mlp: %w", err)
	}
	in, out := m.names()
	g := graph{name: "mlp"}
	g.input(in, runtime.FP32, m.Layers[0].In)
	g.output(out, runtime.FP32, m.Layers[len(m.Layers)-1].Out)

	prev := in
	for i, l := range m.Layers {
		p := internalPrefix + strconv.Itoa(i) + "/"
		weights, bias := p+"weights", p+"bias"
		g.floatInitializer(weights, []int64{int64(l.In), int64(l.Out)}, l.Weights)
		g.floatInitializer(bias, []int64{int64(l.Out)}, l.Bias)

		last := i == len(m.Layers)-1
		gemmOut := p + "gemm"
		if last && !l.Relu && !m.Softmax {
			gemmOut = out
		}
		g.node(p+"gemm", "Gemm", []string{prev, weights, bias}, []string{gemmOut})
		prev = gemmOut
		if l.Relu {
			reluOut := p + "relu"
			if last && !m.Softmax {
				reluOut = out
			}
			g.node(p+"relu", "Relu", []string{prev}, []string{reluOut})
			prev = reluOut
		}
	}
	if m.Softmax {
		g.node(internalPrefix+"softmax", "Softmax", []string{prev}, []string{out}, intAttr("axis", 1))
	}
	return g.model(m.Metadata), nil
}

func (m MLP) names() (in, out string) {
	in, out = m.InputName, m.OutputName
	if in == "" {
		in = "input"
	}
	if out == "" {
		out = "output"
	}
	return in, out
}

func (m MLP) validate() error {
	in, out := m.names()
	if in == out {
		return fmt.Errorf("input and output are both named %q", in)
	}
	for _, name := range []string{in, out} {
		if strings.HasPrefix(name, internalPrefix) {
			return fmt.Errorf("name %q uses the reserved prefix %q", name, internalPrefix)
		}
	}
	if len(m.Layers) == 0 {
		return errors.New("no layers")
	}
	for i, l := range m.Layers {
		if err := l.validate(); err != nil {
			return fmt.Errorf("layer %d: %w", i, err)
		}
		if i > 0 && l.In != m.Layers[i-1].Out {
			return fmt.Errorf("layer %d: In is %d, but layer %d has Out %d", i, l.In, i-1, m.Layers[i-1].Out)
		}
	}
	for k := range m.Metadata {
		if k == "" {
			return errors.New("metadata has an empty key")
		}
	}
	return nil
}

func (l Dense) validate() error {
	if l.In <= 0 || l.Out <= 0 {
		return fmt.Errorf("In and Out must be positive, got In %d, Out %d", l.In, l.Out)
	}
	// Bound In*Out so that the product cannot overflow an int.
	const maxElements = 1 << 31
	if l.In > maxElements/l.Out {
		return fmt.Errorf("In*Out = %d*%d is too large", l.In, l.Out)
	}
	if len(l.Weights) != l.In*l.Out {
		return fmt.Errorf("Weights has %d values, want In*Out = %d*%d = %d", len(l.Weights), l.In, l.Out, l.In*l.Out)
	}
	if len(l.Bias) != l.Out {
		return fmt.Errorf("Bias has %d values, want Out = %d", len(l.Bias), l.Out)
	}
	if i := nonFinite(l.Weights); i >= 0 {
		return fmt.Errorf("Weights[%d] is %v", i, l.Weights[i])
	}
	if i := nonFinite(l.Bias); i >= 0 {
		return fmt.Errorf("Bias[%d] is %v", i, l.Bias[i])
	}
	return nil
}

// nonFinite returns the index of the first NaN or infinite value in v, or
// -1 if all are finite.
func nonFinite(v []float32) int {
	for i, x := range v {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return i
		}
	}
	return -1
}
