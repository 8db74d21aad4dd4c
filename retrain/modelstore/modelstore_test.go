package modelstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
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
	// A deleted version's number is not published again.
	if again, err := s.Publish(ctx, "demo", 1, writeVersion(t, map[string]string{"model.onnx": "other bytes"})); !errors.Is(err, ErrExists) || !errors.Is(err, ErrRetired) || again != nil {
		t.Fatalf("publishing a deleted version again: %+v %v, want ErrExists and ErrRetired", again, err)
	}
	if _, err := s.Manifest(ctx, "demo", 1); !errors.Is(err, ErrNotFound) || !errors.Is(err, ErrRetired) {
		t.Fatalf("manifest of a deleted version: %v, want ErrNotFound and ErrRetired", err)
	}
	if names := objectNames(t, s); len(names) != 0 {
		t.Fatalf("objects left after the delete: %v", names)
	}
}

// objectNames returns the names of the store's live objects.
func objectNames(t *testing.T, s *Store) []string {
	t.Helper()
	infos, err := s.obs.List(context.Background())
	if errors.Is(err, jetstream.ErrNoObjectsFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, info := range infos {
		names = append(names, info.Name)
	}
	slices.Sort(names)
	return names
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
	m, err := s.Manifest(ctx, "demo", 1)
	if err != nil {
		t.Fatal(err)
	}
	object := m.Files[0].Object
	if _, err := obs.PutBytes(ctx, object, []byte("evil bytes")); err != nil {
		t.Fatal(err)
	}
	parent := t.TempDir()
	if _, err := s.Fetch(ctx, "demo", 1, filepath.Join(parent, "1")); !errors.Is(err, ErrDamaged) {
		t.Fatalf("fetch: %v, want ErrDamaged", err)
	}
	if entries, _ := os.ReadDir(parent); len(entries) != 0 {
		t.Fatalf("left behind: %v", entries)
	}
	if err := obs.Delete(ctx, object); err != nil {
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

// TestRacingPublishersOfDifferentFiles: of two publishers of one version
// with different files at once, one wins, and the version reads back as
// the winner's files, never the loser's, whichever finishes its uploads
// last; the loser's objects are gone.
func TestRacingPublishersOfDifferentFiles(t *testing.T) {
	ctx := context.Background()
	s, _ := openStore(t)
	// The large one finishes its upload last, after the small one's
	// manifest, as often as not.
	srcs := []string{
		writeVersion(t, map[string]string{"model.onnx": "small", "labels.txt": "a\n"}),
		writeVersion(t, map[string]string{"model.onnx": strings.Repeat("large ", 200<<10), "labels.txt": "b\n"}),
	}
	for version := int64(1); version <= 8; version++ {
		var wg sync.WaitGroup
		manifests, errs := make([]*Manifest, len(srcs)), make([]error, len(srcs))
		for i, src := range srcs {
			wg.Go(func() { manifests[i], errs[i] = s.Publish(ctx, "demo", version, src) })
		}
		wg.Wait()
		winner := slices.IndexFunc(errs, func(err error) bool { return err == nil })
		loser := 1 - winner
		if winner < 0 || !errors.Is(errs[loser], ErrExists) {
			t.Fatalf("version %d: %v, want one success and one ErrExists", version, errs)
		}
		if manifests[loser] == nil || manifests[loser].ID != manifests[winner].ID {
			t.Fatalf("version %d: the loser got %+v, the winner published %+v", version, manifests[loser], manifests[winner])
		}
		dst := filepath.Join(t.TempDir(), strconv.FormatInt(version, 10))
		if _, err := s.Fetch(ctx, "demo", version, dst); err != nil {
			t.Fatalf("version %d: %v", version, err)
		}
		for _, name := range []string{"model.onnx", "labels.txt"} {
			want, _ := os.ReadFile(filepath.Join(srcs[winner], name))
			if got, err := os.ReadFile(filepath.Join(dst, name)); err != nil || !bytes.Equal(got, want) {
				t.Fatalf("version %d: fetched %s is not the winner's (%d bytes, %v)", version, name, len(got), err)
			}
		}
		want := []string{"demo/" + strconv.FormatInt(version, 10) + "/manifest.json"}
		for _, f := range manifests[winner].Files {
			want = append(want, f.Object)
		}
		var got []string
		for _, name := range objectNames(t, s) {
			if strings.HasPrefix(name, "demo/"+strconv.FormatInt(version, 10)+"/") {
				got = append(got, name)
			}
		}
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("version %d: objects %v, want the winner's %v", version, got, want)
		}
	}
}

// TestDeleteRemovesUnnamedObjects: Delete removes the objects of a
// publisher that died before its manifest, as well as the version's.
func TestDeleteRemovesUnnamedObjects(t *testing.T) {
	ctx := context.Background()
	s, _ := openStore(t)
	if _, err := s.obs.PutBytes(ctx, "demo/1/DEADPUBLISHER/model.onnx", []byte("half")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.obs.PutBytes(ctx, "demo/10/OTHER/model.onnx", []byte("another version's")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Publish(ctx, "demo", 1, writeVersion(t, map[string]string{"model.onnx": "whole"})); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "demo", 1); err != nil {
		t.Fatal(err)
	}
	if names := objectNames(t, s); !slices.Equal(names, []string{"demo/10/OTHER/model.onnx"}) {
		t.Fatalf("objects after the delete: %v", names)
	}
}

// TestReadsManifestsWithoutObjectNames: a version published before
// publications had prefixes (files at <model>/<version>/<file>, the
// manifest naming no objects) is fetched, read and deleted.
func TestReadsManifestsWithoutObjectNames(t *testing.T) {
	ctx := context.Background()
	s, _ := openStore(t)
	dir := writeVersion(t, map[string]string{"model.onnx": "old bytes", "reference.json": `{"old": true}`})
	m, err := Describe(dir, "demo", 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range m.Files {
		data, _ := os.ReadFile(filepath.Join(dir, f.Name))
		if _, err := s.obs.PutBytes(ctx, "demo/1/"+f.Name, data); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.putManifest(ctx, m); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "1")
	if _, err := s.Fetch(ctx, "demo", 1, dst); err != nil {
		t.Fatal(err)
	}
	if data, err := os.ReadFile(filepath.Join(dst, "model.onnx")); err != nil || string(data) != "old bytes" {
		t.Fatalf("fetched model.onnx: %q %v", data, err)
	}
	if data, err := s.ReadFile(ctx, "demo", 1, "reference.json"); err != nil || string(data) != `{"old": true}` {
		t.Fatalf("ReadFile: %q %v", data, err)
	}
	if err := s.Delete(ctx, "demo", 1); err != nil {
		t.Fatal(err)
	}
	if names := objectNames(t, s); len(names) != 0 {
		t.Fatalf("objects after the delete: %v", names)
	}
}

// TestManifestNamesOnlyItsVersionsObjects: a manifest naming an object
// outside its version is damaged (Delete would remove another's).
func TestManifestNamesOnlyItsVersionsObjects(t *testing.T) {
	for _, object := range []string{"demo/2/X/model.onnx", "demo/1/X/labels.txt", "demo/1//model.onnx", "other/1/X/model.onnx"} {
		m := &Manifest{Model: "demo", Version: 1, Files: []File{{Name: "model.onnx", Size: 1, SHA256: strings.Repeat("0", 64), Object: object}}}
		data, _ := json.Marshal(m)
		if _, err := decodeManifest(data, "demo", 1); !errors.Is(err, ErrDamaged) {
			t.Fatalf("object %q: %v, want ErrDamaged", object, err)
		}
	}
}

// TestReadFile: one file of a version, checked against its manifest.
func TestReadFile(t *testing.T) {
	ctx := context.Background()
	s, _ := openStore(t)
	m, err := s.Publish(ctx, "demo", 1, writeVersion(t, map[string]string{"model.onnx": "m", "reference.json": `{"features": []}`}))
	if err != nil {
		t.Fatal(err)
	}
	if data, err := s.ReadFile(ctx, "demo", 1, "reference.json"); err != nil || string(data) != `{"features": []}` {
		t.Fatalf("ReadFile: %q %v", data, err)
	}
	if _, err := s.ReadFile(ctx, "demo", 1, "labels.txt"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a file the version lacks: %v, want fs.ErrNotExist", err)
	}
	if _, err := s.ReadFile(ctx, "demo", 2, "reference.json"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a version not published: %v, want ErrNotFound", err)
	}
	ref, _ := m.File("reference.json")
	if _, err := s.obs.PutBytes(ctx, ref.Object, []byte(`{"features": [1]}`)); err != nil {
		t.Fatal(err)
	}
	if data, err := s.ReadFile(ctx, "demo", 1, "reference.json"); !errors.Is(err, ErrDamaged) {
		t.Fatalf("a damaged file: %q %v, want ErrDamaged", data, err)
	}
}

// TestOpenExisting: a reader's open creates no bucket.
func TestOpenExisting(t *testing.T) {
	ctx := context.Background()
	e := enginetest.Start(t)
	if _, err := OpenExisting(ctx, e.Conn); !errors.Is(err, ErrNotFound) {
		t.Fatalf("OpenExisting of an engine without the store: %v, want ErrNotFound", err)
	}
	if _, err := e.JS.ObjectStore(ctx, Bucket); !errors.Is(err, jetstream.ErrBucketNotFound) {
		t.Fatalf("the bucket after OpenExisting: %v", err)
	}
	w, err := Open(ctx, e.Conn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Publish(ctx, "demo", 1, writeVersion(t, map[string]string{"model.onnx": "m"})); err != nil {
		t.Fatal(err)
	}
	r, err := OpenExisting(ctx, e.Conn)
	if err != nil {
		t.Fatal(err)
	}
	if vs, err := r.Versions(ctx, "demo"); err != nil || !slices.Equal(vs, []int64{1}) {
		t.Fatalf("versions read through OpenExisting: %v %v", vs, err)
	}
}
