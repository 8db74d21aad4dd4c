package trainer

import (
	"bytes"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/infergate/infergate/runtime"

	"github.com/infergate/infergate/retrain/onnxexport"
)

func TestExpMatchesMath(t *testing.T) {
	f := func(x float64) {
		t.Helper()
		got, want := exp(x), math.Exp(x)
		if math.Abs(got-want) > 4e-16*want {
			t.Fatalf("exp(%v) = %v; want %v", x, got, want)
		}
	}

	f(0)
	f(1)
	f(-1)
	f(0.34657)
	f(-0.34658)
	f(1e-300)
	f(10.65)
	f(-20.5)
	f(88.7)
	f(700)
	f(-700)
	r := rand.New(rand.NewPCG(1, 2))
	for range 1000 {
		f((r.Float64() - 0.5) * 200)
	}
	if got := exp(-800); got != 0 {
		t.Fatalf("exp(-800) = %v; want 0", got)
	}
	if got := exp(800); !math.IsInf(got, 1) {
		t.Fatalf("exp(800) = %v; want +Inf", got)
	}
}

func TestSynthetic(t *testing.T) {
	d := Synthetic(5, 2000)
	if err := d.Validate(); err != nil {
		t.Fatalf("invalid dataset: %s", err)
	}
	want := []string{"age", "income", "tenure_months", "balance", "num_products", "credit_score", "late_payments", "utilization"}
	if !reflect.DeepEqual(d.Features, want) {
		t.Fatalf("unexpected features %q; want %q", d.Features, want)
	}
	if d.Len() != 2000 || d.Classes != 2 {
		t.Fatalf("unexpected %d rows and %d classes; want 2000 and 2", d.Len(), d.Classes)
	}
	positive := 0
	for _, y := range d.Y {
		positive += y
	}
	if share := float64(positive) / 2000; share < 0.3 || share > 0.6 {
		t.Fatalf("unexpected share of positive rows %.3f; want roughly balanced", share)
	}

	// The same seed gives the same rows, whatever n is.
	if again := Synthetic(5, 2000); !reflect.DeepEqual(d, again) {
		t.Fatalf("the same seed gave different data")
	}
	prefix := Synthetic(5, 10)
	if !reflect.DeepEqual(prefix.X, d.X[:10]) || !reflect.DeepEqual(prefix.Y, d.Y[:10]) {
		t.Fatalf("the first rows depend on n")
	}
	if other := Synthetic(6, 10); reflect.DeepEqual(other.X, prefix.X) {
		t.Fatalf("different seeds gave the same data")
	}
	// Scales are those of the named quantities.
	f := func(feature int, lo, hi float32) {
		t.Helper()
		for i, row := range d.X {
			if v := row[feature]; v < lo || v > hi {
				t.Fatalf("row %d: %s is %v; want %v to %v", i, d.Features[feature], v, lo, hi)
			}
		}
	}
	f(0, 18, 85)
	f(1, 1000, 1e6)
	f(2, 0, 240)
	f(3, 0, 1e6)
	f(4, 1, 4)
	f(5, 300, 850)
	f(6, 0, 10)
	f(7, 0, 1)
}

// blobs returns a 3-class problem of well separated clusters in 2
// dimensions, offset and scaled far from unit scale so that training
// depends on standardization.
func blobs(seed uint64, n int) Dataset {
	r := rand.New(rand.NewPCG(seed, 3))
	centers := [3][2]float64{{0, 0}, {4, 0}, {2, 4}}
	d := Dataset{Features: []string{"x", "y"}, Classes: 3}
	for i := range n {
		c := i % 3
		d.X = append(d.X, []float32{
			float32(1e5 + 1000*(centers[c][0]+r.NormFloat64()*0.6)),
			float32(-3e-3 * (centers[c][1] + r.NormFloat64()*0.6)),
		})
		d.Y = append(d.Y, c)
	}
	return d
}

func TestTrainMLPMulticlass(t *testing.T) {
	f := func(hidden []int) {
		t.Helper()
		m, acc, err := TrainMLP(blobs(1, 600), Options{Hidden: hidden, Epochs: 20})
		if err != nil {
			t.Fatalf("cannot train: %s", err)
		}
		if len(m.Layers) != len(hidden)+1 || m.Layers[0].In != 2 || m.Layers[len(hidden)].Out != 3 || !m.Softmax {
			t.Fatalf("unexpected model shape: %d layers, softmax %v", len(m.Layers), m.Softmax)
		}
		if got := m.Metadata[runtime.FeaturesKey]; got != "x,y" {
			t.Fatalf("unexpected features metadata %q; want %q", got, "x,y")
		}
		holdout, err := Accuracy(m, blobs(2, 600))
		if err != nil {
			t.Fatalf("cannot score: %s", err)
		}
		if acc < 0.95 || holdout < 0.95 {
			t.Fatalf("unexpected accuracy %.3f on training data and %.3f held out; want at least 0.95", acc, holdout)
		}
	}

	f(nil)
	f([]int{8})
	f([]int{8, 4})
}

func TestTrainMLPErrors(t *testing.T) {
	f := func(d Dataset, o Options, want string) {
		t.Helper()
		_, _, err := TrainMLP(d, o)
		if err == nil || err.Error() != want {
			t.Fatalf("unexpected error\ngot  %v\nwant %q", err, want)
		}
	}
	good := blobs(1, 6)
	with := func(change func(d *Dataset)) Dataset {
		d := blobs(1, 6)
		change(&d)
		return d
	}

	f(good, Options{Hidden: []int{4, 0}}, "cannot train: hidden layer 1 has width 0, want 1 to 65536")
	f(good, Options{Epochs: -1}, "cannot train: Epochs is -1, want a positive number")
	f(good, Options{BatchSize: -2}, "cannot train: BatchSize is -2, want a positive number")
	f(good, Options{LearningRate: math.NaN()}, "cannot train: LearningRate is NaN, want a positive number")
	f(good, Options{L2: -1}, "cannot train: L2 is -1, want 0 or a positive number")
	f(Dataset{Classes: 2}, Options{}, "cannot train: dataset has no features")
	f(Dataset{Features: []string{"a"}, Classes: 2}, Options{}, "cannot train: dataset has no rows")
	f(with(func(d *Dataset) { d.Features[1] = "a,b" }), Options{}, `cannot train: feature 1 has the invalid name "a,b": names must be non-empty and contain no comma`)
	f(with(func(d *Dataset) { d.Features[1] = "x" }), Options{}, `cannot train: feature "x" appears twice`)
	f(with(func(d *Dataset) { d.Classes = 1 }), Options{}, "cannot train: dataset has 1 classes, want at least 2")
	f(with(func(d *Dataset) { d.Y = d.Y[:5] }), Options{}, "cannot train: dataset has 6 rows but 5 labels")
	f(with(func(d *Dataset) { d.X[2] = d.X[2][:1] }), Options{}, "cannot train: row 2 has 1 values, want 2 (one per feature)")
	f(with(func(d *Dataset) { d.X[3][1] = float32(math.Inf(1)) }), Options{}, `cannot train: row 3: feature "y" is +Inf`)
	f(with(func(d *Dataset) { d.Y[4] = 3 }), Options{}, "cannot train: row 4 has label 3, want 0 to 2")
}

// TestDemoModel trains the demo model and checks it in ONNX Runtime: the
// bytes are reproducible, small, self-describing, and the served
// probabilities equal Predict's and score well on held-out data.
func TestDemoModel(t *testing.T) {
	m, trainAcc, err := TrainMLP(Synthetic(demoSeed, demoRows), demoOptions())
	if err != nil {
		t.Fatalf("cannot train: %s", err)
	}
	model, err := m.Marshal()
	if err != nil {
		t.Fatalf("cannot marshal: %s", err)
	}
	demo, err := DemoModel()
	if err != nil {
		t.Fatalf("cannot build the demo model: %s", err)
	}
	if !bytes.Equal(model, demo) {
		t.Fatalf("two trainings with the same data and options gave different models")
	}
	if len(demo) > 4096 {
		t.Fatalf("the demo model takes %d bytes; want a few KB at most", len(demo))
	}
	if trainAcc < 0.85 {
		t.Fatalf("unexpected training accuracy %.3f; want at least 0.85", trainAcc)
	}

	holdout := Synthetic(2, 1000)
	goAcc, err := Accuracy(m, holdout)
	if err != nil {
		t.Fatalf("cannot score: %s", err)
	}
	if goAcc < 0.85 {
		t.Fatalf("unexpected held-out accuracy %.3f; want more than 0.85", goAcc)
	}

	checkServed(t, demo, m, holdout, goAcc)
}

// checkServed runs d through model in ONNX Runtime and checks the outputs
// against Predict over m, and the accuracy against wantAcc.
func checkServed(t *testing.T, model []byte, m onnxexport.MLP, d Dataset, wantAcc float64) {
	t.Helper()
	ins, outs, err := ort.GetInputOutputInfoWithONNXData(model)
	if err != nil {
		t.Fatalf("ONNX Runtime cannot read the model: %s", err)
	}
	width, classes := int64(len(d.Features)), int64(d.Classes)
	if len(ins) != 1 || len(outs) != 1 ||
		ins[0].Name != "input" || !ins[0].Dimensions.Equals(ort.NewShape(-1, width)) ||
		outs[0].Name != "output" || !outs[0].Dimensions.Equals(ort.NewShape(-1, classes)) {
		t.Fatalf("unexpected inputs %v and outputs %v", ins, outs)
	}
	md, err := ort.GetModelMetadataWithONNXData(model)
	if err != nil {
		t.Fatalf("cannot read metadata: %s", err)
	}
	defer md.Destroy()
	features, ok, err := md.LookupCustomMetadataMap(runtime.FeaturesKey)
	if err != nil || !ok || features != strings.Join(d.Features, ",") {
		t.Fatalf("unexpected %s metadata %q (present %v, error %v)", runtime.FeaturesKey, features, ok, err)
	}

	s, err := ort.NewDynamicAdvancedSessionWithONNXData(model, []string{"input"}, []string{"output"}, nil)
	if err != nil {
		t.Fatalf("ONNX Runtime cannot load the model: %s", err)
	}
	defer s.Destroy()
	n := int64(d.Len())
	x := make([]float32, 0, n*width)
	for _, row := range d.X {
		x = append(x, row...)
	}
	input, err := ort.NewTensor(ort.NewShape(n, width), x)
	if err != nil {
		t.Fatalf("cannot create input: %s", err)
	}
	defer input.Destroy()
	output, err := ort.NewEmptyTensor[float32](ort.NewShape(n, classes))
	if err != nil {
		t.Fatalf("cannot create output: %s", err)
	}
	defer output.Destroy()
	if err := s.Run([]ort.Value{input}, []ort.Value{output}); err != nil {
		t.Fatalf("cannot run: %s", err)
	}

	probs := output.GetData()
	correct := 0
	for i, row := range d.X {
		got := probs[int64(i)*classes : int64(i+1)*classes]
		want, err := Predict(m, row)
		if err != nil {
			t.Fatalf("cannot predict: %s", err)
		}
		var sum float64
		for j := range got {
			if math.Abs(float64(got[j]-want[j])) > 1e-5 {
				t.Fatalf("row %d: ONNX Runtime gives %v; Predict gives %v", i, got, want)
			}
			sum += float64(got[j])
		}
		if math.Abs(sum-1) > 1e-5 {
			t.Fatalf("row %d: probabilities %v sum to %v; want 1", i, got, sum)
		}
		if argmax32(got) == d.Y[i] {
			correct++
		}
	}
	// Argmax may flip on near ties between the two implementations.
	if acc := float64(correct) / float64(n); math.Abs(acc-wantAcc) > 0.002 {
		t.Fatalf("ONNX Runtime scores %.4f; Predict scores %.4f", acc, wantAcc)
	}
}

func TestTrainMLPServesMulticlass(t *testing.T) {
	d := blobs(3, 300)
	m, acc, err := TrainMLP(d, Options{Hidden: []int{6}, Epochs: 10})
	if err != nil {
		t.Fatalf("cannot train: %s", err)
	}
	model, err := m.Marshal()
	if err != nil {
		t.Fatalf("cannot marshal: %s", err)
	}
	checkServed(t, model, m, d, acc)
}

func TestPredictErrors(t *testing.T) {
	f := func(m onnxexport.MLP, row []float32, want string) {
		t.Helper()
		_, err := Predict(m, row)
		if err == nil || err.Error() != want {
			t.Fatalf("unexpected error\ngot  %v\nwant %q", err, want)
		}
	}
	layer := onnxexport.Dense{In: 2, Out: 1, Weights: []float32{1, 2}, Bias: []float32{0}}

	f(onnxexport.MLP{}, []float32{1}, "cannot predict: the model has no layers")
	f(onnxexport.MLP{Layers: []onnxexport.Dense{layer}}, []float32{1}, "cannot predict: row has 1 values, the model takes 2")
	f(onnxexport.MLP{Layers: []onnxexport.Dense{layer, layer}}, []float32{1, 2}, "cannot predict: layer 1 does not fit its input or its own size")
}

// TestSyntheticShifted checks what the demo's drift relies on: the demo
// model scores markedly worse on the shifted rows, and a model trained on
// shifted rows scores on them about as well as the demo model on its own.
func TestSyntheticShifted(t *testing.T) {
	m, _, err := TrainMLP(Synthetic(demoSeed, demoRows), demoOptions())
	if err != nil {
		t.Fatal(err)
	}
	own, _ := Accuracy(m, Synthetic(2, 2000))
	shifted := SyntheticShifted(3, 2000)
	before, _ := Accuracy(m, shifted)
	again, _, err := TrainMLP(SyntheticShifted(4, 2000), demoOptions())
	if err != nil {
		t.Fatal(err)
	}
	after, _ := Accuracy(again, shifted)
	if before > own-0.1 || after < own-0.04 {
		t.Fatalf("accuracy: demo model %.3f on its rows, %.3f on shifted ones; retrained %.3f on shifted ones", own, before, after)
	}
	if first := SyntheticShifted(3, 10); !reflect.DeepEqual(first.X, shifted.X[:10]) {
		t.Fatal("shifted rows are not reproducible from their seed")
	}
}

func TestTrainProgress(t *testing.T) {
	var seen []int
	_, _, err := TrainMLP(Synthetic(1, 200), Options{Hidden: []int{4}, Epochs: 5, Progress: func(done, epochs int) {
		if epochs != 5 {
			t.Errorf("epochs %d, want 5", epochs)
		}
		seen = append(seen, done)
	}})
	if err != nil || !reflect.DeepEqual(seen, []int{1, 2, 3, 4, 5}) {
		t.Fatalf("progress calls %v, err %v; want 1 to 5", seen, err)
	}
}
