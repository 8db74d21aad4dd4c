package main

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/infergate/infergate/bench"
	"github.com/infergate/infergate/runtime"
)

// TestGPUCheckDryRun runs bench/gpu/run.sh --cpu --quick as it runs on a GPU
// host, on a bundle packed by bench/gpu/pack.sh as make gpu-bundle packs
// one, but holding the CPU library (no CUDA bundle is fetched): this test
// binary as infergate and runtime.test built here. The script must pass and
// leave every file it promises in its output folder. A damaged part must
// stop it before anything runs.
func TestGPUCheckDryRun(t *testing.T) {
	for _, tool := range []string{"zstd", "python3", "sha256sum", "split", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("the GPU check's dry run needs %s on PATH (zstd: apt-get install zstd): %v", tool, err)
		}
	}
	lib, err := runtime.ResolveLibrary("")
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	stage := func(dir string, files map[string]string) string {
		t.Helper()
		dir = filepath.Join(tmp, dir)
		os.MkdirAll(dir, 0o755)
		for name, src := range files {
			data, err := os.ReadFile(src)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, name), data, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	runtimeTest := filepath.Join(tmp, "runtime.test")
	if out, err := exec.Command("go", "test", "-c", "-o", runtimeTest, "../../runtime").CombinedOutput(); err != nil {
		t.Fatalf("cannot build runtime.test: %v\n%s", err, out)
	}
	bundle := filepath.Join(tmp, "bundle")
	pack := func(dir, name string) {
		t.Helper()
		cmd := exec.Command("../../bench/gpu/pack.sh", dir, bundle, name, "16M", "1")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("pack.sh %s: %v\n%s", name, err, out)
		}
	}
	pack(stage("ort", map[string]string{filepath.Base(lib): lib}), "ort")
	pack(stage("binaries", map[string]string{"infergate": os.Args[0], "runtime.test": runtimeTest}), "binaries")
	parts, _ := filepath.Glob(filepath.Join(bundle, "binaries.tar.zst.part-*"))
	if len(parts) < 2 {
		t.Fatalf("the binaries were packed in %d parts of 16 MiB, want several to reassemble", len(parts))
	}

	var ports []string
	for range 3 {
		_, port, _ := net.SplitHostPort(freeAddr(t))
		ports = append(ports, port)
	}
	run := func(out string) (string, error) {
		cmd := exec.CommandContext(t.Context(), "bench/gpu/run.sh", "--cpu", "--quick", out)
		cmd.Dir = "../.."
		cmd.Env = append(os.Environ(), "INFERGATE_TEST_MAIN=1", "INFERGATE_GPU_BUNDLE="+bundle,
			"INFERGATE_GPU_WORK="+filepath.Join(tmp, "work"), "INFERGATE_GPU_PORTS="+strings.Join(ports, ","))
		b, err := cmd.CombinedOutput()
		return string(b), err
	}
	out := filepath.Join(tmp, "out")
	if log, err := run(out); err != nil {
		t.Fatalf("run.sh --cpu --quick: %v\n%s", err, log)
	}
	read := func(name string) string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if got := strings.TrimSpace(read("RESULT")); got != "PASS" {
		t.Fatalf("RESULT: %s", got)
	}
	for _, want := range []struct{ file, text string }{
		{"serve-gpu.log", "provider=cpu"},
		{"metrics-gpu.txt", `infergate_runtime_execution_provider{provider="cpu"} 1`},
		{"runtime-test.txt", "execution provider: cpu"},
		{"runtime-test.txt", "--- PASS: TestCachedBindingComputesEachBatch"},
		{"environment.txt", "ONNXRUNTIME_LIB="},
		{"SUMMARY.md", "| 1024 |"},
		{"SUMMARY.md", "of the in-process ceiling"},
	} {
		if !strings.Contains(read(want.file), want.text) {
			t.Errorf("%s lacks %q", want.file, want.text)
		}
	}
	var cmp struct {
		Models map[string]struct{ Values, Outside int }
	}
	if err := json.Unmarshal([]byte(read("compare-tf32-off.json")), &cmp); err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"demo", "heavy", "large"} {
		if e := cmp.Models[m]; e.Values == 0 || e.Outside != 0 {
			t.Errorf("compare-tf32-off.json, %s: %+v; want values, none outside", m, e)
		}
	}
	for _, side := range []string{"gpu", "cpu"} {
		var rep bench.Report
		if err := json.Unmarshal([]byte(read("bench-"+side+".json")), &rep); err != nil {
			t.Fatal(err)
		}
		var sizes []int
		if rep.Compute != nil {
			for _, p := range rep.Compute.Points {
				sizes = append(sizes, p.Batch)
			}
		}
		if rep.Compute == nil || rep.Compute.Provider != "cpu" || !slices.Equal(sizes, []int{1, 4, 32, 1024}) ||
			len(rep.Runs) != 1 || rep.Runs[0].OK == 0 || rep.Runs[0].RowsPerRequest != 16 {
			t.Errorf("bench-%s.json: compute %+v, runs %d; want the ceiling on cpu at 1, 4, 32, 1024 and one gateway run", side, rep.Compute, len(rep.Runs))
		}
	}

	// One flipped byte in a part: the script stops at its checksum.
	part := filepath.Join(bundle, "ort.tar.zst.part-00")
	data, _ := os.ReadFile(part)
	data[len(data)/2] ^= 1
	os.WriteFile(part, data, 0o644)
	out = filepath.Join(tmp, "damaged")
	if log, err := run(out); err == nil || !strings.Contains(log, "cannot unpack ort") {
		t.Fatalf("run.sh on a damaged part: %v\n%s", err, log)
	}
	if got := read("RESULT"); !strings.Contains(got, "cannot unpack ort") {
		t.Errorf("RESULT after a damaged part: %q", got)
	}
	if _, err := os.Stat(filepath.Join(out, "serve-gpu.log")); err == nil {
		t.Error("run.sh started serving after a damaged part")
	}
}

// TestComputeCeilingProviders checks that --providers is validated before
// ONNX Runtime is opened.
func TestComputeCeilingProviders(t *testing.T) {
	_, err := computeCeiling(context.Background(), computeOptions{providers: []string{"gpu"}})
	if err == nil || !strings.Contains(err.Error(), `invalid --providers "gpu"`) {
		t.Fatalf("--providers gpu: got %v, want an error naming it", err)
	}
}
