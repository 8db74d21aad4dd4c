package gateway

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"testing"
)

// debianPython is Debian's interpreter, which has the python3-grpcio and
// python3-grpc-tools packages; another python3 earlier on PATH may not.
const debianPython = "/usr/bin/python3"

// TestGRPCFromPython drives the gRPC server from a client this project
// did not write: Debian's grpcio, with stubs that grpc_tools generates from
// our .proto as the test runs (as a user would from KServe's). Health,
// metadata, inference with typed and with raw contents (the same outputs
// as the REST answer), a pinned version, output selection, Triton's
// ModelConfig and ModelStatistics (counts that grow with the infers) and
// the error codes. make python-grpc installs the packages.
func TestGRPCFromPython(t *testing.T) {
	if out, err := exec.Command(debianPython, "-c", "import grpc, grpc_tools").CombinedOutput(); err != nil {
		t.Fatalf("%s lacks grpcio or grpc_tools (run make python-grpc, which installs Debian's python3-grpcio and python3-grpc-tools): %v\n%s", debianPython, err, out)
	}
	stubs := t.TempDir()
	gen := exec.Command(debianPython, "-m", "grpc_tools.protoc", "-I", "v2codec/inferencepb",
		"--python_out="+stubs, "--grpc_python_out="+stubs, "grpc_service.proto")
	if out, err := gen.CombinedOutput(); err != nil {
		t.Fatalf("generating the Python stubs: %v\n%s", err, out)
	}
	_, url, conn := startGRPC(t, testConfig(t))
	client := exec.Command(debianPython, "testdata/grpc_client.py", conn.Target())
	client.Env = append(os.Environ(), "PYTHONPATH="+stubs)
	var stderr bytes.Buffer
	client.Stderr = &stderr
	out, err := client.Output()
	if err != nil {
		t.Fatalf("the Python client: %v\n%s", err, stderr.String())
	}
	type tensor = []any
	var got struct {
		Live       bool `json:"live"`
		Ready      bool `json:"ready"`
		ModelReady bool `json:"model_ready"`
		Metadata   struct {
			Name, Platform  string
			Inputs, Outputs []tensor
		}
		ServerExtensions []string `json:"server_extensions"`
		Typed            struct {
			ID, Version string
			Outputs     [][]any
		}
		Raw           [][]any
		PinnedVersion string `json:"pinned_version"`
		Selected      [][]any
		Errors        map[string][2]string
		Config        struct {
			Name, Platform  string
			MaxBatchSize    int `json:"max_batch_size"`
			Inputs, Outputs []tensor
			DynamicBatching bool `json:"dynamic_batching"`
			Instances       int
		}
		Stats map[string]pythonStats
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("the Python client printed %s: %v", out, err)
	}
	if !got.Live || !got.Ready || !got.ModelReady || got.Metadata.Name != "demo" || got.Metadata.Platform != "onnx_onnxv1" ||
		len(got.Metadata.Inputs) != 1 || got.Metadata.Inputs[0][0] != "input" || got.Metadata.Inputs[0][1] != "FP32" ||
		!slices.Contains(got.ServerExtensions, "classification") || !slices.Contains(got.ServerExtensions, "model_configuration") ||
		!slices.Contains(got.ServerExtensions, "statistics") {
		t.Fatalf("health and metadata: %s", out)
	}

	// The REST answer to the same rows, as float32 values.
	code, _, body := call(t, "POST", url+"/v2/models/demo/infer", []byte(demoRequest))
	if code != 200 {
		t.Fatalf("REST: %d %s", code, body)
	}
	var rest struct {
		Outputs []struct {
			Name, Datatype string
			Shape          []int64
			Data           []float32
		}
	}
	if err := json.Unmarshal(body, &rest); err != nil {
		t.Fatal(err)
	}
	same := func(what string, outputs [][]any) {
		t.Helper()
		if len(outputs) != len(rest.Outputs) {
			t.Fatalf("%s: %d outputs, REST %d", what, len(outputs), len(rest.Outputs))
		}
		for i, o := range outputs {
			r := rest.Outputs[i]
			var shape []int64
			for _, d := range o[2].([]any) {
				shape = append(shape, int64(d.(float64)))
			}
			var data []float32
			for _, x := range o[3].([]any) {
				data = append(data, float32(x.(float64)))
			}
			if o[0] != r.Name || o[1] != r.Datatype || !slices.Equal(shape, r.Shape) || !slices.Equal(data, r.Data) {
				t.Fatalf("%s output %d: %v, REST %+v", what, i, o, r)
			}
		}
	}
	if got.Typed.ID != "py-1" || got.Typed.Version != "1" {
		t.Fatalf("typed: id %q version %q", got.Typed.ID, got.Typed.Version)
	}
	same("typed", got.Typed.Outputs)
	same("raw", got.Raw)
	if got.PinnedVersion != "2" || len(got.Selected) != 1 || got.Selected[0][0] != "b_out" {
		t.Fatalf("pinned version %q, selected outputs %v", got.PinnedVersion, got.Selected)
	}
	for name, want := range map[string]string{
		"unknown_model": "NOT_FOUND", "unknown_version": "NOT_FOUND",
		"bad_shape": "INVALID_ARGUMENT", "short_data": "INVALID_ARGUMENT", "wrong_datatype": "INVALID_ARGUMENT",
		"config_unknown_model": "NOT_FOUND", "config_unknown_version": "NOT_FOUND",
		"stats_unknown_model": "NOT_FOUND", "stats_unknown_version": "NOT_FOUND",
	} {
		if e := got.Errors[name]; e[0] != want || e[1] == "" {
			t.Errorf("%s: %v, want %s with a message", name, e, want)
		}
	}

	// ModelConfig: Triton's platform and types, dims without the batch
	// dimension of a batching model.
	cfg := got.Config
	if cfg.Name != "demo" || cfg.Platform != "onnxruntime_onnx" || cfg.MaxBatchSize != 16 || !cfg.DynamicBatching || cfg.Instances != 2 ||
		len(cfg.Inputs) != 1 || cfg.Inputs[0][0] != "input" || cfg.Inputs[0][1] != "TYPE_FP32" || fmt.Sprint(cfg.Inputs[0][2]) != "[8]" ||
		len(cfg.Outputs) != len(got.Metadata.Outputs) {
		t.Errorf("ModelConfig: %+v", cfg)
	}
	for i, o := range cfg.Outputs {
		if o[0] != got.Metadata.Outputs[i][0] || o[1] != "TYPE_"+got.Metadata.Outputs[i][1].(string) {
			t.Errorf("ModelConfig output %d: %v, metadata %v", i, o, got.Metadata.Outputs[i])
		}
	}

	// ModelStatistics: the two infers of two rows count, then the three
	// refused ones; the errors of unknown names do not reach the version.
	before, infers, errs := got.Stats["before"], got.Stats["after_infers"], got.Stats["after_errors"]
	if before.Version != "1" || before.InferenceCount != 0 || before.Success[0] != 0 || before.LastInference != 0 ||
		infers.InferenceCount != 4 || infers.Success[0] != 2 || infers.Success[1] == 0 || infers.Fail[0] != 0 ||
		infers.ExecutionCount < 1 || infers.ExecutionCount > 2 || infers.Queue[0] != 2 || infers.ComputeInfer[0] != 2 ||
		infers.ComputeInfer[1] == 0 || infers.LastInference == 0 ||
		errs.Success[0] != 2 || errs.Fail[0] != 3 || errs.Fail[1] == 0 || errs.InferenceCount != 4 {
		t.Errorf("ModelStatistics: %+v", got.Stats)
	}
	t.Logf("the Python client saw: %s", out)
}

// pythonStats is what grpc_client.py prints of a version's statistics;
// durations are [count, ns].
type pythonStats struct {
	Version              string
	InferenceCount       uint64 `json:"inference_count"`
	ExecutionCount       uint64 `json:"execution_count"`
	LastInference        uint64 `json:"last_inference"`
	Success, Fail, Queue [2]uint64
	ComputeInfer         [2]uint64 `json:"compute_infer"`
}
