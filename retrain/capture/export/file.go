package export

import (
	"fmt"
	"os"
	"path/filepath"
)

// File is an export being written to path: into a temporary file beside
// it (path+".<random>.tmp"), renamed to path by Commit, so that an export that fails or is interrupted leaves no
// half file at path (Abort removes the temporary one). It is not safe for
// concurrent use.
type File struct {
	*Writer
	path string
	f    *os.File
}

// Create starts an export of rows laid out by l, in format f, to path.
// Exports to one path at once do not mix: the last to commit wins.
func Create(path string, f Format, l Layout, o Options) (*File, error) {
	out, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*.tmp")
	if err != nil {
		return nil, fmt.Errorf("cannot create the export: %w", err)
	}
	if err := out.Chmod(0o644); err != nil {
		out.Close()
		os.Remove(out.Name())
		return nil, fmt.Errorf("cannot create the export: %w", err)
	}
	w, err := NewWriter(out, f, l, o)
	if err != nil {
		out.Close()
		os.Remove(out.Name())
		return nil, err
	}
	return &File{Writer: w, path: path, f: out}, nil
}

// Commit finishes the file, syncs it and renames it to its path. On an
// error the temporary file is removed.
func (f *File) Commit() error {
	if f.f == nil {
		return fmt.Errorf("cannot commit the export to %s: it was aborted or committed", f.path)
	}
	err := f.Writer.Close()
	if err == nil {
		err = f.f.Sync()
	}
	if cerr := f.f.Close(); err == nil {
		err = cerr
	}
	tmp := f.f.Name()
	f.f = nil
	if err == nil {
		err = os.Rename(tmp, f.path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("cannot write the export to %s: %w", f.path, err)
	}
	if d, derr := os.Open(filepath.Dir(f.path)); derr == nil {
		d.Sync() // the rename survives a crash; best effort
		d.Close()
	}
	return nil
}

// Abort removes the temporary file; after Commit it does nothing.
func (f *File) Abort() {
	if f.f == nil {
		return
	}
	tmp := f.f.Name()
	f.f.Close()
	f.f = nil
	os.Remove(tmp)
}
