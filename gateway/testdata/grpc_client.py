"""A gRPC client nobody in this project wrote the stubs of: Debian's grpcio,
with stubs that grpc_tools generated from the project's .proto at test time.
It calls the gateway at argv[1] and prints what it saw as one JSON object,
which TestGRPCFromPython compares with the REST answers."""
import json
import struct
import sys

import grpc

import grpc_service_pb2 as pb
import grpc_service_pb2_grpc as rpc

ROWS = [35, 52000, 24, 1200, 2, 680, 0, 0.3, 61, 18000, 3, 9000, 1, 540, 4, 0.95]

stub = rpc.GRPCInferenceServiceStub(grpc.insecure_channel(sys.argv[1]))
out = {}
out["live"] = stub.ServerLive(pb.ServerLiveRequest()).live
out["ready"] = stub.ServerReady(pb.ServerReadyRequest()).ready
out["model_ready"] = stub.ModelReady(pb.ModelReadyRequest(name="demo")).ready
meta = stub.ModelMetadata(pb.ModelMetadataRequest(name="demo"))
out["metadata"] = {
    "name": meta.name,
    "platform": meta.platform,
    "inputs": [[t.name, t.datatype, list(t.shape)] for t in meta.inputs],
    "outputs": [[t.name, t.datatype, list(t.shape)] for t in meta.outputs],
}
out["server_extensions"] = list(stub.ServerMetadata(pb.ServerMetadataRequest()).extensions)

# Triton's ModelConfig, as perf_analyzer reads it.
cfg = stub.ModelConfig(pb.ModelConfigRequest(name="demo")).config
out["config"] = {
    "name": cfg.name,
    "platform": cfg.platform,
    "max_batch_size": cfg.max_batch_size,
    "inputs": [[t.name, pb.DataType.Name(t.data_type), list(t.dims)] for t in cfg.input],
    "outputs": [[t.name, pb.DataType.Name(t.data_type), list(t.dims)] for t in cfg.output],
    "dynamic_batching": cfg.HasField("dynamic_batching"),
    "instances": sum(g.count for g in cfg.instance_group),
}


def demo_stats():
    """The demo model's statistics, as Triton's clients read them."""
    (s,) = stub.ModelStatistics(pb.ModelStatisticsRequest(name="demo", version="1")).model_stats
    i = s.inference_stats
    return {
        "version": s.version,
        "inference_count": s.inference_count,
        "execution_count": s.execution_count,
        "last_inference": s.last_inference,
        "success": [i.success.count, i.success.ns],
        "fail": [i.fail.count, i.fail.ns],
        "queue": [i.queue.count, i.queue.ns],
        "compute_infer": [i.compute_infer.count, i.compute_infer.ns],
    }


stats = {"before": demo_stats()}

# Typed contents.
req = pb.ModelInferRequest(model_name="demo", id="py-1")
t = req.inputs.add(name="input", datatype="FP32", shape=[2, 8])
t.contents.fp32_contents.extend(ROWS)
resp = stub.ModelInfer(req)
out["typed"] = {
    "id": resp.id,
    "version": resp.model_version,
    "outputs": [[o.name, o.datatype, list(o.shape), list(o.contents.fp32_contents)] for o in resp.outputs],
}

# Raw contents: little-endian FP32 in, raw outputs back.
raw = pb.ModelInferRequest(model_name="demo", id="py-2")
raw.inputs.add(name="input", datatype="FP32", shape=[2, 8])
raw.raw_input_contents.append(struct.pack("<16f", *ROWS))
resp = stub.ModelInfer(raw)
out["raw"] = [
    [o.name, o.datatype, list(o.shape), list(struct.unpack("<%df" % (len(b) // 4), b))]
    for o, b in zip(resp.outputs, resp.raw_output_contents)
]

stats["after_infers"] = demo_stats()

# A pinned version and output selection.
pinned = pb.ModelInferRequest(model_name="versioned", model_version="2")
pinned.inputs.add(name="input", datatype="FP32", shape=[1, 2]).contents.fp32_contents.extend([1.5, -2])
out["pinned_version"] = stub.ModelInfer(pinned).model_version
pair = pb.ModelInferRequest(model_name="pair")
pair.inputs.add(name="b", datatype="INT64", shape=[1, 2]).contents.int64_contents.extend([7, -9])
pair.inputs.add(name="a", datatype="FP32", shape=[1, 4]).contents.fp32_contents.extend([1, 2, 3, 4])
pair.outputs.add(name="b_out")
resp = stub.ModelInfer(pair)
out["selected"] = [[o.name, list(o.contents.int64_contents)] for o in resp.outputs]


def status_of(request, call=stub.ModelInfer):
    try:
        call(request)
        return ["OK", ""]
    except grpc.RpcError as e:
        return [e.code().name, e.details()]


errors = {}
errors["unknown_model"] = status_of(pb.ModelInferRequest(model_name="nope"))
errors["unknown_version"] = status_of(pb.ModelInferRequest(model_name="versioned", model_version="9"))
bad = pb.ModelInferRequest(model_name="demo")
bad.inputs.add(name="input", datatype="FP32", shape=[1, 7]).contents.fp32_contents.extend([1] * 7)
errors["bad_shape"] = status_of(bad)
short = pb.ModelInferRequest(model_name="demo")
short.inputs.add(name="input", datatype="FP32", shape=[1, 8]).contents.fp32_contents.extend([1] * 5)
errors["short_data"] = status_of(short)
wrong = pb.ModelInferRequest(model_name="demo")
wrong.inputs.add(name="input", datatype="INT64", shape=[1, 8]).contents.int64_contents.extend([1] * 8)
errors["wrong_datatype"] = status_of(wrong)
errors["config_unknown_model"] = status_of(pb.ModelConfigRequest(name="nope"), stub.ModelConfig)
errors["config_unknown_version"] = status_of(pb.ModelConfigRequest(name="versioned", version="9"), stub.ModelConfig)
errors["stats_unknown_model"] = status_of(pb.ModelStatisticsRequest(name="nope"), stub.ModelStatistics)
errors["stats_unknown_version"] = status_of(pb.ModelStatisticsRequest(name="demo", version="9"), stub.ModelStatistics)
out["errors"] = errors
stats["after_errors"] = demo_stats()
out["stats"] = stats
print(json.dumps(out))
