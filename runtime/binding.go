package runtime

import (
	"fmt"
	"slices"
	"unsafe"

	ort "github.com/yalue/onnxruntime_go"
)

// maxBindings bounds the I/O bindings a session keeps. Each one pins the
// buffers it points into. A batch worker's session sees the worker's two
// buffer sets at each batch size it runs (a size is its own shape, so its
// own binding); past the bound the least recently used binding goes, so a
// caller that keeps changing buffers costs a binding per run, never memory
// without bound.
const maxBindings = 256

// cachesInputs reports whether a cached I/O binding may keep its inputs
// bound from one run to the next on provider. ONNX Runtime's BindInput
// copies an input to the provider's device when it is bound, not when the
// session runs: on CUDA a binding reused as it is would compute every batch
// from the inputs of the batch that created it. Only on CPU does a bound
// input stay a view of the caller's buffer, read again at each run. Any
// other provider gets its inputs bound again before every run.
func cachesInputs(provider string) bool { return provider == ProviderCPU }

// binding is an ONNX Runtime I/O binding of one set of caller buffers.
type binding struct {
	io *ort.IoBinding
	// values view the buffers: the inputs', in order, then the outputs'.
	values []*ort.CustomDataTensor
	// signature is the buffers' addresses, lengths and shapes it binds,
	// and hash its hash, the binding's key in the cache.
	signature []int64
	hash      uint64
	// prev and next link the cache's recency list.
	prev, next *binding
}

// bindingCache finds the binding of a set of buffers by their signature
// and keeps at most maxBindings of them, dropping the least recently used.
// It belongs to one Session and shares its one-caller-at-a-time rule.
type bindingCache struct {
	byHash map[uint64]*binding
	// lru is the sentinel of a circular list of the bindings in byHash:
	// lru.next is the most recently used, lru.prev the least.
	lru       binding
	signature []int64 // scratch
}

// binding returns the I/O binding of these exact buffers and shapes,
// creating it on first use. Only Run, the batch path, calls it: its
// buffers are a batcher's, which live as long as the session.
func (s *Session) binding(inputs, outputs []Tensor) (*binding, error) {
	c := &s.bindings
	c.signature = appendSignature(appendSignature(c.signature[:0], inputs), outputs)
	b, h := c.get(c.signature)
	if b != nil {
		if !s.cachesInputs {
			if err := s.rebindInputs(b); err != nil {
				c.remove(b) // half bound: never reuse it
				return nil, err
			}
		}
		return b, nil
	}
	b, err := s.newBinding(inputs, outputs)
	if err != nil {
		return nil, err
	}
	b.signature, b.hash = slices.Clone(c.signature), h
	c.add(b)
	return b, nil
}

func (s *Session) newBinding(inputs, outputs []Tensor) (*binding, error) {
	io, err := s.ort.CreateIoBinding()
	if err != nil {
		return nil, fmt.Errorf("cannot create I/O binding: %w", err)
	}
	b := &binding{io: io}
	bind := func(t Tensor, name string, bindFunc func(string, ort.Value) error) error {
		v, err := ort.NewCustomDataTensor(ort.Shape(t.Shape), t.Data, ort.TensorElementDataType(t.DataType))
		if err != nil {
			return fmt.Errorf("cannot bind tensor %q: %w", name, err)
		}
		b.values = append(b.values, v)
		if err := bindFunc(name, v); err != nil {
			return fmt.Errorf("cannot bind tensor %q: %w", name, err)
		}
		return nil
	}
	for i, t := range inputs {
		if err := bind(t, s.inputs[i].Name, io.BindInput); err != nil {
			b.destroy()
			return nil, err
		}
	}
	for i, t := range outputs {
		if err := bind(t, s.outputs[i].Name, io.BindOutput); err != nil {
			b.destroy()
			return nil, err
		}
	}
	return b, nil
}

// rebindInputs binds b's inputs again, so that a provider that copies
// inputs at bind time (see cachesInputs) copies this run's bytes. The ORT
// values still view the same buffers, since the signature matched.
func (s *Session) rebindInputs(b *binding) error {
	b.io.ClearBoundInputs()
	for i, v := range b.values[:len(s.inputs)] {
		if err := b.io.BindInput(s.inputs[i].Name, v); err != nil {
			return fmt.Errorf("cannot bind tensor %q again: %w", s.inputs[i].Name, err)
		}
	}
	return nil
}

func (b *binding) destroy() {
	b.io.Destroy()
	for _, v := range b.values {
		v.Destroy()
	}
}

// get returns the binding of signature sig and marks it the most recently
// used, or nil; and sig's hash.
func (c *bindingCache) get(sig []int64) (*binding, uint64) {
	if b := c.lru.next; b != nil && b != &c.lru && slices.Equal(b.signature, sig) {
		return b, b.hash // the buffers of the last run again, as a batch worker's mostly are
	}
	h := hashSignature(sig)
	b := c.byHash[h]
	if b == nil || !slices.Equal(b.signature, sig) {
		return nil, h
	}
	c.unlink(b)
	c.pushFront(b)
	return b, h
}

// add caches b as the most recently used binding. It drops the binding of
// another signature with the same hash, and the least recently used one
// when the cache is full.
func (c *bindingCache) add(b *binding) {
	if c.byHash == nil {
		c.byHash = make(map[uint64]*binding)
		c.lru.prev, c.lru.next = &c.lru, &c.lru
	}
	if old := c.byHash[b.hash]; old != nil {
		c.remove(old)
	}
	if len(c.byHash) >= maxBindings {
		c.remove(c.lru.prev)
	}
	c.byHash[b.hash] = b
	c.pushFront(b)
}

// remove drops b from the cache and destroys it.
func (c *bindingCache) remove(b *binding) {
	if c.byHash[b.hash] != b {
		panic("BUG: removing a binding the cache does not hold")
	}
	delete(c.byHash, b.hash)
	c.unlink(b)
	b.destroy()
}

func (c *bindingCache) unlink(b *binding) {
	b.prev.next, b.next.prev = b.next, b.prev
	b.prev, b.next = nil, nil
}

func (c *bindingCache) pushFront(b *binding) {
	b.prev, b.next = &c.lru, c.lru.next
	c.lru.next.prev = b
	c.lru.next = b
}

// clear destroys every cached binding.
func (c *bindingCache) clear() {
	for _, b := range c.byHash {
		b.destroy()
	}
	clear(c.byHash)
	c.lru.prev, c.lru.next = &c.lru, &c.lru
}

// appendSignature appends each tensor's address, length, type and shape.
func appendSignature(dst []int64, ts []Tensor) []int64 {
	for _, t := range ts {
		dst = append(dst, int64(uintptr(unsafe.Pointer(unsafe.SliceData(t.Data)))), int64(len(t.Data)), int64(t.DataType), int64(len(t.Shape)))
		dst = append(dst, t.Shape...)
	}
	return dst
}

// hashSignature is FNV-1a over the signature's words.
func hashSignature(sig []int64) uint64 {
	h := uint64(14695981039346656037)
	for _, w := range sig {
		h ^= uint64(w)
		h *= 1099511628211
	}
	return h
}
