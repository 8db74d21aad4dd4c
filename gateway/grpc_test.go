package gateway

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding/gzip"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/infergate/infergate/batcher"
	"github.com/infergate/infergate/gateway/v2codec/inferencepb"
	"github.com/infergate/infergate/router"
)

// startGRPC serves cfg over REST and gRPC on loopback ports and returns
// the REST base URL and a gRPC client connection.
func startGRPC(t *testing.T, cfg Config) (*Server, string, *grpc.ClientConn) {
	t.Helper()
	cfg.GRPCListen = "127.0.0.1:0"
	srv, url := startServer(t, cfg)
	ln, err := net.Listen("tcp", cfg.GRPCListen)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.ServeGRPC(ln) }()
	t.Cleanup(func() {
		srv.Shutdown(context.Background())
		if err := <-done; err != nil {
			t.Errorf("serve gRPC: %v", err)
		}
	})
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return srv, url, conn
}

// wantCode fails unless err is a gRPC status of code whose message holds msg.
func wantCode(t *testing.T, what string, err error, code codes.Code, msg string) {
	t.Helper()
	st, _ := status.FromError(err)
	if st.Code() != code || !strings.Contains(st.Message(), msg) {
		t.Fatalf("%s: got %v (%v), want %v with %q", what, st.Code(), err, code, msg)
	}
}

func TestGRPCHealthAndMetadata(t *testing.T) {
	_, _, conn := startGRPC(t, testConfig(t))
	ctx := context.Background()
	c := inferencepb.NewGRPCInferenceServiceClient(conn)
	if r, err := c.ServerLive(ctx, &inferencepb.ServerLiveRequest{}); err != nil || !r.Live {
		t.Fatalf("ServerLive: %v %v", r, err)
	}
	if r, err := c.ServerReady(ctx, &inferencepb.ServerReadyRequest{}); err != nil || !r.Ready {
		t.Fatalf("ServerReady: %v %v", r, err)
	}
	if r, err := c.ModelReady(ctx, &inferencepb.ModelReadyRequest{Name: "versioned", Version: "2"}); err != nil || !r.Ready {
		t.Fatalf("ModelReady: %v %v", r, err)
	}
	_, err := c.ModelReady(ctx, &inferencepb.ModelReadyRequest{Name: "versioned", Version: "9"})
	wantCode(t, "ModelReady of an unknown version", err, codes.NotFound, `unknown version "9" of model "versioned"`)
	_, err = c.ModelReady(ctx, &inferencepb.ModelReadyRequest{Name: "nope"})
	wantCode(t, "ModelReady of an unknown model", err, codes.NotFound, `unknown model "nope"`)

	sm, err := c.ServerMetadata(ctx, &inferencepb.ServerMetadataRequest{})
	if err != nil || sm.Name != "infergate" || sm.Version != "test" || !slices.Contains(sm.Extensions, "binary_tensor_data") {
		t.Fatalf("ServerMetadata: %v %v", sm, err)
	}
	mm, err := c.ModelMetadata(ctx, &inferencepb.ModelMetadataRequest{Name: "versioned"})
	if err != nil || mm.Name != "versioned" || !slices.Equal(mm.Versions, []string{"1", "2", "3"}) || mm.Platform != "onnx_onnxv1" ||
		len(mm.Inputs) != 1 || mm.Inputs[0].Name != "input" || mm.Inputs[0].Datatype != "FP32" {
		t.Fatalf("ModelMetadata: %v %v", mm, err)
	}
	mm, err = c.ModelMetadata(ctx, &inferencepb.ModelMetadataRequest{Name: "versioned", Version: "2"})
	if err != nil || !slices.Equal(mm.Versions, []string{"2"}) {
		t.Fatalf("ModelMetadata of version 2: %v %v", mm, err)
	}
	_, err = c.ModelMetadata(ctx, &inferencepb.ModelMetadataRequest{Name: "nope"})
	wantCode(t, "ModelMetadata of an unknown model", err, codes.NotFound, `unknown model "nope"`)

	// grpc.health.v1 answers for the server and the service.
	h := healthpb.NewHealthClient(conn)
	for _, service := range []string{"", "inference.GRPCInferenceService"} {
		r, err := h.Check(ctx, &healthpb.HealthCheckRequest{Service: service})
		if err != nil || r.Status != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("health of %q: %v %v", service, r, err)
		}
	}

	// Reflection lists the inference service.
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.Name)
	}
	if !slices.Contains(names, "inference.GRPCInferenceService") || !slices.Contains(names, "grpc.health.v1.Health") {
		t.Fatalf("reflection lists %v", names)
	}
	stream.CloseSend()
}

// demoRows are demoRequest's rows.
var demoRows = []float32{35, 52000, 24, 1200, 2, 680, 0, 0.3, 61, 18000, 3, 9000, 1, 540, 4, 0.95}

// TestGRPCInferMatchesREST: the demo model answers the same over gRPC,
// typed and raw, as over REST.
func TestGRPCInferMatchesREST(t *testing.T) {
	_, url, conn := startGRPC(t, testConfig(t))
	code, _, body := call(t, "POST", url+"/v2/models/demo/infer", []byte(demoRequest))
	if code != 200 {
		t.Fatalf("REST: %d %s", code, body)
	}
	var rest struct {
		Outputs []struct {
			Name  string
			Shape []int64
			Data  []float32
		}
	}
	if err := json.Unmarshal(body, &rest); err != nil {
		t.Fatal(err)
	}

	c := inferencepb.NewGRPCInferenceServiceClient(conn)
	req := &inferencepb.ModelInferRequest{ModelName: "demo", Id: "req-1",
		Inputs: []*inferencepb.ModelInferRequest_InferInputTensor{{Name: "input", Datatype: "FP32", Shape: []int64{2, 8},
			Contents: &inferencepb.InferTensorContents{Fp32Contents: demoRows}}}}
	var header metadata.MD
	typed, err := c.ModelInfer(context.Background(), req, grpc.Header(&header))
	if err != nil {
		t.Fatal(err)
	}
	if typed.ModelName != "demo" || typed.ModelVersion != "1" || typed.Id != "req-1" || len(typed.Outputs) != len(rest.Outputs) ||
		typed.RawOutputContents != nil || !slices.Equal(header.Get("infergate-model-version"), []string{"1"}) {
		t.Fatalf("typed response %v, header %v", typed, header)
	}
	for i, out := range rest.Outputs {
		got := typed.Outputs[i]
		if got.Name != out.Name || !slices.Equal(got.Shape, out.Shape) || !slices.Equal(got.Contents.GetFp32Contents(), out.Data) {
			t.Fatalf("output %d: gRPC %v, REST %+v", i, got, out)
		}
	}

	// The same rows raw: the outputs come raw, with the same bytes.
	var raw []byte
	for _, f := range demoRows {
		raw = binary.LittleEndian.AppendUint32(raw, math.Float32bits(f))
	}
	req.Inputs[0].Contents, req.RawInputContents = nil, [][]byte{raw}
	rawResp, err := c.ModelInfer(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if len(rawResp.RawOutputContents) != len(rest.Outputs) {
		t.Fatalf("raw response: %v", rawResp)
	}
	for i, out := range rest.Outputs {
		var want []byte
		for _, f := range out.Data {
			want = binary.LittleEndian.AppendUint32(want, math.Float32bits(f))
		}
		if rawResp.Outputs[i].Contents != nil || string(rawResp.RawOutputContents[i]) != string(want) {
			t.Fatalf("raw output %d: %v %x, want %x", i, rawResp.Outputs[i], rawResp.RawOutputContents[i], want)
		}
	}

	// Both protocols count in the same families, told apart by a label.
	_, err = c.ModelInfer(context.Background(), &inferencepb.ModelInferRequest{ModelName: "nope"})
	wantCode(t, "unknown model", err, codes.NotFound, "unknown model")
	metricsText := get(t, url+"/metrics")
	for _, series := range []string{
		`infergate_requests_total{model="demo",version="1",protocol="rest",code="200"} 1`,
		`infergate_requests_total{model="demo",version="1",protocol="grpc",code="200"} 2`,
		`infergate_request_duration_seconds_count{model="demo",version="1",protocol="grpc"} 2`,
		`infergate_requests_unrouted_total{protocol="grpc",code="404"} `,
	} {
		if !strings.Contains(metricsText, series) {
			t.Errorf("/metrics lacks %s", series)
		}
	}
}

// TestGRPCPinnedVersionAndOutputSelection mirrors
// TestPinnedVersionsAndOutputSelection over gRPC.
func TestGRPCPinnedVersionAndOutputSelection(t *testing.T) {
	_, _, conn := startGRPC(t, testConfig(t))
	c := inferencepb.NewGRPCInferenceServiceClient(conn)
	ctx := context.Background()
	in := []*inferencepb.ModelInferRequest_InferInputTensor{{Name: "input", Datatype: "FP32", Shape: []int64{1, 2},
		Contents: &inferencepb.InferTensorContents{Fp32Contents: []float32{1.5, -2}}}}
	for _, v := range []string{"1", "2", "3"} {
		r, err := c.ModelInfer(ctx, &inferencepb.ModelInferRequest{ModelName: "versioned", ModelVersion: v, Inputs: in})
		if err != nil || r.ModelVersion != v {
			t.Fatalf("version %s: %v %v", v, r, err)
		}
	}
	if r, err := c.ModelInfer(ctx, &inferencepb.ModelInferRequest{ModelName: "versioned", Inputs: in}); err != nil || r.ModelVersion != "3" {
		t.Fatalf("unpinned: %v %v, want the newest version 3", r, err)
	}
	_, err := c.ModelInfer(ctx, &inferencepb.ModelInferRequest{ModelName: "versioned", ModelVersion: "4", Inputs: in})
	wantCode(t, "unknown version", err, codes.NotFound, `unknown version "4" of model "versioned"`)

	pair := &inferencepb.ModelInferRequest{ModelName: "pair",
		Inputs: []*inferencepb.ModelInferRequest_InferInputTensor{
			{Name: "b", Datatype: "INT64", Shape: []int64{1, 2}, Contents: &inferencepb.InferTensorContents{Int64Contents: []int64{7, -9}}},
			{Name: "a", Datatype: "FP32", Shape: []int64{1, 4}, Contents: &inferencepb.InferTensorContents{Fp32Contents: []float32{1, 2, 3, 4}}},
		},
		Outputs: []*inferencepb.ModelInferRequest_InferRequestedOutputTensor{{Name: "b_out"}}}
	r, err := c.ModelInfer(ctx, pair)
	if err != nil || len(r.Outputs) != 1 || r.Outputs[0].Name != "b_out" || !slices.Equal(r.Outputs[0].Contents.GetInt64Contents(), []int64{7, -9}) {
		t.Fatalf("output selection: %v %v", r, err)
	}
	pair.Outputs = nil
	r, err = c.ModelInfer(ctx, pair)
	if err != nil || len(r.Outputs) != 2 {
		t.Fatalf("all outputs: %v %v", r, err)
	}
	for _, o := range r.Outputs {
		if o.Name == "a_sum" && !slices.Equal(o.Contents.GetFp32Contents(), []float32{10}) {
			t.Fatalf("a_sum: %v", o)
		}
	}
}

// TestGRPCEveryDataType echoes each datatype typed, and FP16 raw.
func TestGRPCEveryDataType(t *testing.T) {
	_, _, conn := startGRPC(t, testConfig(t))
	c := inferencepb.NewGRPCInferenceServiceClient(conn)
	for model, contents := range map[string]*inferencepb.InferTensorContents{
		"echo_fp32":  {Fp32Contents: []float32{1.5, -2, 0, 3.25}},
		"echo_fp64":  {Fp64Contents: []float64{1.5, -2, 0, 1e100}},
		"echo_int32": {IntContents: []int32{1, -2, math.MaxInt32, math.MinInt32}},
		"echo_int64": {Int64Contents: []int64{1, -2, 9007199254740993, math.MinInt64}},
		"echo_int8":  {IntContents: []int32{1, -2, 127, -128}},
		"echo_uint8": {UintContents: []uint32{1, 2, 255, 0}},
		"echo_bool":  {BoolContents: []bool{true, false, false, true}},
	} {
		dt := strings.ToUpper(strings.TrimPrefix(model, "echo_"))
		r, err := c.ModelInfer(context.Background(), &inferencepb.ModelInferRequest{ModelName: model,
			Inputs: []*inferencepb.ModelInferRequest_InferInputTensor{{Name: "input", Datatype: dt, Shape: []int64{1, 4}, Contents: contents}}})
		if err != nil || len(r.Outputs) != 1 || r.Outputs[0].Datatype != dt || r.Outputs[0].Contents.String() != contents.String() {
			t.Fatalf("%s: %v %v", model, r, err)
		}
	}
	half := []byte{0x00, 0x3e, 0x00, 0xc0, 0x00, 0x00, 0xff, 0x7b} // 1.5, -2, 0, 65504
	r, err := c.ModelInfer(context.Background(), &inferencepb.ModelInferRequest{ModelName: "echo_fp16",
		Inputs:           []*inferencepb.ModelInferRequest_InferInputTensor{{Name: "input", Datatype: "FP16", Shape: []int64{1, 4}}},
		RawInputContents: [][]byte{half}})
	if err != nil || len(r.RawOutputContents) != 1 || string(r.RawOutputContents[0]) != string(half) {
		t.Fatalf("echo_fp16: %v %v", r, err)
	}
}

// TestGRPCErrors: each REST error has its gRPC code, with REST's message.
func TestGRPCErrors(t *testing.T) {
	t.Setenv("INFERGATE_TEST_INFER_KEY", "infer-key-0123456789")
	cfg := testConfig(t)
	cfg.Auth.Keys = map[string]KeySource{"app": {Env: "INFERGATE_TEST_INFER_KEY"}}
	cfg.Models["echo_fp32"] = ModelConfig{Auth: ModelAuth{Infer: []string{"app"}}}
	// A queue of one that holds a request for a long while: the next one
	// finds it full.
	cfg.Models["echo_fp64"] = ModelConfig{Batching: batcher.Config{MaxBatchSize: 16, Instances: 1, MaxQueueSize: 1,
		MaxQueueDelay: batcher.Delay{Duration: 300 * time.Millisecond}}}
	srv, _, conn := startGRPC(t, cfg)
	c := inferencepb.NewGRPCInferenceServiceClient(conn)
	ctx := context.Background()
	demo := func() *inferencepb.ModelInferRequest {
		return &inferencepb.ModelInferRequest{ModelName: "demo",
			Inputs: []*inferencepb.ModelInferRequest_InferInputTensor{{Name: "input", Datatype: "FP32", Shape: []int64{2, 8},
				Contents: &inferencepb.InferTensorContents{Fp32Contents: demoRows}}}}
	}

	_, err := c.ModelInfer(ctx, &inferencepb.ModelInferRequest{ModelName: "nope"})
	wantCode(t, "unknown model", err, codes.NotFound, `unknown model "nope"`)
	r := demo()
	r.Inputs[0].Datatype = "FP64"
	_, err = c.ModelInfer(ctx, r)
	wantCode(t, "wrong datatype", err, codes.InvalidArgument, `input "input": datatype FP64 does not match the model's FP32`)
	r = demo()
	r.Inputs[0].Shape = []int64{3, 8}
	_, err = c.ModelInfer(ctx, r)
	wantCode(t, "wrong count", err, codes.InvalidArgument, `input "input": shape [3,8] has 24 elements but fp32_contents holds 16`)
	r = demo()
	r.Inputs[0].Shape = []int64{1000, 8}
	_, err = c.ModelInfer(ctx, r)
	wantCode(t, "more rows than the model takes", err, codes.ResourceExhausted, "request too large for the model")
	r = demo()
	r.RawInputContents = [][]byte{make([]byte, 2<<20)}
	r.Inputs[0].Contents = nil
	_, err = c.ModelInfer(ctx, r)
	wantCode(t, "a message beyond max_body_size", err, codes.ResourceExhausted, "larger than max")
	r = demo()
	r.Parameters = map[string]*inferencepb.InferParameter{"priority": {ParameterChoice: &inferencepb.InferParameter_BoolParam{}}}
	_, err = c.ModelInfer(ctx, r)
	wantCode(t, "bad priority", err, codes.InvalidArgument, "parameters.priority: want a non-negative integer, got bool_param false")

	// API keys, in the metadata.
	echo := &inferencepb.ModelInferRequest{ModelName: "echo_fp32",
		Inputs: []*inferencepb.ModelInferRequest_InferInputTensor{{Name: "input", Datatype: "FP32", Shape: []int64{1, 4},
			Contents: &inferencepb.InferTensorContents{Fp32Contents: []float32{1, 2, 3, 4}}}}}
	_, err = c.ModelInfer(ctx, echo)
	wantCode(t, "no key", err, codes.Unauthenticated, "this endpoint needs an API key")
	_, err = c.ModelInfer(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer wrong-key-0123456789"), echo)
	wantCode(t, "wrong key", err, codes.Unauthenticated, "the API key is not valid")
	if _, err = c.ModelInfer(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer infer-key-0123456789"), echo); err != nil {
		t.Fatalf("with the key: %v", err)
	}

	// A full queue is Unavailable with the reason; a request whose
	// timeout passes in the queue DeadlineExceeded.
	fp64 := func(timeoutUS int64) *inferencepb.ModelInferRequest {
		r := &inferencepb.ModelInferRequest{ModelName: "echo_fp64",
			Inputs: []*inferencepb.ModelInferRequest_InferInputTensor{{Name: "input", Datatype: "FP64", Shape: []int64{1, 4},
				Contents: &inferencepb.InferTensorContents{Fp64Contents: []float64{1, 2, 3, 4}}}}}
		if timeoutUS > 0 {
			r.Parameters = map[string]*inferencepb.InferParameter{"timeout": {ParameterChoice: &inferencepb.InferParameter_Int64Param{Int64Param: timeoutUS}}}
		}
		return r
	}
	_, err = c.ModelInfer(ctx, fp64(20_000))
	wantCode(t, "timeout in the queue", err, codes.DeadlineExceeded, `cannot run model "echo_fp64" version 1`)
	held := make(chan error, 1)
	go func() {
		_, err := c.ModelInfer(ctx, fp64(0))
		held <- err
	}()
	v := srv.serving.Load().models["echo_fp64"].latest()
	waitUntil(t, "a request in echo_fp64's queue", 5*time.Second, func() bool { return v.batcher.QueueLength() == 1 })
	_, err = c.ModelInfer(ctx, fp64(0))
	wantCode(t, "full queue", err, codes.Unavailable, `cannot queue request for model "echo_fp64" version 1`)
	if err := <-held; err != nil {
		t.Fatalf("the request held in the queue: %v", err)
	}

	if _, err := c.ModelInfer(ctx, demo()); err != nil {
		t.Fatalf("after the errors: %v", err)
	}
}

// rawCodec sends a []byte as the message's encoding, as it is.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.([]byte))}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	return proto.Unmarshal(data.Materialize(), v.(proto.Message))
}

func (rawCodec) Name() string { return "proto" }

// TestGRPCMalformedMessages sends 10,000 corruptions of a valid request:
// each one that does not parse is InvalidArgument, none is Internal or
// Unknown, and the server keeps serving.
func TestGRPCMalformedMessages(t *testing.T) {
	_, _, conn := startGRPC(t, testConfig(t))
	good, err := proto.Marshal(&inferencepb.ModelInferRequest{ModelName: "echo_fp32", Id: "x",
		Inputs: []*inferencepb.ModelInferRequest_InferInputTensor{{Name: "input", Datatype: "FP32", Shape: []int64{1, 4},
			Contents: &inferencepb.InferTensorContents{Fp32Contents: []float32{1, 2, 3, 4}}}}})
	if err != nil {
		t.Fatal(err)
	}
	seed := uint64(7)
	next := func() uint64 { seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17; return seed }
	ctx := context.Background()
	unparsable := 0
	for range 10000 {
		b := slices.Clone(good)
		for range 1 + next()%3 {
			if next()%2 == 0 {
				b[next()%uint64(len(b))] = byte(next())
			} else {
				b = b[:next()%uint64(len(b))+1]
			}
		}
		var out inferencepb.ModelInferResponse
		err := conn.Invoke(ctx, inferencepb.GRPCInferenceService_ModelInfer_FullMethodName, b, &out, grpc.ForceCodecV2(rawCodec{}))
		parses := proto.Unmarshal(b, new(inferencepb.ModelInferRequest)) == nil
		code := status.Code(err)
		// The gateway refuses as unparsable exactly what protobuf refuses.
		refusedUnparsable := code == codes.InvalidArgument && strings.HasPrefix(status.Convert(err).Message(), "invalid ModelInferRequest message")
		switch {
		case !parses && !refusedUnparsable:
			t.Fatalf("%x does not parse but got %v", b, err)
		case parses && refusedUnparsable:
			t.Fatalf("%x parses but got %v", b, err)
		case code == codes.Internal || code == codes.Unknown || code == codes.Unavailable:
			t.Fatalf("%x: %v", b, err)
		}
		if !parses {
			unparsable++
		}
	}
	if unparsable < 1000 {
		t.Fatalf("only %d of the corruptions did not parse", unparsable)
	}
	var out inferencepb.ModelInferResponse
	if err := conn.Invoke(ctx, inferencepb.GRPCInferenceService_ModelInfer_FullMethodName, good, &out, grpc.ForceCodecV2(rawCodec{})); err != nil {
		t.Fatalf("the valid request after the corruptions: %v", err)
	}
}

// TestGRPCClassification: an output asked for with classification comes
// as REST answers it, typed in bytes_contents or raw in Triton's layout.
func TestGRPCClassification(t *testing.T) {
	_, url, conn := startGRPC(t, testConfig(t))
	c := inferencepb.NewGRPCInferenceServiceClient(conn)
	for _, k := range []int64{1, 2} {
		want := classify(t, url, int(k))
		req := &inferencepb.ModelInferRequest{ModelName: "demo",
			Inputs: []*inferencepb.ModelInferRequest_InferInputTensor{{Name: "input", Datatype: "FP32", Shape: []int64{2, 8},
				Contents: &inferencepb.InferTensorContents{Fp32Contents: demoRows}}},
			Outputs: []*inferencepb.ModelInferRequest_InferRequestedOutputTensor{{Name: "output",
				Parameters: map[string]*inferencepb.InferParameter{"classification": {ParameterChoice: &inferencepb.InferParameter_Int64Param{Int64Param: k}}}}}}
		r, err := c.ModelInfer(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, b := range r.Outputs[0].Contents.GetBytesContents() {
			got = append(got, string(b))
		}
		if r.Outputs[0].Datatype != "BYTES" || !slices.Equal(r.Outputs[0].Shape, []int64{2, k}) || !slices.Equal(got, want.Data) {
			t.Fatalf("k %d: gRPC %v, REST %+v", k, r.Outputs[0], want)
		}

		var raw []byte
		for _, f := range demoRows {
			raw = binary.LittleEndian.AppendUint32(raw, math.Float32bits(f))
		}
		req.Inputs[0].Contents, req.RawInputContents = nil, [][]byte{raw}
		if r, err = c.ModelInfer(context.Background(), req); err != nil {
			t.Fatal(err)
		}
		var wantRaw []byte
		for _, s := range want.Data {
			wantRaw = binary.LittleEndian.AppendUint32(wantRaw, uint32(len(s)))
			wantRaw = append(wantRaw, s...)
		}
		if len(r.RawOutputContents) != 1 || string(r.RawOutputContents[0]) != string(wantRaw) {
			t.Fatalf("k %d raw: %q, want %q", k, r.RawOutputContents, wantRaw)
		}
	}
	_, err := c.ModelInfer(context.Background(), &inferencepb.ModelInferRequest{ModelName: "demo",
		Inputs: []*inferencepb.ModelInferRequest_InferInputTensor{{Name: "input", Datatype: "FP32", Shape: []int64{2, 8},
			Contents: &inferencepb.InferTensorContents{Fp32Contents: demoRows}}},
		Outputs: []*inferencepb.ModelInferRequest_InferRequestedOutputTensor{{Name: "output",
			Parameters: map[string]*inferencepb.InferParameter{"classification": {ParameterChoice: &inferencepb.InferParameter_Int64Param{Int64Param: 3}}}}}})
	wantCode(t, "more classes than the output has", err, codes.InvalidArgument, `output "output": parameters.classification asks for 3 classes but the output has 2`)
}

// TestGRPCStickyRouting: a sticky key in the call's metadata routes as the
// same key in REST's header does.
func TestGRPCStickyRouting(t *testing.T) {
	cfg := abConfig(t, router.Config{Split: map[string]int{"1": 50, "2": 50}, StickyHeader: "X-User"})
	_, url, conn := startGRPC(t, cfg)
	c := inferencepb.NewGRPCInferenceServiceClient(conn)
	client := &fasthttp.Client{}
	seen := map[string]bool{}
	for key := range 40 {
		user := fmt.Sprintf("user-%d", key)
		rest := inferAB(t, client, url, "X-User", user)
		ctx := metadata.AppendToOutgoingContext(context.Background(), "x-user", user)
		r, err := c.ModelInfer(ctx, &inferencepb.ModelInferRequest{ModelName: "ab",
			Inputs: []*inferencepb.ModelInferRequest_InferInputTensor{{Name: "input", Datatype: "FP32", Shape: []int64{1, 2},
				Contents: &inferencepb.InferTensorContents{Fp32Contents: []float32{2, 1}}}}})
		if err != nil || r.ModelVersion != rest {
			t.Fatalf("key %s: gRPC answered by %v (%v), REST by %s", user, r.GetModelVersion(), err, rest)
		}
		seen[rest] = true
	}
	if len(seen) != 2 {
		t.Fatalf("40 keys went to versions %v only", seen)
	}
}

// TestGRPCStatusOfEveryError maps each status the infer path answers to
// its gRPC code, and a panic in a call to Internal.
func TestGRPCStatusOfEveryError(t *testing.T) {
	for err, want := range map[error]codes.Code{
		batcher.ErrQueueFull:   codes.Unavailable,
		batcher.ErrStopped:     codes.Unavailable,
		batcher.ErrDeadline:    codes.DeadlineExceeded,
		batcher.ErrTooLarge:    codes.InvalidArgument,
		batcher.ErrBadPriority: codes.InvalidArgument,
		batcher.ErrGone:        codes.Canceled,
		errors.New("onnx"):     codes.Internal,
	} {
		if got := status.Code(grpcError(batchStatus(err), err.Error())); got != want {
			t.Errorf("%v: %v, want %v", err, got, want)
		}
	}
	for _, code := range statusCodes {
		if code != 200 && status.Code(grpcError(code, "x")) == codes.Unknown {
			t.Errorf("status %d has no gRPC code", code)
		}
	}
	g := &grpcServer{s: &Server{log: quiet}}
	_, err := g.recoverPanic(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: "/x"}, func(context.Context, any) (any, error) {
		panic("boom")
	})
	wantCode(t, "a panic", err, codes.Internal, "internal error")
}

// TestGRPCGracefulShutdown: a call in flight when Shutdown starts is
// answered; health turns NOT_SERVING and later calls fail.
func TestGRPCGracefulShutdown(t *testing.T) {
	cfg := testConfig(t)
	cfg.Models["echo_fp64"] = ModelConfig{Batching: batcher.Config{MaxBatchSize: 16, Instances: 1,
		MaxQueueDelay: batcher.Delay{Duration: 300 * time.Millisecond}}}
	srv, _, conn := startGRPC(t, cfg)
	c := inferencepb.NewGRPCInferenceServiceClient(conn)
	held := make(chan error, 1)
	go func() {
		_, err := c.ModelInfer(context.Background(), &inferencepb.ModelInferRequest{ModelName: "echo_fp64",
			Inputs: []*inferencepb.ModelInferRequest_InferInputTensor{{Name: "input", Datatype: "FP64", Shape: []int64{1, 4},
				Contents: &inferencepb.InferTensorContents{Fp64Contents: []float64{1, 2, 3, 4}}}}})
		held <- err
	}()
	v := srv.serving.Load().models["echo_fp64"].latest()
	waitUntil(t, "a request in echo_fp64's queue", 5*time.Second, func() bool { return v.batcher.QueueLength() == 1 })
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-held; err != nil {
		t.Fatalf("the call in flight during shutdown: %v", err)
	}
	if _, err := c.ServerLive(context.Background(), &inferencepb.ServerLiveRequest{}); status.Code(err) != codes.Unavailable {
		t.Fatalf("a call after shutdown: %v, want Unavailable", err)
	}
}

// TestGRPCCompressedMessages: gzip-compressed calls are answered.
func TestGRPCCompressedMessages(t *testing.T) {
	_, _, conn := startGRPC(t, testConfig(t))
	c := inferencepb.NewGRPCInferenceServiceClient(conn)
	r, err := c.ModelInfer(context.Background(), &inferencepb.ModelInferRequest{ModelName: "echo_fp32",
		Inputs: []*inferencepb.ModelInferRequest_InferInputTensor{{Name: "input", Datatype: "FP32", Shape: []int64{1, 4},
			Contents: &inferencepb.InferTensorContents{Fp32Contents: []float32{1, 2, 3, 4}}}}}, grpc.UseCompressor(gzip.Name))
	if err != nil || !slices.Equal(r.Outputs[0].Contents.GetFp32Contents(), []float32{1, 2, 3, 4}) {
		t.Fatalf("gzip call: %v %v", r, err)
	}
}

// freeAddress returns a loopback address with a port free a moment ago.
func freeAddress(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestGRPCListenAndServeTLS: ListenAndServe, what infergate serve runs,
// serves gRPC on grpc_listen beside HTTP, with the tls certificate, and
// Shutdown stops both.
func TestGRPCListenAndServeTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "grpc"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)

	cfg := testConfig(t)
	cfg.TLS = TLSConfig{CertFile: certFile, KeyFile: keyFile}
	cfg.Listen, cfg.GRPCListen = freeAddress(t), freeAddress(t)
	srv, err := New(Options{Config: cfg, Env: testEnv, Log: quiet, Version: "test", Engine: testEngine(t, cfg.StateDir).Conn})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.ListenAndServe() }()
	stopped := false
	defer func() {
		if !stopped {
			srv.Shutdown(context.Background())
			<-served
		}
	}()

	conn, err := grpc.NewClient(cfg.GRPCListen, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{InsecureSkipVerify: true})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := inferencepb.NewGRPCInferenceServiceClient(conn)
	waitUntil(t, "gRPC over TLS answers", 10*time.Second, func() bool {
		r, err := c.ServerLive(context.Background(), &inferencepb.ServerLiveRequest{})
		return err == nil && r.Live
	})
	plain, err := grpc.NewClient(cfg.GRPCListen, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if _, err := inferencepb.NewGRPCInferenceServiceClient(plain).ServerLive(context.Background(), &inferencepb.ServerLiveRequest{}); err == nil {
		t.Fatal("a plaintext call to the TLS gRPC server was answered")
	}

	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	stopped = true
	if err := <-served; err != nil {
		t.Fatalf("ListenAndServe after Shutdown: %v", err)
	}
}

// TestGRPCConnectionLimit: at max_connections a new gRPC connection is
// refused, not the one serving calls.
func TestGRPCConnectionLimit(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxConnections, cfg.MaxConnectionsPerIP = 1, 1
	_, _, first := startGRPC(t, cfg)
	ctx := context.Background()
	live := func(conn *grpc.ClientConn) error {
		_, err := inferencepb.NewGRPCInferenceServiceClient(conn).ServerLive(ctx, &inferencepb.ServerLiveRequest{})
		return err
	}
	if err := live(first); err != nil {
		t.Fatal(err)
	}
	second, err := grpc.NewClient(first.Target(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	if err := live(second); status.Code(err) != codes.Unavailable {
		t.Fatalf("a second connection beyond max_connections 1: %v, want Unavailable", err)
	}
	if err := live(first); err != nil {
		t.Fatalf("the first connection after the second was refused: %v", err)
	}
}
