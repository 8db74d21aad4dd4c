package trainer

import (
	"fmt"

	"github.com/infergate/infergate/drift"
)

// The demo model's training setup, fixed so that its bytes never change.
const (
	demoSeed = 1
	demoRows = 4000
)

func demoOptions() Options {
	return Options{Hidden: []int{16}, Epochs: 30, LearningRate: 0.01, BatchSize: 32, Seed: 1, L2: 1e-4}
}

// DemoModel returns the bytes of the demo model: a classifier with one
// hidden layer of 16 ReLU units trained on Synthetic(1, 4000) (Epochs 30,
// LearningRate 0.01, BatchSize 32, Seed 1, L2 1e-4). Its input "input" is
// FP32 [batch, 8], its output "output" FP32 [batch, 2] holds the class
// probabilities, and its metadata names the features under runtime.FeaturesKey.
// The bytes are the same on every call and every platform; the model
// scores about 0.91 on the held-out Synthetic(2, 1000).
func DemoModel() ([]byte, error) {
	m, _, err := TrainMLP(Synthetic(demoSeed, demoRows), demoOptions())
	if err != nil {
		return nil, fmt.Errorf("cannot train the demo model: %w", err)
	}
	b, err := m.Marshal()
	if err != nil {
		return nil, fmt.Errorf("cannot marshal the demo model: %w", err)
	}
	return b, nil
}

// DemoReference returns the drift reference profile of the demo model: its
// 8 features over the demo's training rows, and its positive-class
// probability ("output[1]") as the model predicts them. It is the same on
// every call and every platform.
func DemoReference() (*drift.Reference, error) {
	d := Synthetic(demoSeed, demoRows)
	m, _, err := TrainMLP(d, demoOptions())
	if err != nil {
		return nil, fmt.Errorf("cannot train the demo model: %w", err)
	}
	ref := &drift.Reference{Rows: d.Len()}
	columns := make([][]float64, len(d.Features))
	for j, name := range d.Features {
		columns[j] = make([]float64, d.Len())
		for i, row := range d.X {
			columns[j][i] = float64(row[j])
		}
		ref.Features = append(ref.Features, drift.BuildProfile(name, drift.Numeric, columns[j], drift.ProfileOptions{Seed: uint64(j)}))
	}
	ref.SampleRows = drift.SampleRowsOf(columns, 1000, uint64(len(columns)), false)
	column := make([]float64, d.Len())
	for i, row := range d.X {
		p, err := Predict(m, row)
		if err != nil {
			return nil, err
		}
		column[i] = float64(p[1])
	}
	ref.Predictions = append(ref.Predictions, drift.BuildProfile("output[1]", drift.Numeric, column, drift.ProfileOptions{Seed: 99}))
	return ref, ref.Validate()
}
