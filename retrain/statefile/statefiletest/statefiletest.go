// Package statefiletest damages bbolt state files the ways that failing
// disks, crashes and people do, for the tests of code that opens them with
// statefile.Open. Its functions are safe for concurrent use on different
// files; the file must not be open.
package statefiletest

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"

	"go.etcd.io/bbolt"
)

// Damage is one way of damaging a state file.
type Damage struct {
	Name  string
	Apply func(t testing.TB, path string)
}

// Seeds are fixed seeds for Damages and RandomizePage: a test that draws
// its damage with them fails the same way on every run.
var Seeds = []uint64{1, 2, 3}

// Damages returns the damages a state file must be refused for: truncated
// to half its size, its data pages zeroed, emptied, and, for each of seeds,
// random bytes over one of the pages in use, drawn with that seed and
// named with it, so that a failure names the seed that reproduces it.
func Damages(seeds ...uint64) []Damage {
	damages := []Damage{
		{"truncated by half", TruncateHalf},
		{"data pages zeroed", ZeroDataPages},
		{"0 bytes", func(t testing.TB, path string) { truncate(t, path, 0) }},
	}
	for _, seed := range seeds {
		damages = append(damages, Damage{fmt.Sprintf("random bytes over a page in use, seed %d", seed), func(t testing.TB, path string) {
			pages := UsedPages(t, path)
			r := rand.New(rand.NewPCG(seed, 0))
			RandomizePage(t, path, pages[r.IntN(len(pages))], seed)
		}})
	}
	return damages
}

// TruncateHalf truncates the file at path to half its size.
func TruncateHalf(t testing.TB, path string) {
	t.Helper()
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	truncate(t, path, info.Size()/2)
}

// ZeroDataPages overwrites every page after the two meta pages with zeros.
func ZeroDataPages(t testing.TB, path string) {
	t.Helper()
	data, pageSize := read(t, path)
	clear(data[2*pageSize:])
	write(t, path, data)
}

// UsedPages returns the ids of the pages, other than the meta pages, that
// the file's last transaction uses (not free ones), each once, overflow
// pages left out.
func UsedPages(t testing.TB, path string) []int {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var ids []int
	db.View(func(tx *bbolt.Tx) error {
		ids = UsedPagesTx(tx)
		return nil
	})
	return ids
}

// UsedPagesTx is UsedPages of tx, which must be of a DB opened read-write.
func UsedPagesTx(tx *bbolt.Tx) []int {
	var ids []int
	for id := 2; ; {
		info, err := tx.Page(id)
		if err != nil || info == nil {
			return ids
		}
		if info.Type == "free" {
			id++
			continue
		}
		ids = append(ids, id)
		id += 1 + info.OverflowCount
	}
}

// RandomizePage overwrites page id with random bytes drawn with seed.
func RandomizePage(t testing.TB, path string, id int, seed uint64) {
	t.Helper()
	data, pageSize := read(t, path)
	r := rand.New(rand.NewPCG(seed, uint64(id)))
	for i := id * pageSize; i < (id+1)*pageSize; i++ {
		data[i] = byte(r.Uint32())
	}
	write(t, path, data)
}

// PointPastEnd makes bucket's root page id, wherever the file holds it,
// point far past the end of the file, as a flipped bit in a page id does.
func PointPastEnd(t testing.TB, path string, bucket []byte) {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	var root uint64
	err = db.View(func(tx *bbolt.Tx) error {
		root = uint64(tx.Bucket(bucket).RootPage())
		return nil
	})
	db.Close()
	if err != nil || root == 0 {
		t.Fatalf("bucket %q has no root page of its own (err %v): store more in it", bucket, err)
	}
	data, _ := read(t, path)
	// A bucket's value is its root page id then its sequence, little endian
	// (the machine's order on the platforms bbolt runs on).
	old := append(bytes.Clone(bucket), le(root)...)
	n := bytes.Count(data, old)
	if n == 0 {
		t.Fatalf("cannot find bucket %q's root page id in %s", bucket, path)
	}
	data = bytes.ReplaceAll(data, old, append(bytes.Clone(bucket), le(1<<24)...))
	write(t, path, data)
}

func le(v uint64) []byte {
	b := make([]byte, 8)
	for i := range b {
		b[i] = byte(v >> (8 * i))
	}
	return b
}

func truncate(t testing.TB, path string, size int64) {
	t.Helper()
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
}

// read returns the file's bytes and its page size, from its first meta page.
func read(t testing.TB, path string) ([]byte, int) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	return data, db.Info().PageSize
}

func write(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}
