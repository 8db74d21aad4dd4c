package runtime

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// LibraryEnv names the environment variable that may point at the ONNX
// Runtime shared library.
const LibraryEnv = "ONNXRUNTIME_LIB"

// LibraryCachePath is where `make onnxruntime` puts the library, relative to
// the project root.
const LibraryCachePath = ".cache/onnxruntime/libonnxruntime.so.1"

// ErrNoLibrary says that no ONNX Runtime library was found and how to get one.
var ErrNoLibrary = errors.New("runtime: no ONNX Runtime library found: set runtime.library in the config, " +
	"or the " + LibraryEnv + " environment variable, to the path of libonnxruntime.so; " +
	"or run `make onnxruntime` in the project to download ONNX Runtime 1.24.3 into " + LibraryCachePath)

// ResolveLibrary returns the path of the ONNX Runtime shared library to load:
// configured if set, else $ONNXRUNTIME_LIB, else the project cache found in
// the working directory or one of its parents.
func ResolveLibrary(configured string) (string, error) {
	for _, p := range []string{configured, os.Getenv(LibraryEnv)} {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("cannot use ONNX Runtime library %q: %w", p, err)
		}
		return p, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("cannot find ONNX Runtime library: %w", err)
	}
	for {
		p := filepath.Join(dir, LibraryCachePath)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", ErrNoLibrary
		}
		dir = parent
	}
}
