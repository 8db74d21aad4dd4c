package inferencepb

import (
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/types/descriptorpb"
)

// goldenOpenInference lists, in describeFile's form, what the Open Inference
// Protocol publishes for its gRPC form: kserve/open-inference-protocol
// specification/protocol/open_inference_grpc.proto at
// d49cc23f89d709d87b210ef9449e273ae243984e. Triton's grpc_service.proto
// (triton-inference-server/common protobuf/, at
// 83adf7cf88a2f343005974dff3728be746de2d66) defines the same lines but
// ModelMetadataResponse.properties; KServe's grpc_predict_v2.proto defines
// them but properties, double_param and uint64_param, and adds repository
// calls whose messages conflict with Triton's (left out here). The lines
// were read from the published files compiled by protoc, not from ours.
const goldenOpenInference = `
field inference.InferParameter.bool_param = 1 bool oneof parameter_choice
field inference.InferParameter.double_param = 4 double oneof parameter_choice
field inference.InferParameter.int64_param = 2 int64 oneof parameter_choice
field inference.InferParameter.string_param = 3 string oneof parameter_choice
field inference.InferParameter.uint64_param = 5 uint64 oneof parameter_choice
field inference.InferTensorContents.bool_contents = 1 repeated bool
field inference.InferTensorContents.bytes_contents = 8 repeated bytes
field inference.InferTensorContents.fp32_contents = 6 repeated float
field inference.InferTensorContents.fp64_contents = 7 repeated double
field inference.InferTensorContents.int64_contents = 3 repeated int64
field inference.InferTensorContents.int_contents = 2 repeated int32
field inference.InferTensorContents.uint64_contents = 5 repeated uint64
field inference.InferTensorContents.uint_contents = 4 repeated uint32
field inference.ModelInferRequest.InferInputTensor.contents = 5 inference.InferTensorContents
field inference.ModelInferRequest.InferInputTensor.datatype = 2 string
field inference.ModelInferRequest.InferInputTensor.name = 1 string
field inference.ModelInferRequest.InferInputTensor.parameters = 4 map<string, inference.InferParameter>
field inference.ModelInferRequest.InferInputTensor.shape = 3 repeated int64
field inference.ModelInferRequest.InferRequestedOutputTensor.name = 1 string
field inference.ModelInferRequest.InferRequestedOutputTensor.parameters = 2 map<string, inference.InferParameter>
field inference.ModelInferRequest.id = 3 string
field inference.ModelInferRequest.inputs = 5 repeated inference.ModelInferRequest.InferInputTensor
field inference.ModelInferRequest.model_name = 1 string
field inference.ModelInferRequest.model_version = 2 string
field inference.ModelInferRequest.outputs = 6 repeated inference.ModelInferRequest.InferRequestedOutputTensor
field inference.ModelInferRequest.parameters = 4 map<string, inference.InferParameter>
field inference.ModelInferRequest.raw_input_contents = 7 repeated bytes
field inference.ModelInferResponse.InferOutputTensor.contents = 5 inference.InferTensorContents
field inference.ModelInferResponse.InferOutputTensor.datatype = 2 string
field inference.ModelInferResponse.InferOutputTensor.name = 1 string
field inference.ModelInferResponse.InferOutputTensor.parameters = 4 map<string, inference.InferParameter>
field inference.ModelInferResponse.InferOutputTensor.shape = 3 repeated int64
field inference.ModelInferResponse.id = 3 string
field inference.ModelInferResponse.model_name = 1 string
field inference.ModelInferResponse.model_version = 2 string
field inference.ModelInferResponse.outputs = 5 repeated inference.ModelInferResponse.InferOutputTensor
field inference.ModelInferResponse.parameters = 4 map<string, inference.InferParameter>
field inference.ModelInferResponse.raw_output_contents = 6 repeated bytes
field inference.ModelMetadataRequest.name = 1 string
field inference.ModelMetadataRequest.version = 2 string
field inference.ModelMetadataResponse.TensorMetadata.datatype = 2 string
field inference.ModelMetadataResponse.TensorMetadata.name = 1 string
field inference.ModelMetadataResponse.TensorMetadata.shape = 3 repeated int64
field inference.ModelMetadataResponse.inputs = 4 repeated inference.ModelMetadataResponse.TensorMetadata
field inference.ModelMetadataResponse.name = 1 string
field inference.ModelMetadataResponse.outputs = 5 repeated inference.ModelMetadataResponse.TensorMetadata
field inference.ModelMetadataResponse.platform = 3 string
field inference.ModelMetadataResponse.properties = 6 map<string, string>
field inference.ModelMetadataResponse.versions = 2 repeated string
field inference.ModelReadyRequest.name = 1 string
field inference.ModelReadyRequest.version = 2 string
field inference.ModelReadyResponse.ready = 1 bool
field inference.ServerLiveResponse.live = 1 bool
field inference.ServerMetadataResponse.extensions = 3 repeated string
field inference.ServerMetadataResponse.name = 1 string
field inference.ServerMetadataResponse.version = 2 string
field inference.ServerReadyResponse.ready = 1 bool
message inference.InferParameter
message inference.InferTensorContents
message inference.ModelInferRequest
message inference.ModelInferRequest.InferInputTensor
message inference.ModelInferRequest.InferRequestedOutputTensor
message inference.ModelInferResponse
message inference.ModelInferResponse.InferOutputTensor
message inference.ModelMetadataRequest
message inference.ModelMetadataResponse
message inference.ModelMetadataResponse.TensorMetadata
message inference.ModelReadyRequest
message inference.ModelReadyResponse
message inference.ServerLiveRequest
message inference.ServerLiveResponse
message inference.ServerMetadataRequest
message inference.ServerMetadataResponse
message inference.ServerReadyRequest
message inference.ServerReadyResponse
rpc inference.GRPCInferenceService.ModelInfer(inference.ModelInferRequest) returns (inference.ModelInferResponse)
rpc inference.GRPCInferenceService.ModelMetadata(inference.ModelMetadataRequest) returns (inference.ModelMetadataResponse)
rpc inference.GRPCInferenceService.ModelReady(inference.ModelReadyRequest) returns (inference.ModelReadyResponse)
rpc inference.GRPCInferenceService.ServerLive(inference.ServerLiveRequest) returns (inference.ServerLiveResponse)
rpc inference.GRPCInferenceService.ServerMetadata(inference.ServerMetadataRequest) returns (inference.ServerMetadataResponse)
rpc inference.GRPCInferenceService.ServerReady(inference.ServerReadyRequest) returns (inference.ServerReadyResponse)
service inference.GRPCInferenceService
`

// goldenTriton lists Triton's ModelConfig and ModelStatistics calls and
// their messages as triton-inference-server/common publishes them in
// protobuf/grpc_service.proto and protobuf/model_config.proto (at the commit
// above): the statistics messages whole, and the part of ModelConfig and its
// messages that infergate defines, with Triton's numbers. Left out of
// Triton's ModelConfig: version_policy (3), optimization (12),
// sequence_batching (13) and ensemble_scheduling (15) of the
// scheduling_choice oneof, model_warmup (16), model_operations (18),
// batch_input (20), batch_output (21), model_repository_agents (23),
// model_metrics (26); of ModelInstanceGroup: rate_limiter (6) and
// secondary_devices (8).
const goldenTriton = `
enum inference.DataType
enum inference.ModelInput.Format
enum inference.ModelInstanceGroup.Kind
enum inference.ModelQueuePolicy.TimeoutAction
field inference.InferBatchStatistics.batch_size = 1 uint64
field inference.InferBatchStatistics.compute_infer = 3 inference.StatisticDuration
field inference.InferBatchStatistics.compute_input = 2 inference.StatisticDuration
field inference.InferBatchStatistics.compute_output = 4 inference.StatisticDuration
field inference.InferResponseStatistics.cancel = 6 inference.StatisticDuration
field inference.InferResponseStatistics.compute_infer = 1 inference.StatisticDuration
field inference.InferResponseStatistics.compute_output = 2 inference.StatisticDuration
field inference.InferResponseStatistics.empty_response = 5 inference.StatisticDuration
field inference.InferResponseStatistics.fail = 4 inference.StatisticDuration
field inference.InferResponseStatistics.success = 3 inference.StatisticDuration
field inference.InferStatistics.cache_hit = 7 inference.StatisticDuration
field inference.InferStatistics.cache_miss = 8 inference.StatisticDuration
field inference.InferStatistics.compute_infer = 5 inference.StatisticDuration
field inference.InferStatistics.compute_input = 4 inference.StatisticDuration
field inference.InferStatistics.compute_output = 6 inference.StatisticDuration
field inference.InferStatistics.fail = 2 inference.StatisticDuration
field inference.InferStatistics.queue = 3 inference.StatisticDuration
field inference.InferStatistics.success = 1 inference.StatisticDuration
field inference.MemoryUsage.byte_size = 3 uint64
field inference.MemoryUsage.id = 2 int64
field inference.MemoryUsage.type = 1 string
field inference.ModelConfig.backend = 17 string
field inference.ModelConfig.cc_model_filenames = 9 map<string, string>
field inference.ModelConfig.default_model_filename = 8 string
field inference.ModelConfig.dynamic_batching = 11 inference.ModelDynamicBatching oneof scheduling_choice
field inference.ModelConfig.input = 5 repeated inference.ModelInput
field inference.ModelConfig.instance_group = 7 repeated inference.ModelInstanceGroup
field inference.ModelConfig.max_batch_size = 4 int32
field inference.ModelConfig.metric_tags = 10 map<string, string>
field inference.ModelConfig.model_transaction_policy = 19 inference.ModelTransactionPolicy
field inference.ModelConfig.name = 1 string
field inference.ModelConfig.output = 6 repeated inference.ModelOutput
field inference.ModelConfig.parameters = 14 map<string, inference.ModelParameter>
field inference.ModelConfig.platform = 2 string
field inference.ModelConfig.response_cache = 24 inference.ModelResponseCache
field inference.ModelConfig.runtime = 25 string
field inference.ModelConfigRequest.name = 1 string
field inference.ModelConfigRequest.version = 2 string
field inference.ModelConfigResponse.config = 1 inference.ModelConfig
field inference.ModelDynamicBatching.default_priority_level = 5 uint64
field inference.ModelDynamicBatching.default_queue_policy = 6 inference.ModelQueuePolicy
field inference.ModelDynamicBatching.max_queue_delay_microseconds = 2 uint64
field inference.ModelDynamicBatching.preferred_batch_size = 1 repeated int32
field inference.ModelDynamicBatching.preserve_ordering = 3 bool
field inference.ModelDynamicBatching.priority_levels = 4 uint64
field inference.ModelDynamicBatching.priority_queue_policy = 7 map<uint64, inference.ModelQueuePolicy>
field inference.ModelInput.allow_ragged_batch = 7 bool
field inference.ModelInput.data_type = 2 inference.DataType
field inference.ModelInput.dims = 4 repeated int64
field inference.ModelInput.format = 3 inference.ModelInput.Format
field inference.ModelInput.is_non_linear_format_io = 9 bool
field inference.ModelInput.is_shape_tensor = 6 bool
field inference.ModelInput.name = 1 string
field inference.ModelInput.optional = 8 bool
field inference.ModelInput.reshape = 5 inference.ModelTensorReshape
field inference.ModelInstanceGroup.count = 2 int32
field inference.ModelInstanceGroup.gpus = 3 repeated int32
field inference.ModelInstanceGroup.host_policy = 9 string
field inference.ModelInstanceGroup.kind = 4 inference.ModelInstanceGroup.Kind
field inference.ModelInstanceGroup.name = 1 string
field inference.ModelInstanceGroup.passive = 7 bool
field inference.ModelInstanceGroup.profile = 5 repeated string
field inference.ModelOutput.data_type = 2 inference.DataType
field inference.ModelOutput.dims = 3 repeated int64
field inference.ModelOutput.is_non_linear_format_io = 7 bool
field inference.ModelOutput.is_shape_tensor = 6 bool
field inference.ModelOutput.label_filename = 4 string
field inference.ModelOutput.name = 1 string
field inference.ModelOutput.reshape = 5 inference.ModelTensorReshape
field inference.ModelParameter.string_value = 1 string
field inference.ModelQueuePolicy.allow_timeout_override = 3 bool
field inference.ModelQueuePolicy.default_timeout_microseconds = 2 uint64
field inference.ModelQueuePolicy.max_queue_size = 4 uint32
field inference.ModelQueuePolicy.timeout_action = 1 inference.ModelQueuePolicy.TimeoutAction
field inference.ModelResponseCache.enable = 1 bool
field inference.ModelStatistics.batch_stats = 7 repeated inference.InferBatchStatistics
field inference.ModelStatistics.execution_count = 5 uint64
field inference.ModelStatistics.inference_count = 4 uint64
field inference.ModelStatistics.inference_stats = 6 inference.InferStatistics
field inference.ModelStatistics.last_inference = 3 uint64
field inference.ModelStatistics.memory_usage = 8 repeated inference.MemoryUsage
field inference.ModelStatistics.name = 1 string
field inference.ModelStatistics.response_stats = 9 map<string, inference.InferResponseStatistics>
field inference.ModelStatistics.version = 2 string
field inference.ModelStatisticsRequest.name = 1 string
field inference.ModelStatisticsRequest.version = 2 string
field inference.ModelStatisticsResponse.model_stats = 1 repeated inference.ModelStatistics
field inference.ModelTensorReshape.shape = 1 repeated int64
field inference.ModelTransactionPolicy.decoupled = 1 bool
field inference.StatisticDuration.count = 1 uint64
field inference.StatisticDuration.ns = 2 uint64
message inference.InferBatchStatistics
message inference.InferResponseStatistics
message inference.InferStatistics
message inference.MemoryUsage
message inference.ModelConfig
message inference.ModelConfigRequest
message inference.ModelConfigResponse
message inference.ModelDynamicBatching
message inference.ModelInput
message inference.ModelInstanceGroup
message inference.ModelOutput
message inference.ModelParameter
message inference.ModelQueuePolicy
message inference.ModelResponseCache
message inference.ModelStatistics
message inference.ModelStatisticsRequest
message inference.ModelStatisticsResponse
message inference.ModelTensorReshape
message inference.ModelTransactionPolicy
message inference.StatisticDuration
rpc inference.GRPCInferenceService.ModelConfig(inference.ModelConfigRequest) returns (inference.ModelConfigResponse)
rpc inference.GRPCInferenceService.ModelStatistics(inference.ModelStatisticsRequest) returns (inference.ModelStatisticsResponse)
value inference.DataType.TYPE_BF16 = 14
value inference.DataType.TYPE_BOOL = 1
value inference.DataType.TYPE_FP16 = 10
value inference.DataType.TYPE_FP32 = 11
value inference.DataType.TYPE_FP64 = 12
value inference.DataType.TYPE_INT16 = 7
value inference.DataType.TYPE_INT32 = 8
value inference.DataType.TYPE_INT64 = 9
value inference.DataType.TYPE_INT8 = 6
value inference.DataType.TYPE_INVALID = 0
value inference.DataType.TYPE_STRING = 13
value inference.DataType.TYPE_UINT16 = 3
value inference.DataType.TYPE_UINT32 = 4
value inference.DataType.TYPE_UINT64 = 5
value inference.DataType.TYPE_UINT8 = 2
value inference.ModelInput.Format.FORMAT_NCHW = 2
value inference.ModelInput.Format.FORMAT_NHWC = 1
value inference.ModelInput.Format.FORMAT_NONE = 0
value inference.ModelInstanceGroup.Kind.KIND_AUTO = 0
value inference.ModelInstanceGroup.Kind.KIND_CPU = 2
value inference.ModelInstanceGroup.Kind.KIND_GPU = 1
value inference.ModelInstanceGroup.Kind.KIND_MODEL = 3
value inference.ModelQueuePolicy.TimeoutAction.DELAY = 1
value inference.ModelQueuePolicy.TimeoutAction.REJECT = 0
`

// TestGolden checks the compiled descriptors of grpc_service.proto against
// the published definitions both ways: every golden line is defined, and
// nothing is defined that the golden table does not list.
func TestGolden(t *testing.T) {
	fd := File_grpc_service_proto
	if got, want := string(fd.Package()), "inference"; got != want {
		t.Fatalf("unexpected package %q; want %q", got, want)
	}
	const goPackage = "github.com/infergate/infergate/gateway/v2codec/inferencepb"
	if got := fd.Options().(*descriptorpb.FileOptions).GetGoPackage(); got != goPackage {
		t.Fatalf("unexpected go_package %q; want %q", got, goPackage)
	}
	var golden []string
	for _, line := range strings.Split(goldenOpenInference+goldenTriton, "\n") {
		if line != "" {
			golden = append(golden, line)
		}
	}
	slices.Sort(golden)
	for i := 1; i < len(golden); i++ {
		if golden[i] == golden[i-1] {
			t.Fatalf("golden line listed twice: %s", golden[i])
		}
	}
	got := describeFile(fd)
	for _, line := range golden {
		if _, found := slices.BinarySearch(got, line); !found {
			t.Errorf("missing from grpc_service.proto: %s", line)
		}
	}
	for _, line := range got {
		if _, found := slices.BinarySearch(golden, line); !found {
			t.Errorf("not in the published definitions: %s", line)
		}
	}
}
