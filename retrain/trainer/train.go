package trainer

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"

	"github.com/infergate/infergate/retrain/onnxexport"
	"github.com/infergate/infergate/runtime"
)

// Options configure TrainMLP. Zero values take the defaults given per
// field.
type Options struct {
	// Hidden holds the widths of the ReLU hidden layers; empty trains a
	// softmax (multinomial logistic) regression.
	Hidden []int
	// Epochs is the number of passes over the data; default 30.
	Epochs int
	// LearningRate is Adam's step size; default 0.01.
	LearningRate float64
	// BatchSize is the number of rows per gradient step; default 32.
	BatchSize int
	// Seed seeds weight initialization and shuffling; every value,
	// including 0, is a valid seed.
	Seed uint64
	// L2 is the weight decay added to the loss as L2/2 times the sum of
	// squared weights (biases excluded); 0 means none.
	L2 float64
	// Progress, when set, is called after each epoch with the epochs done
	// and the epochs in all, on the training goroutine.
	Progress func(done, epochs int)
}

func (o Options) withDefaults() Options {
	if o.Epochs == 0 {
		o.Epochs = 30
	}
	if o.LearningRate == 0 {
		o.LearningRate = 0.01
	}
	if o.BatchSize == 0 {
		o.BatchSize = 32
	}
	return o
}

func (o Options) validate() error {
	for i, h := range o.Hidden {
		if h <= 0 || h > 1<<16 {
			return fmt.Errorf("hidden layer %d has width %d, want 1 to 65536", i, h)
		}
	}
	switch {
	case o.Epochs < 0:
		return fmt.Errorf("Epochs is %d, want a positive number", o.Epochs)
	case o.BatchSize < 0:
		return fmt.Errorf("BatchSize is %d, want a positive number", o.BatchSize)
	case !(o.LearningRate > 0) || math.IsInf(o.LearningRate, 0):
		return fmt.Errorf("LearningRate is %v, want a positive number", o.LearningRate)
	case !(o.L2 >= 0) || math.IsInf(o.L2, 0):
		return fmt.Errorf("L2 is %v, want 0 or a positive number", o.L2)
	}
	return nil
}

// Adam's constants, as in the paper.
const (
	adamBeta1 = 0.9
	adamBeta2 = 0.999
	adamEps   = 1e-8
)

// layer is a dense layer during training, in float64, with its gradient
// and Adam moments.
type layer struct {
	in, out int
	relu    bool
	w, b    []float64 // w is row-major [in][out]
	gw, gb  []float64 // gradients summed over the batch
	mw, mb  []float64 // Adam first moments
	vw, vb  []float64 // Adam second moments

	z, dz []float64 // this row's output (after ReLU) and its gradient
}

func newLayer(in, out int, relu bool, r *rand.Rand) *layer {
	l := &layer{
		in: in, out: out, relu: relu,
		w: make([]float64, in*out), b: make([]float64, out),
		gw: make([]float64, in*out), gb: make([]float64, out),
		mw: make([]float64, in*out), mb: make([]float64, out),
		vw: make([]float64, in*out), vb: make([]float64, out),
		z: make([]float64, out), dz: make([]float64, out),
	}
	// He initialization for ReLU layers, Glorot for the softmax layer, both
	// uniform.
	limit := math.Sqrt(6 / float64(in))
	if !relu {
		limit = math.Sqrt(6 / float64(in+out))
	}
	for i := range l.w {
		l.w[i] = prod(prod(2, r.Float64())-1, limit)
	}
	return l
}

// forward computes l.z from x.
func (l *layer) forward(x []float64) {
	for j := range l.z {
		l.z[j] = l.b[j]
	}
	for i, v := range x {
		row := l.w[i*l.out : (i+1)*l.out]
		for j, w := range row {
			l.z[j] += prod(v, w)
		}
	}
	if l.relu {
		for j, v := range l.z {
			l.z[j] = max(v, 0)
		}
	}
}

// backward adds this row's gradient to l.gw and l.gb given the layer input x
// and l.dz, and, if dx is not nil, sets dx to the gradient of the loss with
// respect to x (before the previous layer's ReLU is applied).
func (l *layer) backward(x, dx []float64) {
	for j, d := range l.dz {
		l.gb[j] += d
	}
	for i, v := range x {
		row := l.w[i*l.out : (i+1)*l.out]
		grow := l.gw[i*l.out : (i+1)*l.out]
		var s float64
		for j, d := range l.dz {
			grow[j] += prod(v, d)
			s += prod(row[j], d)
		}
		if dx != nil {
			dx[i] = s
		}
	}
}

// step applies one Adam update from the gradient summed over n rows, and
// clears the gradient. c1 and c2 are the bias corrections 1-β1ᵗ and 1-β2ᵗ
// for step t.
func (l *layer) step(n int, c1, c2 float64, o Options) {
	update := func(p, g, m, v []float64, decay float64) {
		for i := range p {
			gi := g[i]/float64(n) + prod(decay, p[i])
			m[i] = prod(adamBeta1, m[i]) + prod(1-adamBeta1, gi)
			v[i] = prod(adamBeta2, v[i]) + prod(1-adamBeta2, prod(gi, gi))
			p[i] -= prod(o.LearningRate, m[i]/c1) / (math.Sqrt(v[i]/c2) + adamEps)
			g[i] = 0
		}
	}
	update(l.w, l.gw, l.mw, l.vw, o.L2)
	update(l.b, l.gb, l.mb, l.vb, 0)
}

// TrainMLP fits a classifier to d: ReLU hidden layers as o.Hidden says and
// a softmax output, trained by mini-batch Adam on cross-entropy. Inputs are
// standardized with the training mean and standard deviation, folded into
// the first layer's weights and bias, so the model takes raw features.
//
// It returns the model, ready to Marshal (Softmax set, Metadata holding
// runtime.FeaturesKey), and its accuracy on d as exported (float32 weights). The
// same d and o give bit-identical weights on every platform.
func TrainMLP(d Dataset, o Options) (onnxexport.MLP, float64, error) {
	o = o.withDefaults()
	if err := o.validate(); err != nil {
		return onnxexport.MLP{}, 0, fmt.Errorf("cannot train: %w", err)
	}
	if err := d.Validate(); err != nil {
		return onnxexport.MLP{}, 0, fmt.Errorf("cannot train: %w", err)
	}
	n, width := d.Len(), len(d.Features)
	if n == 0 {
		return onnxexport.MLP{}, 0, fmt.Errorf("cannot train: dataset has no rows")
	}

	mean, std := standardization(d)
	x := make([][]float64, n)
	for i, row := range d.X {
		x[i] = make([]float64, width)
		for j, v := range row {
			x[i][j] = (float64(v) - mean[j]) / std[j]
		}
	}

	r := rand.New(rand.NewPCG(o.Seed, 0x7a1e))
	var layers []*layer
	in := width
	for _, h := range o.Hidden {
		layers = append(layers, newLayer(in, h, true, r))
		in = h
	}
	layers = append(layers, newLayer(in, d.Classes, false, r))
	// dx holds, per layer, the gradient with respect to that layer's input.
	dx := make([][]float64, len(layers))
	for i := 1; i < len(layers); i++ {
		dx[i] = make([]float64, layers[i].in)
	}

	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	beta1t, beta2t := 1.0, 1.0 // β1ᵗ and β2ᵗ for step t
	for epoch := range o.Epochs {
		r.Shuffle(n, func(i, j int) { order[i], order[j] = order[j], order[i] })
		for start := 0; start < n; start += o.BatchSize {
			batch := order[start:min(start+o.BatchSize, n)]
			for _, row := range batch {
				trainRow(layers, dx, x[row], d.Y[row])
			}
			beta1t *= adamBeta1
			beta2t *= adamBeta2
			for _, l := range layers {
				l.step(len(batch), 1-beta1t, 1-beta2t, o)
			}
		}
		if o.Progress != nil {
			o.Progress(epoch+1, o.Epochs)
		}
	}

	m := export(layers, mean, std)
	m.Metadata = map[string]string{runtime.FeaturesKey: strings.Join(d.Features, ",")}
	acc, err := Accuracy(m, d)
	if err != nil {
		return onnxexport.MLP{}, 0, fmt.Errorf("BUG: cannot score the trained model: %w", err)
	}
	return m, acc, nil
}

// trainRow runs one row forward and adds its cross-entropy gradient to the
// layers' gradients.
func trainRow(layers []*layer, dx [][]float64, x []float64, label int) {
	in := x
	for _, l := range layers {
		l.forward(in)
		in = l.z
	}
	last := layers[len(layers)-1]
	copy(last.dz, last.z)
	softmax(last.dz)
	last.dz[label]--
	for i := len(layers) - 1; i >= 0; i-- {
		l := layers[i]
		input := x
		if i > 0 {
			input = layers[i-1].z
		}
		l.backward(input, dx[i])
		if i > 0 {
			prev := layers[i-1]
			for j, v := range prev.z {
				// prev.z is after ReLU: zero where the unit was off.
				if v > 0 {
					prev.dz[j] = dx[i][j]
				} else {
					prev.dz[j] = 0
				}
			}
		}
	}
}

// standardization returns the per-feature mean and standard deviation of
// d, with a standard deviation of 1 for constant features.
func standardization(d Dataset) (mean, std []float64) {
	width := len(d.Features)
	mean, std = make([]float64, width), make([]float64, width)
	for _, row := range d.X {
		for j, v := range row {
			mean[j] += float64(v)
		}
	}
	n := float64(d.Len())
	for j := range mean {
		mean[j] /= n
	}
	for _, row := range d.X {
		for j, v := range row {
			dev := float64(v) - mean[j]
			std[j] += prod(dev, dev)
		}
	}
	for j := range std {
		std[j] = math.Sqrt(std[j] / n)
		if !(std[j] > 1e-12) {
			std[j] = 1
		}
	}
	return mean, std
}

// export converts the trained layers to an MLP over raw features: with
// z = (x - mean) / std, the first layer's z·W + b equals x·W' + b' where
// W'[i][j] = W[i][j] / std[i] and b'[j] = b[j] - Σi mean[i]·W'[i][j].
func export(layers []*layer, mean, std []float64) onnxexport.MLP {
	var m onnxexport.MLP
	for k, l := range layers {
		w := l.w
		b := l.b
		if k == 0 {
			w = make([]float64, len(l.w))
			b = append([]float64(nil), l.b...)
			for i := range l.in {
				for j := range l.out {
					w[i*l.out+j] = l.w[i*l.out+j] / std[i]
					b[j] -= prod(mean[i], w[i*l.out+j])
				}
			}
		}
		dense := onnxexport.Dense{
			In: l.in, Out: l.out, Relu: l.relu,
			Weights: make([]float32, len(w)),
			Bias:    make([]float32, len(b)),
		}
		for i, v := range w {
			dense.Weights[i] = float32(v)
		}
		for i, v := range b {
			dense.Bias[i] = float32(v)
		}
		m.Layers = append(m.Layers, dense)
	}
	m.Softmax = true
	return m
}
