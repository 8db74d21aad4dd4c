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
// Its control plane (control.go) owns what changes the serving state:
// every model's routing (reloads, admin changes, canary analysis), the
// fleet's leadership (leader.go), the replicas' reports (fleet.go) and the
// events all of them produce (events.go). It keeps that state in the
// engine's control bucket (store.go), one key per model, written by
// revision and watched by every replica, so that N replicas behind a load
// balancer serve as one gateway; the leader's writes are fenced by the
// bucket's revision, so a leader that lost its lease writes nothing.
//
// The console (console.go, its page in console/) is one embedded page
// that reads the same JSON any script reads; the histories it looks back
// on, canary steps, drift windows and events, are bounded lists in the
// engine's history bucket (console_history.go), shared by the fleet.
//
// A Server is safe for concurrent use; its handler keeps nothing of a
// fasthttp.RequestCtx after it returns, and reads routing only from tables
// the control plane swaps in atomically. One lock guards the control
// plane; the request path never takes it. Config values are plain data and
// are not safe for concurrent mutation.
package gateway
