package modelstore

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/infergate/infergate/retrain/engine/enginetest"
)

// writeVersion writes a version folder with the given files under a
// temporary folder and returns it.
func writeVersion(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func openStore(t *testing.T) (*Store, *enginetest.Engine) {
	t.Helper()
	e := enginetest.Start(t)
	s, err := Open(context.Background(), e.Conn)
	if err != nil {
		t.Fatal(err)
	}
	return s, e
}

func TestPublishFetchDelete(t *testing.T) {
	ctx := context.Background()
	s, _ := openStore(t)
	src := writeVersion(t, map[string]string{"model.onnx": "onnx bytes", "labels.txt": "no\nyes\n", "other.bin": "ignored"})
	m, err := s.Publish(ctx, "demo", 1, src)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Files) != 2 || m.Files[0].Name != "model.onnx" || m.Files[1].Name != "labels.txt" || m.ID == "" {
		t.Fatalf("manifest: %+v", m)
	}
	if _, err := s.Publish(ctx, "demo", 1, src); !errors.Is(err, ErrExists) {
		t.Fatalf("publishing again: %v, want ErrExists", err)
	}
	if vs, err := s.Versions(ctx, "demo"); err != nil || len(vs) != 1 || vs[0] != 1 {
		t.Fatalf("versions: %v %v", vs, err)
	}
	repo := t.TempDir()
	dst := filepath.Join(repo, "demo", "1")
	got, err := s.Fetch(ctx, "demo", 1, dst)
	if err != nil {
		t.Fatal(err)
	}
	if !got.SameFiles(m) || got.ID != m.ID {
		t.Fatalf("fetched %+v, published %+v", got, m)
	}
	for name, want := range map[string]string{"model.onnx": "onnx bytes", "labels.txt": "no\nyes\n"} {
		if data, err := os.ReadFile(filepath.Join(dst, name)); err != nil || string(data) != want {
			t.Fatalf("%s: %q %v", name, data, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dst, "other.bin")); !os.IsNotExist(err) {
		t.Fatalf("other.bin was published: %v", err)
	}
	if local, err := ReadManifest(dst, "demo", 1); err != nil || !local.SameFiles(m) {
		t.Fatalf("local manifest: %+v %v", local, err)
	}
	if described, err := Describe(dst, "demo", 1); err != nil || !described.SameFiles(m) {
		t.Fatalf("described: %+v %v", described, err)
	}
	if _, err := s.Fetch(ctx, "demo", 1, dst); !errors.Is(err, ErrExists) {
		t.Fatalf("fetching onto an existing folder: %v", err)
	}
	if err := s.Delete(ctx, "demo", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Manifest(ctx, "demo", 1); !errors.Is(err, ErrNotFound) {
		t.Fatalf("manifest after delete: %v", err)
	}
	if vs, _ := s.Versions(ctx, "demo"); len(vs) != 0 {
		t.Fatalf("versions after delete: %v", vs)
	}
	if err := s.Delete(ctx, "demo", 1); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleting again: %v", err)
	}
	if next, err := s.NextVersion(ctx, "demo"); err != nil || next != 2 {
		t.Fatalf("next version after deleting 1: %d %v, want 2", next, err)
	}
	entries, err := s.List(ctx)
	if err != nil || len(entries) != 1 || !entries[0].Deleted {
		t.Fatalf("list: %+v %v", entries, err)
	}
	// A deleted version may be published again (by an operator).
	again, err := s.Publish(ctx, "demo", 1, writeVersion(t, map[string]string{"model.onnx": "other bytes"}))
	if err != nil {
		t.Fatal(err)
	}
	if again.SameFiles(m) {
		t.Fatal("the new publication lists the old files")
	}
}

func TestPublishNeedsModelFile(t *testing.T) {
	s, _ := openStore(t)
	if _, err := s.Publish(context.Background(), "demo", 1, writeVersion(t, map[string]string{"reference.json": "{}"})); err == nil {
		t.Fatal("published a version without model.onnx")
	}
	if vs, _ := s.Versions(context.Background(), "demo"); len(vs) != 0 {
		t.Fatalf("versions: %v", vs)
	}
	for _, bad := range []string{"", ".hidden", "a/b"} {
		if _, err := s.Publish(context.Background(), bad, 1, t.TempDir()); err == nil {
			t.Fatalf("published model %q", bad)
		}
	}
}

// TestConcurrentPublishersOneWins: of publishers of one version at once,
// one writes the manifest; the others get ErrExists and the manifest that
// won.
func TestConcurrentPublishersOneWins(t *testing.T) {
	ctx := context.Background()
	s, _ := openStore(t)
	src := writeVersion(t, map[string]string{"model.onnx": "same bytes"})
	const n = 4
	var wg sync.WaitGroup
	manifests, errs := make([]*Manifest, n), make([]error, n)
	for i := range n {
		wg.Go(func() { manifests[i], errs[i] = s.Publish(ctx, "demo", 3, src) })
	}
	wg.Wait()
	won := 0
	for i := range n {
		switch {
		case errs[i] == nil:
			won++
		case !errors.Is(errs[i], ErrExists):
			t.Fatalf("publisher %d: %v", i, errs[i])
		}
		if manifests[i] == nil || !manifests[i].SameFiles(manifests[0]) {
			t.Fatalf("publisher %d got manifest %+v", i, manifests[i])
		}
	}
	if won != 1 {
		t.Fatalf("%d publishers won, want 1", won)
	}
	if _, err := s.Fetch(ctx, "demo", 3, filepath.Join(t.TempDir(), "3")); err != nil {
		t.Fatal(err)
	}
}

// TestFetchRefusesDamage: a file whose bytes do not match the manifest is
// refused, and nothing is left in the repository.
func TestFetchRefusesDamage(t *testing.T) {
	ctx := context.Background()
	s, e := openStore(t)
	if _, err := s.Publish(ctx, "demo", 1, writeVersion(t, map[string]string{"model.onnx": "good bytes"})); err != nil {
		t.Fatal(err)
	}
	obs, err := e.JS.ObjectStore(ctx, Bucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := obs.PutBytes(ctx, "demo/1/model.onnx", []byte("evil bytes")); err != nil {
		t.Fatal(err)
	}
	parent := t.TempDir()
	if _, err := s.Fetch(ctx, "demo", 1, filepath.Join(parent, "1")); !errors.Is(err, ErrDamaged) {
		t.Fatalf("fetch: %v, want ErrDamaged", err)
	}
	if entries, _ := os.ReadDir(parent); len(entries) != 0 {
		t.Fatalf("left behind: %v", entries)
	}
	if err := obs.Delete(ctx, "demo/1/model.onnx"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Fetch(ctx, "demo", 1, filepath.Join(parent, "1")); !errors.Is(err, ErrDamaged) {
		t.Fatalf("fetch of a version missing a file: %v, want ErrDamaged", err)
	}
	if _, err := s.Fetch(ctx, "demo", 2, filepath.Join(parent, "2")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("fetch of no version: %v, want ErrNotFound", err)
	}
}

func TestWatchReportsPublishAndDelete(t *testing.T) {
	s, _ := openStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := s.Publish(ctx, "old", 1, writeVersion(t, map[string]string{"model.onnx": "x"})); err != nil {
		t.Fatal(err)
	}
	changes, err := s.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	next := func() Entry {
		t.Helper()
		select {
		case e, ok := <-changes:
			if !ok {
				t.Fatal("the watch ended")
			}
			return e
		case <-time.After(10 * time.Second):
			t.Fatal("no change reported")
		}
		return Entry{}
	}
	m, err := s.Publish(ctx, "demo", 2, writeVersion(t, map[string]string{"model.onnx": "y", "metrics.json": "{}"}))
	if err != nil {
		t.Fatal(err)
	}
	if e := next(); e.Model != "demo" || e.Version != 2 || e.Deleted || e.ID != m.ID {
		t.Fatalf("after publish: %+v", e)
	}
	if err := s.Delete(ctx, "demo", 2); err != nil {
		t.Fatal(err)
	}
	if e := next(); e.Model != "demo" || e.Version != 2 || !e.Deleted {
		t.Fatalf("after delete: %+v", e)
	}
	cancel()
	for range changes {
	}
}

// TestManifestIsAnObject: the manifest written by Publish reads back
// through the object store like any object, digest checked.
func TestManifestIsAnObject(t *testing.T) {
	ctx := context.Background()
	s, e := openStore(t)
	if _, err := s.Publish(ctx, "demo", 1, writeVersion(t, map[string]string{"model.onnx": "z"})); err != nil {
		t.Fatal(err)
	}
	obs, err := e.JS.ObjectStore(ctx, Bucket)
	if err != nil {
		t.Fatal(err)
	}
	data, err := obs.GetBytes(ctx, "demo/1/manifest.json")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(data, []byte(`"model": "demo"`)) {
		t.Fatalf("manifest: %s", data)
	}
	if _, err := obs.GetInfo(ctx, "demo/1/manifest.json"); err != nil {
		t.Fatal(err)
	}
	if _, err := obs.GetInfo(ctx, "demo/1/nothing"); !errors.Is(err, jetstream.ErrObjectNotFound) {
		t.Fatal(err)
	}
}
