//go:build !race

package gateway

import (
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

// TestInferAllocations serves demo infer requests through the whole handler
// (decode, batcher, ONNX Runtime, encode) and counts heap allocations per
// request in steady state.
func TestInferAllocations(t *testing.T) {
	srv, _ := startServer(t, testConfig(t))
	var ctx fasthttp.RequestCtx
	var body strings.Reader
	serve := func() { serveDemoRequest(t, srv, &ctx, &body) }
	for range 100 {
		serve()
	}
	if n := testing.AllocsPerRun(200, serve); n != 0 {
		t.Fatalf("an infer request allocates %v times, want 0", n)
	}
}
