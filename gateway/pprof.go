package gateway

import (
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/pprofhandler"
)

// handleProfiles serves Go's runtime profiles under /debug/pprof/, as
// net/http/pprof does (the index, heap, goroutine, allocs, block, mutex,
// threadcreate, profile?seconds=N, trace?seconds=N, cmdline, symbol), to
// the holder of the admin token only: a profile shows the program's
// internals and a CPU profile costs the server while it runs. With the
// admin API off they are off too.
func (s *Server) handleProfiles(ctx *fasthttp.RequestCtx) {
	if !s.adminAuthorized(ctx) {
		return
	}
	if !allowMethod(ctx, fasthttp.MethodGet) {
		return
	}
	pprofhandler.PprofHandler(ctx)
}
