package gateway

import (
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

// BenchmarkInferDemo serves demo infer requests through the whole handler
// (decode, routing, batcher, ONNX Runtime, drift, encode), without HTTP.
func BenchmarkInferDemo(b *testing.B) {
	srv, _ := startServer(b, testConfig(b))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		var ctx fasthttp.RequestCtx
		var body strings.Reader
		for pb.Next() {
			serveDemoRequest(b, srv, &ctx, &body)
		}
	})
}

// serveDemoRequest serves demoRequest through the handler into ctx,
// without HTTP, and fails unless it is answered 200. The body streams from
// body, as the server hands bodies to the handler.
func serveDemoRequest(t testing.TB, srv *Server, ctx *fasthttp.RequestCtx, body *strings.Reader) {
	ctx.Request.Reset()
	ctx.Response.Reset()
	ctx.Request.Header.SetMethod("POST")
	ctx.Request.SetRequestURI("/v2/models/demo/infer")
	body.Reset(demoRequest)
	ctx.Request.SetBodyStream(body, len(demoRequest))
	srv.handle(ctx)
	if ctx.Response.StatusCode() != 200 {
		t.Fatalf("status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
	}
}
