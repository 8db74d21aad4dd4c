package onnxexport

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	ort "github.com/yalue/onnxruntime_go"
)

// ortSkip is why the tests that need ONNX Runtime skip; empty when the
// library is loaded.
var ortSkip string

func TestMain(m *testing.M) {
	lib, err := findORTLibrary()
	if err != nil {
		ortSkip = err.Error()
		os.Exit(m.Run())
	}
	ort.SetSharedLibraryPath(lib)
	if err := ort.InitializeEnvironment(ort.WithLogLevelError()); err != nil {
		fmt.Fprintf(os.Stderr, "cannot initialize ONNX Runtime from %s: %s\n", lib, err)
		os.Exit(1)
	}
	code := m.Run()
	if err := ort.DestroyEnvironment(); err != nil {
		fmt.Fprintf(os.Stderr, "cannot destroy ONNX Runtime environment: %s\n", err)
		code = 1
	}
	os.Exit(code)
}

// findORTLibrary returns $ONNXRUNTIME_LIB, or else the library under
// .cache/onnxruntime in the module root.
func findORTLibrary() (string, error) {
	if lib := os.Getenv("ONNXRUNTIME_LIB"); lib != "" {
		if _, err := os.Stat(lib); err != nil {
			return "", fmt.Errorf("ONNX Runtime library named by ONNXRUNTIME_LIB: %w", err)
		}
		return lib, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			lib := filepath.Join(dir, ".cache", "onnxruntime", "libonnxruntime.so.1")
			if _, err := os.Stat(lib); err != nil {
				return "", fmt.Errorf("no ONNX Runtime library: set ONNXRUNTIME_LIB or put it at %s", lib)
			}
			return lib, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no ONNX Runtime library: set ONNXRUNTIME_LIB (no go.mod above the working directory)")
		}
		dir = parent
	}
}

func needORT(t *testing.T) {
	t.Helper()
	if ortSkip != "" {
		t.Skip(ortSkip)
	}
}
