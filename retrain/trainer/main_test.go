package trainer

import (
	"fmt"
	"log/slog"
	"os"
	"testing"

	"github.com/infergate/infergate/runtime"

	"go.uber.org/goleak"
)

// TestMain opens the process's ONNX Runtime environment, which the tests
// use through onnxruntime_go to load the models they generate.
func TestMain(m *testing.M) {
	env, err := runtime.NewEnvironment(runtime.DefaultConfig(), slog.New(slog.DiscardHandler))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	env.Close()
	if err := goleak.Find(); code == 0 && err != nil {
		fmt.Fprintln(os.Stderr, err)
		code = 1
	}
	os.Exit(code)
}
