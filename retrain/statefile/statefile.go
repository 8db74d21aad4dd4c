package statefile

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"syscall"

	"go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// ErrDamaged is wrapped by Open's error for a file that fails its check.
var ErrDamaged = errors.New("statefile: damaged")

// maxProblems bounds the consistency problems quoted in an error.
const maxProblems = 3

// Open opens the bbolt file at path with o, creating it (mode 0600) when it
// does not exist and o is not read-only. An existing file is checked first,
// read-only: its size against its last transaction, its freelist and every
// key and value read, and bbolt's consistency check (Tx.Check). A file that fails is
// refused with an error wrapping ErrDamaged; a panic or memory fault inside
// bbolt while opening or checking it becomes such an error too. A new file
// is created whole (written, synced, then renamed into place), so an empty
// file at path is always damage, never a state to start from.
func Open(path string, o bbolt.Options) (*bbolt.DB, error) {
	info, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist) && !o.ReadOnly:
		if err := create(path, o); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, fmt.Errorf("cannot open state file %q: %w", path, err)
	case info.Size() == 0:
		return nil, damaged(path, "0 bytes long, though it is only ever created whole: truncated")
	}
	ro := o
	ro.ReadOnly = true
	if err := checkSize(path, ro); err != nil {
		return nil, err
	}
	// The freelist is read while opening, under open's guard, rather than
	// in Tx.Check's goroutine, where a fault would end the process.
	ro.PreLoadFreelist = true
	db, err := open(path, ro)
	if err != nil {
		return nil, err
	}
	if err := check(db, path); err != nil {
		db.Close()
		return nil, err
	}
	if o.ReadOnly {
		return db, nil
	}
	if err := db.Close(); err != nil {
		return nil, fmt.Errorf("cannot close state file %q after its check: %w", path, err)
	}
	return open(path, o)
}

// open is bbolt.Open with its errors said for a state file and its panics
// recovered.
func open(path string, o bbolt.Options) (*bbolt.DB, error) {
	// bbolt leaves its file open (and locked) when it panics; keep it to close.
	var f *os.File
	o.OpenFile = func(name string, flag int, perm os.FileMode) (*os.File, error) {
		var err error
		f, err = os.OpenFile(name, flag, perm)
		return f, err
	}
	var db *bbolt.DB
	err := guard(func() (err error) {
		db, err = bbolt.Open(path, 0o600, &o)
		return err
	})
	if err == nil {
		return db, nil
	}
	if f != nil {
		f.Close() // a second Close after bbolt's own is harmless
	}
	var pathErr *fs.PathError
	var errno syscall.Errno
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return nil, fmt.Errorf("cannot open state file %q: another process holds its lock (is another infergate using this state_dir?): %w", path, err)
	case errors.As(err, &pathErr), errors.As(err, &errno):
		return nil, fmt.Errorf("cannot open state file %q: %w", path, err)
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrChecksum), errors.Is(err, berrors.ErrVersionMismatch):
		return nil, damaged(path, "neither of its two meta pages is valid: "+err.Error())
	default:
		// What is left is about the file's contents: a size that cannot
		// hold its pages, or a panic reading them.
		return nil, damaged(path, err.Error())
	}
}

// checkSize refuses the file at path when it is shorter than its last
// transaction: its pages past the end would fault when read through the
// memory map.
func checkSize(path string, o bbolt.Options) error {
	db, err := open(path, o)
	if err != nil {
		return err
	}
	defer db.Close()
	info, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("cannot check state file %q: %w", path, err)
	}
	return db.View(func(tx *bbolt.Tx) error {
		if tx.Size() > info.Size() {
			return damaged(path, fmt.Sprintf("%d bytes long, but its last transaction ends at byte %d: truncated", info.Size(), tx.Size()))
		}
		return nil
	})
}

// check reads db whole in a read-only transaction and reports the first
// damage found.
func check(db *bbolt.DB, path string) error {
	return db.View(func(tx *bbolt.Tx) error {
		// Reading every key and value on this goroutine turns a fault on a
		// page that points outside the file into an error, where Tx.Check's
		// own goroutine would crash the process.
		if err := guard(func() error { return readAll(tx) }); err != nil {
			return damaged(path, err.Error())
		}
		var problems []string
		n := 0
		for err := range tx.Check() { // drained whole, so its goroutine ends
			if n++; n <= maxProblems {
				problems = append(problems, err.Error())
			}
		}
		if n > 0 {
			return damaged(path, fmt.Sprintf("bbolt's consistency check failed: %d problems, the first %q", n, problems))
		}
		return nil
	})
}

// readAll reads every key and value of every bucket of tx.
func readAll(tx *bbolt.Tx) error {
	var sum uint32 // only there to read every byte
	var walk func(b *bbolt.Bucket) error
	walk = func(b *bbolt.Bucket) error {
		return b.ForEach(func(k, v []byte) error {
			sum = crc32.Update(sum, crc32.IEEETable, k)
			if v != nil {
				sum = crc32.Update(sum, crc32.IEEETable, v)
				return nil
			}
			if child := b.Bucket(k); child != nil {
				return walk(child)
			}
			return nil
		})
	}
	return tx.ForEach(func(name []byte, b *bbolt.Bucket) error { return walk(b) })
}

// guard runs f, turning a panic, or a memory fault of the memory-mapped
// file, into an error.
func guard(f func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		r := recover()
		if fault, ok := r.(interface{ Addr() uintptr }); ok {
			err = fmt.Errorf("a page points outside the file (a memory fault at %#x)", fault.Addr())
		} else if r != nil {
			err = fmt.Errorf("bbolt panicked reading it: %v", r)
		}
	}()
	return f()
}

// damaged says that the file at path is damaged, what is, and what to do.
func damaged(path, what string) error {
	return fmt.Errorf("cannot open state file %q: it is damaged (%s); to recover, move the file aside to start with empty state (what it kept is lost) or restore it from a backup: %w", path, what, ErrDamaged)
}

// create makes a new bbolt file at path: written and synced under a
// temporary name, then renamed into place.
func create(path string, o bbolt.Options) error {
	tmp := path + ".new"
	os.Remove(tmp) // left by a crash during an earlier create
	db, err := bbolt.Open(tmp, 0o600, &o)
	if err == nil {
		err = db.Close()
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("cannot create state file %q: %w", path, err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil { // makes the rename durable
		d.Sync()
		d.Close()
	}
	return nil
}
