package gateway

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/infergate/infergate/retrain/onnxexport"
	"github.com/infergate/infergate/runtime"
)

// reloadConfig is the config file of TestReloadUnderLoad; entries varies
// so that each rewrite changes what is served.
const reloadConfig = `listen: 127.0.0.1:0
repository: models
state_dir: state
watch: true
models:
  ab:
    version_policy: {all: true}
    batching: {max_batch_size: 16}
    cache: {entries: %d}
`

// writeFileAtomically writes data to path through a rename, as editors and
// publishers do.
func writeFileAtomically(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// publish writes version v of model ab into place with one rename, so the
// watcher never sees half of it.
func publish(t *testing.T, root, v string, model []byte) {
	t.Helper()
	tmp := filepath.Join(root, "models", "ab", ".publishing-"+v)
	writeModel(t, tmp, model)
	if err := os.Rename(tmp, filepath.Join(root, "models", "ab", v)); err != nil {
		t.Fatal(err)
	}
}

// waitVersions waits until model ab serves exactly want.
func waitVersions(t *testing.T, srv *Server, want ...string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		m := srv.serving.Load().models["ab"]
		if m != nil && slices.Equal(m.versionNames(), want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("model ab serves %v, want %v", m.versionNames(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitCacheEntries waits until srv serves the config whose model ab has
// a cache of n entries: the reload of that file is done.
func waitCacheEntries(t *testing.T, srv *Server, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		srv.cp.mu.Lock()
		got := srv.cp.current.Models["ab"].Cache.Entries
		srv.cp.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the config with %d cache entries was not loaded within 30s (%d now)", n, got)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// startReloading serves reloadConfig with cacheEntries from a config file,
// with versions of the echo model ab, and returns the server, its URL, the
// folder, the config file and the model.
func startReloading(t *testing.T, cacheEntries int, versions ...string) (*Server, string, string, string, []byte) {
	t.Helper()
	echo, err := onnxexport.Echo(runtime.FP32, 2)
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	for _, v := range versions {
		writeModel(t, filepath.Join(root, "models", "ab", v), echo)
	}
	configPath := filepath.Join(root, "infergate.yaml")
	writeFileAtomically(t, configPath, fmt.Appendf(nil, reloadConfig, cacheEntries))
	cfg, err := LoadConfig(configPath)
	if err != nil {
		t.Fatal(err)
	}
	srv, url := startServerWith(t, Options{Config: cfg, ConfigPath: configPath})
	return srv, url, root, configPath, echo
}

// TestReloadUnderLoad keeps two clients busy while the config file is
// rewritten ten times (and once broken) and versions are published and
// removed twice; not one request may fail.
func TestReloadUnderLoad(t *testing.T) {
	srv, url, root, configPath, echo := startReloading(t, 0, "1")
	stop := load(t, url)

	for i := 1; i <= 10; i++ {
		writeFileAtomically(t, configPath, fmt.Appendf(nil, reloadConfig, i*10))
		waitCacheEntries(t, srv, i*10)
		switch i {
		case 2:
			publish(t, root, "2", echo)
			waitVersions(t, srv, "1", "2")
		case 4:
			publish(t, root, "3", echo)
			waitVersions(t, srv, "1", "2", "3")
		case 6:
			os.RemoveAll(filepath.Join(root, "models", "ab", "1"))
			waitVersions(t, srv, "2", "3")
		case 8:
			os.RemoveAll(filepath.Join(root, "models", "ab", "3"))
			waitVersions(t, srv, "2")
		}
	}
	// A broken config is refused and the old state serves on. (A reload
	// the version removals started may still finish first and succeed, so
	// the test waits for the refusal, not for any reload.)
	refused := reloadErrors.Get()
	writeFileAtomically(t, configPath, []byte("models:\n  ab:\n    cache: {entries: many}\n"))
	for deadline := time.Now().Add(30 * time.Second); reloadErrors.Get() == refused; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the broken config was not refused within 30s")
		}
	}
	if reloadSuccessful.Get() != 0 {
		t.Error("infergate_config_last_reload_successful is 1 after a refused reload")
	}
	metricsText := get(t, url+"/metrics")
	if !strings.Contains(metricsText, "infergate_config_last_reload_successful 0") {
		t.Error("/metrics does not show the refused reload")
	}

	ok, failed, first := stop()
	if failed != 0 || ok == 0 {
		t.Fatalf("%d of %d requests failed during the reloads; the first: %s", failed, ok+failed, first)
	}
	t.Logf("%d requests, none failed, across %d reloads", ok, reloadsTotal.Get())
	waitVersions(t, srv, "2")
}

// TestHalfCopiedVersionLoadsOnceComplete copies a version in as a copy
// does, file by file and not atomically: the half-written model fails to
// load, and the write that completes it brings the version in.
func TestHalfCopiedVersionLoadsOnceComplete(t *testing.T) {
	srv, _, root, _, echo := startReloading(t, 0, "1")
	failed := reloadVersionErrors.Get()
	writeModel(t, filepath.Join(root, "models", "ab", "2"), echo[:len(echo)/2])
	for deadline := time.Now().Add(30 * time.Second); reloadVersionErrors.Get() == failed; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the half-written version was not tried within 30s")
		}
	}
	waitVersions(t, srv, "1")
	if err := os.WriteFile(filepath.Join(root, "models", "ab", "2", "model.onnx"), echo, 0o644); err != nil {
		t.Fatal(err)
	}
	waitVersions(t, srv, "1", "2")
}

// TestEmptyConfigIsRefusedOnReload: an editor that truncates the file
// before writing it, or a crash in between, must not reset the gateway to
// the defaults.
func TestEmptyConfigIsRefusedOnReload(t *testing.T) {
	srv, _, _, configPath, _ := startReloading(t, 7, "1", "2")
	for _, empty := range []string{"", "\n# nothing yet\n"} {
		os.WriteFile(configPath, []byte(empty), 0o644)
		if err := srv.Reload(); err == nil || !strings.Contains(err.Error(), "empty") {
			t.Fatalf("reload of %q: %v, want a refusal saying the file is empty", empty, err)
		}
		waitVersions(t, srv, "1", "2")
		waitCacheEntries(t, srv, 7)
	}
}

// TestReloadClosesMonitorsOutsideTheLock: a reload that replaces a
// version whose drift monitor has labels to store closes it outside the
// control lock, which storing takes.
func TestReloadClosesMonitorsOutsideTheLock(t *testing.T) {
	srv, url, _ := startCapturedDemo(t)
	if code, _, b := call(t, "POST", url+"/v2/models/demo/feedback", []byte(`{"id": "req-0", "label": [1, 0]}`)); code != 200 {
		t.Fatalf("feedback %d %s", code, b)
	}
	srv.cp.mu.Lock()
	c := srv.cp.current
	c.Models = map[string]ModelConfig{}
	for k, v := range srv.cp.current.Models {
		c.Models[k] = v
	}
	d := c.Models["demo"]
	d.Drift.Consecutive = 5
	c.Models["demo"] = d
	srv.cp.current = c
	srv.cp.mu.Unlock()
	done := make(chan error, 1)
	go func() { done <- srv.Reload() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Reload deadlocked: still running after 15s")
	}
}
