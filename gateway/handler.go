package gateway

import (
	"bytes"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/infergate/infergate/batcher"
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
			writeMetrics(ctx)
		}
	default:
		if rest, ok := bytes.CutPrefix(path, []byte("/v2/models/")); ok {
			st := s.acquireState()
			defer st.release()
			s.handleModel(ctx, st, rest)
			return
		}
		if rest, ok := bytes.CutPrefix(path, []byte("/admin/")); ok {
			s.handleAdmin(ctx, string(rest))
			return
		}
		if bytes.Equal(path, []byte("/console")) || bytes.HasPrefix(path, []byte("/console/")) {
			s.handleConsole(ctx)
			return
		}
		if bytes.HasPrefix(path, []byte("/debug/pprof/")) {
			s.handleProfiles(ctx)
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

// jsonBody answers 415 unless the request's body may be JSON by its
// Content-Type: application/json or application/...+json, none at all, or
// the octet stream that the binary tensor extension and many HTTP clients
// send by default. A body of another type (a form, text, XML) would be
// misread, so it is refused.
func jsonBody(ctx *fasthttp.RequestCtx) bool {
	ct := ctx.Request.Header.ContentType()
	if jsonContentType(ct) {
		return true
	}
	writeError(ctx, fasthttp.StatusUnsupportedMediaType, fmt.Sprintf(
		"unsupported Content-Type %q: send application/json (or application/octet-stream with the binary tensor extension)", ct))
	return false
}

// jsonContentType reports whether Content-Type ct may be JSON (see jsonBody).
func jsonContentType(ct []byte) bool {
	mediaType, _, _ := bytes.Cut(ct, []byte(";"))
	mediaType = bytes.TrimSpace(mediaType)
	n := len(mediaType)
	return n == 0 || bytes.EqualFold(mediaType, []byte("application/json")) ||
		n > 17 && bytes.EqualFold(mediaType[:12], []byte("application/")) && bytes.EqualFold(mediaType[n-5:], []byte("+json")) ||
		bytes.EqualFold(mediaType, []byte("application/octet-stream"))
}

// expect answers a request that asks before it sends its body (Expect:
// 100-continue): 100 lets it send, else the answer it would get anyway,
// before the body is sent: 413 beyond max_body_size, and for a model's
// infer or feedback 401 without the key it requires, then 415 for a body
// that is not JSON. The answers are the handler's own, body and headers.
func (s *Server) expect(ctx *fasthttp.RequestCtx) int {
	if upload, ok := bytes.CutPrefix(ctx.Path(), []byte("/admin/models/")); ok && ctx.IsPut() && bytes.Contains(upload, []byte("/versions/")) {
		return s.expectUpload(ctx)
	}
	if ctx.Request.Header.ContentLength() > int(s.cfg.MaxBodySize) {
		writeError(ctx, fasthttp.StatusRequestEntityTooLarge, s.errBodyTooLarge().Error())
		return fasthttp.StatusRequestEntityTooLarge
	}
	rest, ok := bytes.CutPrefix(ctx.Path(), []byte("/v2/models/"))
	if !ok || !ctx.IsPost() {
		return fasthttp.StatusContinue
	}
	name, action, _ := bytes.Cut(rest, []byte("/"))
	m := s.serving.Load().models[string(name)]
	if m == nil {
		return fasthttp.StatusContinue // the handler answers 404 with why
	}
	if after, ok := bytes.CutPrefix(action, []byte("versions/")); ok {
		_, action, _ = bytes.Cut(after, []byte("/"))
		if string(action) != "infer" {
			return fasthttp.StatusContinue
		}
	}
	if string(action) != "infer" && string(action) != "feedback" {
		return fasthttp.StatusContinue
	}
	if !m.authorized(ctx, string(action) == "feedback") {
		return fasthttp.StatusUnauthorized
	}
	if !jsonBody(ctx) {
		return fasthttp.StatusUnsupportedMediaType
	}
	return fasthttp.StatusContinue
}

// expectUpload answers the Expect of a version upload, whose limit is
// model_store.max_upload_size, as handleAdmin would: 404 when the admin
// API is off, 401 without the admin token, 413 beyond the limit, else go
// on.
func (s *Server) expectUpload(ctx *fasthttp.RequestCtx) int {
	if len(s.adminToken) == 0 {
		writeError(ctx, fasthttp.StatusNotFound, adminOffText)
		return fasthttp.StatusNotFound
	}
	token, ok := bytes.CutPrefix(ctx.Request.Header.Peek(fasthttp.HeaderAuthorization), []byte("Bearer "))
	if !ok || subtle.ConstantTimeCompare(token, s.adminToken) != 1 {
		ctx.Response.Header.Set(fasthttp.HeaderWWWAuthenticate, `Bearer realm="infergate admin"`)
		writeError(ctx, fasthttp.StatusUnauthorized, "missing or wrong bearer token")
		return fasthttp.StatusUnauthorized
	}
	s.cp.mu.Lock()
	limit := s.cp.current.ModelStore.MaxUploadSize
	s.cp.mu.Unlock()
	if ctx.Request.Header.ContentLength() > int(limit) {
		writeError(ctx, fasthttp.StatusRequestEntityTooLarge, fmt.Sprintf("upload too large: the limit is %s (model_store.max_upload_size)", limit))
		return fasthttp.StatusRequestEntityTooLarge
	}
	return fasthttp.StatusContinue
}

func writeJSON(ctx *fasthttp.RequestCtx, body []byte) {
	ctx.SetContentType("application/json")
	ctx.SetBody(body)
}

// serverReady answers 200 when every model has a version to serve.
func (s *Server) serverReady(ctx *fasthttp.RequestCtx) {
	if why := s.notReady(); why != "" {
		writeError(ctx, fasthttp.StatusServiceUnavailable, why)
		return
	}
	ctx.SetStatusCode(fasthttp.StatusOK)
}

// notReady says why the server is not ready, or "" when every model has a
// version to serve and it is not shutting down.
func (s *Server) notReady() string {
	if s.stopping.Load() {
		return "shutting down"
	}
	st := s.serving.Load()
	for _, name := range st.sortedNames() {
		if st.models[name].latest() == nil {
			return fmt.Sprintf("model %q has no version loaded", name)
		}
	}
	return ""
}

// handleModel routes /v2/models/{m}[/versions/{v}][/ready|/infer|...] and
// /v2/models/stats; rest is the path after "/v2/models/".
func (s *Server) handleModel(ctx *fasthttp.RequestCtx, st *state, rest []byte) {
	if string(rest) == "stats" && st.models["stats"] == nil {
		if allowMethod(ctx, fasthttp.MethodGet) {
			restModelStatistics(ctx, st, nil, nil)
		}
		return
	}
	name, rest, _ := bytes.Cut(rest, []byte("/"))
	var pinned []byte
	if after, ok := bytes.CutPrefix(rest, []byte("versions/")); ok {
		pinned, rest, _ = bytes.Cut(after, []byte("/"))
	}
	action := string(rest)
	if action != "" && action != "ready" && action != "infer" && action != "drift" && action != "drift/windows" && action != "feedback" &&
		action != "config" && action != "stats" || len(name) == 0 {
		s.countUnrouted(ctx, fasthttp.StatusNotFound, fmt.Sprintf("no such endpoint %q", ctx.Path()))
		return
	}
	m := st.models[string(name)]
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
	case "config":
		if allowMethod(ctx, fasthttp.MethodGet) {
			s.restModelConfig(ctx, m, v)
		}
	case "stats":
		if allowMethod(ctx, fasthttp.MethodGet) {
			if pinned == nil {
				v = nil
			}
			restModelStatistics(ctx, st, m, v)
		}
	case "drift":
		if allowMethod(ctx, fasthttp.MethodGet) {
			if pinned == nil {
				v = nil
			}
			s.driftReport(ctx, m, v)
		}
	case "drift/windows":
		if allowMethod(ctx, fasthttp.MethodGet) {
			s.driftWindows(ctx, m, v)
		}
	case "feedback":
		if pinned != nil {
			s.countUnrouted(ctx, fasthttp.StatusNotFound, "feedback is per model: POST /v2/models/{m}/feedback")
			return
		}
		if allowMethod(ctx, fasthttp.MethodPost) && m.authorized(ctx, true) && jsonBody(ctx) {
			s.feedback(ctx, m)
		}
	case "infer":
		var r route
		if pinned == nil && v != nil {
			if r.rt = m.routes.table.Load(); r.rt != nil {
				r = r.rt.pick(ctx.Request.Header.Peek(r.rt.sticky))
				v = r.rt.versions[r.picked]
			}
		}
		if v == nil {
			s.countUnrouted(ctx, fasthttp.StatusServiceUnavailable, fmt.Sprintf("model %q has no version loaded", name))
			return
		}
		start := time.Now()
		code, counted := fasthttp.StatusMethodNotAllowed, true
		switch {
		case !allowMethod(ctx, fasthttp.MethodPost):
		case !m.authorized(ctx, false):
			return // not counted against the version: it never reached it
		case !jsonBody(ctx):
			code = fasthttp.StatusUnsupportedMediaType
		default:
			code, counted = s.infer(ctx, st, m, v, r, start)
		}
		took := time.Since(start)
		v.metrics.observe(protocolREST, code, took)
		if counted {
			v.interval.observe(code, took)
		}
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
	unrouted[protocolREST][statusIndex(code)].Inc()
	writeError(ctx, code, msg)
}

// inferCall holds one infer request's reusable buffers.
type inferCall struct {
	raw     []byte // request body as read
	body    []byte // decompressed request body
	out     []byte // encoded response
	zipped  []byte // compressed response
	results []runtime.Tensor
	// driftIn and driftOut hold the rows a drift monitor observes.
	driftIn, driftOut []float64
	// shadows are the version indices a request is mirrored to.
	shadows []int
	// held is what the call holds of the server's memory budget.
	held int64
	// conn is the client's connection while the call serves it, and gone
	// the batcher's question whether that client left (call.clientGone,
	// made once so that no request allocates it).
	conn net.Conn
	gone func() bool
	// ctx is a gRPC call's context while the call serves it: the client
	// left when it is done.
	ctx context.Context
}

var inferCalls = sync.Pool{New: func() any {
	c := new(inferCall)
	c.gone = c.clientGone
	return c
}}

func (c *inferCall) clientGone() bool {
	return c.conn != nil && clientGone(c.conn) || c.ctx != nil && c.ctx.Err() != nil
}

// putInferCall gives back the memory call held and pools it. Results of a
// batched run are views of the batcher's buffers, which go back to the
// batcher with the request: they must not be reused as the direct path's
// own output buffers. A body or response buffer grown past
// maxPooledJSONBytes is dropped, so that one huge request or answer does
// not pin its memory in the pool.
func (s *Server) putInferCall(call *inferCall, batched bool) {
	s.memory.releaseHeld(&call.held)
	if batched {
		for i := range call.results {
			call.results[i].Data = nil
		}
	}
	if cap(call.body) > maxPooledJSONBytes {
		call.body = nil
	}
	if cap(call.raw) > maxPooledJSONBytes {
		call.raw = nil
	}
	if cap(call.out) > maxPooledJSONBytes {
		call.out = nil
	}
	if cap(call.zipped) > maxPooledJSONBytes {
		call.zipped = nil
	}
	call.conn, call.ctx = nil, nil
	inferCalls.Put(call)
}

// infer runs one V2 inference request on v and returns the status it
// answered, and whether it counts in the version's canary analysis (a
// refusal for the gateway's memory budget says nothing of the version); r
// says how an unpinned request was routed, for its shadow copies.
func (s *Server) infer(ctx *fasthttp.RequestCtx, st *state, m *model, v *version, r route, start time.Time) (code int, counted bool) {
	if code, err := s.admit(m, v); err != nil {
		writeError(ctx, code, err.Error())
		return code, true
	}
	defer v.leave()
	call := inferCalls.Get().(*inferCall)
	defer s.putInferCall(call, v.batcher != nil)
	call.conn = ctx.Conn()
	body, code, err := s.requestBody(ctx, call)
	if err != nil {
		writeError(ctx, code, err.Error())
		return code, code != fasthttp.StatusServiceUnavailable // the memory budget is the gateway's, not the version's
	}
	headerLen := -1
	if h := ctx.Request.Header.Peek(headerInferenceLen); len(h) > 0 {
		n, err := fasthttp.ParseUint(h)
		if err != nil || n > len(body) {
			writeError(ctx, fasthttp.StatusBadRequest, fmt.Sprintf("invalid %s %q for a body of %d bytes", headerInferenceLen, h, len(body)))
			return fasthttp.StatusBadRequest, true
		}
		headerLen = n
	}
	req := acquireInferRequest()
	defer releaseInferRequest(req)
	err = req.Decode(body, headerLen, v.maxJSONValues, v.rt.Inputs(), v.rt.Outputs())
	if err != nil && !req.WellFormed {
		code := fasthttp.StatusBadRequest
		if errors.Is(err, errTooManyValues) {
			code = fasthttp.StatusRequestEntityTooLarge
		}
		writeError(ctx, code, err.Error())
		return code, true
	}
	// The body and what its values may cost while the request is served,
	// charged at jsonValueCost a value as the budget has always counted
	// them, and before a request that is wrong is answered 400, as when
	// the charge came before decoding: one that could never fit the budget
	// learns that first. Decoding held only the tensors, at most 8 bytes a
	// value and bounded by maxJSONValues.
	if code, err := s.reserveMemory(&call.held, int64(len(body))+int64(req.Values)*jsonValueCost); err != nil {
		writeError(ctx, code, err.Error())
		return code, code != fasthttp.StatusServiceUnavailable
	}
	if err != nil {
		writeError(ctx, fasthttp.StatusBadRequest, err.Error())
		return fasthttp.StatusBadRequest, true
	}

	breq := batcher.AcquireRequest()
	defer batcher.ReleaseRequest(breq)
	results, code, err := s.predict(m, v, req, breq, call)
	if err != nil {
		writeError(ctx, code, err.Error())
		return code, true
	}
	out, jsonLen := appendInferResponse(call.out[:0], m.name, v.name, req, v.rt.Outputs(), results, v.labels)
	call.out = out
	ctx.Response.Header.Set(headerModelVersion, v.name)
	if jsonLen >= 0 {
		ctx.Response.Header.SetContentType("application/octet-stream")
		ctx.Response.Header.Set(headerInferenceLen, strconv.Itoa(jsonLen))
	} else {
		ctx.Response.Header.SetContentType("application/json")
	}
	s.writeBody(ctx, call, out)
	s.mirror(st, v, r, req, results, call, start)
	return fasthttp.StatusOK, true
}

// admit takes a place for one request among those v's batcher admits, or
// says why not (503). Under overload, requests are refused before their
// bodies are decompressed and decoded: when more are in the handler than
// the queue and the instances can hold, as much as when the queue is full.
// The first bound matters when decoding, not compute, is what falls
// behind, and requests pile up before they reach the queue. A request
// admitted calls v.leave when it is answered.
func (s *Server) admit(m *model, v *version) (int, error) {
	if v.batcher == nil {
		return 0, nil
	}
	if n := v.admitted.Add(1); n > v.admitLimit {
		v.admitted.Add(-1)
		return fasthttp.StatusServiceUnavailable, fmt.Errorf(
			"cannot accept request for model %q version %s: %d requests in flight, more than max_queue_size + max_batch_size x instances (%d); retry later or add instances",
			m.name, v.name, n, v.admitLimit)
	}
	if err := v.batcher.CheckCapacity(); err != nil {
		v.admitted.Add(-1)
		return fasthttp.StatusServiceUnavailable, fmt.Errorf("cannot queue request for model %q version %s: %s", m.name, v.name, err)
	}
	return 0, nil
}

// leave gives back the place admit took.
func (v *version) leave() {
	if v.batcher != nil {
		v.admitted.Add(-1)
	}
}

// predict answers req, decoded by either protocol, on v: from the response
// cache, or through compute (computeOn), then lets v's drift monitor and
// m's capture observe it. The results stay valid until breq is released
// and call reused. On failure it returns the status to answer with.
func (s *Server) predict(m *model, v *version, req *inferRequest, breq *batcher.Request, call *inferCall) ([]runtime.Tensor, int, error) {
	var key uint64
	var lookedUp time.Duration
	results, cached := []runtime.Tensor(nil), false
	if v.cache != nil {
		start := time.Now()
		key = v.cache.key(req.Inputs)
		results, cached = v.cache.get(key, req.Inputs)
		if lookedUp = time.Since(start); cached {
			v.metrics.stats.cacheHit.add(lookedUp)
		}
	}
	if !cached {
		if code, err := computeOn(v, req, breq, call); err != nil {
			return nil, code, fmt.Errorf("cannot run model %q version %s: %s", m.name, v.name, err)
		}
		results = call.results
		if v.cache != nil {
			start := time.Now()
			v.cache.put(key, req.Inputs, results)
			v.metrics.stats.cacheMiss.add(lookedUp + time.Since(start))
		}
	}
	if v.drift != nil {
		v.observeDrift(call, req.Inputs, results)
	}
	m.captureCall(v, req, results)
	return results, fasthttp.StatusOK, nil
}

// mirror offers an answered request to the shadow versions its route
// mirrors it to, once the primary's response is out; call lends its
// buffer of version indices.
func (s *Server) mirror(st *state, v *version, r route, req *inferRequest, results []runtime.Tensor, call *inferCall, start time.Time) {
	if r.rt == nil || !r.rt.shadowed {
		return
	}
	// Online requests waiting in the primary's queue mean the machine has
	// no room for copies: they are dropped rather than slow it further.
	// Batch-job rows queued below them leave it room.
	busy := v.batcher != nil && v.batcher.QueueLengthAboveLowest() > 0
	call.shadows = r.rt.t.Shadows(r.picked, r.rnd, call.shadows[:0])
	for _, i := range call.shadows {
		r.rt.versions[i].shadow.Load().offer(st, req, results, time.Since(start), busy)
	}
}

// computeOn runs req on v, through its batcher when it has one, leaving the
// outputs in call.results; they stay valid until breq is released. On
// failure it returns the status to answer with.
func computeOn(v *version, req *inferRequest, breq *batcher.Request, call *inferCall) (int, error) {
	outputs := v.rt.Outputs()
	if cap(call.results) < len(outputs) {
		call.results = make([]runtime.Tensor, len(outputs))
	}
	call.results = call.results[:len(outputs)]
	if v.batcher == nil {
		start := time.Now()
		err := v.rt.Run(context.Background(), req.Inputs, call.results)
		took := time.Since(start)
		v.metrics.compute.Update(took.Seconds())
		switch {
		case err == nil:
			v.metrics.stats.computed(1, false, 0, took)
			return fasthttp.StatusOK, nil
		case errors.Is(err, runtime.ErrUnloaded):
			return fasthttp.StatusServiceUnavailable, err
		}
		return fasthttp.StatusInternalServerError, err
	}

	level, err := onlineLevel(req.Priority, v.cfg.Batching.PriorityLevels)
	if err != nil {
		return fasthttp.StatusBadRequest, err
	}
	rows := req.Inputs[0].Shape[0]
	breq.Rows, breq.Priority, breq.Timeout = int(rows), level, req.Timeout
	if call.conn != nil || call.ctx != nil {
		breq.Gone = call.gone
	}
	breq.Inputs = breq.Inputs[:0]
	for i, in := range req.Inputs {
		if in.Shape[0] != rows {
			return fasthttp.StatusBadRequest, fmt.Errorf("input %q has %d rows but input %q has %d; every input needs the same batch size",
				v.rt.Inputs()[i].Name, in.Shape[0], v.rt.Inputs()[0].Name, rows)
		}
		breq.Inputs = append(breq.Inputs, in.Data)
	}
	if err := v.batcher.Do(context.Background(), breq); err != nil {
		return batchStatus(err), err
	}
	v.metrics.stats.computed(rows, true, breq.Waited, breq.Computed)
	for j, info := range outputs {
		r := &call.results[j]
		r.DataType, r.Data = info.DataType, breq.Outputs[j]
		r.Shape = append(append(r.Shape[:0], rows), info.Shape[1:]...)
	}
	return fasthttp.StatusOK, nil
}

// statusClientClosed is what a request whose client closed its connection
// before it was computed counts as (nginx's 499): not an error of the
// gateway, and no client is there to read it.
const statusClientClosed = 499

// batchStatus maps a batcher error to the status that answers it.
func batchStatus(err error) int {
	switch {
	case errors.Is(err, batcher.ErrQueueFull), errors.Is(err, batcher.ErrStopped):
		return fasthttp.StatusServiceUnavailable
	case errors.Is(err, batcher.ErrGone):
		return statusClientClosed
	case errors.Is(err, batcher.ErrDeadline):
		return fasthttp.StatusGatewayTimeout
	case errors.Is(err, batcher.ErrTooLarge), errors.Is(err, batcher.ErrBadPriority), errors.Is(err, batcher.ErrNoRows):
		return fasthttp.StatusBadRequest
	}
	return fasthttp.StatusInternalServerError
}

// requestBody returns the request body (readBody), decompressed into
// call's buffer when the client sent it compressed. Decompressing is
// charged the whole body limit until its size is known.
func (s *Server) requestBody(ctx *fasthttp.RequestCtx, call *inferCall) ([]byte, int, error) {
	body, code, err := s.readBody(ctx, &call.raw, &call.held)
	if err != nil {
		return nil, code, err
	}
	enc := ctx.Request.Header.ContentEncoding()
	if len(enc) == 0 || string(enc) == "identity" {
		return body, 0, nil
	}
	limit := int64(s.cfg.MaxBodySize)
	if code, err := s.reserveMemory(&call.held, limit); err != nil {
		return nil, code, err
	}
	call.body, err = s.codecs.decode(call.body[:0], body, enc)
	s.memory.release(limit - int64(len(call.body)))
	call.held -= limit - int64(len(call.body))
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
