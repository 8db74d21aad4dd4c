// Package inferencepb holds the Open Inference Protocol's gRPC service,
// inference.GRPCInferenceService, as infergate defines it in
// grpc_service.proto, and the Go stubs protoc generates from that file
// (grpc_service.pb.go, grpc_service_grpc.pb.go; regenerate them with
// `make proto`).
//
// Names, field numbers and types are those KServe and Triton publish, so
// clients generated from their files call infergate unchanged: the six core
// calls (ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata,
// ModelInfer, with Triton's raw_input_contents and raw_output_contents) and
// Triton's ModelStatistics and ModelConfig, the latter with the part of
// Triton's model configuration its clients read. The package has no server:
// the gateway implements GRPCInferenceServiceServer on top of it.
package inferencepb
