package gateway

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/infergate/infergate/gateway/v2codec/inferencepb"
	"github.com/infergate/infergate/runtime"
)

// tritonPlatform is the platform Triton's model configuration names ONNX
// Runtime models by; perf_analyzer and Triton's clients read it there
// (model metadata keeps the Open Inference Protocol's "onnx_onnxv1").
const tritonPlatform = "onnxruntime_onnx"

// tritonDataTypes maps the served element types to Triton's DataType enum.
var tritonDataTypes = [...]inferencepb.DataType{
	runtime.FP32: inferencepb.DataType_TYPE_FP32, runtime.UINT8: inferencepb.DataType_TYPE_UINT8,
	runtime.INT8: inferencepb.DataType_TYPE_INT8, runtime.UINT16: inferencepb.DataType_TYPE_UINT16,
	runtime.INT16: inferencepb.DataType_TYPE_INT16, runtime.INT32: inferencepb.DataType_TYPE_INT32,
	runtime.INT64: inferencepb.DataType_TYPE_INT64, runtime.BOOL: inferencepb.DataType_TYPE_BOOL,
	runtime.FP16: inferencepb.DataType_TYPE_FP16, runtime.FP64: inferencepb.DataType_TYPE_FP64,
	runtime.UINT32: inferencepb.DataType_TYPE_UINT32, runtime.UINT64: inferencepb.DataType_TYPE_UINT64,
}

// tritonDataType returns Triton's DataType of t, TYPE_INVALID for a type
// infergate does not serve.
func tritonDataType(t runtime.DataType) inferencepb.DataType {
	if int(t) < len(tritonDataTypes) {
		return tritonDataTypes[t]
	}
	return inferencepb.DataType_TYPE_INVALID
}

// statDuration is a count of events and their total duration, Triton's
// StatisticDuration. It is safe for concurrent use and does not allocate.
type statDuration struct {
	count atomic.Uint64
	ns    atomic.Uint64
}

// add counts one event that took d.
func (d *statDuration) add(took time.Duration) {
	d.count.Add(1)
	d.ns.Add(uint64(max(took, 0)))
}

// proto returns d as Triton's message.
func (d *statDuration) proto() *inferencepb.StatisticDuration {
	return &inferencepb.StatisticDuration{Count: d.count.Load(), Ns: d.ns.Load()}
}

// versionStats are one model version's counters behind Triton's model
// statistics, kept on the request path of both protocols with atomics
// only. The fields are read one by one, so a report taken while requests
// run may see one counter a request ahead of another. It is safe for
// concurrent use.
type versionStats struct {
	// lastInference is when the last successful request was answered, in
	// milliseconds since the Unix epoch; 0 before the first.
	lastInference atomic.Int64
	// inferences counts the rows of requests the model computed without
	// error (a version without a batcher counts one a request); answers
	// from the response cache are not counted, as in Triton.
	inferences atomic.Uint64
	// executions counts the runs of a version without a batcher; a
	// batcher counts its batches itself (batcher.Batcher.Executions).
	executions atomic.Uint64
	// success and fail count answered requests and their time from
	// decoding to encoding, as infergate_request_duration_seconds has it.
	success, fail statDuration
	// queue counts the requests a batcher ran and their time in its queue.
	queue statDuration
	// computeInfer counts the requests the model computed and the compute
	// time of each one's batch.
	computeInfer statDuration
	// cacheHit counts answers from the response cache and the time of
	// their look-up; cacheMiss the computed requests the cache missed and
	// the time of the look-up and the insertion.
	cacheHit, cacheMiss statDuration
}

// observe counts a request answered with code after took.
func (s *versionStats) observe(code int, took time.Duration) {
	if code != fasthttp.StatusOK {
		s.fail.add(took)
		return
	}
	s.success.add(took)
	s.lastInference.Store(time.Now().UnixMilli())
}

// computed counts a request of rows rows that the model computed in its
// batch's time computed after waiting waited in the batcher's queue
// (queued is false for a version without a batcher, whose requests are
// not queued: the wait for a free instance is part of computed).
func (s *versionStats) computed(rows int64, queued bool, waited, computed time.Duration) {
	s.inferences.Add(uint64(rows))
	if queued {
		s.queue.add(waited)
	} else {
		s.executions.Add(1)
	}
	s.computeInfer.add(computed)
}

// statistics returns v's statistics as Triton's message, for model name.
func (v *version) statistics(name string) *inferencepb.ModelStatistics {
	s := &v.metrics.stats
	executions := s.executions.Load()
	if v.batcher != nil {
		executions += v.batcher.Executions()
	}
	return &inferencepb.ModelStatistics{
		Name:           name,
		Version:        v.name,
		LastInference:  uint64(s.lastInference.Load()),
		InferenceCount: s.inferences.Load(),
		ExecutionCount: executions,
		InferenceStats: &inferencepb.InferStatistics{
			Success:       s.success.proto(),
			Fail:          s.fail.proto(),
			Queue:         s.queue.proto(),
			ComputeInput:  &inferencepb.StatisticDuration{},
			ComputeInfer:  s.computeInfer.proto(),
			ComputeOutput: &inferencepb.StatisticDuration{},
			CacheHit:      s.cacheHit.proto(),
			CacheMiss:     s.cacheMiss.proto(),
		},
	}
}

// tritonConfig returns v's configuration as Triton's ModelConfig message,
// for model name: the part infergate can fill. provider is the runtime's
// execution provider.
func (v *version) tritonConfig(name, provider string) *inferencepb.ModelConfig {
	b := v.cfg.Batching.WithDefaults()
	maxBatch := 0
	if v.batcher != nil {
		maxBatch = b.MaxBatchSize
	}
	dims := func(shape []int64) []int64 {
		if maxBatch > 0 && len(shape) > 0 {
			shape = shape[1:]
		}
		return append([]int64{}, shape...)
	}
	c := &inferencepb.ModelConfig{
		Name:                 name,
		Platform:             tritonPlatform,
		Backend:              "onnxruntime",
		MaxBatchSize:         int32(maxBatch),
		DefaultModelFilename: "model.onnx",
		ResponseCache:        &inferencepb.ModelResponseCache{Enable: v.cache != nil},
	}
	for _, in := range v.rt.Inputs() {
		c.Input = append(c.Input, &inferencepb.ModelInput{Name: in.Name, DataType: tritonDataType(in.DataType), Dims: dims(in.Shape)})
	}
	for j, out := range v.rt.Outputs() {
		o := &inferencepb.ModelOutput{Name: out.Name, DataType: tritonDataType(out.DataType), Dims: dims(out.Shape)}
		if j < len(v.labels) && v.labels[j] != nil {
			o.LabelFilename = labelsFile
		}
		c.Output = append(c.Output, o)
	}
	if maxBatch > 0 {
		db := &inferencepb.ModelDynamicBatching{
			// An adaptive delay ("auto") has no fixed value: it reads 0.
			MaxQueueDelayMicroseconds: uint64(b.MaxQueueDelay.Duration.Microseconds()),
			DefaultQueuePolicy: &inferencepb.ModelQueuePolicy{
				TimeoutAction:              inferencepb.ModelQueuePolicy_REJECT,
				DefaultTimeoutMicroseconds: uint64(b.DefaultTimeout.Microseconds()),
				AllowTimeoutOverride:       true,
				MaxQueueSize:               uint32(b.MaxQueueSize),
			},
		}
		for _, n := range b.PreferredBatchSizes {
			db.PreferredBatchSize = append(db.PreferredBatchSize, int32(n))
		}
		c.SchedulingChoice = &inferencepb.ModelConfig_DynamicBatching{DynamicBatching: db}
	}
	kind := inferencepb.ModelInstanceGroup_KIND_CPU
	if provider == runtime.ProviderCUDA {
		kind = inferencepb.ModelInstanceGroup_KIND_GPU
	}
	c.InstanceGroup = []*inferencepb.ModelInstanceGroup{{Name: name, Kind: kind, Count: int32(v.rt.Instances())}}
	return c
}

// provider is the execution provider the server's models run on.
func (s *Server) provider() string {
	if s.o.Env == nil {
		return runtime.ProviderCPU
	}
	return s.o.Env.Provider()
}

// ModelConfig (Triton's extension) answers the configuration of the version
// named, or of the newest one: NotFound for an unknown model or version,
// Unavailable when the model has no version loaded.
func (g *grpcServer) ModelConfig(_ context.Context, in *inferencepb.ModelConfigRequest) (*inferencepb.ModelConfigResponse, error) {
	st := g.s.acquireState()
	defer st.release()
	m, v, err := lookup(st, []byte(in.Name), []byte(in.Version))
	if err != nil {
		return nil, err
	}
	if v == nil {
		return nil, status.Errorf(codes.Unavailable, "model %q has no version loaded", m.name)
	}
	return &inferencepb.ModelConfigResponse{Config: v.tritonConfig(m.name, g.s.provider())}, nil
}

// ModelStatistics (Triton's extension) answers the statistics of the
// version named, of every loaded version of the model named, or of every
// model's loaded versions when no name is given; NotFound for an unknown
// model or version.
func (g *grpcServer) ModelStatistics(_ context.Context, in *inferencepb.ModelStatisticsRequest) (*inferencepb.ModelStatisticsResponse, error) {
	st := g.s.acquireState()
	defer st.release()
	stats, err := modelStatistics(st, in.Name, in.Version)
	if err != nil {
		return nil, err
	}
	return &inferencepb.ModelStatisticsResponse{ModelStats: stats}, nil
}

// modelStatistics lists the statistics of model name's version (every
// loaded one where version is empty; every model's where name is empty
// too), or the gRPC status of the error.
func modelStatistics(st *state, name, version string) ([]*inferencepb.ModelStatistics, error) {
	if name == "" {
		if version != "" {
			return nil, status.Errorf(codes.InvalidArgument, "version %q needs a model name", version)
		}
		return st.statistics(), nil
	}
	m, v, err := lookup(st, []byte(name), []byte(version))
	if err != nil {
		return nil, err
	}
	if version != "" {
		return []*inferencepb.ModelStatistics{v.statistics(m.name)}, nil
	}
	return m.statistics(nil), nil
}

// statistics lists the statistics of every loaded version of every model,
// by model name.
func (st *state) statistics() []*inferencepb.ModelStatistics {
	var out []*inferencepb.ModelStatistics
	for _, name := range st.sortedNames() {
		out = append(out, st.models[name].statistics(nil)...)
	}
	return out
}

// statistics lists the statistics of v, or of every loaded version of m
// where v is nil.
func (m *model) statistics(v *version) []*inferencepb.ModelStatistics {
	if v != nil {
		return []*inferencepb.ModelStatistics{v.statistics(m.name)}
	}
	out := make([]*inferencepb.ModelStatistics, 0, len(m.versions))
	for _, v := range m.versions {
		out = append(out, v.statistics(m.name))
	}
	return out
}

// restModelConfig answers GET /v2/models/{m}[/versions/{v}]/config as
// Triton's REST API does: v's ModelConfig message as JSON; 503 when the
// model has no version loaded.
func (s *Server) restModelConfig(ctx *fasthttp.RequestCtx, m *model, v *version) {
	if v == nil {
		writeError(ctx, fasthttp.StatusServiceUnavailable, fmt.Sprintf("model %q has no version loaded", m.name))
		return
	}
	writeJSON(ctx, appendTritonJSON(nil, v.tritonConfig(m.name, s.provider()).ProtoReflect()))
}

// restModelStatistics answers GET /v2/models[/{m}[/versions/{v}]]/stats
// as Triton's REST API does: a ModelStatisticsResponse message as JSON, of
// version v, of every loaded version of m where v is nil, of every model
// where m is nil too.
func restModelStatistics(ctx *fasthttp.RequestCtx, st *state, m *model, v *version) {
	resp := &inferencepb.ModelStatisticsResponse{}
	if m == nil {
		resp.ModelStats = st.statistics()
	} else {
		resp.ModelStats = m.statistics(v)
	}
	writeJSON(ctx, appendTritonJSON(nil, resp.ProtoReflect()))
}
