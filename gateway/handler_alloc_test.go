//go:build !race

package gateway

import (
	"testing"

	"github.com/valyala/fasthttp"
)

// TestInferAllocations serves demo infer requests through the whole handler
// (decode, batcher, ONNX Runtime, encode) and counts heap allocations per
// request in steady state.
func TestInferAllocations(t *testing.T) {
	srv, _ := startServer(t, testConfig(t))
	var ctx fasthttp.RequestCtx
	serve := func() {
		ctx.Request.Reset()
		ctx.Response.Reset()
		ctx.Request.Header.SetMethod("POST")
		ctx.Request.SetRequestURI("/v2/models/demo/infer")
		ctx.Request.SetBodyString(demoRequest)
		srv.handle(&ctx)
		if ctx.Response.StatusCode() != 200 {
			t.Fatalf("status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
		}
	}
	for range 100 {
		serve()
	}
	if n := testing.AllocsPerRun(200, serve); n != 0 {
		t.Fatalf("an infer request allocates %v times, want 0", n)
	}
}
