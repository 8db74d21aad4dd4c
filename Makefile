# infergate — `make run` serves the demo, `make test` runs every check.

GO          ?= go
ORT_VERSION := 1.24.3
ORT_SHA256  := 92ba8e44d31b80a34f5e805076a044122c3be1fffe0d88ed790de7267b0b2682
ORT_DIR     := .cache/onnxruntime
ORT_LIB     := $(ORT_DIR)/libonnxruntime.so.1
ORT_MEMBER  := package/bin/napi-v6/linux/x64/libonnxruntime.so.1
# NATS_SERVER is the nats-server that retrain/engine/natscluster runs as
# real clusters; built from the version go.mod pins (see that package).
NATS_SERVER := .cache/bin/nats-server
# DUCKDB stamps the install of DuckDB for Node.js, which the capture export
# test reads Parquet with (a reader that is not the one that wrote it).
DUCKDB_VERSION := 1.5.6-r.1
DUCKDB_DIR     := .cache/duckdb
DUCKDB         := $(DUCKDB_DIR)/installed-$(DUCKDB_VERSION)
# PROTO_DIR holds the gRPC inference service's .proto and its generated stubs;
# the plugins are pinned (protoc-gen-go at go.mod's google.golang.org/protobuf)
# and installed into .cache/bin, where the stubs' regeneration test finds them.
PROTO_DIR                  := gateway/v2codec/inferencepb
PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.5.1
PROTOC_GEN_GO_STAMP        := .cache/bin/protoc-gen-go.$(PROTOC_GEN_GO_VERSION).installed
PROTOC_GEN_GO_GRPC_STAMP   := .cache/bin/protoc-gen-go-grpc.$(PROTOC_GEN_GO_GRPC_VERSION).installed
# GPU_* prepare the GPU check (bench/gpu/run.sh, issue 17): ONNX Runtime
# 1.29.0's core, shared-providers and CUDA-provider libraries from two npm
# packages of one release, fetched once into GPU_ORT_DIR and checked by
# SHA-256, then packed with infergate and the runtime test binary into
# GPU_BUNDLE (a folder of the checkout, not of the shared cache) as zstd
# archives split into parts under 60 MB, one part per call to a GPU host.
GPU_PKG_VERSION   := 0.4.9
GPU_CORE_PKG      := com.github.asus4.onnxruntime
GPU_CUDA_PKG      := com.github.asus4.onnxruntime.linux-x64-gpu
GPU_PKG_LIBS      := package/Plugins/Linux/x64
GPU_ORT_DIR       := .cache/gpu/onnxruntime-1.29.0
GPU_CORE_SHA256   := 5715f06d8992ca8eeeddcce43df3a7d38f97d537052126f558e912cb312460ca
GPU_SHARED_SHA256 := 086ec1d5388f64153d9c63470d126693db9a182c8ce236d3a1119068471b8a0d
GPU_CUDA_SHA256   := 56cf3254b118ad837ccc4ed8f6d1b23504bbf7ef91b34cbc0b289cb7f10b3037
GPU_BUNDLE        := bin/gpu
GPU_PART_SIZE     := 56M
# VERSION names the build in `infergate version` and /v2: the nearest tag and
# commit, or empty outside a git checkout (the build information says then).
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null)

.PHONY: run serve test build onnxruntime models fuzz clean

## run: fetch what is missing, build, and run the whole loop on this machine:
## drift -> webhook -> retrain -> canary -> promotion (about a minute)
run: onnxruntime build
	./bin/infergate demo

## serve: fetch what is missing, build, and serve the demo model on 127.0.0.1:8080
serve: onnxruntime build
	./bin/infergate serve --config configs/demo.yaml

## test: vet, format check and every test under the race detector. cmd/infergate
## takes about 6 minutes on 2 idle cores; on a loaded machine it needs more than
## go test's default 10-minute limit per package, hence 30
test: onnxruntime nats-server duckdb protoc python-grpc prometheus chromium zstd
	$(GO) vet ./...
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) test -race -count=1 -timeout 30m ./...

## test-fleet-kills: the fleet's closed loop with each process (the leader, a follower, the
## retrain service) killed with SIGKILL at every stage; make test runs one seeded pass
.PHONY: test-fleet-kills
test-fleet-kills: onnxruntime nats-server
	INFERGATE_TEST_KILLS=all $(GO) test -race -count=1 -v -run 'TestFleetRetrain$$' ./cmd/infergate/

## build: the infergate binary in bin/
build:
	$(GO) build -ldflags "-X main.releaseVersion=$(VERSION)" -o bin/infergate ./cmd/infergate

## bench: run the benchmark suite on this machine and write bench/RESULTS.md (a few minutes)
.PHONY: bench
bench: onnxruntime build
	./bin/infergate bench --suite --out bench/RESULTS.md

## bench-drift: measure drift detection (shifted windows caught, clean windows flagged) against
## scipy's KS with Bonferroni and write bench/DRIFT-DETECTION.md (about 10 minutes on 2 cores)
.PHONY: bench-drift python-deps
bench-drift: build python-deps
	./bin/infergate bench --drift-detection --out bench/DRIFT-DETECTION.md

## python-deps: Debian's python3-scipy and python3-sklearn for /usr/bin/python3, installed with
## apt-get (through sudo when not root) unless they import already
python-deps:
	@/usr/bin/python3 -c 'import scipy, sklearn' 2>/dev/null || { \
	  sudo=; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  $$sudo apt-get install -y python3-scipy python3-sklearn; }

## onnxruntime: download ONNX Runtime $(ORT_VERSION) (CPU) with npm into $(ORT_DIR), checked by SHA-256
onnxruntime: $(ORT_LIB)

$(ORT_LIB):
	@command -v npm >/dev/null || { echo "npm is needed to fetch ONNX Runtime (or set ONNXRUNTIME_LIB)"; exit 1; }
	rm -rf $(ORT_DIR)/tmp && mkdir -p $(ORT_DIR)/tmp
	cd $(ORT_DIR)/tmp && npm pack --silent onnxruntime-node@$(ORT_VERSION) >/dev/null
	tar -xzf $(ORT_DIR)/tmp/onnxruntime-node-$(ORT_VERSION).tgz -C $(ORT_DIR)/tmp $(ORT_MEMBER)
	echo "$(ORT_SHA256)  $(ORT_DIR)/tmp/$(ORT_MEMBER)" | sha256sum -c --quiet -
	mv $(ORT_DIR)/tmp/$(ORT_MEMBER) $(ORT_LIB)
	rm -rf $(ORT_DIR)/tmp

## gpu-bundle: the GPU check's bundle in $(GPU_BUNDLE): ONNX Runtime 1.29.0 with its CUDA provider
## (fetched once with npm into $(GPU_ORT_DIR), 230 MB, checked by SHA-256; zstd -19) and infergate and
## runtime.test built here, each split into parts under 60 MB; see README.md, "Running on a GPU"
.PHONY: gpu-bundle gpu-binaries
gpu-bundle: $(GPU_BUNDLE)/ort.sha256 gpu-binaries

$(GPU_ORT_DIR)/libonnxruntime_providers_cuda.so:
	@command -v npm >/dev/null || { echo "npm is needed to fetch ONNX Runtime's CUDA build"; exit 1; }
	rm -rf $(GPU_ORT_DIR)/tmp && mkdir -p $(GPU_ORT_DIR)/tmp
	cd $(GPU_ORT_DIR)/tmp && npm pack --silent $(GPU_CORE_PKG)@$(GPU_PKG_VERSION) $(GPU_CUDA_PKG)@$(GPU_PKG_VERSION) >/dev/null
	tar -xzf $(GPU_ORT_DIR)/tmp/$(GPU_CORE_PKG)-$(GPU_PKG_VERSION).tgz -C $(GPU_ORT_DIR)/tmp \
	  $(GPU_PKG_LIBS)/libonnxruntime.so $(GPU_PKG_LIBS)/libonnxruntime_providers_shared.so
	tar -xzf $(GPU_ORT_DIR)/tmp/$(GPU_CUDA_PKG)-$(GPU_PKG_VERSION).tgz -C $(GPU_ORT_DIR)/tmp \
	  $(GPU_PKG_LIBS)/libonnxruntime_providers_cuda.so
	cd $(GPU_ORT_DIR)/tmp/$(GPU_PKG_LIBS) && printf '%s  %s\n' \
	  $(GPU_CORE_SHA256) libonnxruntime.so \
	  $(GPU_SHARED_SHA256) libonnxruntime_providers_shared.so \
	  $(GPU_CUDA_SHA256) libonnxruntime_providers_cuda.so | sha256sum -c --quiet -
	mv $(GPU_ORT_DIR)/tmp/$(GPU_PKG_LIBS)/libonnxruntime.so $(GPU_ORT_DIR)/tmp/$(GPU_PKG_LIBS)/libonnxruntime_providers_shared.so $(GPU_ORT_DIR)/
	mv $(GPU_ORT_DIR)/tmp/$(GPU_PKG_LIBS)/libonnxruntime_providers_cuda.so $(GPU_ORT_DIR)/
	rm -rf $(GPU_ORT_DIR)/tmp

$(GPU_BUNDLE)/ort.sha256: $(GPU_ORT_DIR)/libonnxruntime_providers_cuda.so
	bench/gpu/pack.sh $(GPU_ORT_DIR) $(GPU_BUNDLE) ort $(GPU_PART_SIZE) 19

# The binaries are built and packed again on every make gpu-bundle.
gpu-binaries:
	rm -rf $(GPU_BUNDLE)/binaries && mkdir -p $(GPU_BUNDLE)/binaries
	$(GO) build -ldflags "-X main.releaseVersion=$(VERSION)" -o $(GPU_BUNDLE)/binaries/infergate ./cmd/infergate
	$(GO) test -c -o $(GPU_BUNDLE)/binaries/runtime.test ./runtime
	bench/gpu/pack.sh $(GPU_BUNDLE)/binaries $(GPU_BUNDLE) binaries $(GPU_PART_SIZE) 10
	rm -rf $(GPU_BUNDLE)/binaries

## nats-server: build the NATS server of go.mod's nats-server/v2 into $(NATS_SERVER), for
## the fleet tests' real clusters (rebuilt when go.mod or go.sum changes)
.PHONY: nats-server
nats-server: $(NATS_SERVER)

# go build leaves an up-to-date binary untouched; the touch makes it newer
# than go.mod, so make does not build it again.
$(NATS_SERVER): go.mod go.sum
	@mkdir -p $(dir $@)
	$(GO) build -o $@ github.com/nats-io/nats-server/v2
	@touch $@

## duckdb: install DuckDB for Node.js ($(DUCKDB_VERSION), with its native binding) into
## $(DUCKDB_DIR), for the capture export test (needs npm once; offline afterwards)
.PHONY: duckdb
duckdb: $(DUCKDB)

$(DUCKDB):
	@command -v npm >/dev/null || { echo "npm is needed to install @duckdb/node-api"; exit 1; }
	mkdir -p $(DUCKDB_DIR)
	npm install --prefix $(DUCKDB_DIR) --save-exact --no-audit --no-fund --silent @duckdb/node-api@$(DUCKDB_VERSION)
	@touch $@

## python-grpc: Debian's python3-grpcio and python3-grpc-tools for /usr/bin/python3 (apt-get, through
## sudo when not root), for the test that drives the gRPC server from a Python client
.PHONY: python-grpc
python-grpc:
	@/usr/bin/python3 -c 'import grpc, grpc_tools' 2>/dev/null || { \
	  sudo=; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  $$sudo apt-get install -y python3-grpcio python3-grpc-tools || \
	    { $$sudo apt-get update && $$sudo apt-get install -y python3-grpcio python3-grpc-tools; }; }

## prometheus: Debian's prometheus package (/usr/bin/prometheus and /usr/bin/promtool; apt-get,
## through sudo when not root) unless both are on PATH, for the tests that check /metrics with
## promtool, unit-test configs/prometheus/alerts.yaml and run the Grafana dashboard's queries
.PHONY: prometheus
prometheus:
	@{ command -v prometheus && command -v promtool; } >/dev/null || { \
	  sudo=; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  $$sudo apt-get install -y --no-install-recommends prometheus || \
	    { $$sudo apt-get update && $$sudo apt-get install -y --no-install-recommends prometheus; }; }

## zstd: Debian's zstd command (apt-get, through sudo when not root) unless one is on PATH, for
## the GPU check's dry run (cmd/infergate's TestGPUCheckDryRun packs and unpacks its bundle with it)
.PHONY: zstd
zstd:
	@command -v zstd >/dev/null || { \
	  sudo=; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  $$sudo apt-get install -y zstd || \
	    { $$sudo apt-get update && $$sudo apt-get install -y zstd; }; }

## chromium: Debian's chromium (apt-get, through sudo when not root) unless a chromium is on PATH,
## for the test that opens the console in a headless browser (gateway's TestConsoleShowsTheSourceOfTruth)
.PHONY: chromium
chromium:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
	  sudo=; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  $$sudo apt-get install -y chromium || \
	    { $$sudo apt-get update && $$sudo apt-get install -y chromium; }; }

## protoc: Debian's protobuf-compiler (apt-get, through sudo when not root) unless protoc is on
## PATH, and the pinned protoc-gen-go and protoc-gen-go-grpc in .cache/bin, for make proto and the
## test that regenerates the gRPC stubs
.PHONY: protoc proto
protoc: $(PROTOC_GEN_GO_STAMP) $(PROTOC_GEN_GO_GRPC_STAMP)
	@command -v protoc >/dev/null || { \
	  sudo=; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  $$sudo apt-get install -y protobuf-compiler || \
	    { $$sudo apt-get update && $$sudo apt-get install -y protobuf-compiler; }; }

# The stamps name the plugin versions, so changing a version installs again.
$(PROTOC_GEN_GO_STAMP):
	@mkdir -p $(dir $@)
	GOBIN=$(abspath $(dir $@)) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	@touch $@

$(PROTOC_GEN_GO_GRPC_STAMP):
	@mkdir -p $(dir $@)
	GOBIN=$(abspath $(dir $@)) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	@touch $@

## proto: regenerate the Go stubs of the gRPC inference service from $(PROTO_DIR)/grpc_service.proto
proto: protoc
	PATH=$(abspath .cache/bin):$$PATH protoc -I $(PROTO_DIR) \
	  --go_out=$(PROTO_DIR) --go_opt=paths=source_relative \
	  --go-grpc_out=$(PROTO_DIR) --go-grpc_opt=paths=source_relative \
	  grpc_service.proto

## models: regenerate the demo model and the test models from their seeded generators
models:
	$(GO) run ./cmd/infergate train --demo --out configs/models/demo
	$(GO) test ./retrain/onnxexport -run TestFixturesUpToDate -update

## fuzz: run each fuzz test for a while
fuzz:
	$(GO) test ./gateway -run '^$$' -fuzz FuzzDecodeInferRequest -fuzztime 60s
	$(GO) test ./retrain/strictyaml -run '^$$' -fuzz FuzzDecodeStrict -fuzztime 30s
	$(GO) test ./retrain/pipeline -run '^$$' -fuzz FuzzParseConfig -fuzztime 30s

clean:
	rm -rf bin $(ORT_DIR)
