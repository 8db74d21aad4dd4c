//go:build !race

package v2codec

import "testing"

// The gRPC ModelInfer path decodes every request with ParseProto and
// DecodeProtoWire: with pooled requests, they must not allocate.
func TestDecodeProtoWireAllocations(t *testing.T) {
	f := func(name string, b []byte) {
		t.Helper()
		decode := func() {
			r := AcquireRequest()
			if _, _, err := r.ParseProto(b); err != nil {
				panic(err)
			}
			if err := r.DecodeProtoWire(anyValues, codecDemoInputs, codecClassifierOutputs); err != nil {
				panic(err)
			}
			ReleaseRequest(r)
		}
		decode()
		if n := testing.AllocsPerRun(100, decode); n != 0 {
			t.Fatalf("%s: expected 0 allocations, got %f", name, n)
		}
	}
	f("typed FP32 [1,8]", protoDemoRequest(false))
	f("raw FP32 [1,8]", protoDemoRequest(true))
}
