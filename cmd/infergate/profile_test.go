package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/infergate/infergate/drift"
	"github.com/infergate/infergate/retrain/trainer"
)

// TestProfile builds reference profiles of the demo model from a CSV and a
// JSON-lines file of training rows, and refuses data that lacks a feature.
func TestProfile(t *testing.T) {
	model, err := os.ReadFile("../../configs/models/demo/1/model.onnx")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	modelPath := filepath.Join(dir, "1", "model.onnx")
	os.MkdirAll(filepath.Dir(modelPath), 0o755)
	if err := os.WriteFile(modelPath, model, 0o644); err != nil {
		t.Fatal(err)
	}
	d := trainer.Synthetic(5, 500)
	var csv, jsonl strings.Builder
	csv.WriteString(strings.Join(append(d.Features, "label"), ",") + "\n")
	for i, row := range d.X {
		var cells, pairs []string
		for j, x := range row {
			cells = append(cells, fmt.Sprint(x))
			pairs = append(pairs, fmt.Sprintf("%q: %v", d.Features[j], x))
		}
		fmt.Fprintf(&csv, "%s,%d\n", strings.Join(cells, ","), d.Y[i])
		fmt.Fprintf(&jsonl, "{%s, \"label\": %d}\n", strings.Join(pairs, ", "), d.Y[i])
	}
	f := func(name, data string) {
		t.Helper()
		path := filepath.Join(dir, name)
		os.WriteFile(path, []byte(data), 0o644)
		if err := profile([]string{"--model", modelPath, "--data", path, "--quiet"}); err != nil {
			t.Fatalf("profile %s: %v", name, err)
		}
		ref, err := drift.LoadReference(filepath.Join(dir, "1", drift.ReferenceFile))
		if err != nil {
			t.Fatal(err)
		}
		if ref.Rows != 500 || len(ref.Features) != 8 || ref.Features[7].Name != "utilization" || len(ref.Predictions) != 2 ||
			ref.Predictions[1].Name != "output[1]" || ref.Predictions[1].Count != 500 {
			t.Fatalf("%s: %d rows, %d features, predictions %d", name, ref.Rows, len(ref.Features), len(ref.Predictions))
		}
		// The demo's input is FP32: the text's decimals are profiled as
		// the gateway observes them, rounded to float32.
		for _, p := range ref.Features {
			for _, x := range slices.Concat(p.Edges, p.Sample, []float64{p.Min, p.Max}) {
				if x != float64(float32(x)) {
					t.Fatalf("%s: feature %s holds %v, not a float32 value", name, p.Name, x)
				}
			}
		}
	}
	f("train.csv", csv.String())
	f("train.jsonl", jsonl.String())

	bad := filepath.Join(dir, "bad.csv")
	os.WriteFile(bad, []byte("age,income\n1,2\n"), 0o644)
	if err := profile([]string{"--model", modelPath, "--data", bad, "--quiet"}); err == nil || !strings.Contains(err.Error(), `no column "tenure_months"`) {
		t.Fatalf("a CSV without a feature: %v", err)
	}
}

func TestReferenceWarnings(t *testing.T) {
	numeric := func(name string, count int64) drift.Profile {
		return drift.Profile{Name: name, Kind: drift.Numeric, Count: count}
	}
	f := func(ref *drift.Reference, bins, sample int, want ...string) {
		t.Helper()
		got := referenceWarnings(ref, bins, sample)
		if len(got) != len(want) {
			t.Fatalf("%d warnings %q, want %d", len(got), got, len(want))
		}
		for i := range want {
			if !strings.Contains(got[i], want[i]) {
				t.Fatalf("warning %d: %q, want it to say %q", i, got[i], want[i])
			}
		}
	}
	// 50 values are 5 a bin for 10 bins: enough; 49 are not.
	f(&drift.Reference{Rows: 1000, Features: []drift.Profile{numeric("a", 50)}}, 10, 1000)
	f(&drift.Reference{Rows: 1000, Features: []drift.Profile{numeric("a", 49)}}, 10, 1000, "a has 49 finite values for 10 bins")
	// Categorical features have no bins to ask for; predictions do.
	f(&drift.Reference{Rows: 1000, Features: []drift.Profile{{Name: "c", Kind: drift.Categorical, Count: 3}}, Predictions: []drift.Profile{numeric("output[1]", 20)}},
		10, 1000, "output[1] has 20 finite values")
	// Fewer rows than the sample asked for.
	f(&drift.Reference{Rows: 999, Features: []drift.Profile{numeric("a", 999)}}, 10, 1000, "the data holds 999 rows, fewer than the 1000")
}
