package bench

import (
	"bytes"
	"context"
	"net"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// serveGRPCMethod answers ModelInferMethod with handle, given the
// request's bytes and metadata, on a loopback port until the test ends.
func serveGRPCMethod(t *testing.T, handle func(in []byte, md metadata.MD) ([]byte, error)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.ForceServerCodecV2(rawCodec{}))
	srv.RegisterService(&grpc.ServiceDesc{
		ServiceName: "inference.GRPCInferenceService",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{MethodName: "ModelInfer",
			Handler: func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
				in := &rawMessage{keep: true}
				if err := dec(in); err != nil {
					return nil, err
				}
				md, _ := metadata.FromIncomingContext(ctx)
				out, err := handle(in.data, md)
				if err != nil {
					return nil, err
				}
				// As the gateway names the version that answered.
				if err := grpc.SetHeader(ctx, metadata.Pairs("infergate-model-version", "1")); err != nil {
					return nil, err
				}
				return &rawMessage{data: out}, nil
			}}},
	}, struct{}{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return ln.Addr().String()
}

func grpcInferRequest(addr string) Request {
	return Request{GRPC: true, Addr: addr, Path: ModelInferMethod, Body: []byte("\n\x01m"), Rows: 2,
		Header: map[string]string{"Authorization": "Bearer k"}}
}

func TestGRPCClosedAndOpenLoopCount(t *testing.T) {
	var calls atomic.Int64
	addr := serveGRPCMethod(t, func(in []byte, md metadata.MD) ([]byte, error) {
		if !bytes.Equal(in, []byte("\n\x01m")) || len(md.Get("authorization")) != 1 || md.Get("authorization")[0] != "Bearer k" {
			return nil, status.Error(codes.InvalidArgument, "not the request sent")
		}
		if calls.Add(1)%4 == 0 {
			return nil, status.Error(codes.Unavailable, "queue full")
		}
		return []byte("\x0a\x01m"), nil
	})
	res := run(t, Options{Request: grpcInferRequest(addr), Connections: 12, Duration: 300 * time.Millisecond})
	if res.OK < 20 || res.Errors["Unavailable"] == 0 || len(res.Errors) != 1 || res.Requests != res.OK+res.Errors["Unavailable"] {
		t.Fatalf("closed loop: %d answers, %d ok, errors %v (%s); want one in four Unavailable, no other error",
			res.Requests, res.OK, res.Errors, res.FirstError)
	}
	if res.RowsPerSec != 2*res.OKPerSec || res.Latency.P50 <= 0 || res.ErrorLatency == nil {
		t.Errorf("rows/s %g for %g ok/s, p50 %s, error latency %v", res.RowsPerSec, res.OKPerSec, res.Latency.P50, res.ErrorLatency)
	}
	res = run(t, Options{Request: grpcInferRequest(addr), Rate: 400, Connections: 16, Duration: 300 * time.Millisecond})
	if res.Mode != "open" || res.OK < 40 || res.Errors["Unavailable"] == 0 || res.SendLatency == nil {
		t.Fatalf("open loop: mode %s, %d ok, errors %v (%s)", res.Mode, res.OK, res.Errors, res.FirstError)
	}
}

func TestGRPCEchoServerAnswersTheCapturedMessage(t *testing.T) {
	want := []byte("\x0a\x04demo\x12\x011")
	addr := serveGRPCMethod(t, func([]byte, metadata.MD) ([]byte, error) { return want, nil })
	a, err := Capture(grpcInferRequest(addr), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	header := [][2]string{{"infergate-model-version", "1"}}
	if a.StatusCode != 200 || a.GRPCMethod != ModelInferMethod || !bytes.Equal(a.Body, want) || !slices.Equal(a.Header, header) {
		t.Fatalf("captured %+v, want the answer %q with the header %q", a, want, header)
	}
	echo, err := StartEchoServer(a)
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	got, err := Capture(grpcInferRequest(echo.Addr), time.Second)
	if err != nil || !bytes.Equal(got.Body, want) || !slices.Equal(got.Header, header) {
		t.Fatalf("the gRPC ceiling answered %q with the header %q, %v; want %q with %q", got.Body, got.Header, err, want, header)
	}
	res := run(t, Options{Request: grpcInferRequest(echo.Addr), Connections: 4, Duration: 200 * time.Millisecond})
	if res.OK < 10 || len(res.Errors) != 0 {
		t.Fatalf("load against the gRPC ceiling: %d ok, errors %v (%s)", res.OK, res.Errors, res.FirstError)
	}
}

func TestGRPCTransportErrorsCounted(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	res := run(t, Options{Request: grpcInferRequest(addr), Connections: 2, Duration: 200 * time.Millisecond, Timeout: time.Second})
	if res.OK != 0 || res.Requests != 0 || res.Errors["connect"] == 0 || res.FirstError == "" {
		t.Fatalf("got %d ok, %d answers, errors %v, first error %q; want only connect errors", res.OK, res.Requests, res.Errors, res.FirstError)
	}
	if _, err := Capture(grpcInferRequest(addr), time.Second); err == nil {
		t.Error("capturing from a closed port succeeded")
	}
}
