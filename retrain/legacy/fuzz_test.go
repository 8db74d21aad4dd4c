package legacy

import (
	"errors"
	"strings"
	"testing"
)

// FuzzOpen reads arbitrary bytes as a state file, seeded with the
// fixtures cut to their last page: the reader and both decoders must
// answer with what they read or an error that wraps ErrDamaged and names
// the file, never panic. The seeds are tens of KiB, which the fuzzer takes
// long to minimize; run it with a short -fuzzminimizetime (2s).
func FuzzOpen(f *testing.F) {
	for _, name := range []string{"small.db", "infergate.db", "retrain.db"} {
		data := fixture(f, name)
		m, problem := readMeta(data, 0)
		if problem != "" {
			f.Fatalf("%s: %s", name, problem)
		}
		f.Add(data[:m.pages*m.pageSize])
	}
	f.Add([]byte{})
	f.Add(make([]byte, 4096))
	f.Fuzz(func(t *testing.T, data []byte) {
		const path = "fuzz/infergate.db"
		file, err := parse(path, data)
		if err != nil {
			if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), recovery) {
				t.Fatalf("error %v does not wrap ErrDamaged, name the file and say how to recover", err)
			}
			return
		}
		for _, b := range file.Buckets() {
			n := 0
			err := file.ForEach(b, func(k, v []byte) error {
				n++
				if len(k) == 0 {
					t.Fatalf("bucket %q: an empty key", b)
				}
				if got := file.Get(b, k); string(got) != string(v) {
					t.Fatalf("bucket %q: Get(%q) = %q, ForEach gave %q", b, k, got, v)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			file.Sequence(b)
		}
		for _, decode := range []func() error{
			func() error { _, err := file.gateway(); return err },
			func() error { _, err := file.retrain(); return err },
		} {
			if err := decode(); err != nil && (!errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), path)) {
				t.Fatalf("decoding: %v does not wrap ErrDamaged and name the file", err)
			}
		}
	})
}
