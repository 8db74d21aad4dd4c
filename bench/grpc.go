package bench

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// ModelInferMethod is the full gRPC method name of the Open Inference
// Protocol's ModelInfer, the Path of a gRPC infer Request.
const ModelInferMethod = "/inference.GRPCInferenceService/ModelInfer"

// MaxGRPCConnections bounds the client connections a gRPC run opens: grpc-go
// multiplexes calls over a connection, so a run's workers share
// min(Connections, MaxGRPCConnections) of them, spread evenly.
const MaxGRPCConnections = 8

// grpcStatusBase + c is how a gRPC call that ended with status c (not OK)
// is reported by a worker, so that the recorder counts it as an answer as it
// counts an HTTP status code.
const grpcStatusBase = 600

// grpcStatuses is the number of gRPC status codes.
const grpcStatuses = int(codes.Unauthenticated) + 1

// rawMessage is a gRPC message as its encoded bytes: requests are encoded
// once, before a run, and answers are not decoded, as the HTTP load
// generator neither parses the body it answers nor the one it gets back.
type rawMessage struct {
	data []byte
	// keep makes Unmarshal copy the bytes into data; otherwise an answer's
	// bytes are dropped unread.
	keep bool
}

// rawCodec passes rawMessages through unchanged. It calls itself "proto",
// so that calls go as application/grpc+proto and the server decodes them
// with its own protobuf codec.
type rawCodec struct{}

// Marshal returns the bytes of v, a *rawMessage, without copying them.
func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(*rawMessage)
	if !ok {
		return nil, fmt.Errorf("bench: cannot encode a %T as a raw gRPC message", v)
	}
	return mem.BufferSlice{mem.SliceBuffer(m.data)}, nil
}

// Unmarshal stores data in v, a *rawMessage, when v keeps what it gets.
func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(*rawMessage)
	if !ok {
		return fmt.Errorf("bench: cannot decode a raw gRPC message into a %T", v)
	}
	if m.keep {
		m.data = data.Materialize()
	}
	return nil
}

// Name is the codec's content subtype.
func (rawCodec) Name() string { return "proto" }

// dialGRPC opens n client connections to addr, without TLS; grpc-go
// connects them on their first call.
func dialGRPC(addr string, n int) ([]*grpc.ClientConn, error) {
	conns := make([]*grpc.ClientConn, 0, n)
	for range n {
		cc, err := grpc.NewClient("passthrough:///"+addr,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)))
		if err != nil {
			closeGRPC(conns)
			return nil, fmt.Errorf("cannot open a gRPC connection to %s: %w", addr, err)
		}
		conns = append(conns, cc)
	}
	return conns, nil
}

// closeGRPC closes conns.
func closeGRPC(conns []*grpc.ClientConn) {
	for _, cc := range conns {
		cc.Close()
	}
}

// grpcCall is one worker's unary call of a Request's method over a shared
// connection. Its message is encoded once; grpc-go allocates per call.
type grpcCall struct {
	conn    *grpc.ClientConn
	ctx     context.Context // carries the Request's headers as metadata
	method  string
	req     rawMessage
	resp    rawMessage
	opts    []grpc.CallOption
	timeout time.Duration
}

func newGRPCCall(conn *grpc.ClientConn, r *Request, timeout time.Duration) *grpcCall {
	ctx := context.Background()
	if len(r.Header) > 0 {
		md := metadata.MD{}
		for k, v := range r.Header {
			md.Append(strings.ToLower(k), v)
		}
		ctx = metadata.NewOutgoingContext(ctx, md)
	}
	return &grpcCall{conn: conn, ctx: ctx, method: r.Path, req: rawMessage{data: r.Body},
		opts: []grpc.CallOption{grpc.ForceCodecV2(rawCodec{})}, timeout: timeout}
}

// send makes one call and returns its outcome as a worker's send does.
func (c *grpcCall) send() (int, error) {
	ctx, cancel := context.WithTimeout(c.ctx, c.timeout)
	err := c.conn.Invoke(ctx, c.method, &c.req, &c.resp, c.opts...)
	cancel()
	return grpcOutcome(err)
}

// grpcOutcome returns 200 for a call that succeeded, grpcStatusBase plus
// the code for one the server answered with an error status, and err for
// one that got no answer: a deadline passed, or grpc-go could not connect
// or lost the connection (which it reports as Unavailable with a
// "connection error" or "connection closed" message).
func grpcOutcome(err error) (int, error) {
	if err == nil {
		return 200, nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return 0, err
	}
	switch c := st.Code(); {
	case c == codes.DeadlineExceeded:
		return 0, err
	case c == codes.Unavailable && strings.HasPrefix(st.Message(), "connection "):
		return 0, err
	default:
		return grpcStatusBase + int(c), nil
	}
}

// grpcErrorKind classifies a gRPC failure that got no answer.
func grpcErrorKind(err error) (int, bool) {
	st, ok := status.FromError(err)
	if !ok {
		return 0, false
	}
	switch {
	case st.Code() == codes.DeadlineExceeded:
		return errTimeout, true
	case strings.HasPrefix(st.Message(), "connection closed"):
		return errClosed, true
	case strings.HasPrefix(st.Message(), "connection error"):
		return errConnect, true
	}
	return 0, false
}

// captureGRPC makes r's call once and returns the encoded answer, with
// the header metadata it came with but gRPC's own (content-type, grpc-*).
func captureGRPC(r Request, timeout time.Duration) (Answer, error) {
	conns, err := dialGRPC(r.Addr, 1)
	if err != nil {
		return Answer{}, err
	}
	defer closeGRPC(conns)
	call := newGRPCCall(conns[0], &r, timeout)
	call.resp.keep = true
	ctx, cancel := context.WithTimeout(call.ctx, timeout)
	defer cancel()
	var md metadata.MD
	if err := call.conn.Invoke(ctx, call.method, &call.req, &call.resp, append(call.opts, grpc.Header(&md))...); err != nil {
		return Answer{}, fmt.Errorf("cannot capture an answer from grpc://%s%s: %w", r.Addr, r.Path, err)
	}
	a := Answer{StatusCode: 200, GRPCMethod: r.Path, Body: call.resp.data}
	for _, k := range slices.Sorted(maps.Keys(md)) {
		if k == "content-type" || strings.HasPrefix(k, "grpc-") {
			continue
		}
		for _, v := range md[k] {
			a.Header = append(a.Header, [2]string{k, v})
		}
	}
	return a, nil
}

// startGRPCEcho serves a's method on ln with a grpc-go server whose handler
// takes the request's bytes and answers a's, with a's header metadata,
// decoding and encoding nothing.
func startGRPCEcho(ln net.Listener, a Answer) (*grpc.Server, error) {
	service, method, ok := strings.Cut(strings.TrimPrefix(a.GRPCMethod, "/"), "/")
	if !ok || service == "" || method == "" {
		return nil, fmt.Errorf("bench: gRPC method %q is not /service/method", a.GRPCMethod)
	}
	answer := &rawMessage{data: a.Body}
	var header metadata.MD
	for _, kv := range a.Header {
		header = metadata.Join(header, metadata.Pairs(kv[0], kv[1]))
	}
	srv := grpc.NewServer(grpc.ForceServerCodecV2(rawCodec{}), grpc.MaxRecvMsgSize(64<<20))
	srv.RegisterService(&grpc.ServiceDesc{
		ServiceName: service,
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{MethodName: method,
			Handler: func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
				if err := dec(new(rawMessage)); err != nil {
					return nil, err
				}
				if header != nil {
					if err := grpc.SetHeader(ctx, header); err != nil {
						return nil, err
					}
				}
				return answer, nil
			}}},
	}, struct{}{})
	return srv, nil
}

// serveGRPC serves srv on ln until it stops; a stopped server is no error.
func serveGRPC(srv *grpc.Server, ln net.Listener) error {
	if err := srv.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return err
	}
	return nil
}
