package runtime

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"testing"

	"go.uber.org/goleak"
)

// testEnv is the process's one ONNX Runtime environment for these tests,
// opened with providers [cuda, cpu].
var testEnv *Environment

// requireGPUErr is what opening an environment with require_gpu returned.
var requireGPUErr error

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func TestMain(m *testing.M) {
	if err := openTestEnv(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	testEnv.Close()
	if err := goleak.Find(); code == 0 && err != nil {
		fmt.Fprintln(os.Stderr, err)
		code = 1
	}
	os.Exit(code)
}

func openTestEnv() error {
	gpuEnv, err := NewEnvironment(Config{Providers: []string{ProviderCUDA, ProviderCPU}, RequireGPU: true}, quiet)
	if err == nil {
		gpuEnv.Close()
	} else if !errors.Is(err, ErrNoGPU) {
		return fmt.Errorf("cannot open ONNX Runtime for the tests: %w", err)
	}
	requireGPUErr = err
	testEnv, err = NewEnvironment(Config{Providers: []string{ProviderCUDA, ProviderCPU}, IntraOpThreads: 1}, quiet)
	return err
}

// fixture returns the path of a committed test model folder.
func fixture(model string) string { return "../testdata/models/" + model }
