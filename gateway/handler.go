package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/valyala/fasthttp"

	"github.com/infergate/infergate/runtime"
)

// Headers the protocol and its extensions define.
const (
	headerModelVersion = "infergate-model-version"
	headerInferenceLen = "Inference-Header-Content-Length"
)

// handle routes one request. Paths are matched on bytes so that routing
// allocates nothing.
func (s *Server) handle(ctx *fasthttp.RequestCtx) {
	defer s.recoverPanic(ctx)
	path := ctx.Path()
	switch string(path) {
	case "/v2/health/live":
		if allowMethod(ctx, fasthttp.MethodGet) {
			ctx.SetStatusCode(fasthttp.StatusOK)
		}
	case "/v2/health/ready":
		if allowMethod(ctx, fasthttp.MethodGet) {
			s.serverReady(ctx)
		}
	case "/v2":
		if allowMethod(ctx, fasthttp.MethodGet) {
			writeJSON(ctx, s.metadata)
		}
	case "/metrics":
		if allowMethod(ctx, fasthttp.MethodGet) {
			ctx.SetContentType("text/plain; version=0.0.4")
			metrics.WritePrometheus(ctx, true)
		}
	default:
		if rest, ok := bytes.CutPrefix(path, []byte("/v2/models/")); ok {
			s.handleModel(ctx, rest)
			return
		}
		writeError(ctx, fasthttp.StatusNotFound, fmt.Sprintf("no such endpoint %q", path))
	}
}

// recoverPanic turns a panic in a handler into a 500 for that request only.
func (s *Server) recoverPanic(ctx *fasthttp.RequestCtx) {
	if p := recover(); p != nil {
		s.log.Error("panic serving request", "path", string(ctx.Path()), "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
		ctx.Response.Header.Del(headerInferenceLen)
		ctx.Response.Header.Del(fasthttp.HeaderContentEncoding)
		writeError(ctx, fasthttp.StatusInternalServerError, "internal error")
	}
}

// allowMethod answers 405 unless the request uses method.
func allowMethod(ctx *fasthttp.RequestCtx, method string) bool {
	if string(ctx.Method()) == method {
		return true
	}
	ctx.Response.Header.Set(fasthttp.HeaderAllow, method)
	writeError(ctx, fasthttp.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed here; use %s", ctx.Method(), method))
	return false
}

func writeJSON(ctx *fasthttp.RequestCtx, body []byte) {
	ctx.SetContentType("application/json")
	ctx.SetBody(body)
}

// serverReady answers 200 when every model has a version to serve.
func (s *Server) serverReady(ctx *fasthttp.RequestCtx) {
	if s.stopping.Load() {
		writeError(ctx, fasthttp.StatusServiceUnavailable, "shutting down")
		return
	}
	st := s.serving.Load()
	for _, name := range st.sortedNames() {
		if st.models[name].latest() == nil {
			writeError(ctx, fasthttp.StatusServiceUnavailable, fmt.Sprintf("model %q has no version loaded", name))
			return
		}
	}
	ctx.SetStatusCode(fasthttp.StatusOK)
}

// handleModel routes /v2/models/{m}[/versions/{v}][/ready|/infer]; rest is
// the path after "/v2/models/".
func (s *Server) handleModel(ctx *fasthttp.RequestCtx, rest []byte) {
	name, rest, _ := bytes.Cut(rest, []byte("/"))
	var pinned []byte
	if after, ok := bytes.CutPrefix(rest, []byte("versions/")); ok {
		pinned, rest, _ = bytes.Cut(after, []byte("/"))
	}
	action := string(rest)
	if action != "" && action != "ready" && action != "infer" || len(name) == 0 {
		s.countUnrouted(ctx, fasthttp.StatusNotFound, fmt.Sprintf("no such endpoint %q", ctx.Path()))
		return
	}
	m := s.serving.Load().models[string(name)]
	if m == nil {
		s.countUnrouted(ctx, fasthttp.StatusNotFound, fmt.Sprintf("unknown model %q", name))
		return
	}
	v := m.latest()
	if pinned != nil {
		if v = m.version(pinned); v == nil {
			s.countUnrouted(ctx, fasthttp.StatusNotFound, fmt.Sprintf("unknown version %q of model %q (loaded: %v)", pinned, name, m.versionNames()))
			return
		}
	}
	switch action {
	case "":
		if allowMethod(ctx, fasthttp.MethodGet) {
			if pinned != nil {
				writeJSON(ctx, v.metadata)
			} else {
				writeJSON(ctx, m.metadata)
			}
		}
	case "ready":
		if !allowMethod(ctx, fasthttp.MethodGet) {
			return
		}
		if v == nil || s.stopping.Load() {
			writeError(ctx, fasthttp.StatusServiceUnavailable, fmt.Sprintf("model %q is not ready", name))
			return
		}
		ctx.SetStatusCode(fasthttp.StatusOK)
	case "infer":
		if v == nil {
			s.countUnrouted(ctx, fasthttp.StatusServiceUnavailable, fmt.Sprintf("model %q has no version loaded", name))
			return
		}
		start := time.Now()
		code := fasthttp.StatusMethodNotAllowed
		if allowMethod(ctx, fasthttp.MethodPost) {
			code = s.infer(ctx, m, v)
		}
		v.metrics.observe(code, start)
	}
}

func (m *model) versionNames() []string {
	names := make([]string, len(m.versions))
	for i, v := range m.versions {
		names[i] = v.name
	}
	return names
}

// countUnrouted answers an error for a request that reached no model version.
func (s *Server) countUnrouted(ctx *fasthttp.RequestCtx, code int, msg string) {
	unrouted[statusIndex(code)].Inc()
	writeError(ctx, code, msg)
}

// inferCall holds one infer request's reusable buffers.
type inferCall struct {
	body    []byte // decompressed request body
	out     []byte // encoded response
	zipped  []byte // compressed response
	results []runtime.Tensor
}

var inferCalls = sync.Pool{New: func() any { return new(inferCall) }}

// infer runs one V2 inference request and returns the status it answered.
func (s *Server) infer(ctx *fasthttp.RequestCtx, m *model, v *version) int {
	call := inferCalls.Get().(*inferCall)
	defer inferCalls.Put(call)
	body, code, err := s.requestBody(ctx, call)
	if err != nil {
		writeError(ctx, code, err.Error())
		return code
	}
	headerLen := -1
	if h := ctx.Request.Header.Peek(headerInferenceLen); len(h) > 0 {
		n, err := fasthttp.ParseUint(h)
		if err != nil || n > len(body) {
			writeError(ctx, fasthttp.StatusBadRequest, fmt.Sprintf("invalid %s %q for a body of %d bytes", headerInferenceLen, h, len(body)))
			return fasthttp.StatusBadRequest
		}
		headerLen = n
	}
	req := acquireInferRequest()
	defer releaseInferRequest(req)
	outputs := v.rt.Outputs()
	if err := req.decode(body, headerLen, v.rt.Inputs(), outputs); err != nil {
		writeError(ctx, fasthttp.StatusBadRequest, err.Error())
		return fasthttp.StatusBadRequest
	}
	if cap(call.results) < len(outputs) {
		call.results = make([]runtime.Tensor, len(outputs))
	}
	call.results = call.results[:len(outputs)]
	// This is where the batcher goes: for now each request runs on a free
	// instance of its own.
	start := time.Now()
	err = v.rt.Run(context.Background(), req.Inputs, call.results)
	v.metrics.compute.UpdateDuration(start)
	if err != nil {
		code := fasthttp.StatusInternalServerError
		if errors.Is(err, runtime.ErrUnloaded) {
			code = fasthttp.StatusServiceUnavailable
		}
		writeError(ctx, code, fmt.Sprintf("cannot run model %q version %s: %s", m.name, v.name, err))
		return code
	}
	out, jsonLen := appendInferResponse(call.out[:0], m.name, v.name, req, outputs, call.results)
	call.out = out
	ctx.Response.Header.Set(headerModelVersion, v.name)
	if jsonLen >= 0 {
		ctx.Response.Header.SetContentType("application/octet-stream")
		ctx.Response.Header.Set(headerInferenceLen, fmt.Sprint(jsonLen))
	} else {
		ctx.Response.Header.SetContentType("application/json")
	}
	s.writeBody(ctx, call, out)
	return fasthttp.StatusOK
}

// requestBody returns the request body, decompressed into call's buffer
// when the client sent it compressed.
func (s *Server) requestBody(ctx *fasthttp.RequestCtx, call *inferCall) ([]byte, int, error) {
	body := ctx.Request.Body()
	enc := ctx.Request.Header.ContentEncoding()
	if len(enc) == 0 || string(enc) == "identity" {
		return body, 0, nil
	}
	var err error
	call.body, err = s.codecs.decode(call.body[:0], body, enc)
	switch {
	case errors.Is(err, errBodyTooLarge):
		return nil, fasthttp.StatusRequestEntityTooLarge, fmt.Errorf("request body too large once decompressed: the limit is %s (max_body_size)", s.cfg.MaxBodySize)
	case err != nil && string(enc) != "gzip" && string(enc) != "zstd":
		return nil, fasthttp.StatusUnsupportedMediaType, err
	case err != nil:
		return nil, fasthttp.StatusBadRequest, err
	}
	return call.body, 0, nil
}

// writeBody sets the response body, compressed when the client accepts
// zstd or gzip and the body is worth compressing.
func (s *Server) writeBody(ctx *fasthttp.RequestCtx, call *inferCall, body []byte) {
	if len(body) < int(s.cfg.CompressMinSize) {
		ctx.SetBody(body)
		return
	}
	var enc string
	switch {
	case ctx.Request.Header.HasAcceptEncoding("zstd"):
		enc = "zstd"
	case ctx.Request.Header.HasAcceptEncoding("gzip"):
		enc = "gzip"
	default:
		ctx.SetBody(body)
		return
	}
	call.zipped = s.codecs.encode(call.zipped[:0], body, enc)
	ctx.Response.Header.Set(fasthttp.HeaderContentEncoding, enc)
	ctx.Response.Header.Set(fasthttp.HeaderVary, fasthttp.HeaderAcceptEncoding)
	ctx.SetBody(call.zipped)
}
