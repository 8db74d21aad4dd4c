package legacy

import (
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Retire renames the state file at path, once imported, to
// <path>.imported-<now in UTC>, so that the next start leaves it alone,
// and syncs its folder, so that the rename outlives a crash. It returns
// the new path. On an error the file may still be where it was: the next
// start imports it again, which the importers make harmless.
func Retire(path string, now time.Time) (string, error) {
	moved := path + ".imported-" + now.UTC().Format("20060102T150405.000000000Z")
	if err := renameDurably(path, moved); err != nil {
		return "", fmt.Errorf("cannot rename the imported state file %s: %w; the next start imports it again, which is harmless", path, err)
	}
	return moved, nil
}

// renameDurably renames from to to and syncs their folder.
func renameDurably(from, to string) error {
	if err := os.Rename(from, to); err != nil {
		return err
	}
	dir, err := os.Open(filepath.Dir(to))
	if err != nil {
		return err
	}
	defer dir.Close()
	return dir.Sync()
}
