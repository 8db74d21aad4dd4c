package runtime

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/VictoriaMetrics/metrics"
)

func TestProviderFallback(t *testing.T) {
	if requireGPUErr == nil {
		if testEnv.Provider() != ProviderCUDA {
			t.Fatalf("a GPU is usable but sessions run on %q", testEnv.Provider())
		}
		return
	}
	if !errors.Is(requireGPUErr, ErrNoGPU) {
		t.Fatalf("require_gpu without a GPU: got %v, want ErrNoGPU", requireGPUErr)
	}
	if testEnv.Provider() != ProviderCPU {
		t.Fatalf("provider = %q, want the cpu fallback", testEnv.Provider())
	}
	var b bytes.Buffer
	metrics.WritePrometheus(&b, false)
	for _, want := range []string{"infergate_runtime_provider_fallbacks_total 1", `infergate_runtime_execution_provider{provider="cpu"} 1`} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("metrics lack %q:\n%s", want, b.String())
		}
	}
}

func TestResolveLibrary(t *testing.T) {
	found, err := ResolveLibrary("")
	if err != nil {
		t.Fatalf("the project cache should be found from a package folder: %v", err)
	}
	f := func(configured, env, want string) {
		t.Helper()
		t.Setenv(LibraryEnv, env)
		got, err := ResolveLibrary(configured)
		if err != nil || got != want {
			t.Fatalf("ResolveLibrary(%q) with %s=%q = %q, %v; want %q", configured, LibraryEnv, env, got, err, want)
		}
	}
	other := filepath.Join(t.TempDir(), "libother.so")
	os.WriteFile(other, nil, 0o644)
	f("", "", found)
	f(other, found, other) // the config wins over the environment
	f("", other, other)

	t.Setenv(LibraryEnv, "/no/such/lib.so")
	if _, err := ResolveLibrary(""); err == nil || !strings.Contains(err.Error(), "/no/such/lib.so") {
		t.Fatalf("a missing $%s must be an error naming it, got %v", LibraryEnv, err)
	}
	t.Setenv(LibraryEnv, "")
	t.Chdir(t.TempDir())
	if _, err := ResolveLibrary(""); !errors.Is(err, ErrNoLibrary) || !strings.Contains(err.Error(), "make onnxruntime") {
		t.Fatalf("with nothing to find, want ErrNoLibrary telling how to get one, got %v", err)
	}
}

func load(t *testing.T, model string, cfg ModelConfig) *ModelVersion {
	t.Helper()
	v, err := testEnv.LoadModelVersion(fixture(model)+"/1", model, 1, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	return v
}

func TestEchoEveryDataType(t *testing.T) {
	for _, dt := range []DataType{FP32, FP64, FP16, INT32, INT64, INT8, UINT8, BOOL} {
		name := "echo_" + strings.ToLower(dt.String())
		v := load(t, name, ModelConfig{})
		if got := v.Inputs()[0]; got.DataType != dt || !slices.Equal(got.Shape, []int64{Dynamic, 4}) {
			t.Fatalf("%s: input %v, want %s[-1,4]", name, got, dt)
		}
		in := Tensor{DataType: dt, Shape: []int64{3, 4}, Data: make([]byte, 12*dt.Size())}
		for i := range in.Data {
			in.Data[i] = byte(i % 2) // valid for every type, BOOL included
		}
		out := make([]Tensor, 1)
		if err := v.Run(context.Background(), []Tensor{in}, out); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if out[0].DataType != dt || !slices.Equal(out[0].Shape, in.Shape) || !bytes.Equal(out[0].Data, in.Data) {
			t.Fatalf("%s: output %s%v %v, want the input back", name, out[0].DataType, out[0].Shape, out[0].Data)
		}
	}
}

func TestMultipleInputsAndOutputs(t *testing.T) {
	v := load(t, "pair", ModelConfig{Instances: 2})
	a := f32Tensor([]int64{2, 4}, 1, 2, 3, 4, 10, 20, 30, 40)
	b := Tensor{DataType: INT64, Shape: []int64{2, 2}, Data: make([]byte, 32)}
	b.Data[0], b.Data[24] = 7, 9
	out := make([]Tensor, 2)
	if err := v.Run(context.Background(), []Tensor{a, b}, out); err != nil {
		t.Fatal(err)
	}
	if want := f32Tensor([]int64{2, 1}, 10, 100); !bytes.Equal(out[0].Data, want.Data) || !slices.Equal(out[0].Shape, want.Shape) {
		t.Fatalf("a_sum = %v %v, want row sums 10, 100", out[0].Shape, out[0].Data)
	}
	if !bytes.Equal(out[1].Data, b.Data) || out[1].DataType != INT64 {
		t.Fatalf("b_out = %v, want b back", out[1])
	}
}

func f32Tensor(shape []int64, values ...float32) Tensor {
	t := Tensor{DataType: FP32, Shape: shape}
	for _, v := range values {
		t.Data = append(t.Data, bytesOf([]float32{v})...)
	}
	return t
}

func TestInputConfig(t *testing.T) {
	v := load(t, "echo_fp32", ModelConfig{Inputs: []InputConfig{{Name: "input", Shape: []int64{-1, 4}, Features: []string{"a", "b", "c", "d"}}}})
	if !slices.Equal(v.Features(), []string{"a", "b", "c", "d"}) {
		t.Fatalf("features = %v", v.Features())
	}
	v = load(t, "echo_fp32", ModelConfig{Inputs: []InputConfig{{Name: "input", Shape: []int64{2, 4}}}})
	if !slices.Equal(v.Inputs()[0].Shape, []int64{2, 4}) {
		t.Fatalf("a configured shape must fix the batch dimension, got %v", v.Inputs()[0].Shape)
	}
	f := func(in InputConfig, wantErr string) {
		t.Helper()
		_, err := testEnv.LoadModelVersion(fixture("echo_fp32")+"/1", "echo_fp32", 1, ModelConfig{Inputs: []InputConfig{in}})
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("LoadModelVersion with %+v: got %v, want an error containing %q", in, err, wantErr)
		}
	}
	f(InputConfig{Name: "x"}, `config names input "x", which the model does not have`)
	f(InputConfig{Name: "input", Shape: []int64{-1, 5}}, "conflicts with the model's [-1,4]")
	f(InputConfig{Name: "input", Shape: []int64{4}}, "has rank 1")
	f(InputConfig{Name: "input", Features: []string{"a"}}, "1 feature names for 4 columns")
}

func TestVersionPolicy(t *testing.T) {
	f := func(p VersionPolicy, want ...int64) {
		t.Helper()
		if got := p.Select([]int64{1, 2, 5, 9}); !slices.Equal(got, want) {
			t.Fatalf("%+v selects %v, want %v", p, got, want)
		}
	}
	f(VersionPolicy{}, 9)
	f(VersionPolicy{Latest: 2}, 5, 9)
	f(VersionPolicy{Latest: 10}, 1, 2, 5, 9)
	f(VersionPolicy{All: true}, 1, 2, 5, 9)
	f(VersionPolicy{Specific: []int64{2, 9, 4}}, 2, 9)

	bad := func(p VersionPolicy, wantErr string) {
		t.Helper()
		mc := ModelConfig{VersionPolicy: p}
		if err := mc.Validate("m"); err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("%+v: got %v, want %q", p, err, wantErr)
		}
	}
	bad(VersionPolicy{Latest: 1, All: true}, "set only one of")
	bad(VersionPolicy{Latest: -1}, "must be positive")
	bad(VersionPolicy{Specific: []int64{0}}, "versions are positive")
}

func TestLoadRepository(t *testing.T) {
	root := t.TempDir()
	copyModel(t, "versioned", root, "1", "2", "3")
	copyModel(t, "pair", root, "1")
	os.MkdirAll(filepath.Join(root, "versioned", "latest"), 0o755) // not numeric: ignored
	os.MkdirAll(filepath.Join(root, "versioned", "7"), 0o755)      // no model.onnx: ignored

	f := func(cfgs map[string]ModelConfig, want map[string][]int64) {
		t.Helper()
		models, err := testEnv.LoadRepository(root, cfgs, quiet)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string][]int64{}
		for _, m := range models {
			for _, v := range m.Versions {
				got[m.Name] = append(got[m.Name], v.Version)
			}
			m.Close()
		}
		for name, versions := range want {
			if !slices.Equal(got[name], versions) {
				t.Fatalf("model %s loaded %v, want %v", name, got[name], versions)
			}
		}
	}
	f(nil, map[string][]int64{"versioned": {3}, "pair": {1}})
	f(map[string]ModelConfig{"versioned": {VersionPolicy: VersionPolicy{All: true}}}, map[string][]int64{"versioned": {1, 2, 3}})
	f(map[string]ModelConfig{"versioned": {VersionPolicy: VersionPolicy{Specific: []int64{1, 3}}}}, map[string][]int64{"versioned": {1, 3}})

	if _, err := testEnv.LoadRepository(root, map[string]ModelConfig{"nope": {}}, quiet); err == nil || !strings.Contains(err.Error(), `model "nope"`) {
		t.Fatalf("configuring a model the repository lacks must fail naming it, got %v", err)
	}
	os.WriteFile(filepath.Join(root, "pair", "1", "model.onnx"), []byte("not onnx"), 0o644)
	if _, err := testEnv.LoadRepository(root, nil, quiet); err == nil || !strings.Contains(err.Error(), `cannot load model "pair" version 1`) {
		t.Fatalf("a broken model must fail the load naming it, got %v", err)
	}
}

func copyModel(t *testing.T, model, root string, versions ...string) {
	t.Helper()
	for _, v := range versions {
		data, err := os.ReadFile(filepath.Join(fixture(model), v, "model.onnx"))
		if err != nil {
			data, err = os.ReadFile(filepath.Join(fixture(model), "1", "model.onnx"))
		}
		if err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(root, model, v)
		os.MkdirAll(dir, 0o755)
		if err := os.WriteFile(filepath.Join(dir, "model.onnx"), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestCloseDrains runs inferences on several goroutines while the version
// unloads: each one either completes or is refused with ErrUnloaded, and the
// sessions are destroyed only after the last run.
func TestCloseDrains(t *testing.T) {
	v, err := testEnv.LoadModelVersion(fixture("echo_fp32")+"/1", "echo_fp32", 1, ModelConfig{Instances: 2})
	if err != nil {
		t.Fatal(err)
	}
	in := f32Tensor([]int64{1, 4}, 1, 2, 3, 4)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			out := make([]Tensor, 1)
			for i := range 200 {
				err := v.Run(context.Background(), []Tensor{in}, out)
				switch {
				case err == nil:
					if !bytes.Equal(out[0].Data, in.Data) {
						t.Errorf("goroutine %d run %d: wrong output", g, i)
					}
				case errors.Is(err, ErrUnloaded):
					return
				default:
					t.Errorf("run during unload: %v", err)
					return
				}
			}
		})
	}
	v.Close()
	wg.Wait()
	v.Close() // a second Close is harmless
	if err := v.Run(context.Background(), []Tensor{in}, make([]Tensor, 1)); !errors.Is(err, ErrUnloaded) {
		t.Fatalf("run after Close: got %v, want ErrUnloaded", err)
	}
}

// TestBindingCache runs one session over many distinct buffers and shapes:
// every answer is right, buffers seen again reuse their binding, and the
// cache stays bounded.
func TestBindingCache(t *testing.T) {
	v := load(t, "echo_int64", ModelConfig{})
	s, err := v.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer v.Release(s)
	out := make([]Tensor, 1)
	for i := range 2 * maxBindings {
		rows := int64(1 + i%5)
		in := Tensor{DataType: INT64, Shape: []int64{rows, 4}, Data: make([]byte, rows*4*8)}
		in.Data[0] = byte(i)
		if i%2 == 0 {
			out[0].Data = nil // a fresh output buffer too
		}
		if err := s.Run([]Tensor{in}, out); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out[0].Data, in.Data) || !slices.Equal(out[0].Shape, in.Shape) {
			t.Fatalf("run %d: got %v %v", i, out[0].Shape, out[0].Data[:8])
		}
		if n := len(s.bindings.byHash); n > maxBindings {
			t.Fatalf("%d bindings cached, want at most %d", n, maxBindings)
		}
	}
	in := f32Tensor([]int64{1, 4}, 1, 2, 3, 4)
	in.DataType, in.Data = INT64, make([]byte, 32)
	s.Run([]Tensor{in}, out)
	before := len(s.bindings.byHash)
	for range 10 {
		s.Run([]Tensor{in}, out)
	}
	if len(s.bindings.byHash) != before {
		t.Fatal("the same buffers got a new binding")
	}
}

// TestAcquireAfterCloseBegan takes the state Close leaves while it waits
// for a busy instance, with another one still free: every Acquire must
// refuse with ErrUnloaded and leave the free instance for Close.
func TestAcquireAfterCloseBegan(t *testing.T) {
	free := &Session{}
	v := &ModelVersion{free: make(chan *Session, 2), closing: make(chan struct{})}
	v.free <- free
	close(v.closing)
	for i := range 1000 {
		s, err := v.Acquire(context.Background())
		if !errors.Is(err, ErrUnloaded) || s != nil {
			t.Fatalf("Acquire %d after Close began: got %p, %v; want ErrUnloaded", i, s, err)
		}
	}
	if len(v.free) != 1 || <-v.free != free {
		t.Fatal("a refused Acquire kept the free instance")
	}
}
