package runtime

import (
	"bytes"
	"context"
	goruntime "runtime"
	"slices"
	"testing"
	"time"
)

// int64Rows returns an INT64[rows,4] tensor whose first byte is mark.
func int64Rows(rows int64, mark byte) Tensor {
	t := Tensor{DataType: INT64, Shape: []int64{rows, 4}, Data: make([]byte, rows*4*8)}
	t.Data[0] = mark
	return t
}

// cachedBinding returns the binding s caches for these buffers, or nil.
func cachedBinding(s *Session, inputs, outputs []Tensor) *binding {
	b, _ := s.bindings.get(appendSignature(appendSignature(nil, inputs), outputs))
	return b
}

// checkRecencyList fails unless the cache's list links exactly its bindings.
func checkRecencyList(t *testing.T, c *bindingCache) {
	t.Helper()
	n := 0
	for b := c.lru.next; b != &c.lru; b = b.next {
		if b.next.prev != b || c.byHash[b.hash] != b {
			t.Fatalf("binding %d of the recency list is not linked or not cached", n)
		}
		n++
	}
	if n != len(c.byHash) {
		t.Fatalf("the recency list links %d bindings, the cache holds %d", n, len(c.byHash))
	}
}

// TestBindingCacheEvictsLeastRecentlyUsed fills a session's cache past its
// bound with one-off buffers while one set of buffers runs between each of
// them: that set keeps its binding throughout, and only one binding goes
// per new one.
func TestBindingCacheEvictsLeastRecentlyUsed(t *testing.T) {
	v := load(t, "echo_int64", ModelConfig{})
	s, err := v.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer v.Release(s)
	run := func(in Tensor, out []Tensor) {
		t.Helper()
		if err := s.Run([]Tensor{in}, out); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out[0].Data, in.Data) {
			t.Fatalf("got %v, want the input back", out[0].Data[:8])
		}
	}
	hotIn, hotOut := int64Rows(2, 1), make([]Tensor, 1)
	run(hotIn, hotOut)
	hot := cachedBinding(s, []Tensor{hotIn}, hotOut)
	if hot == nil {
		t.Fatal("Run cached no binding")
	}
	var first []Tensor
	for i := range 2 * maxBindings {
		in, out := int64Rows(int64(1+i%5), byte(i)), make([]Tensor, 1)
		run(in, out)
		if i == 0 {
			first = []Tensor{in, out[0]}
		}
		if n := len(s.bindings.byHash); n != min(i+2, maxBindings) {
			t.Fatalf("run %d: %d bindings cached, want %d", i, n, min(i+2, maxBindings))
		}
		run(hotIn, hotOut)
	}
	checkRecencyList(t, &s.bindings)
	if got := cachedBinding(s, []Tensor{hotIn}, hotOut); got != hot {
		t.Fatal("the binding used on every other run was evicted")
	}
	if cachedBinding(s, first[:1], first[1:]) != nil {
		t.Fatal("the least recently used binding is still cached")
	}
}

// TestModelVersionRunKeepsNoBuffers runs a version's direct path over
// buffers made for one request: the session caches no binding of them,
// and the garbage collector can free them once Run returned.
func TestModelVersionRunKeepsNoBuffers(t *testing.T) {
	v := load(t, "echo_int64", ModelConfig{})
	freed := make(chan struct{}, 20)
	for i := range 10 {
		runOnce(t, v, int64(1+i%3), byte(i), freed)
	}
	s, err := v.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	n := len(s.bindings.byHash)
	v.Release(s)
	if n != 0 {
		t.Fatalf("the direct path (with the warm-up) left %d bindings cached, want 0", n)
	}
	for deadline := time.Now().Add(10 * time.Second); len(freed) < 20; {
		if time.Now().After(deadline) {
			t.Fatalf("%d of 20 request buffers freed: the session keeps the others", len(freed))
		}
		goruntime.GC()
		time.Sleep(time.Millisecond)
	}
}

// runOnce runs one request on v and lets its buffers go, reporting each
// one's collection on freed.
func runOnce(t *testing.T, v *ModelVersion, rows int64, mark byte, freed chan struct{}) {
	t.Helper()
	in := int64Rows(rows, mark)
	out := []Tensor{{Data: make([]byte, 0, rows*4*8)}}
	outData := &out[0].Data[:1][0]
	if err := v.Run(context.Background(), []Tensor{in}, out); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out[0].Data, in.Data) || !slices.Equal(out[0].Shape, in.Shape) {
		t.Fatalf("got %v %v, want the input back", out[0].Shape, out[0].Data[:8])
	}
	if &out[0].Data[0] != outData {
		t.Fatal("the output was not written into the caller's buffer")
	}
	report := func(ch chan struct{}) { ch <- struct{}{} }
	goruntime.AddCleanup(&in.Data[0], report, freed)
	goruntime.AddCleanup(outData, report, freed)
}

func TestCachesInputs(t *testing.T) {
	f := func(provider string, want bool) {
		t.Helper()
		if got := cachesInputs(provider); got != want {
			t.Fatalf("cachesInputs(%q) = %v, want %v", provider, got, want)
		}
	}
	f(ProviderCPU, true)
	f(ProviderCUDA, false) // BindInput copies to the device: bind every run
	f("", false)           // an unknown provider is treated like a device

	s, err := testEnv.NewSession(fixture("echo_fp32") + "/1/model.onnx")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.cachesInputs != cachesInputs(s.Provider()) {
		t.Fatalf("a session on %q has cachesInputs %v", s.Provider(), s.cachesInputs)
	}
}

// TestCachedBindingReadsNewInputs writes new rows into the same buffers
// before each run, as a batcher does, with inputs kept bound (CPU) and
// bound again each run (the path of every other provider, taken here on
// CPU): each run computes from the bytes the buffers hold now, and the
// buffers keep their one binding.
func TestCachedBindingReadsNewInputs(t *testing.T) {
	v := load(t, "echo_int64", ModelConfig{})
	s, err := v.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer v.Release(s)
	defer func() { s.cachesInputs = cachesInputs(s.Provider()) }()
	for _, keep := range []bool{true, false} {
		s.cachesInputs = keep
		in, out := int64Rows(3, 0), make([]Tensor, 1)
		var first *binding
		for i := range 5 {
			for j := range in.Data {
				in.Data[j] = byte(i*7 + j)
			}
			if err := s.Run([]Tensor{in}, out); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out[0].Data, in.Data) {
				t.Fatalf("inputs kept bound %v, run %d: got %v, want this run's input %v", keep, i, out[0].Data[:8], in.Data[:8])
			}
			b := cachedBinding(s, []Tensor{in}, out)
			if i == 0 {
				first = b
			}
			if b == nil || b != first {
				t.Fatalf("inputs kept bound %v, run %d: the buffers got a new binding", keep, i)
			}
		}
	}
}
