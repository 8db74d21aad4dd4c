//go:build !race

package runtime

import (
	"context"
	"testing"
)

// TestSessionRunAllocatesNothing runs the batch path over buffers it has
// seen, at several batch sizes as a batcher's buffer sets do: once each
// set of buffers and shapes has its binding, a run allocates nothing.
func TestSessionRunAllocatesNothing(t *testing.T) {
	v := load(t, "pair", ModelConfig{})
	s, err := v.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer v.Release(s)
	const maxRows = 8
	a := make([]byte, maxRows*4*4)
	b := make([]byte, maxRows*2*8)
	ins := []Tensor{{DataType: FP32, Shape: []int64{0, 4}}, {DataType: INT64, Shape: []int64{0, 2}}}
	outs := []Tensor{{Data: make([]byte, maxRows*4)}, {Data: make([]byte, maxRows*2*8)}}
	rows := int64(0)
	run := func() {
		rows = rows%maxRows + 1
		ins[0].Shape[0], ins[0].Data = rows, a[:rows*4*4]
		ins[1].Shape[0], ins[1].Data = rows, b[:rows*2*8]
		if err := s.Run(ins, outs); err != nil {
			t.Fatal(err)
		}
	}
	for range maxRows {
		run()
	}
	if n := testing.AllocsPerRun(200, run); n != 0 {
		t.Fatalf("expected 0 allocations per run, got %f", n)
	}
}
