#!/usr/bin/env bash
# run.sh [--cpu] [--quick] OUT
#
# The GPU check of issue 17 in one run, from the repository root of a
# checkout that holds the bundle `make gpu-bundle` wrote (bin/gpu, or
# $INFERGATE_GPU_BUNDLE). It checks the bundle's parts by SHA-256 and
# unpacks them into $INFERGATE_GPU_WORK (default a new folder under /tmp),
# puts the CUDA libraries of the image's Python `nvidia/*/lib` folders on
# LD_LIBRARY_PATH, and writes everything it measures into OUT:
#
#   environment.txt     nvidia-smi, the library path, ldd of the CUDA provider
#   serve-*.log         three `infergate serve`: gpu (providers [cuda],
#                       require_gpu, cuda_tf32 off), gpu-tf32 (TF32 on) and
#                       cpu (providers [cpu], all cores), each serving the demo
#                       model, heavy (256-1024-1024-10) and large
#   metrics-*.txt       their /metrics, checked for the provider in use
#   compare-tf32-*.json the gpu servers' outputs against the cpu server's on
#                       the same inputs: TF32 off judged, TF32 on reported
#   bench-{gpu,cpu}.*   `infergate bench --ceiling compute` on the large model
#                       at batch sizes 1 to 1024, in-process on each provider,
#                       then the gateway with batching on, binary tensors
#   runtime-test.txt    the runtime tests that run two batches through one
#                       cached binding (on CUDA there) and check the provider
#   SUMMARY.md          the table and the checks; RESULT: PASS or FAIL lines
#
# --cpu is the dry run: providers [cpu] everywhere (the "gpu" servers run on
# the CPU too), so that everything but the GPU is checked before any GPU
# time is spent; the bundle then holds the CPU library. --quick uses small
# models, few batch sizes and short runs. It exits 1 when a check fails.
# The servers listen on 127.0.0.1:18480-18482 ($INFERGATE_GPU_PORTS=a,b,c).
set -uo pipefail

usage() {
	sed -n '2,34p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
}
mode=cuda quick=0
while [ $# -gt 0 ]; do
	case $1 in
	--cpu) mode=cpu ;;
	--quick) quick=1 ;;
	-h | --help) usage ;;
	-*) echo "run.sh: unknown flag $1" >&2; usage ;;
	*) break ;;
	esac
	shift
done
[ $# -eq 1 ] || usage
mkdir -p "$1" || exit 1
out=$(cd "$1" && pwd)
root=$(cd "$(dirname "$0")/../.." && pwd)
bundle=${INFERGATE_GPU_BUNDLE:-$root/bin/gpu}
work=${INFERGATE_GPU_WORK:-$(mktemp -d /tmp/infergate-gpu.XXXXXX)}
mkdir -p "$work"
exec > >(tee -a "$out/run.log") 2>&1
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
t0=$(date +%s)

if [ "$quick" = 1 ]; then
	large=256,512,512,10 sizes=1,4,32,1024 cdur=200ms dur=2s warm=500ms rows=16 conns=8
else
	large=256,8192,8192,8192,8192,10 sizes=1,2,4,8,16,32,64,128,256,512,1024 cdur=2s dur=10s warm=3s rows=64 conns=64
fi
failures=()
fail() {
	echo "FAIL: $*"
	failures+=("$*")
}
step() { echo "== $(date -u +%H:%M:%S) $*"; }

# unpack NAME checks the parts of bundle/NAME and the archive they make up,
# and unpacks it into work/NAME.
unpack() {
	local name=$1
	rm -rf "${work:?}/$name"
	[ -f "$bundle/$name.parts.sha256" ] || { echo "no $bundle/$name.parts.sha256: run make gpu-bundle and bring bin/gpu"; return 1; }
	(cd "$bundle" && sha256sum -c --quiet "$name.parts.sha256") || return 1
	cat "$bundle/$name".tar.zst.part-* >"$work/$name.tar.zst" || return 1
	(cd "$work" && sha256sum -c --quiet "$bundle/$name.sha256") || return 1
	mkdir -p "$work/$name"
	decompress "$work/$name.tar.zst" | tar -C "$work/$name" -xf - || return 1
	rm -f "$work/$name.tar.zst"
}

# decompress FILE writes the zstd FILE decompressed to stdout, with zstd or,
# where the image lacks it, Python's zstd module.
decompress() {
	if command -v zstd >/dev/null; then
		zstd -dc "$1"
		return
	fi
	python3 - "$1" <<'PY'
import shutil, sys
try:
    from compression import zstd
    src = zstd.open(sys.argv[1], "rb")
except ImportError:
    import zstandard
    src = zstandard.ZstdDecompressor().stream_reader(open(sys.argv[1], "rb"))
shutil.copyfileobj(src, sys.stdout.buffer, 1 << 20)
PY
}

step "unpacking $bundle into $work"
for name in ort binaries; do
	unpack "$name" || fail "cannot unpack $name from $bundle"
done
bin=$work/binaries/infergate
lib=$(ls "$work"/ort/libonnxruntime.so "$work"/ort/libonnxruntime.so.1 2>/dev/null | head -1)
[ -x "$bin" ] && [ -n "$lib" ] || fail "the bundle lacks infergate or libonnxruntime.so"
if [ ${#failures[@]} -gt 0 ]; then
	printf 'FAIL: %s\n' "${failures[@]}" >"$out/RESULT"
	exit 1
fi
export ONNXRUNTIME_LIB=$lib

step "environment"
libpath=$work/ort
if [ "$mode" = cuda ]; then
	for d in $(python3 -c 'import nvidia; print("\n".join(nvidia.__path__))' 2>/dev/null); do
		for l in "$d"/*/lib; do
			[ -d "$l" ] && libpath=$libpath:$l
		done
	done
fi
export LD_LIBRARY_PATH=$libpath${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
{
	echo "mode: $mode"
	date -u
	uname -a
	echo "cores: $(nproc)"
	command -v nvidia-smi >/dev/null && nvidia-smi
	echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
	echo "ONNXRUNTIME_LIB=$ONNXRUNTIME_LIB"
	"$bin" version
	for so in "$work"/ort/*.so*; do
		echo "--- ldd $so"
		ldd "$so"
	done
} >"$out/environment.txt" 2>&1
if [ "$mode" = cuda ] && grep -q "not found" "$out/environment.txt"; then
	fail "libraries not found (environment.txt): $(grep 'not found' "$out/environment.txt" | awk '{print $1}' | sort -u | tr '\n' ' ')"
fi

step "models: demo, heavy 256,1024,1024,10, large $large"
models=$work/models
rm -rf "$models" && mkdir -p "$models"
cp -r "$root/configs/models/demo" "$models/demo"
"$bin" train --mlp 256,1024,1024,10 --seed 20250101 --out "$models/heavy" || fail "cannot write the heavy model"
"$bin" train --mlp "$large" --seed 20250102 --out "$models/large" || fail "cannot write the large model"

# serve NAME PORT PROVIDER REQUIRE_GPU TF32 INSTANCES starts a gateway.
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done' EXIT
serve() {
	local name=$1 port=$2 provider=$3 require=$4 tf32=$5 instances=$6
	cat >"$work/$name.yaml" <<YAML
listen: 127.0.0.1:$port
repository: $models
state_dir: ""
runtime:
  providers: [$provider]
  require_gpu: $require
  cuda_tf32: $tf32
models:
  demo:
    batching: {instances: 2, max_batch_size: 64}
  heavy:
    batching: {instances: $instances, max_batch_size: 1024}
  large:
    batching: {instances: $instances, max_batch_size: 1024}
YAML
	"$bin" serve --config "$work/$name.yaml" >"$out/serve-$name.log" 2>&1 &
	pids+=($!)
}
gpu_require=false
[ "$mode" = cuda ] && gpu_require=true
# INFERGATE_GPU_PORTS may name the three servers' ports (the dry run's test does).
IFS=, read -r gpu_port tf32_port cpu_port <<<"${INFERGATE_GPU_PORTS:-18480,18481,18482}"
gpu=http://127.0.0.1:$gpu_port tf32=http://127.0.0.1:$tf32_port cpu=http://127.0.0.1:$cpu_port
step "serving: gpu ($mode), gpu-tf32 ($mode, TF32 on), cpu"
serve gpu "$gpu_port" "$mode" "$gpu_require" false 2
serve gpu-tf32 "$tf32_port" "$mode" "$gpu_require" true 2
serve cpu "$cpu_port" cpu false false 1
check=$root/bench/gpu/check.py
# A server that cannot start (require_gpu without a usable CUDA provider)
# ends at once, and its wait with it.
urls=("$gpu" "$tf32" "$cpu") names=(gpu gpu-tf32 cpu)
for i in 0 1 2; do
	python3 "$check" wait "${urls[$i]}" 600 "${pids[$i]}" ||
		fail "${names[$i]}: infergate serve did not get ready: $(tail -1 "$out/serve-${names[$i]}.log")"
done
grep -q "onnx runtime ready.*provider=$mode" "$out/serve-gpu.log" || fail "serve-gpu.log does not say provider=$mode"
python3 "$check" metrics "$gpu" "$out/metrics-gpu.txt" "$mode" || fail "the gpu server's metrics do not say $mode"
python3 "$check" metrics "$cpu" "$out/metrics-cpu.txt" cpu || fail "the cpu server's metrics do not say cpu"

step "outputs against the CPU's"
python3 "$check" compare "$gpu" "$cpu" demo,heavy,large 64 "$out/compare-tf32-off.json" --judge ||
	fail "outputs with TF32 off not compared, or beyond 1e-4 + 1e-4*|cpu| of the CPU's (compare-tf32-off.json, run.log)"
python3 "$check" compare "$tf32" "$cpu" demo,heavy,large 64 "$out/compare-tf32-on.json" ||
	fail "cannot compare the outputs with TF32 on"

step "compute ceilings and the gateway, large model"
common=(--model large --model-dir "$models/large/1" --batch-sizes "$sizes" --compute-duration "$cdur"
	--rows "$rows" --binary --connections "$conns" --duration "$dur" --warmup "$warm" --ceiling compute --quiet)
"$bin" bench "${common[@]}" --url "$gpu" --providers "$mode" --instances 2 \
	--json "$out/bench-gpu.json" --markdown "$out/bench-gpu.md" >"$out/bench-gpu.log" 2>&1 || fail "bench on $mode (bench-gpu.log)"
"$bin" bench "${common[@]}" --url "$cpu" --providers cpu --instances 1 \
	--json "$out/bench-cpu.json" --markdown "$out/bench-cpu.md" >"$out/bench-cpu.log" 2>&1 || fail "bench on cpu (bench-cpu.log)"

step "runtime tests: two batches through one cached binding"
(cd "$root/runtime" && "$work/binaries/runtime.test" -test.count=1 -test.v \
	-test.run 'TestCachedBindingComputesEachBatch|TestProviderFallback|TestCachesInputs|TestCachedBindingReadsNewInputs') \
	>"$out/runtime-test.txt" 2>&1 || fail "runtime tests (runtime-test.txt)"
grep -q "execution provider: $mode" "$out/runtime-test.txt" || fail "the runtime tests did not run on $mode (runtime-test.txt)"

python3 "$check" metrics "$gpu" "$out/metrics-gpu.txt" "$mode" >/dev/null || fail "the gpu server's metrics at the end do not say $mode"
for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
wait "${pids[@]}" 2>/dev/null # not a bare wait: that would wait for the tee of run.log too
printf '{"mode": "%s", "provider": "%s", "started": "%s", "seconds": %d, "large": "%s"}\n' \
	"$mode" "$mode" "$started" $(($(date +%s) - t0)) "$large" >"$out/run.json"
if [ ${#failures[@]} -eq 0 ]; then
	echo PASS >"$out/RESULT"
else
	printf 'FAIL: %s\n' "${failures[@]}" >"$out/RESULT"
fi
python3 "$check" summary "$out" || fail "cannot write SUMMARY.md"
step "done: $(head -c 2000 "$out/RESULT")"
cat "$out/SUMMARY.md"
[ ${#failures[@]} -eq 0 ]
