package inferencepb

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// stubs are the files protoc generates from grpc_service.proto.
var stubs = []string{"grpc_service.pb.go", "grpc_service_grpc.pb.go"}

// TestStubsUpToDate regenerates the stubs with protoc and the plugins `make
// protoc` pins into .cache/bin, and fails when they differ from the
// committed ones. Only the line naming protoc's own version is left out of
// the comparison: it differs between distributions' protoc without changing
// the code.
func TestStubsUpToDate(t *testing.T) {
	root := moduleRoot(t)
	bin := filepath.Join(root, ".cache", "bin")
	protoc, err := exec.LookPath("protoc")
	if err != nil {
		t.Fatalf("cannot find protoc: %v; run `make protoc`", err)
	}
	makefile, err := os.ReadFile(filepath.Join(root, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	goVersion := makeVariable(t, makefile, "PROTOC_GEN_GO_VERSION")
	grpcVersion := makeVariable(t, makefile, "PROTOC_GEN_GO_GRPC_VERSION")
	if want := protobufVersion(t, root); goVersion != want {
		t.Fatalf("Makefile pins protoc-gen-go %s but go.mod has google.golang.org/protobuf %s", goVersion, want)
	}
	env := []string{"PATH=" + bin + string(os.PathListSeparator) + filepath.Dir(protoc)}
	plugin := func(name, want string) string {
		path := filepath.Join(bin, name)
		cmd := exec.Command(path, "--version")
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("cannot run %s: %v %s; run `make protoc`", path, err, out)
		}
		if got := strings.TrimSpace(string(out)); got != name+" "+want {
			t.Fatalf("%s is %q, not the pinned %s; run `make protoc`", path, got, want)
		}
		return path
	}
	genGo := plugin("protoc-gen-go", goVersion)
	genGRPC := plugin("protoc-gen-go-grpc", strings.TrimPrefix(grpcVersion, "v"))

	out := t.TempDir()
	cmd := exec.Command(protoc, "-I", ".",
		"--plugin=protoc-gen-go="+genGo, "--plugin=protoc-gen-go-grpc="+genGRPC,
		"--go_out="+out, "--go_opt=paths=source_relative",
		"--go-grpc_out="+out, "--go-grpc_opt=paths=source_relative",
		"grpc_service.proto")
	cmd.Env = env
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cannot run protoc on grpc_service.proto: %v\n%s", err, msg)
	}
	generated, err := os.ReadDir(out)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range generated {
		names = append(names, e.Name())
	}
	if fmt.Sprint(names) != fmt.Sprint(stubs) {
		t.Fatalf("protoc generated %v; want %v", names, stubs)
	}
	for _, name := range stubs {
		want, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(name)
		if err != nil {
			t.Fatalf("cannot read the committed %s: %v; run `make proto`", name, err)
		}
		if line, ok := firstDifference(got, want); !ok {
			t.Errorf("%s differs from what grpc_service.proto generates (line %d); run `make proto` and commit it", name, line)
		}
	}
}

// protocVersionLine matches the header line naming protoc's version, in
// either plugin's spelling.
var protocVersionLine = regexp.MustCompile(`^//\s+(- )?protoc\s+(v\S+|\(unknown\))$`)

// firstDifference compares a and b line by line, ignoring the lines that name
// protoc's version, and returns the first differing line's number when they
// differ.
func firstDifference(a, b []byte) (int, bool) {
	al, bl := bytes.Split(a, []byte("\n")), bytes.Split(b, []byte("\n"))
	for i := range max(len(al), len(bl)) {
		if i >= len(al) || i >= len(bl) {
			return i + 1, false
		}
		if bytes.Equal(al[i], bl[i]) {
			continue
		}
		if protocVersionLine.Match(al[i]) && protocVersionLine.Match(bl[i]) {
			continue
		}
		return i + 1, false
	}
	return 0, true
}

// moduleRoot returns the folder of the module's go.mod.
func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("cannot find go.mod above the package")
		}
		dir = parent
	}
}

// makeVariable returns the value the Makefile gives name with :=.
func makeVariable(t *testing.T, makefile []byte, name string) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + name + `\s*:=\s*(\S+)\s*$`).FindSubmatch(makefile)
	if m == nil {
		t.Fatalf("cannot find %s in the Makefile", name)
	}
	return string(m[1])
}

// protobufVersion returns the version of google.golang.org/protobuf that
// the go.mod in root requires.
func protobufVersion(t *testing.T, root string) string {
	t.Helper()
	gomod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*(?:require\s+)?google\.golang\.org/protobuf\s+(v\S+)`).FindSubmatch(gomod)
	if m == nil {
		t.Fatal("cannot find google.golang.org/protobuf in go.mod")
	}
	return string(m[1])
}
