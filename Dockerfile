# syntax=docker/dockerfile:1
#
# The infergate image: the one binary and the ONNX Runtime library it loads.
#
#   docker build -t infergate:dev --build-arg VERSION=$(git describe --tags --always --dirty) .
#   docker run --rm -p 8080:8080 -v $PWD/gw.yaml:/etc/infergate/config.yaml infergate:dev
#
# The default command serves /etc/infergate/config.yaml; `retrain --config F`
# and the other commands run the same way. In a container the config's
# listen must be 0.0.0.0:<port> (the default, 127.0.0.1, is unreachable from
# outside the container). configs/kubernetes/ deploys it.
#
# ONNX Runtime comes from the Makefile, which pins its version and SHA-256:
# the build stage runs `make onnxruntime` and `make build`, so this file
# holds neither. The library it fetches is linux/x64, so both stages are
# amd64 whatever the building machine is.

FROM --platform=linux/amd64 golang:1.26-trixie AS build
# npm fetches ONNX Runtime (onnxruntime-node's package), as `make onnxruntime`
# does on a developer's machine.
RUN apt-get update \
	&& apt-get install -y --no-install-recommends npm \
	&& rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
# The library first, from the Makefile alone: it changes only with the
# Makefile's ORT_VERSION and ORT_SHA256, so the layer is kept across code
# changes. The checksum is checked by sha256sum -c; a mismatch fails the build.
COPY Makefile ./
RUN make onnxruntime
COPY . .
# VERSION names the build in `infergate version` and /v2 (the Makefile
# takes it from git describe, and .git is not sent to the builder).
ARG VERSION=
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
	CGO_ENABLED=1 make build VERSION="$VERSION"

# The builder's Debian release, so that the binary finds the glibc it was
# linked against.
FROM --platform=linux/amd64 debian:trixie-slim
# libstdc++6 for ONNX Runtime; ca-certificates for https webhook targets and
# tls:// NATS servers verified by the system's roots.
RUN apt-get update \
	&& apt-get install -y --no-install-recommends ca-certificates libstdc++6 \
	&& rm -rf /var/lib/apt/lists/* \
	&& groupadd --system --gid 65532 infergate \
	&& useradd --system --uid 65532 --gid 65532 --home-dir /var/lib/infergate --no-create-home \
		--shell /usr/sbin/nologin infergate \
	&& mkdir -p /var/lib/infergate /etc/infergate \
	&& chown 65532:65532 /var/lib/infergate
COPY --from=build /src/bin/infergate /usr/local/bin/infergate
COPY --from=build /src/.cache/onnxruntime/libonnxruntime.so.1 /usr/local/lib/onnxruntime/libonnxruntime.so.1
# The demo model, which the gateway's Deployment copies into each replica's
# repository before it starts: a replica publishes the versions of its
# repository that the model store never held, so the demo reaches the
# fleet's store once (configs/kubernetes/gateway.yaml).
COPY configs/models /usr/share/infergate/models
# runtime.library unset: the gateway and the retrain service load this one.
ENV ONNXRUNTIME_LIB=/usr/local/lib/onnxruntime/libonnxruntime.so.1
WORKDIR /var/lib/infergate
# Numeric, so that Kubernetes' runAsNonRoot can check it without
# /etc/passwd.
USER 65532:65532
# 8080: the gateway's V2 API, /metrics and /admin/; 8090: `infergate retrain`.
EXPOSE 8080 8090
ENTRYPOINT ["infergate"]
CMD ["serve", "--config", "/etc/infergate/config.yaml"]
