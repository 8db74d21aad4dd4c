package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/infergate/infergate/bench"
	"github.com/infergate/infergate/gateway/v2codec/inferencepb"
	"github.com/infergate/infergate/runtime"
)

// benchGRPCRequest builds the ModelInfer call of `bench --protocol grpc`
// for model at the gRPC address addr: inputs from the model's metadata
// (asked for over gRPC), rows rows of the values GenerateRequest draws from
// seed, as typed contents, or as raw_input_contents with binary (as
// --binary sends binary tensor data over REST). The message is encoded
// once; headers go as metadata.
func benchGRPCRequest(addr, model, version string, rows int, seed uint64, binaryData bool, timeout time.Duration,
	headers map[string]string) (bench.Request, error) {
	req := bench.Request{GRPC: true, Addr: addr, Path: bench.ModelInferMethod, Header: headers}
	inputs, err := grpcInputs(addr, model, version, timeout, headers)
	if err != nil {
		return req, err
	}
	// The binary form carries each input's values as contiguous bytes,
	// the same values the REST request carries.
	p, err := bench.GenerateRequest(inputs, rows, seed, true)
	if err != nil {
		return req, err
	}
	msg := &inferencepb.ModelInferRequest{ModelName: model, ModelVersion: version}
	data := p.Body[p.HeaderLength:]
	for _, in := range inputs {
		shape := in.ShapeFor(rows)
		size := runtime.Elements(shape) * in.DataType.Size()
		raw := data[:size:size]
		data = data[size:]
		t := &inferencepb.ModelInferRequest_InferInputTensor{Name: in.Name, Datatype: in.DataType.String(), Shape: shape}
		if binaryData {
			msg.RawInputContents = append(msg.RawInputContents, raw)
		} else if t.Contents, err = typedContents(in.DataType, raw); err != nil {
			return req, fmt.Errorf("input %q: %w", in.Name, err)
		}
		msg.Inputs = append(msg.Inputs, t)
	}
	if req.Body, err = proto.Marshal(msg); err != nil {
		return req, fmt.Errorf("cannot encode the ModelInfer request: %w", err)
	}
	req.Rows = p.Rows
	return req, nil
}

// grpcInputs returns the inputs ModelMetadata lists for model.
func grpcInputs(addr, model, version string, timeout time.Duration, headers map[string]string) ([]bench.TensorSpec, error) {
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("cannot connect to grpc://%s: %w", addr, err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for k, v := range headers {
		ctx = metadata.AppendToOutgoingContext(ctx, k, v)
	}
	md, err := inferencepb.NewGRPCInferenceServiceClient(cc).ModelMetadata(ctx,
		&inferencepb.ModelMetadataRequest{Name: model, Version: version})
	if err != nil {
		return nil, fmt.Errorf("cannot get the metadata of model %q from grpc://%s: %w", model, addr, err)
	}
	if len(md.GetInputs()) == 0 {
		return nil, fmt.Errorf("model %q's metadata lists no inputs", model)
	}
	specs := make([]bench.TensorSpec, len(md.GetInputs()))
	for i, in := range md.GetInputs() {
		dt, ok := runtime.ParseDataType([]byte(in.GetDatatype()))
		if !ok {
			return nil, fmt.Errorf("model %q's input %q has unsupported datatype %q", model, in.GetName(), in.GetDatatype())
		}
		specs[i] = bench.TensorSpec{Name: in.GetName(), DataType: dt, Shape: in.GetShape()}
	}
	return specs, nil
}

// typedContents decodes raw, little-endian values of dt, into the typed
// contents field the protocol carries dt in.
func typedContents(dt runtime.DataType, raw []byte) (*inferencepb.InferTensorContents, error) {
	c := new(inferencepb.InferTensorContents)
	n := len(raw) / dt.Size()
	le := binary.LittleEndian
	for i := range n {
		b := raw[i*dt.Size():]
		switch dt {
		case runtime.BOOL:
			c.BoolContents = append(c.BoolContents, b[0] != 0)
		case runtime.INT8:
			c.IntContents = append(c.IntContents, int32(int8(b[0])))
		case runtime.INT16:
			c.IntContents = append(c.IntContents, int32(int16(le.Uint16(b))))
		case runtime.INT32:
			c.IntContents = append(c.IntContents, int32(le.Uint32(b)))
		case runtime.INT64:
			c.Int64Contents = append(c.Int64Contents, int64(le.Uint64(b)))
		case runtime.UINT8:
			c.UintContents = append(c.UintContents, uint32(b[0]))
		case runtime.UINT16:
			c.UintContents = append(c.UintContents, uint32(le.Uint16(b)))
		case runtime.UINT32:
			c.UintContents = append(c.UintContents, le.Uint32(b))
		case runtime.UINT64:
			c.Uint64Contents = append(c.Uint64Contents, le.Uint64(b))
		case runtime.FP32:
			c.Fp32Contents = append(c.Fp32Contents, math.Float32frombits(le.Uint32(b)))
		case runtime.FP64:
			c.Fp64Contents = append(c.Fp64Contents, math.Float64frombits(le.Uint64(b)))
		default:
			return nil, fmt.Errorf("%s has no typed contents: send it with --binary", dt)
		}
	}
	return c, nil
}

// grpcCeilingShare is the least share of the gRPC ceiling's ok req/s the
// gateway must reach with the demo model over gRPC: the REST demo's bar.
const grpcCeilingShare = 0.85

// grpcCeiling measures the demo model through the gateway's gRPC server
// against the gRPC ceiling, in interleaved pairs, as the demo is measured
// against the HTTP ceiling.
func (s *suite) grpcCeiling(ctx context.Context) error {
	demo, err := benchGRPCRequest(s.grpcAddr, "demo", "", 1, 1, false, 10*time.Second, nil)
	if err != nil {
		return err
	}
	ceilingReq := demo
	echo, err := s.echo("demo: gRPC ceiling", &ceilingReq)
	if err != nil {
		return err
	}
	runs, ratios := s.pairs(ctx, ceilingPairs, demoConnections, "demo: gRPC ceiling", ceilingReq, "demo: gateway over gRPC", demo)
	if err := echo.Close(); err != nil {
		return fmt.Errorf("cannot stop the gRPC ceiling: %w", err)
	}
	s.section("Demo model over gRPC vs the gRPC ceiling",
		fmt.Sprintf("Closed loop, %d workers sharing %d gRPC connections, one row per ModelInfer call with typed FP32 "+
			"contents, against the gateway's gRPC listener (the demo model as above). The gRPC ceiling is an in-process "+
			"grpc-go server whose ModelInfer takes the request's bytes and answers the message the gateway answered, "+
			"with the header metadata it answered (the version that computed it, as the HTTP ceiling sends the gateway's "+
			"headers), decoding and encoding nothing. %d interleaved pairs of %s runs; the check takes the median of the pairs' "+
			"ratios (gateway / ceiling): %s.",
			demoConnections, min(demoConnections, bench.MaxGRPCConnections), ceilingPairs, s.opts.duration/4, formatRatios(ratios)),
		runs...)
	s.median("demo over gRPC vs gRPC ceiling (ok req/s, median of interleaved pairs)", ratios, grpcCeilingShare)
	return nil
}
