package gateway

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	"github.com/infergate/infergate/batcher"
	"github.com/infergate/infergate/gateway/v2codec/inferencepb"
)

// TestGRPCModelConfig: Triton's ModelConfig reports the version's tensors
// in Triton's types, without the batch dimension where the model batches,
// its batching section and instances; unknown names are NotFound.
func TestGRPCModelConfig(t *testing.T) {
	cfg := testConfig(t)
	cfg.Models["demo"] = ModelConfig{
		Batching: batcher.Config{MaxBatchSize: 16, Instances: 2, PreferredBatchSizes: []int{4, 8},
			MaxQueueDelay: batcher.Delay{Duration: 500 * time.Microsecond}, MaxQueueSize: 64, DefaultTimeout: 2 * time.Second},
		Cache: CacheConfig{Entries: 8},
	}
	_, _, conn := startGRPC(t, cfg)
	c := inferencepb.NewGRPCInferenceServiceClient(conn)
	ctx := context.Background()
	get := func(name, version string) *inferencepb.ModelConfig {
		t.Helper()
		r, err := c.ModelConfig(ctx, &inferencepb.ModelConfigRequest{Name: name, Version: version})
		if err != nil {
			t.Fatalf("ModelConfig of %s %s: %v", name, version, err)
		}
		return r.Config
	}

	demo := get("demo", "")
	db := demo.GetDynamicBatching()
	if demo.Name != "demo" || demo.Platform != "onnxruntime_onnx" || demo.Backend != "onnxruntime" || demo.MaxBatchSize != 16 ||
		len(demo.Input) != 1 || demo.Input[0].Name != "input" || demo.Input[0].DataType != inferencepb.DataType_TYPE_FP32 ||
		!slices.Equal(demo.Input[0].Dims, []int64{8}) || len(demo.Output) == 0 ||
		db == nil || !slices.Equal(db.PreferredBatchSize, []int32{4, 8}) || db.MaxQueueDelayMicroseconds != 500 ||
		db.DefaultQueuePolicy.GetMaxQueueSize() != 64 || db.DefaultQueuePolicy.GetDefaultTimeoutMicroseconds() != 2e6 ||
		len(demo.InstanceGroup) != 1 || demo.InstanceGroup[0].Count != 2 || demo.InstanceGroup[0].Kind != inferencepb.ModelInstanceGroup_KIND_CPU ||
		!demo.ResponseCache.GetEnable() {
		t.Fatalf("demo: %s", prototext.Format(demo))
	}
	for _, out := range demo.Output {
		if out.DataType == inferencepb.DataType_TYPE_INVALID || len(out.Dims) == 0 || out.Dims[0] == -1 {
			t.Fatalf("demo output %s: want a type and dims without the batch dimension", prototext.Format(out))
		}
	}

	// Batching off: max_batch_size 0, the batch dimension stays in dims.
	fp64 := get("echo_fp64", "")
	if fp64.MaxBatchSize != 0 || fp64.GetDynamicBatching() != nil || len(fp64.Input) != 1 ||
		fp64.Input[0].DataType != inferencepb.DataType_TYPE_FP64 || len(fp64.Input[0].Dims) < 2 || fp64.Input[0].Dims[0] != -1 ||
		fp64.Output[0].DataType != inferencepb.DataType_TYPE_FP64 || fp64.InstanceGroup[0].Count != 1 || fp64.ResponseCache.GetEnable() {
		t.Fatalf("echo_fp64: %s", prototext.Format(fp64))
	}
	if v := get("versioned", "2"); v.Name != "versioned" {
		t.Fatalf("versioned 2: %s", prototext.Format(v))
	}

	_, err := c.ModelConfig(ctx, &inferencepb.ModelConfigRequest{Name: "nope"})
	wantCode(t, "ModelConfig of an unknown model", err, codes.NotFound, `unknown model "nope"`)
	_, err = c.ModelConfig(ctx, &inferencepb.ModelConfigRequest{Name: "versioned", Version: "9"})
	wantCode(t, "ModelConfig of an unknown version", err, codes.NotFound, `unknown version "9" of model "versioned"`)
}

// TestGRPCModelStatistics: Triton's ModelStatistics counts the requests of
// both protocols per version: successes, failures, rows, executions, queue
// and compute time, cache hits and misses.
func TestGRPCModelStatistics(t *testing.T) {
	cfg := testConfig(t)
	cfg.Models["demo"] = ModelConfig{Batching: batcher.Config{MaxBatchSize: 16, Instances: 2}, Cache: CacheConfig{Entries: 8}}
	_, url, conn := startGRPC(t, cfg)
	c := inferencepb.NewGRPCInferenceServiceClient(conn)
	ctx := context.Background()
	stats := func(name, version string) []*inferencepb.ModelStatistics {
		t.Helper()
		r, err := c.ModelStatistics(ctx, &inferencepb.ModelStatisticsRequest{Name: name, Version: version})
		if err != nil {
			t.Fatalf("ModelStatistics of %q %q: %v", name, version, err)
		}
		return r.ModelStats
	}
	before := stats("demo", "")
	if len(before) != 1 || before[0].Name != "demo" || before[0].Version != "1" || before[0].InferenceCount != 0 ||
		before[0].InferenceStats.GetSuccess().GetCount() != 0 || before[0].LastInference != 0 {
		t.Fatalf("before any request: %v", before)
	}

	// Two distinct requests of two rows over gRPC, one again (a cache
	// hit), one over REST (a hit too), one that fails.
	infer := func(rows []float32) error {
		_, err := c.ModelInfer(ctx, &inferencepb.ModelInferRequest{ModelName: "demo",
			Inputs: []*inferencepb.ModelInferRequest_InferInputTensor{{Name: "input", Datatype: "FP32", Shape: []int64{int64(len(rows) / 8), 8},
				Contents: &inferencepb.InferTensorContents{Fp32Contents: rows}}}})
		return err
	}
	other := slices.Clone(demoRows)
	other[0] = 36
	start := time.Now()
	for _, rows := range [][]float32{demoRows, other, demoRows} {
		if err := infer(rows); err != nil {
			t.Fatal(err)
		}
	}
	if code, _, body := call(t, "POST", url+"/v2/models/demo/infer", []byte(demoRequest)); code != 200 {
		t.Fatalf("REST: %d %s", code, body)
	}
	wantCode(t, "a bad shape", infer(demoRows[:7]), codes.InvalidArgument, "")

	after := stats("demo", "1")
	if len(after) != 1 {
		t.Fatalf("version 1: %v", after)
	}
	s, is := after[0], after[0].InferenceStats
	f := func(what string, d *inferencepb.StatisticDuration, count uint64, timed bool) {
		t.Helper()
		if d.GetCount() != count || timed != (d.GetNs() > 0) {
			t.Errorf("%s: %v, want count %d (time measured: %v)", what, d, count, timed)
		}
	}
	f("success", is.Success, 4, true)
	f("fail", is.Fail, 1, true)
	f("queue", is.Queue, 2, false) // run at once on an idle instance
	f("compute_infer", is.ComputeInfer, 2, true)
	f("cache_hit", is.CacheHit, 2, true)
	f("cache_miss", is.CacheMiss, 2, true)
	f("compute_input", is.ComputeInput, 0, false)
	f("compute_output", is.ComputeOutput, 0, false)
	if s.InferenceCount != 4 || s.ExecutionCount != 2 {
		t.Errorf("inference_count %d, execution_count %d; want 4 rows in 2 executions", s.InferenceCount, s.ExecutionCount)
	}
	if last := time.UnixMilli(int64(s.LastInference)); last.Before(start.Truncate(time.Millisecond)) || last.After(time.Now()) {
		t.Errorf("last_inference %s, want between %s and now", last, start)
	}

	// Every version of every model, by name; a version without a name is refused.
	var names []string
	for _, s := range stats("", "") {
		names = append(names, s.Name+"/"+s.Version)
	}
	if !slices.IsSorted(names) || !slices.Contains(names, "demo/1") || !slices.Contains(names, "versioned/3") || !slices.Contains(names, "echo_fp64/1") {
		t.Fatalf("every model: %v", names)
	}
	if all := stats("versioned", ""); len(all) != 3 || all[0].Version != "1" || all[2].Version != "3" {
		t.Fatalf("versioned: %v", all)
	}
	_, err := c.ModelStatistics(ctx, &inferencepb.ModelStatisticsRequest{Name: "nope"})
	wantCode(t, "ModelStatistics of an unknown model", err, codes.NotFound, `unknown model "nope"`)
	_, err = c.ModelStatistics(ctx, &inferencepb.ModelStatisticsRequest{Name: "demo", Version: "7"})
	wantCode(t, "ModelStatistics of an unknown version", err, codes.NotFound, `unknown version "7" of model "demo"`)
	_, err = c.ModelStatistics(ctx, &inferencepb.ModelStatisticsRequest{Version: "1"})
	wantCode(t, "ModelStatistics of a version without a model", err, codes.InvalidArgument, "needs a model name")
}

// TestRESTModelConfigAndStatistics: the same messages over REST, at
// Triton's paths, as JSON that protobuf's JSON mapping reads back into
// what gRPC answers, with 64-bit integers as numbers.
func TestRESTModelConfigAndStatistics(t *testing.T) {
	_, url, conn := startGRPC(t, testConfig(t))
	c := inferencepb.NewGRPCInferenceServiceClient(conn)
	ctx := context.Background()
	if code, _, body := call(t, "POST", url+"/v2/models/demo/infer", []byte(demoRequest)); code != 200 {
		t.Fatalf("REST infer: %d %s", code, body)
	}

	body := get(t, url+"/v2/models/demo/config")
	var config inferencepb.ModelConfig
	if err := protojson.Unmarshal([]byte(body), &config); err != nil {
		t.Fatalf("config %s: %v", body, err)
	}
	want, err := c.ModelConfig(ctx, &inferencepb.ModelConfigRequest{Name: "demo"})
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(&config, want.Config) || !strings.Contains(body, `"max_batch_size":16,`) ||
		!strings.Contains(body, `"data_type":"TYPE_FP32","format":"FORMAT_NONE","dims":[8],`) ||
		!strings.Contains(body, `"max_queue_size":1024}`) {
		t.Fatalf("REST config %s; gRPC %s", body, prototext.Format(want.Config))
	}

	for _, path := range []string{"/v2/models/demo/stats", "/v2/models/demo/versions/1/stats", "/v2/models/stats"} {
		body := get(t, url+path)
		var stats inferencepb.ModelStatisticsResponse
		if err := protojson.Unmarshal([]byte(body), &stats); err != nil {
			t.Fatalf("%s: %s: %v", path, body, err)
		}
		var demo *inferencepb.ModelStatistics
		for _, s := range stats.ModelStats {
			if s.Name == "demo" {
				demo = s
			}
		}
		if demo == nil || demo.InferenceCount != 2 || demo.InferenceStats.GetSuccess().GetCount() != 1 ||
			!strings.Contains(body, `"inference_count":2,"execution_count":1,`) {
			t.Fatalf("%s: %s", path, body)
		}
		if path == "/v2/models/stats" && len(stats.ModelStats) < 10 || path != "/v2/models/stats" && len(stats.ModelStats) != 1 {
			t.Fatalf("%s: %d versions", path, len(stats.ModelStats))
		}
	}
	if body := get(t, url+"/v2/models/versioned/stats"); strings.Count(body, `"name":"versioned"`) != 3 {
		t.Fatalf("every version of versioned: %s", body)
	}

	f := func(method, path string, code int) {
		t.Helper()
		if got, _, body := call(t, method, url+path, nil); got != code {
			t.Errorf("%s %s: %d %s, want %d", method, path, got, body, code)
		}
	}
	f("GET", "/v2/models/nope/config", 404)
	f("GET", "/v2/models/versioned/versions/9/config", 404)
	f("GET", "/v2/models/nope/stats", 404)
	f("GET", "/v2/models/demo/versions/9/stats", 404)
	f("POST", "/v2/models/demo/stats", 405)
	f("POST", "/v2/models/demo/config", 405)
	f("POST", "/v2/models/stats", 405)
}
