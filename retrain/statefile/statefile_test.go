package statefile_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/bbolt"
	"go.uber.org/goleak"

	"github.com/infergate/infergate/retrain/statefile"
	"github.com/infergate/infergate/retrain/statefile/statefiletest"
)

// TestMain fails the run when goroutines outlive the tests: the check's
// goroutine must end whatever it finds.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	routes = []byte("routes")
	nested = []byte("nested")
)

// healthy writes a state file with a few hundred keys in a bucket and a
// nested bucket, over several transactions, and returns its path.
func healthy(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "state.db")
	db, err := statefile.Open(path, bbolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for tx := range 4 {
		err := db.Update(func(tx *bbolt.Tx) error {
			b, err := tx.CreateBucketIfNotExists(routes)
			if err != nil {
				return err
			}
			n, err := b.CreateBucketIfNotExists(nested)
			if err != nil {
				return err
			}
			for i := range 100 {
				if err := b.Put(key(i), bytes.Repeat([]byte{'v'}, 200)); err != nil {
					return err
				}
				if err := n.Put(key(i), []byte("w")); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatalf("transaction %d: %v", tx, err)
		}
	}
	return path
}

func key(i int) []byte { return fmt.Appendf(nil, "model-%04d", i) }

// copyTo copies the file at src into a new temporary folder.
func copyTo(t *testing.T, src string) string {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), filepath.Base(src))
	if err := os.WriteFile(dst, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return dst
}

// refused opens path read-write and read-only and fails unless both are
// refused as damaged, naming the file and how to recover.
func refused(t *testing.T, path string) {
	t.Helper()
	for _, readOnly := range []bool{false, true} {
		db, err := statefile.Open(path, bbolt.Options{ReadOnly: readOnly, Timeout: time.Second})
		if err == nil {
			db.Close()
			t.Fatalf("read-only %v: a damaged file opened", readOnly)
		}
		if !errors.Is(err, statefile.ErrDamaged) || !strings.Contains(err.Error(), path) ||
			!strings.Contains(err.Error(), "move the file aside") || !strings.Contains(err.Error(), "restore it from a backup") {
			t.Fatalf("read-only %v: want an error that names %s, says it is damaged and how to recover; got %v", readOnly, path, err)
		}
		t.Logf("read-only %v: %v", readOnly, err)
	}
}

// TestOpenRefusesDamage damages copies of a healthy file in every way of
// statefiletest, random ones drawn with its fixed Seeds; each subtest's
// name says the seed it drew with.
func TestOpenRefusesDamage(t *testing.T) {
	base := healthy(t)
	for _, d := range statefiletest.Damages(statefiletest.Seeds...) {
		t.Run(d.Name, func(t *testing.T) {
			path := copyTo(t, base)
			d.Apply(t, path)
			refused(t, path)
		})
	}
	t.Run("a bucket's root page past the end of the file", func(t *testing.T) {
		path := copyTo(t, base)
		statefiletest.PointPastEnd(t, path, routes)
		refused(t, path)
	})
	t.Run("a freelist count past the end of the file", func(t *testing.T) {
		path := copyTo(t, base)
		db, err := bbolt.Open(path, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		freelist, pageSize := -1, db.Info().PageSize
		db.View(func(tx *bbolt.Tx) error {
			for _, id := range statefiletest.UsedPagesTx(tx) {
				if info, _ := tx.Page(id); info.Type == "freelist" {
					freelist = id
				}
			}
			return nil
		})
		db.Close()
		data, err := os.ReadFile(path)
		if err != nil || freelist < 0 {
			t.Fatalf("no freelist page (err %v)", err)
		}
		// The page header is id (8 bytes), flags (2), count (2), overflow
		// (4); a count of 0xffff says that the first id is the count.
		off := freelist * pageSize
		data[off+10], data[off+11] = 0xff, 0xff
		binary.LittleEndian.PutUint64(data[off+16:], 1<<22) // 32 MiB of ids
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		refused(t, path)
	})
	pages := statefiletest.UsedPages(t, base)
	for _, seed := range statefiletest.Seeds {
		t.Run(fmt.Sprintf("both meta pages overwritten, seed %d", seed), func(t *testing.T) {
			path := copyTo(t, base)
			statefiletest.RandomizePage(t, path, 0, seed)
			statefiletest.RandomizePage(t, path, 1, seed)
			refused(t, path)
		})
		// Every page in use, one at a time.
		for _, id := range pages {
			t.Run(fmt.Sprintf("random bytes over page %d, seed %d", id, seed), func(t *testing.T) {
				path := copyTo(t, base)
				statefiletest.RandomizePage(t, path, id, seed)
				refused(t, path)
			})
		}
	}
}

func TestOpenKeepsHealthyFile(t *testing.T) {
	path := healthy(t)
	for _, readOnly := range []bool{true, false} {
		db, err := statefile.Open(path, bbolt.Options{ReadOnly: readOnly})
		if err != nil {
			t.Fatalf("read-only %v: %v", readOnly, err)
		}
		err = db.View(func(tx *bbolt.Tx) error {
			b := tx.Bucket(routes)
			if got := b.Stats().KeyN; got != 201 { // 100 keys, the nested bucket and its 100
				return fmt.Errorf("%d keys, want 201", got)
			}
			if got := b.Bucket(nested).Get(key(99)); string(got) != "w" {
				return fmt.Errorf("nested key 99 is %q, want %q", got, "w")
			}
			return nil
		})
		db.Close()
		if err != nil {
			t.Fatalf("read-only %v: %v", readOnly, err)
		}
	}
}

func TestOpenCreatesWhole(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.db")
	// A crash during an earlier create left its temporary file.
	if err := os.WriteFile(path+".new", []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	db, err := statefile.Open(path, bbolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "state.db" {
		t.Fatalf("folder holds %v, want state.db alone", entries)
	}
	if _, err := statefile.Open(filepath.Join(dir, "missing.db"), bbolt.Options{ReadOnly: true}); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("read-only open of a missing file: got %v, want it not to exist", err)
	}
}

func TestOpenSaysWhoHoldsTheLock(t *testing.T) {
	path := healthy(t)
	db, err := statefile.Open(path, bbolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_, err = statefile.Open(path, bbolt.Options{Timeout: 10 * time.Millisecond})
	if err == nil || errors.Is(err, statefile.ErrDamaged) || !strings.Contains(err.Error(), "another process holds its lock") {
		t.Fatalf("got %v, want the lock held by another", err)
	}
}
