//go:build !race

package router

import "testing"

func TestTableAllocations(t *testing.T) {
	tbl := mustTable(t, Config{
		Split:  map[string]int{"1": 80, "2": 20},
		Shadow: []Shadow{{"3", 50}, {"4", 100}},
	})
	key := []byte("user-42")
	dst := make([]int, 0, 4)
	var rnd uint64
	f := func(name string, fn func()) {
		t.Helper()
		if n := testing.AllocsPerRun(1000, fn); n != 0 {
			t.Fatalf("%s: expected 0 allocations, got %f", name, n)
		}
	}
	f("random Pick", func() { rnd += golden; tbl.Pick(nil, rnd) })
	f("sticky Pick", func() { tbl.Pick(key, 0) })
	f("Shadows", func() { rnd += golden; dst = tbl.Shadows(0, rnd, dst[:0]) })
}
