package pipeline

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.etcd.io/bbolt"

	"github.com/infergate/infergate/retrain/statefile"
	"github.com/infergate/infergate/retrain/statefile/statefiletest"
)

// TestDamagedStoreIsRefused damages a run store the ways disks and crashes
// do: the service's open and ListRuns refuse it with an error that names
// the file and says how to recover, never a panic or an empty store.
func TestDamagedStoreIsRefused(t *testing.T) {
	base := t.TempDir()
	db, err := openStore(base)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 40 {
		err := db.Update(func(tx *bbolt.Tx) error {
			return newRun(tx, &Run{Model: "demo", Trigger: string(rune('a' + i%26)), Outcome: Succeeded, Steps: []Step{{Name: "data", Log: []string{strings.Repeat("rows ", 40)}}}})
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	healthy, err := os.ReadFile(filepath.Join(base, StoreFile))
	if err != nil {
		t.Fatal(err)
	}

	for _, d := range statefiletest.Damages(statefiletest.Seeds...) {
		t.Run(d.Name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, StoreFile)
			if err := os.WriteFile(path, healthy, 0o600); err != nil {
				t.Fatal(err)
			}
			d.Apply(t, path)
			db, err := openStore(dir)
			if err == nil {
				db.Close()
				t.Fatal("a damaged run store opened")
			}
			_, lerr := ListRuns(dir)
			for _, err := range []error{err, lerr} {
				if !errors.Is(err, statefile.ErrDamaged) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "move the file aside") {
					t.Fatalf("got %v, want an error that names %s, says it is damaged and how to recover", err, path)
				}
			}
		})
	}

	runs, err := ListRuns(base)
	if err != nil || len(runs) != 40 || runs[0].ID != "40" {
		t.Fatalf("the healthy store lists %d runs (err %v), want 40", len(runs), err)
	}
	if db, err = openStore(base); err != nil {
		t.Fatalf("the healthy store: %v", err)
	}
	db.Close()
}
