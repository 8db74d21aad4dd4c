// Package gateway serves the Open Inference Protocol (KServe V2 REST) over
// fasthttp: it decodes requests into pooled typed buffers, validates them
// against the model, runs them on the model's runtime, encodes the answers,
// and serves health, metadata and /metrics. It holds up under abuse: bodies
// are streamed and charged to a memory budget before they cost memory
// (body.go, limits.go), JSON is scanned strictly and counted before it is
// parsed (jsonscan.go), connections are kept within limits that idle ones
// make room under (listener.go), and API keys and TLS guard it (auth.go,
// tls.go).
//
// A Server is safe for concurrent use; its handler keeps nothing of a
// fasthttp.RequestCtx after it returns. Config values are plain data and are
// not safe for concurrent mutation.
package gateway
