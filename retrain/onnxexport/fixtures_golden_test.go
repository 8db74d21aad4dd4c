package onnxexport

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/infergate/infergate/runtime"
)

var update = flag.Bool("update", false, "rewrite the committed test models under testdata/models")

// fixtureDir is the top-level testdata/models folder the other packages'
// tests serve from.
const fixtureDir = "../../testdata/models"

// fixtures returns the committed test models by path under fixtureDir.
func fixtures(t *testing.T) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, dt := range []runtime.DataType{runtime.FP32, runtime.FP64, runtime.FP16, runtime.INT32, runtime.INT64, runtime.INT8, runtime.UINT8, runtime.BOOL} {
		b, err := Echo(dt, 4)
		if err != nil {
			t.Fatal(err)
		}
		out["echo_"+lower(dt.String())+"/1/model.onnx"] = b
	}
	// Three versions of one model, for version policies and pinned routes.
	b, err := Echo(runtime.FP32, 2)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"1", "2", "3"} {
		out["versioned/"+v+"/model.onnx"] = b
	}
	if out["pair/1/model.onnx"], err = Pair(); err != nil {
		t.Fatal(err)
	}
	return out
}

func lower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// TestFixturesUpToDate proves the committed test models are what this
// package generates today; run with -update to rewrite them.
func TestFixturesUpToDate(t *testing.T) {
	for path, want := range fixtures(t) {
		full := filepath.Join(fixtureDir, path)
		if *update {
			if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(full, want, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(full)
		if err != nil {
			t.Fatalf("cannot read fixture (run `make models`): %v", err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from the generator's output; run `make models`", full)
		}
	}
}
