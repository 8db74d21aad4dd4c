package batchjob

import (
	"fmt"
	"log/slog"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/infergate/infergate/runtime"
)

// testEnv is the process's ONNX Runtime environment, on the CPU.
var testEnv *runtime.Environment

// TestMain opens the ONNX Runtime environment the tests load the demo
// model in, and fails the suite when a test leaves goroutines behind.
func TestMain(m *testing.M) {
	var err error
	testEnv, err = runtime.NewEnvironment(runtime.Config{Providers: []string{runtime.ProviderCPU}, IntraOpThreads: 1}, slog.New(slog.DiscardHandler))
	if err != nil {
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
