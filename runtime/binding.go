package runtime

import (
	"fmt"
	"slices"
	"unsafe"

	ort "github.com/yalue/onnxruntime_go"
)

// maxBindings bounds the I/O bindings a session keeps; each one pins the
// buffers it points into, so a caller that keeps changing buffers cannot
// grow it without bound.
const maxBindings = 256

// binding is an ONNX Runtime I/O binding of one set of caller buffers.
type binding struct {
	io     *ort.IoBinding
	values []*ort.CustomDataTensor
	// signature is the buffers' addresses, lengths and shapes it binds.
	signature []int64
}

// bindingCache finds the binding of a set of buffers by their signature.
// It belongs to one Session and shares its one-caller-at-a-time rule.
type bindingCache struct {
	byHash    map[uint64]*binding
	signature []int64 // scratch
}

// binding returns the I/O binding of these exact buffers and shapes,
// creating it on first use.
func (s *Session) binding(inputs, outputs []Tensor) (*binding, error) {
	c := &s.bindings
	c.signature = appendSignature(appendSignature(c.signature[:0], inputs), outputs)
	h := hashSignature(c.signature)
	if b := c.byHash[h]; b != nil && slices.Equal(b.signature, c.signature) {
		return b, nil
	}
	b, err := s.newBinding(inputs, outputs)
	if err != nil {
		return nil, err
	}
	b.signature = slices.Clone(c.signature)
	if len(c.byHash) >= maxBindings {
		c.clear()
	}
	if c.byHash == nil {
		c.byHash = make(map[uint64]*binding)
	}
	if old := c.byHash[h]; old != nil {
		old.destroy()
	}
	c.byHash[h] = b
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

func (b *binding) destroy() {
	b.io.Destroy()
	for _, v := range b.values {
		v.Destroy()
	}
}

func (c *bindingCache) clear() {
	for _, b := range c.byHash {
		b.destroy()
	}
	clear(c.byHash)
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
