//go:build !race

package batcher

import (
	"context"
	"testing"
)

// noopRunner computes nothing, so that only the batcher's own costs show.
type noopRunner struct{}

func (noopRunner) Run(rows int, in, out [][]byte) error { return nil }

func TestDoAllocatesNothing(t *testing.T) {
	f := func(cfg Config) {
		t.Helper()
		layout := Layout{InputRowBytes: []int{16, 4}, OutputRowBytes: []int{8}}
		b, err := New(cfg, layout, []Runner{noopRunner{}, noopRunner{}}, `test="allocs"`)
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		in0, in1 := make([]byte, 2*16), make([]byte, 2*4)
		ctx := context.Background()
		do := func() {
			r := AcquireRequest()
			r.Rows = 2
			r.Inputs = append(r.Inputs, in0, in1)
			if err := b.Do(ctx, r); err != nil {
				t.Fatal(err)
			}
			if len(r.Outputs) != 1 || len(r.Outputs[0]) != 2*8 {
				t.Fatalf("got %d outputs", len(r.Outputs))
			}
			ReleaseRequest(r)
		}
		for range 10 {
			do() // fill the pools
		}
		if n := testing.AllocsPerRun(1000, do); n != 0 {
			t.Fatalf("%+v: expected 0 allocations per request, got %f", cfg, n)
		}
	}
	f(Config{MaxBatchSize: 8})
	f(Config{MaxBatchSize: 8, PreferredBatchSizes: []int{4}, PriorityLevels: 2})
	f(Config{MaxBatchSize: 8, MaxQueueDelay: Delay{Duration: 1}})
	f(Config{})
}
