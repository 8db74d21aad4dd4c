package runtime

import (
	"maps"
	"testing"
)

// TestCUDAOptions checks the CUDA provider options each config asks for:
// TF32 is always set, off unless cuda_tf32.
func TestCUDAOptions(t *testing.T) {
	f := func(cfg Config, want map[string]string) {
		t.Helper()
		if got := cudaOptions(&cfg); !maps.Equal(got, want) {
			t.Fatalf("cudaOptions(%+v) = %v, want %v", cfg, got, want)
		}
	}
	f(Config{}, map[string]string{"device_id": "0", "use_tf32": "0"})
	f(Config{GPUDevice: 3}, map[string]string{"device_id": "3", "use_tf32": "0"})
	f(Config{CUDATF32: true}, map[string]string{"device_id": "0", "use_tf32": "1"})
}
