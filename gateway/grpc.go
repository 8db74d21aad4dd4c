package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	goruntime "runtime"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/gzip" // gzip-compressed messages, as REST takes Content-Encoding: gzip
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/infergate/infergate/batcher"
	"github.com/infergate/infergate/gateway/v2codec"
	"github.com/infergate/infergate/gateway/v2codec/inferencepb"
	"github.com/infergate/infergate/runtime"
)

// grpcServer serves the Open Inference Protocol's GRPCInferenceService,
// grpc.health.v1 and server reflection on grpc_listen. Its ModelInfer goes
// the way of REST's infer: admit, predict, mirror; only the codec differs.
type grpcServer struct {
	inferencepb.UnimplementedGRPCInferenceServiceServer
	s      *Server
	server *grpc.Server
	health *health.Server
	// inferInfo describes ModelInfer to the interceptors.
	inferInfo *grpc.UnaryServerInfo
	// messages pools the messages of ModelInfer calls.
	messages sync.Pool
}

// newGRPCServer builds s's gRPC server: messages bounded by max_body_size,
// TLS with the REST listener's certificate where that has one.
func newGRPCServer(s *Server) *grpcServer {
	g := &grpcServer{s: s, health: health.NewServer()}
	g.inferInfo = &grpc.UnaryServerInfo{Server: g, FullMethod: inferencepb.GRPCInferenceService_ModelInfer_FullMethodName}
	g.messages.New = func() any {
		msg := new(inferMessage)
		msg.handle = func(ctx context.Context, _ any) (any, error) { return g.modelInfer(ctx, msg) }
		return msg
	}
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(int(s.cfg.MaxBodySize)),
		// A connection with no call for idle_timeout is closed, as an
		// idle HTTP connection is: gRPC connections are not evicted for
		// newcomers (busyListener).
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: s.cfg.IdleTimeout}),
		grpc.ConnectionTimeout(s.cfg.ReadTimeout),
		grpc.ChainUnaryInterceptor(g.recoverPanic),
		grpc.ForceServerCodecV2(inferCodec{encoding.GetCodecV2(grpcproto.Name)}),
		// Calls run on a pool of goroutines whose stacks have grown to what
		// a call takes, not each on a new one that grows its stack again
		// (a tenth of the server's CPU on one-row calls); a call finding
		// every worker busy still gets a goroutine of its own.
		grpc.NumStreamWorkers(uint32(max(32, 16*goruntime.GOMAXPROCS(0)))),
	}
	if s.certs != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(s.certs.tlsConfig())))
	}
	g.server = grpc.NewServer(opts...)
	// ModelInfer's handler decodes its message itself, so that one that
	// does not parse is InvalidArgument, as a 400 of REST, rather than
	// grpc-go's Internal.
	desc := inferencepb.GRPCInferenceService_ServiceDesc
	desc.Methods = slices.Clone(desc.Methods)
	for i := range desc.Methods {
		if desc.Methods[i].MethodName == "ModelInfer" {
			desc.Methods[i].Handler = g.modelInferHandler
		}
	}
	g.server.RegisterService(&desc, g)
	healthpb.RegisterHealthServer(g.server, g.health)
	reflection.Register(g.server)
	g.health.SetServingStatus(inferencepb.GRPCInferenceService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	return g
}

// inferMessage is a ModelInferRequest as inferCodec receives it: its
// bytes, and the pooled request they are parsed and decoded into
// (v2codec.Request.ParseProto, DecodeProto) once the handler runs. handle
// serves it, for the interceptors (made once per pooled message).
type inferMessage struct {
	buf    mem.Buffer
	req    *inferRequest
	handle grpc.UnaryHandler
}

// free gives back the message's bytes and request.
func (msg *inferMessage) free() {
	if msg.buf != nil {
		msg.buf.Free()
	}
	if msg.req != nil {
		releaseInferRequest(msg.req)
	}
	msg.buf, msg.req = nil, nil
}

// encodedResponse is a ModelInferResponse already encoded, which
// inferCodec sends as it is. It is not pooled: gRPC's stats handlers and
// tracing may hold the response after it is sent.
type encodedResponse struct{ buf mem.Buffer }

// inferCodec is gRPC's protobuf codec, except that it only keeps an
// inferMessage's bytes, for the handler to parse (so that a message that
// does not parse is InvalidArgument, as a 400 of REST, rather than
// grpc-go's Internal, and a panic of the parser is the call's alone), and
// sends an encodedResponse's bytes.
type inferCodec struct{ encoding.CodecV2 }

// Marshal encodes v.
func (c inferCodec) Marshal(v any) (mem.BufferSlice, error) {
	if resp, ok := v.(*encodedResponse); ok {
		return mem.BufferSlice{resp.buf}, nil
	}
	return c.CodecV2.Marshal(v)
}

// Unmarshal decodes data into v.
func (c inferCodec) Unmarshal(data mem.BufferSlice, v any) error {
	msg, ok := v.(*inferMessage)
	if !ok {
		return c.CodecV2.Unmarshal(data, v)
	}
	msg.free() // a client that sent a second message
	msg.buf = data.MaterializeToBuffer(mem.DefaultBufferPool())
	return nil
}

// modelInferHandler is the generated ModelInfer handler, receiving an
// inferMessage and answering an encodedResponse.
func (g *grpcServer) modelInferHandler(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
	in := g.messages.Get().(*inferMessage)
	defer g.messages.Put(in)
	defer in.free()
	if err := dec(in); err != nil {
		return nil, err
	}
	if interceptor == nil {
		return g.modelInfer(ctx, in)
	}
	return interceptor(ctx, in, g.inferInfo, in.handle)
}

// ServeGRPC answers gRPC on ln until Shutdown; grpc_listen must be set.
// ListenAndServe calls it on grpc_listen.
func (s *Server) ServeGRPC(ln net.Listener) error {
	if s.grpc == nil {
		ln.Close()
		return errors.New("cannot serve gRPC: grpc_listen is not set")
	}
	s.mu.Lock()
	if s.stopping.Load() {
		s.mu.Unlock()
		return ln.Close()
	}
	s.listeners = append(s.listeners, ln)
	s.mu.Unlock()
	s.log.Info("serving gRPC", "address", ln.Addr().String(), "tls", s.certs != nil)
	err := s.grpc.server.Serve(busyListener{newGuardedListener(ln, s.log, s.maxConns, s.maxConnsPerIP, false)})
	if s.stopping.Load() {
		return nil // stopped by Shutdown
	}
	return err
}

// busyListener marks each connection it accepts from a guardedListener
// busy for good: a gRPC connection multiplexes calls for as long as it
// lives, so at max_connections a newcomer is refused rather than close
// one that may carry calls; connections without calls close after
// idle_timeout instead.
type busyListener struct{ net.Listener }

// Accept accepts a connection and marks it busy.
func (l busyListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		trackConnState(c, fasthttp.StateActive)
	}
	return c, err
}

// stop stops the gRPC server gracefully, letting calls in flight finish
// until ctx is done, then at once; health turns NOT_SERVING first.
func (g *grpcServer) stop(ctx context.Context) {
	g.health.Shutdown()
	done := make(chan struct{})
	go func() {
		g.server.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		g.server.Stop()
		<-done
	}
}

// recoverPanic turns a panic in a call into Internal for that call only.
func (g *grpcServer) recoverPanic(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	defer func() {
		if p := recover(); p != nil {
			g.s.log.Error("panic serving gRPC call", "method", info.FullMethod, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			resp, err = nil, status.Error(codes.Internal, "internal error")
		}
	}()
	return handler(ctx, req)
}

// grpcCodes maps the REST answers of the infer path to gRPC codes.
var grpcCodes = map[int]codes.Code{
	fasthttp.StatusBadRequest:            codes.InvalidArgument,
	fasthttp.StatusUnauthorized:          codes.Unauthenticated,
	fasthttp.StatusNotFound:              codes.NotFound,
	fasthttp.StatusMethodNotAllowed:      codes.Unimplemented,
	fasthttp.StatusRequestEntityTooLarge: codes.ResourceExhausted,
	fasthttp.StatusUnsupportedMediaType:  codes.InvalidArgument,
	statusClientClosed:                   codes.Canceled,
	fasthttp.StatusInternalServerError:   codes.Internal,
	fasthttp.StatusServiceUnavailable:    codes.Unavailable,
	fasthttp.StatusGatewayTimeout:        codes.DeadlineExceeded,
}

// grpcError is the gRPC status of a REST answer code with its message.
func grpcError(code int, msg string) error {
	c, ok := grpcCodes[code]
	if !ok {
		c = codes.Unknown
	}
	return status.Error(c, msg)
}

// ServerLive answers that the server is live: it answers.
func (g *grpcServer) ServerLive(context.Context, *inferencepb.ServerLiveRequest) (*inferencepb.ServerLiveResponse, error) {
	return &inferencepb.ServerLiveResponse{Live: true}, nil
}

// ServerReady answers whether every model has a version to serve, as
// GET /v2/health/ready does.
func (g *grpcServer) ServerReady(context.Context, *inferencepb.ServerReadyRequest) (*inferencepb.ServerReadyResponse, error) {
	return &inferencepb.ServerReadyResponse{Ready: g.s.notReady() == ""}, nil
}

// lookup returns the model called name and the version of it the
// request names (the newest where version is empty, which may be nil),
// or NotFound, counted as unrouted.
func lookup(st *state, name, version []byte) (*model, *version, error) {
	m := st.models[string(name)]
	if m == nil {
		unrouted[protocolGRPC][statusIndex(fasthttp.StatusNotFound)].Inc()
		return nil, nil, status.Errorf(codes.NotFound, "unknown model %q", name)
	}
	if len(version) == 0 {
		return m, m.latest(), nil
	}
	v := m.version(version)
	if v == nil {
		unrouted[protocolGRPC][statusIndex(fasthttp.StatusNotFound)].Inc()
		return nil, nil, status.Errorf(codes.NotFound, "unknown version %q of model %q (loaded: %v)", version, name, m.versionNames())
	}
	return m, v, nil
}

// ModelReady answers whether the model, or the version named, can serve.
func (g *grpcServer) ModelReady(_ context.Context, in *inferencepb.ModelReadyRequest) (*inferencepb.ModelReadyResponse, error) {
	st := g.s.acquireState()
	defer st.release()
	_, v, err := lookup(st, []byte(in.Name), []byte(in.Version))
	if err != nil {
		return nil, err
	}
	return &inferencepb.ModelReadyResponse{Ready: v != nil && !g.s.stopping.Load()}, nil
}

// ServerMetadata answers what GET /v2 does.
func (g *grpcServer) ServerMetadata(context.Context, *inferencepb.ServerMetadataRequest) (*inferencepb.ServerMetadataResponse, error) {
	return &inferencepb.ServerMetadataResponse{Name: "infergate", Version: g.s.o.Version, Extensions: extensions}, nil
}

// ModelMetadata answers what GET /v2/models/{m}[/versions/{v}] does.
func (g *grpcServer) ModelMetadata(_ context.Context, in *inferencepb.ModelMetadataRequest) (*inferencepb.ModelMetadataResponse, error) {
	st := g.s.acquireState()
	defer st.release()
	m, v, err := lookup(st, []byte(in.Name), []byte(in.Version))
	if err != nil {
		return nil, err
	}
	resp := &inferencepb.ModelMetadataResponse{Name: m.name, Platform: platform}
	if v == nil {
		return resp, nil
	}
	if in.Version != "" {
		resp.Versions = []string{v.name}
	} else {
		resp.Versions = m.versionNames()
	}
	resp.Inputs, resp.Outputs = tensorMetadata(v.rt.Inputs()), tensorMetadata(v.rt.Outputs())
	return resp, nil
}

// tensorMetadata lists infos as the metadata response's tensors.
func tensorMetadata(infos []runtime.TensorInfo) []*inferencepb.ModelMetadataResponse_TensorMetadata {
	out := make([]*inferencepb.ModelMetadataResponse_TensorMetadata, len(infos))
	for i, info := range infos {
		out[i] = &inferencepb.ModelMetadataResponse_TensorMetadata{Name: info.Name, Datatype: info.DataType.String(), Shape: info.Shape}
	}
	return out
}

// modelInfer runs one inference as POST /v2/models/{m}[/versions/{v}]/infer
// does: the same routing (the sticky key from the metadata of the routing's
// sticky header), API key (metadata authorization: Bearer <key>), batcher,
// cache, drift, capture, shadows and metrics; errors get the gRPC code of
// REST's status, with its message.
func (g *grpcServer) modelInfer(ctx context.Context, msg *inferMessage) (*encodedResponse, error) {
	s := g.s
	msg.req = acquireInferRequest()
	name, pinned, err := msg.req.ParseProto(msg.buf.ReadOnlyData())
	if err != nil {
		unrouted[protocolGRPC][statusIndex(fasthttp.StatusBadRequest)].Inc()
		return nil, status.Errorf(codes.InvalidArgument, "invalid ModelInferRequest message: %v", err)
	}
	st := s.acquireState()
	defer st.release()
	m, v, err := lookup(st, name, pinned)
	if err != nil {
		return nil, err
	}
	var r route
	if len(pinned) == 0 && v != nil {
		if r.rt = m.routes.table.Load(); r.rt != nil {
			var key []byte
			if r.rt.sticky != "" {
				if vals := metadata.ValueFromIncomingContext(ctx, r.rt.stickyMD); len(vals) > 0 {
					key = []byte(vals[0])
				}
			}
			r = r.rt.pick(key)
			v = r.rt.versions[r.picked]
		}
	}
	if v == nil {
		unrouted[protocolGRPC][statusIndex(fasthttp.StatusServiceUnavailable)].Inc()
		return nil, status.Errorf(codes.Unavailable, "model %q has no version loaded", m.name)
	}
	if err := m.authorizedMetadata(ctx); err != nil {
		return nil, err // not counted against the version: it never reached it
	}
	start := time.Now()
	resp, code, counted, err := s.inferProto(ctx, st, m, v, r, msg, start)
	took := time.Since(start)
	v.metrics.observe(protocolGRPC, code, took)
	if counted {
		v.interval.observe(code, took)
	}
	if err != nil {
		return nil, grpcError(code, err.Error())
	}
	grpc.SetHeader(ctx, v.grpcHeader)
	return resp, nil
}

// inferProto is modelInfer on v once routed, as infer is for REST: it
// returns the response or the REST status of the error, and whether the
// answer counts in the version's canary analysis.
func (s *Server) inferProto(ctx context.Context, st *state, m *model, v *version, r route, msg *inferMessage, start time.Time) (*encodedResponse, int, bool, error) {
	if code, err := s.admit(m, v); err != nil {
		return nil, code, true, err
	}
	defer v.leave()
	call := inferCalls.Get().(*inferCall)
	defer s.putInferCall(call, v.batcher != nil)
	call.ctx = ctx
	req := msg.req
	if err := req.DecodeProto(v.maxJSONValues, v.rt.Inputs(), v.rt.Outputs()); err != nil {
		if errors.Is(err, errTooManyValues) {
			return nil, fasthttp.StatusRequestEntityTooLarge, true, err
		}
		return nil, fasthttp.StatusBadRequest, true, err
	}
	// The message as received and the tensors decoded from it.
	held := int64(msg.buf.Len())
	for _, t := range req.Inputs {
		held += int64(len(t.Data))
	}
	if code, err := s.reserveMemory(&call.held, held); err != nil {
		return nil, code, code != fasthttp.StatusServiceUnavailable, err
	}
	// The call's deadline bounds its time in the queue as parameters.timeout does.
	if deadline, ok := ctx.Deadline(); ok {
		left := time.Until(deadline)
		if left <= 0 {
			return nil, fasthttp.StatusGatewayTimeout, true, fmt.Errorf("cannot run model %q version %s: the call's deadline passed", m.name, v.name)
		}
		if req.Timeout == 0 || left < req.Timeout {
			req.Timeout = left
		}
	}
	breq := batcher.AcquireRequest()
	defer batcher.ReleaseRequest(breq)
	results, code, err := s.predict(m, v, req, breq, call)
	if err != nil {
		return nil, code, true, err
	}
	call.out = v2codec.AppendProtoInferResponse(call.out[:0], m.name, v.name, req, v.rt.Outputs(), results, v.labels)
	s.mirror(st, v, r, req, results, call, start)
	// gRPC sends the response after the handler returns, and frees it then.
	return &encodedResponse{mem.Copy(call.out, mem.DefaultBufferPool())}, fasthttp.StatusOK, true, nil
}

// authorizedMetadata is authorized for infer over gRPC: the key comes in
// the call's metadata as authorization: Bearer <key>; a refusal is
// Unauthenticated.
func (m *model) authorizedMetadata(ctx context.Context) error {
	if len(m.keys.infer) == 0 {
		return nil
	}
	var authorization []byte
	if vals := metadata.ValueFromIncomingContext(ctx, "authorization"); len(vals) > 0 {
		authorization = []byte(vals[0])
	}
	present, ok := bearerIn(authorization, m.keys.infer)
	if ok {
		return nil
	}
	authRefusedInfer.Inc()
	if !present {
		return status.Error(codes.Unauthenticated, errNoKey.Error())
	}
	return status.Error(codes.Unauthenticated, errBadKey.Error())
}
