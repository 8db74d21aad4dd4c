package gateway

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/infergate/infergate/retrain/modelstore"
	"github.com/infergate/infergate/retrain/onnxexport"
	"github.com/infergate/infergate/runtime"
)

// tarOf returns a tar archive of files, by name.
func tarOf(t *testing.T, files map[string][]byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for name := range files {
			if !yield(name) {
				return
			}
		}
	}) {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(files[name])), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write(files[name])
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// multipartOf returns a multipart/form-data body of files and its
// Content-Type.
func multipartOf(t *testing.T, files map[string][]byte) ([]byte, string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for name, data := range files {
		w, err := mw.CreateFormFile("file", name)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data)
	}
	mw.Close()
	return buf.Bytes(), mw.FormDataContentType()
}

func readTestModel(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// upload PUTs body as version v of model and returns the status and body.
func upload(t *testing.T, base, model, v string, body []byte, contentType string, headers ...string) (int, []byte) {
	t.Helper()
	code, _, b := call(t, http.MethodPut, base+"/admin/models/"+model+"/versions/"+v, body,
		append([]string{"Authorization", "Bearer " + testToken, "Content-Type", contentType}, headers...)...)
	return code, b
}

// versionReady reports whether base serves version v of model.
func versionReady(t *testing.T, base, model, v string) bool {
	t.Helper()
	code, _, _ := call(t, http.MethodGet, base+"/v2/models/"+model+"/versions/"+v+"/ready", nil)
	return code == http.StatusOK
}

func storeOf(t *testing.T, dir string) *modelstore.Store {
	t.Helper()
	s, err := modelstore.Open(context.Background(), testEngine(t, dir).Conn)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestUploadVersionReachesEveryReplica: a version uploaded to one replica
// is published to the store and loaded by both replicas of the engine,
// each into its own repository; a delete unloads it everywhere.
func TestUploadVersionReachesEveryReplica(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t)
	cfg.StateDir = dir
	cfg.Admin.TokenEnv = testTokenEnv
	_, aURL := startReplica(t, cfg, "a", dir)
	cfgB := cfg
	cfgB.Repository = t.TempDir() // empty: the store's versions fill it
	_, bURL := startReplica(t, cfgB, "b", dir)
	if !versionReady(t, bURL, "versioned", "3") || !versionReady(t, bURL, "demo", "1") {
		t.Fatal("replica b does not serve the versions replica a seeded the store with")
	}

	onnx := readTestModel(t, "../testdata/models/versioned/1/model.onnx")
	code, body := upload(t, aURL, "versioned", "4", tarOf(t, map[string][]byte{"model.onnx": onnx, "metrics.json": []byte(`{"accuracy": 1}`)}), "application/x-tar")
	if code != http.StatusCreated {
		t.Fatalf("upload: %d %s", code, body)
	}
	var answer storedVersion
	if err := json.Unmarshal(body, &answer); err != nil || answer.Version != "4" || len(answer.Files) != 2 || len(answer.Files[0].SHA256) != 64 {
		t.Fatalf("upload answer: %s (%v)", body, err)
	}
	for _, base := range []string{aURL, bURL} {
		waitUntil(t, "version 4 ready on "+base, 10*time.Second, func() bool { return versionReady(t, base, "versioned", "4") })
	}
	if _, err := os.Stat(filepath.Join(cfgB.Repository, "versioned", "4", "metrics.json")); err != nil {
		t.Fatalf("replica b's repository: %v", err)
	}

	// multipart works too; the same version twice is refused.
	mp, ct := multipartOf(t, map[string][]byte{"model.onnx": onnx})
	if code, body := upload(t, bURL, "versioned", "5", mp, ct); code != http.StatusCreated {
		t.Fatalf("multipart upload: %d %s", code, body)
	}
	if code, body := upload(t, aURL, "versioned", "5", mp, ct); code != http.StatusConflict {
		t.Fatalf("second upload of version 5: %d %s", code, body)
	}
	code, _, body = call(t, http.MethodGet, aURL+"/admin/models/versioned/versions", nil, "Authorization", "Bearer "+testToken)
	var list struct {
		Versions []storedVersion `json:"versions"`
	}
	if err := json.Unmarshal(body, &list); code != http.StatusOK || err != nil || len(list.Versions) != 5 || list.Versions[4].Version != "5" {
		t.Fatalf("GET versions: %d %s", code, body)
	}

	// The primary (newest) cannot be deleted; version 4 can.
	// Both replicas must have loaded version 5: until b has, 4 is its primary.
	for _, base := range []string{aURL, bURL} {
		waitUntil(t, "version 5 ready on "+base, 10*time.Second, func() bool { return versionReady(t, base, "versioned", "5") })
	}
	if code, _, body := call(t, http.MethodDelete, aURL+"/admin/models/versioned/versions/5", nil, "Authorization", "Bearer "+testToken); code != http.StatusConflict {
		t.Fatalf("delete of the primary: %d %s", code, body)
	}
	if code, _, body := call(t, http.MethodDelete, bURL+"/admin/models/versioned/versions/4", nil, "Authorization", "Bearer "+testToken); code != http.StatusOK {
		t.Fatalf("delete: %d %s", code, body)
	}
	for _, base := range []string{aURL, bURL} {
		waitUntil(t, "version 4 unloaded on "+base, 10*time.Second, func() bool { return !versionReady(t, base, "versioned", "4") })
	}
	if _, err := os.Stat(filepath.Join(cfgB.Repository, "versioned", "4")); !os.IsNotExist(err) {
		t.Fatalf("version 4 is still in replica b's repository: %v", err)
	}
	if code, _, _ := call(t, http.MethodDelete, aURL+"/admin/models/versioned/versions/4", nil, "Authorization", "Bearer "+testToken); code != http.StatusNotFound {
		t.Fatalf("second delete: %d", code)
	}
	// A deleted version's number names no other files.
	if code, body := upload(t, aURL, "versioned", "4", tarOf(t, map[string][]byte{"model.onnx": onnx}), "application/x-tar"); code != http.StatusConflict ||
		!strings.Contains(string(body), "numbers are not reused") {
		t.Fatalf("upload of a deleted version's number: %d %s", code, body)
	}
}

// TestUploadRefusals: what an upload may not be, each answered with why,
// and nothing published.
func TestUploadRefusals(t *testing.T) {
	cfg := testConfig(t)
	cfg.Admin.TokenEnv = testTokenEnv
	cfg.ModelStore.MaxUploadSize = 64 << 10
	_, url := startServer(t, cfg)
	store := storeOf(t, cfg.StateDir)
	onnx := readTestModel(t, "../testdata/models/versioned/1/model.onnx")
	noise := make([]byte, 2048)
	rand.Read(noise)
	big := make([]byte, 100<<10)

	f := func(what string, model string, body []byte, contentType string, wantCode int, wantText string, headers ...string) {
		t.Helper()
		code, b := upload(t, url, model, "7", body, contentType, headers...)
		if code != wantCode || !strings.Contains(string(b), wantText) {
			t.Fatalf("%s: %d %s, want %d with %q", what, code, b, wantCode, wantText)
		}
		if _, err := store.Manifest(context.Background(), model, 7); !errors.Is(err, modelstore.ErrNotFound) {
			t.Fatalf("%s: version 7 is in the store: %v", what, err)
		}
	}
	f("random bytes", "versioned", tarOf(t, map[string][]byte{"model.onnx": noise}), "application/x-tar", http.StatusUnprocessableEntity, "does not load in ONNX Runtime")
	f("other inputs", "versioned", tarOf(t, map[string][]byte{"model.onnx": readTestModel(t, "../testdata/models/pair/1/model.onnx")}), "application/x-tar",
		http.StatusUnprocessableEntity, "the upload has")
	f("no reference for a monitored model", "demo", tarOf(t, map[string][]byte{"model.onnx": readTestModel(t, "../configs/models/demo/1/model.onnx")}), "application/x-tar",
		http.StatusBadRequest, "reference.json")
	f("a bad reference", "demo", tarOf(t, map[string][]byte{"model.onnx": readTestModel(t, "../configs/models/demo/1/model.onnx"), "reference.json": []byte(`{"rows": 1}`)}),
		"application/x-tar", http.StatusUnprocessableEntity, "")
	f("an unexpected file", "versioned", tarOf(t, map[string][]byte{"model.onnx": onnx, "weights.bin": []byte("x")}), "application/x-tar", http.StatusBadRequest, `weights.bin`)
	f("no model", "versioned", tarOf(t, map[string][]byte{"metrics.json": []byte("{}")}), "application/x-tar", http.StatusBadRequest, "no model.onnx")
	f("labels of another count", "versioned", tarOf(t, map[string][]byte{"model.onnx": onnx, "labels.txt": []byte("a\n\nb\n")}), "application/x-tar", http.StatusUnprocessableEntity, "labels.txt")
	f("not JSON metrics", "versioned", tarOf(t, map[string][]byte{"model.onnx": onnx, "metrics.json": []byte("{")}), "application/x-tar", http.StatusBadRequest, "metrics.json")
	f("over the limit", "versioned", tarOf(t, map[string][]byte{"model.onnx": big}), "application/x-tar", http.StatusRequestEntityTooLarge, "max_upload_size")
	f("a form", "versioned", []byte("a=b"), "application/x-www-form-urlencoded", http.StatusUnsupportedMediaType, "application/x-tar")
	f("no token", "versioned", tarOf(t, map[string][]byte{"model.onnx": onnx}), "application/x-tar", http.StatusUnauthorized, "bearer token",
		"Authorization", "Bearer wrong")
	f("unknown model", "nosuch", tarOf(t, map[string][]byte{"model.onnx": onnx}), "application/x-tar", http.StatusNotFound, "unknown model")
	if code, b := upload(t, url, "versioned", "0", nil, "application/x-tar"); code != http.StatusBadRequest {
		t.Fatalf("version 0: %d %s", code, b)
	}

	// Over the limit without a Content-Length: the bounded reader stops it.
	req, _ := http.NewRequest(http.MethodPut, url+"/admin/models/versioned/versions/7", io.MultiReader(bytes.NewReader(tarOf(t, map[string][]byte{"model.onnx": big}))))
	req.Header.Set("Authorization", "Bearer "+testToken)
	req.Header.Set("Content-Type", "application/x-tar")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ContentLength == 0 || resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("chunked upload over the limit: %d %s", resp.StatusCode, b)
	}
}

// TestVersionRetention: the leader deletes the oldest versions beyond
// keep_versions, but none that routing references or version_policy
// selects; every replica's repository loses them.
func TestVersionRetention(t *testing.T) {
	cfg := testConfig(t)
	cfg.ModelStore.KeepVersions = 1
	mc := cfg.Models["versioned"]
	mc.VersionPolicy = runtime.VersionPolicy{Latest: 2}
	cfg.Models["versioned"] = mc
	// Versions 2 and 3 are the policy's (3 the primary too): of the three
	// only 1 goes. echo_fp32's one version stays.
	startServer(t, cfg)
	store := storeOf(t, cfg.StateDir)
	waitUntil(t, "versioned 1 deleted", 10*time.Second, func() bool {
		vs, err := store.Versions(context.Background(), "versioned")
		return err == nil && slices.Equal(vs, []int64{2, 3})
	})
	waitUntil(t, "versioned/1 removed locally", 10*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(cfg.Repository, "versioned", "1"))
		return os.IsNotExist(err)
	})
	if vs, _ := store.Versions(context.Background(), "echo_fp32"); !slices.Equal(vs, []int64{1}) {
		t.Fatalf("echo_fp32's versions: %v", vs)
	}
}

// TestSeedConflictStoreWins: a local version whose files differ from the
// store's under the same number is moved aside and the store's served.
func TestSeedConflictStoreWins(t *testing.T) {
	cfg := testConfig(t)
	store := storeOf(t, cfg.StateDir)
	other := t.TempDir()
	os.WriteFile(filepath.Join(other, "model.onnx"), readTestModel(t, "../testdata/models/echo_fp32/1/model.onnx"), 0o644)
	os.WriteFile(filepath.Join(other, "metrics.json"), []byte(`{"from": "the store"}`), 0o644)
	want, err := store.Publish(context.Background(), "echo_fp32", 1, other)
	if err != nil {
		t.Fatal(err)
	}
	_, url := startServer(t, cfg)
	if !versionReady(t, url, "echo_fp32", "1") {
		t.Fatal("echo_fp32 1 is not served")
	}
	local, err := modelstore.ReadManifest(filepath.Join(cfg.Repository, "echo_fp32", "1"), "echo_fp32", 1)
	if err != nil || !local.SameFiles(want) {
		t.Fatalf("local echo_fp32/1: %+v %v, want the store's %+v", local, err, want)
	}
	aside, _ := filepath.Glob(filepath.Join(cfg.Repository, "echo_fp32", ".replaced-1-*", "model.onnx"))
	if len(aside) != 1 {
		t.Fatalf("the local version was not moved aside: %v", aside)
	}
}

// TestUploadExpectContinue: a client that asks before it sends its body
// (curl -T does) is told to go on for an upload larger than max_body_size
// but within max_upload_size, and refused before it sends one beyond it
// or without the admin token.
func TestUploadExpectContinue(t *testing.T) {
	cfg := testConfig(t) // max_body_size 1MiB
	cfg.Admin.TokenEnv = testTokenEnv
	cfg.ModelStore.MaxUploadSize = 4 << 20
	_, url := startServer(t, cfg)
	onnx := readTestModel(t, "../testdata/models/versioned/1/model.onnx")
	metrics := fmt.Appendf(nil, `{"note": %q}`, strings.Repeat("x", 1500<<10))
	client := &http.Client{Transport: &http.Transport{ExpectContinueTimeout: 5 * time.Second}}
	put := func(body []byte, token string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPut, url+"/admin/models/versioned/versions/9", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/x-tar")
		req.Header.Set("Expect", "100-continue")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, b := put(tarOf(t, map[string][]byte{"model.onnx": onnx, "metrics.json": metrics}), "wrong"); code != http.StatusUnauthorized {
		t.Fatalf("wrong token: %d %s", code, b)
	}
	if code, b := put(tarOf(t, map[string][]byte{"model.onnx": onnx, "metrics.json": make([]byte, 5<<20)}), testToken); code != http.StatusRequestEntityTooLarge || !strings.Contains(b, "max_upload_size") {
		t.Fatalf("over max_upload_size: %d %s", code, b)
	}
	if code, b := put(tarOf(t, map[string][]byte{"model.onnx": onnx, "metrics.json": metrics}), testToken); code != http.StatusCreated {
		t.Fatalf("an upload over max_body_size within max_upload_size: %d %s", code, b)
	}
}

// syncedConfig is the config file of the tests of a synced repository
// read from a file: the echo model ab, every version served, no watcher
// (only the sync and the tests reload).
const syncedConfig = `listen: 127.0.0.1:0
repository: %s
state_dir: state
model_store: {resync_interval: 100ms}
models:
  ab:
    version_policy: {all: true}
`

// startSyncedFromFile serves syncedConfig with version 1 of ab in the
// repository models, and returns the server, the folder, the config file,
// the model and the store.
func startSyncedFromFile(t *testing.T) (*Server, string, string, []byte, *modelstore.Store) {
	t.Helper()
	echo, err := onnxexport.Echo(runtime.FP32, 2)
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	writeModel(t, filepath.Join(root, "models", "ab", "1"), echo)
	configPath := filepath.Join(root, "infergate.yaml")
	writeFileAtomically(t, configPath, fmt.Appendf(nil, syncedConfig, "models"))
	cfg, err := LoadConfig(configPath)
	if err != nil {
		t.Fatal(err)
	}
	srv, _ := startServerWith(t, Options{Config: cfg, ConfigPath: configPath})
	return srv, root, configPath, echo, storeOf(t, cfg.StateDir)
}

// serves reports whether srv serves exactly versions of ab.
func serves(srv *Server, versions ...string) bool {
	m := srv.serving.Load().models["ab"]
	return m != nil && slices.Equal(m.versionNames(), versions)
}

// TestRefusedSyncReloadIsRetried: a version fetched while the config is
// broken (the reload the sync asks for refused) is loaded once a reload
// applies, the sync asking again at every resync.
func TestRefusedSyncReloadIsRetried(t *testing.T) {
	srv, root, configPath, echo, store := startSyncedFromFile(t)
	writeFileAtomically(t, configPath, []byte("models:\n  ab:\n    cache: {entries: many}\n"))
	refused := reloadErrors.Get()
	src := t.TempDir()
	writeModel(t, src, echo)
	if _, err := store.Publish(context.Background(), "ab", 2, src); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "version 2 fetched and its reload refused", 10*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(root, "models", "ab", "2", modelstore.ManifestFile))
		return err == nil && reloadErrors.Get() > refused
	})
	if serves(srv, "1", "2") {
		t.Fatal("version 2 is served under a broken config")
	}
	// Nothing watches the file: only the sync reloads.
	writeFileAtomically(t, configPath, fmt.Appendf(nil, syncedConfig, "models"))
	waitUntil(t, "version 2 served", 10*time.Second, func() bool { return serves(srv, "1", "2") })
}

// TestRepositoryIsReadAtStartWhileSynced: a reload that names another
// repository keeps the one of the start, which the sync fills: another
// would be served empty.
func TestRepositoryIsReadAtStartWhileSynced(t *testing.T) {
	srv, root, configPath, echo, store := startSyncedFromFile(t)
	if err := os.Mkdir(filepath.Join(root, "other"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFileAtomically(t, configPath, fmt.Appendf(nil, syncedConfig, "other"))
	if err := srv.Reload(); err != nil {
		t.Fatal(err)
	}
	if !serves(srv, "1") {
		t.Fatalf("after a reload naming another repository: %v", srv.serving.Load().models["ab"])
	}
	src := t.TempDir()
	writeModel(t, src, echo)
	if _, err := store.Publish(context.Background(), "ab", 2, src); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "version 2 served", 10*time.Second, func() bool { return serves(srv, "1", "2") })
	if _, err := os.Stat(filepath.Join(root, "models", "ab", "2", "model.onnx")); err != nil {
		t.Fatalf("version 2 is not in the repository of the start: %v", err)
	}
}

// TestUploadStagedInRepository: an upload is staged in the repository, not
// in the temporary folder (which may be too small for a model), and what
// a killed gateway left staged, fetched in part or removed in part is
// swept at start; versions moved aside stay.
func TestUploadStagedInRepository(t *testing.T) {
	cfg := testConfig(t)
	cfg.Admin.TokenEnv = testTokenEnv
	leftovers := []string{".upload-123", "versioned/.4.fetch-456", "versioned/.removed-3-789"}
	kept := "versioned/.replaced-1-20260101T000000.000000000"
	for _, dir := range append(leftovers, kept) {
		writeModel(t, filepath.Join(cfg.Repository, dir), []byte("half"))
	}
	_, url := startServer(t, cfg)
	for _, dir := range leftovers {
		if _, err := os.Stat(filepath.Join(cfg.Repository, dir)); !os.IsNotExist(err) {
			t.Errorf("%s was not swept: %v", dir, err)
		}
	}
	if _, err := os.Stat(filepath.Join(cfg.Repository, kept, "model.onnx")); err != nil {
		t.Errorf("%s was swept: %v", kept, err)
	}
	// A temporary folder that cannot be written fails nothing.
	t.Setenv("TMPDIR", filepath.Join(t.TempDir(), "missing"))
	onnx := readTestModel(t, "../testdata/models/versioned/1/model.onnx")
	if code, body := upload(t, url, "versioned", "4", tarOf(t, map[string][]byte{"model.onnx": onnx}), "application/x-tar"); code != http.StatusCreated {
		t.Fatalf("upload: %d %s", code, body)
	}
	if staged, _ := filepath.Glob(filepath.Join(cfg.Repository, ".upload-*")); len(staged) != 0 {
		t.Fatalf("the upload's staging folder is left: %v", staged)
	}
}

// TestReadUploadStorageFailures: a file of an upload that cannot be
// stored is the server's failure (500, 507 when the disk is full); a body
// that cannot be read is the client's (400).
func TestReadUploadStorageFailures(t *testing.T) {
	onnx := readTestModel(t, "../testdata/models/versioned/1/model.onnx")
	archive := tarOf(t, map[string][]byte{"model.onnx": onnx})
	f := func(what, dir string, body []byte, wantCode int) {
		t.Helper()
		var ctx fasthttp.RequestCtx
		ctx.Request.Header.SetContentType("application/x-tar")
		ctx.Request.SetBody(body)
		if _, code, err := readUpload(&ctx, dir, 1<<30); code != wantCode {
			t.Fatalf("%s: %d (%v), want %d", what, code, err, wantCode)
		}
	}
	if _, err := os.Stat("/dev/full"); err == nil { // Linux: every write is ENOSPC
		full := t.TempDir()
		if err := os.Symlink("/dev/full", filepath.Join(full, "model.onnx")); err != nil {
			t.Fatal(err)
		}
		f("a full disk", full, archive, http.StatusInsufficientStorage)
	}
	f("a folder gone", filepath.Join(t.TempDir(), "gone"), archive, http.StatusInternalServerError)
	f("a cut archive", t.TempDir(), archive[:512+len(onnx)/2], http.StatusBadRequest) // in model.onnx
	f("a whole archive", t.TempDir(), archive, 0)
}

// TestUploadExpectAdminOff: the Expect of an upload where the admin API
// is off is answered as the upload would be, 404.
func TestUploadExpectAdminOff(t *testing.T) {
	cfg := testConfig(t)
	cfg.StateDir = ""
	_, url := startServer(t, cfg)
	client := &http.Client{Transport: &http.Transport{ExpectContinueTimeout: 5 * time.Second}}
	req, _ := http.NewRequest(http.MethodPut, url+"/admin/models/versioned/versions/9", bytes.NewReader(make([]byte, 1<<10)))
	req.Header.Set("Authorization", "Bearer "+testToken)
	req.Header.Set("Content-Type", "application/x-tar")
	req.Header.Set("Expect", "100-continue")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(b), "admin API is off") {
		t.Fatalf("Expect of an upload with the admin API off: %d %s", resp.StatusCode, b)
	}
}
