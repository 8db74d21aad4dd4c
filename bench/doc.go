// Package bench generates HTTP or gRPC load against an Open Inference Protocol
// (KServe V2) server and measures it: closed loop (a fixed number of connections, each
// sending its next request once the last is answered) and open loop (a fixed
// arrival rate, with latency taken from each request's scheduled send time so
// that queueing is not hidden), the HTTP, gRPC and compute ceilings that the
// gateway's numbers are ratios of, and the reports (JSON, Markdown, an SVG
// latency-throughput plot) that come out of it.
//
// Run, MeasureCompute and the report writers are safe to call from several
// goroutines at once, each call with its own arguments; a Histogram is safe for
// concurrent use; an EchoServer is safe for concurrent use by its clients.
package bench
