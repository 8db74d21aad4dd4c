// Package gateway serves the Open Inference Protocol (KServe V2 REST) over
// fasthttp: it decodes requests into pooled typed buffers, validates them
// against the model, runs them on the model's runtime, encodes the answers,
// and serves health, metadata and /metrics.
//
// A Server is safe for concurrent use; its handler keeps nothing of a
// fasthttp.RequestCtx after it returns. Config values are plain data and are
// not safe for concurrent mutation.
package gateway
