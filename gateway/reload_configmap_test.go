package gateway

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/infergate/infergate/retrain/onnxexport"
	"github.com/infergate/infergate/runtime"
)

// configMapConfig is the config file of TestReloadFollowsConfigMapSwap:
// the repository lies outside the mounted folder, as a volume of its own
// does, and entries varies so that each update changes what is served.
const configMapConfig = `listen: 127.0.0.1:0
repository: %s
state_dir: ""
watch: true
models:
  ab:
    cache: {entries: %d}
`

// configMapDataDir is the symlink that kubelet points at the folder of a
// ConfigMap volume's current files.
const configMapDataDir = "..data"

// writeConfigMap updates dir as kubelet's AtomicWriter updates a ConfigMap
// volume (pkg/volume/util/atomic_writer.go): it writes files into a new
// timestamped folder, creates the user-visible links (name -> ..data/name)
// that are missing, points a new ..data_tmp link at the folder and renames
// it over ..data, then removes the previous folder. A file's own link never
// changes: only ..data does.
func writeConfigMap(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	oldTsDir, err := os.Readlink(filepath.Join(dir, configMapDataDir))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	tsDir, err := os.MkdirTemp(dir, time.Now().UTC().Format("..2006_01_02_15_04_05."))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(tsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(tsDir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		visible := filepath.Join(dir, name)
		if _, err := os.Readlink(visible); errors.Is(err, os.ErrNotExist) {
			if err := os.Symlink(filepath.Join(configMapDataDir, name), visible); err != nil {
				t.Fatal(err)
			}
		}
	}
	tmp := filepath.Join(dir, configMapDataDir+"_tmp")
	if err := os.Symlink(filepath.Base(tsDir), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, configMapDataDir)); err != nil {
		t.Fatal(err)
	}
	if oldTsDir != "" {
		if err := os.RemoveAll(filepath.Join(dir, oldTsDir)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestReloadFollowsConfigMapSwap serves a config mounted as Kubernetes
// mounts a ConfigMap (config.yaml -> ..data/config.yaml, ..data ->
// ..<time>.<n>) and updates it twice as kubelet does: no event names
// config.yaml, yet each update must be served.
func TestReloadFollowsConfigMapSwap(t *testing.T) {
	echo, err := onnxexport.Echo(runtime.FP32, 2)
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	repo := filepath.Join(root, "models")
	writeModel(t, filepath.Join(repo, "ab", "1"), echo)
	mount := filepath.Join(root, "config")
	if err := os.Mkdir(mount, 0o755); err != nil {
		t.Fatal(err)
	}
	writeConfigMap(t, mount, map[string]string{"config.yaml": fmt.Sprintf(configMapConfig, repo, 5)})
	configPath := filepath.Join(mount, "config.yaml")
	cfg, err := LoadConfig(configPath)
	if err != nil {
		t.Fatal(err)
	}
	srv, _ := startServerWith(t, Options{Config: cfg, ConfigPath: configPath})
	waitCacheEntries(t, srv, 5)

	for _, entries := range []int{10, 20} {
		writeConfigMap(t, mount, map[string]string{"config.yaml": fmt.Sprintf(configMapConfig, repo, entries)})
		waitCacheEntries(t, srv, entries)
	}
	if tsDirs, _ := filepath.Glob(filepath.Join(mount, "..2*")); len(tsDirs) != 1 {
		t.Fatalf("the mount holds %d timestamped folders, want 1 as kubelet leaves it: %v", len(tsDirs), tsDirs)
	}
}
