package router

import (
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"testing"
)

const requests = 100_000

func mustTable(t *testing.T, cfg Config) *Table {
	t.Helper()
	tbl, err := NewTable(cfg)
	if err != nil {
		t.Fatalf("cannot build table: %v", err)
	}
	return tbl
}

// userKey returns the sticky key of the i-th test user.
func userKey(i int) []byte { return fmt.Appendf(nil, "user-%d", i) }

// checkShares fails unless each version got its weight's share of counts,
// within one percentage point.
func checkShares(t *testing.T, tbl *Table, counts []int, n int) {
	t.Helper()
	total := 0
	for i := range tbl.Len() {
		total += tbl.Weight(i)
	}
	for i, c := range counts {
		got, want := 100*float64(c)/float64(n), 100*float64(tbl.Weight(i))/float64(total)
		if got < want-1 || got > want+1 {
			t.Fatalf("version %s got %.2f%% of requests, want %.2f%% ± 1", tbl.Version(i), got, want)
		}
	}
}

func TestTablePickRandomShares(t *testing.T) {
	f := func(split map[string]int) {
		t.Helper()
		tbl := mustTable(t, Config{Split: split})
		rng := rand.New(rand.NewPCG(1, 2))
		counts := make([]int, tbl.Len())
		for range requests {
			counts[tbl.Pick(nil, rng.Uint64())]++
		}
		checkShares(t, tbl, counts, requests)
	}
	f(map[string]int{"1": 90, "2": 10})
	f(map[string]int{"1": 50, "2": 30, "3": 20})
	f(map[string]int{"a": 1, "b": 1, "c": 1})
	f(map[string]int{"1": 99, "2": 1})
	f(map[string]int{"1": 7, "2": 0, "10": 3})
}

func TestTablePickStickyShares(t *testing.T) {
	f := func(split map[string]int) {
		t.Helper()
		tbl := mustTable(t, Config{Split: split})
		counts := make([]int, tbl.Len())
		for i := range requests {
			counts[tbl.Pick(userKey(i), 0)]++
		}
		checkShares(t, tbl, counts, requests)
	}
	f(map[string]int{"1": 90, "2": 10})
	f(map[string]int{"1": 50, "2": 30, "3": 20})
}

func TestTablePickStickyIsStable(t *testing.T) {
	cfg := Config{Split: map[string]int{"1": 60, "2": 30, "3": 10}}
	a, b := mustTable(t, cfg), mustTable(t, cfg)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range requests {
		key := userKey(i)
		// rnd must not matter when there is a key.
		v := a.Pick(key, rng.Uint64())
		if again := a.Pick(key, rng.Uint64()); again != v {
			t.Fatalf("key %s moved from version %s to %s in one table", key, a.Version(v), a.Version(again))
		}
		if rebuilt := b.Pick(key, rng.Uint64()); b.Version(rebuilt) != a.Version(v) {
			t.Fatalf("key %s moved from version %s to %s in a table rebuilt from the same config", key, a.Version(v), b.Version(rebuilt))
		}
	}
}

// TestTableHashIsStable pins the hash, since every other process and every
// restart must put a key in the same bucket.
func TestTableHashIsStable(t *testing.T) {
	f := func(key string, want uint32) {
		t.Helper()
		fnv1a := fnv.New64a()
		fnv1a.Write([]byte(key))
		if got, want := hashKey([]byte(key)), mix64(fnv1a.Sum64()); got != want {
			t.Fatalf("key %q: got hash %#x, want mix64 of FNV-1a %#x", key, got, want)
		}
		if got := bucketOf(hashKey([]byte(key))); got != want {
			t.Fatalf("key %q: got bucket %d, want %d", key, got, want)
		}
	}
	f("user-1", 2563)
	f("user-2", 6638)
	f("alice@example.com", 3277)

	// An empty header value is no key: it must not send every such caller
	// to one version.
	tbl := mustTable(t, Config{Split: map[string]int{"1": 1, "2": 1}})
	if tbl.Pick([]byte{}, 0) != 0 || tbl.Pick([]byte{}, ^uint64(0)) != 1 {
		t.Fatalf("an empty key did not fall back to rnd")
	}
}

func TestTablePickWeightChangeMovesOnlyMovedBuckets(t *testing.T) {
	before := mustTable(t, Config{Split: map[string]int{"1": 90, "2": 10}})
	after := mustTable(t, Config{Split: map[string]int{"1": 80, "2": 20}})
	moved := 0
	for i := range requests {
		key := userKey(i)
		from, to := before.Version(before.Pick(key, 0)), after.Version(after.Pick(key, 0))
		if from == to {
			continue
		}
		if from != "1" || to != "2" {
			t.Fatalf("key %s moved from version %s to %s, want moves only from 1 to 2", key, from, to)
		}
		if b := bucketOf(hashKey(key)); b < 8000 || b >= 9000 {
			t.Fatalf("key %s in bucket %d moved, want only buckets 8000..8999 to move", key, b)
		}
		moved++
	}
	if share := 100 * float64(moved) / requests; share < 9 || share > 11 {
		t.Fatalf("%.2f%% of keys moved, want 10%% ± 1", share)
	}
}

func TestTablePickEdgeCases(t *testing.T) {
	f := func(split map[string]int, want string) {
		t.Helper()
		tbl := mustTable(t, Config{Split: split})
		rng := rand.New(rand.NewPCG(5, 6))
		for i := range requests {
			if got := tbl.Version(tbl.Pick(nil, rng.Uint64())); got != want {
				t.Fatalf("split %v: a random request went to version %s, want %s", split, got, want)
			}
			if got := tbl.Version(tbl.Pick(userKey(i), 0)); got != want {
				t.Fatalf("split %v: a sticky request went to version %s, want %s", split, got, want)
			}
		}
	}
	f(map[string]int{"1": 1}, "1")
	f(map[string]int{"1": 0, "2": 5}, "2")
	f(map[string]int{"1": 5, "2": 0}, "1")
	f(map[string]int{"1": 0, "2": 5, "3": 0}, "2")

	// The extremes of rnd land in the first and last owned buckets.
	tbl := mustTable(t, Config{Split: map[string]int{"1": 1, "2": 1}})
	if got := tbl.Version(tbl.Pick(nil, 0)); got != "1" {
		t.Fatalf("rnd 0 went to version %s, want 1", got)
	}
	if got := tbl.Version(tbl.Pick(nil, ^uint64(0))); got != "2" {
		t.Fatalf("the largest rnd went to version %s, want 2", got)
	}
}

func TestTableVersions(t *testing.T) {
	tbl := mustTable(t, Config{Split: map[string]int{"10": 1, "2": 1, "b": 0, "a": 0}, Shadow: []Shadow{{"3", 5}, {"2", 5}}})
	want := []string{"2", "3", "10", "a", "b"}
	if tbl.Len() != len(want) {
		t.Fatalf("got %d versions, want %d", tbl.Len(), len(want))
	}
	for i, v := range want {
		if tbl.Version(i) != v || tbl.Index(v) != i {
			t.Fatalf("index %d: got version %s (index of %s: %d), want %s", i, tbl.Version(i), v, tbl.Index(v), v)
		}
	}
	if tbl.Index("7") != -1 {
		t.Fatalf("an unknown version has index %d, want -1", tbl.Index("7"))
	}
	if tbl.Weight(tbl.Index("3")) != 0 {
		t.Fatalf("a shadow-only version has weight %d, want 0", tbl.Weight(tbl.Index("3")))
	}
}

func TestNewTableErrors(t *testing.T) {
	f := func(cfg Config, want error) {
		t.Helper()
		if _, err := NewTable(cfg); !errors.Is(err, want) {
			t.Fatalf("got error %v, want %v", err, want)
		}
	}
	f(Config{}, ErrNoTraffic)
	f(Config{Split: map[string]int{"1": 0}}, ErrNoTraffic)
	f(Config{Shadow: []Shadow{{"1", 10}}}, ErrNoTraffic)
	if _, err := NewTable(Config{Split: map[string]int{"1": -1, "2": 3}}); err == nil {
		t.Fatalf("a negative weight built a table")
	}
}

func TestTableShadows(t *testing.T) {
	f := func(shadows []Shadow) {
		t.Helper()
		tbl := mustTable(t, Config{Split: map[string]int{"1": 100}, Shadow: shadows})
		rng := rand.New(rand.NewPCG(7, 8))
		counts := make([]int, tbl.Len())
		var dst []int
		for range requests {
			rnd := rng.Uint64()
			// The same rnd picks and samples, as the gateway may do.
			dst = tbl.Shadows(tbl.Pick(nil, rnd), rnd, dst[:0])
			for _, i := range dst {
				counts[i]++
			}
		}
		for _, s := range shadows {
			got := 100 * float64(counts[tbl.Index(s.Version)]) / requests
			if got < s.Percent-1 || got > s.Percent+1 {
				t.Fatalf("shadow %s got %.2f%% of requests, want %.2f%% ± 1", s.Version, got, s.Percent)
			}
		}
	}
	f([]Shadow{{"2", 10}})
	f([]Shadow{{"2", 50}, {"3", 25}})
	f([]Shadow{{"2", 0.5}, {"3", 99}})
	f([]Shadow{{"2", 100}})
}

func TestTableShadowsSkipThePickedVersion(t *testing.T) {
	tbl := mustTable(t, Config{Split: map[string]int{"1": 50, "2": 50}, Shadow: []Shadow{{"2", 100}}})
	rng := rand.New(rand.NewPCG(9, 10))
	for range 1000 {
		rnd := rng.Uint64()
		picked := tbl.Pick(nil, rnd)
		got := tbl.Shadows(picked, rnd, nil)
		want := 1
		if tbl.Version(picked) == "2" {
			want = 0
		}
		if len(got) != want {
			t.Fatalf("a request served by version %s was copied to %d shadows, want %d", tbl.Version(picked), len(got), want)
		}
	}
}
