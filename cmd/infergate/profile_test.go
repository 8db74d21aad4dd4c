package main

import (
	"fmt"
	"os"
	"path/filepath"
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
	}
	f("train.csv", csv.String())
	f("train.jsonl", jsonl.String())

	bad := filepath.Join(dir, "bad.csv")
	os.WriteFile(bad, []byte("age,income\n1,2\n"), 0o644)
	if err := profile([]string{"--model", modelPath, "--data", bad, "--quiet"}); err == nil || !strings.Contains(err.Error(), `no column "tenure_months"`) {
		t.Fatalf("a CSV without a feature: %v", err)
	}
}
