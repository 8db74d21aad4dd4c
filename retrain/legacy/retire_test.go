package legacy

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRetire: the file moves, whole, to a name that says when in UTC; a
// file that is not there is an error naming it.
func TestRetire(t *testing.T) {
	path := writeTemp(t, "infergate.db", []byte("imported"))
	now := time.Date(2026, 12, 6, 4, 47, 1, 2500, time.FixedZone("CET", 3600))
	moved, err := Retire(path, now)
	if err != nil {
		t.Fatal(err)
	}
	if want := path + ".imported-20261206T034701.000002500Z"; moved != want {
		t.Fatalf("renamed to %s, want %s", moved, want)
	}
	if data, err := os.ReadFile(moved); err != nil || string(data) != "imported" {
		t.Fatalf("the renamed file holds %q (%v)", data, err)
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("%s is still there: %v", path, err)
	}

	gone := filepath.Join(t.TempDir(), "retrain.db")
	if _, err := Retire(gone, now); !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), gone) {
		t.Fatalf("retiring a missing file: got %v", err)
	}
}
