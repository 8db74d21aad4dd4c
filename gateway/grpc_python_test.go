package gateway

import (
	"bytes"
	"encoding/json"
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
// as the REST answer), a pinned version, output selection and the error
// codes. make python-grpc installs the packages.
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
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("the Python client printed %s: %v", out, err)
	}
	if !got.Live || !got.Ready || !got.ModelReady || got.Metadata.Name != "demo" || got.Metadata.Platform != "onnx_onnxv1" ||
		len(got.Metadata.Inputs) != 1 || got.Metadata.Inputs[0][0] != "input" || got.Metadata.Inputs[0][1] != "FP32" ||
		!slices.Contains(got.ServerExtensions, "classification") {
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
	} {
		if e := got.Errors[name]; e[0] != want || e[1] == "" {
			t.Errorf("%s: %v, want %s with a message", name, e, want)
		}
	}
	t.Logf("the Python client saw: %s", out)
}
