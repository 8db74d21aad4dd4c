package natscluster

import (
	"bufio"
	"debug/buildinfo"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// BinaryEnv names an environment variable holding the path of the
// nats-server binary to run instead of the one `make nats-server` builds.
const BinaryEnv = "INFERGATE_NATS_SERVER"

// BinaryPath is where `make nats-server` builds the server, relative to
// the module root.
const BinaryPath = ".cache/bin/nats-server"

// serverModule is the module whose version go.mod pins and the binary must
// be built from.
const serverModule = "github.com/nats-io/nats-server/v2"

// binary returns the nats-server to run: $INFERGATE_NATS_SERVER, else
// .cache/bin/nats-server of the module root above the working directory.
// It fails t when there is none, or when the built one is of another
// version than go.mod pins (go.mod changed and `make nats-server` was not
// run since).
func binary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv(BinaryEnv); p != "" {
		if err := executable(p); err != nil {
			t.Fatalf("natscluster: $%s: %v", BinaryEnv, err)
		}
		return p
	}
	root, err := moduleRoot()
	if err != nil {
		t.Fatalf("natscluster: cannot find the nats-server binary: %v (run `make nats-server`, or set $%s to a nats-server binary)", err, BinaryEnv)
	}
	p := filepath.Join(root, BinaryPath)
	if err := executable(p); err != nil {
		t.Fatalf("natscluster: %v: run `make nats-server` in %s to build it from the version go.mod pins (or set $%s to a nats-server binary)", err, root, BinaryEnv)
	}
	pinned := pinnedVersion(filepath.Join(root, "go.mod"))
	built := builtVersion(p)
	if pinned != "" && built != "" && pinned != built {
		t.Fatalf("natscluster: %s is nats-server %s but go.mod pins %s: run `make nats-server` in %s", p, built, pinned, root)
	}
	return p
}

// executable returns an error unless path is an executable file.
func executable(path string) error {
	info, err := os.Stat(path)
	switch {
	case err != nil:
		return err
	case info.IsDir() || info.Mode().Perm()&0o111 == 0:
		return errors.New(path + " is not an executable file")
	}
	return nil
}

// moduleRoot returns the nearest folder at or above the working directory
// that holds a go.mod.
func moduleRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		if filepath.Dir(dir) == dir {
			return "", errors.New("no go.mod at or above " + wd)
		}
	}
}

// pinnedVersion returns the version of serverModule that go.mod requires,
// or "" when it cannot tell.
func pinnedVersion(goMod string) string {
	f, err := os.Open(goMod)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(strings.TrimPrefix(strings.TrimSpace(sc.Text()), "require "))
		if len(fields) >= 2 && fields[0] == serverModule {
			return fields[1]
		}
	}
	return ""
}

// builtVersion returns the version of serverModule that the binary at path
// was built from (as its main module or a dependency), or "" when it
// cannot tell.
func builtVersion(path string) string {
	info, err := buildinfo.ReadFile(path)
	if err != nil {
		return ""
	}
	if info.Main.Path == serverModule {
		return info.Main.Version
	}
	for _, dep := range info.Deps {
		if dep.Path == serverModule {
			if dep.Replace != nil {
				return dep.Replace.Version
			}
			return dep.Version
		}
	}
	return ""
}
