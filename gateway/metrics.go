package gateway

import (
	"fmt"
	"strconv"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

// latencyBuckets suit a gateway whose requests take 100µs to seconds.
var latencyBuckets = []float64{
	0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
}

// statusCodes are the codes the infer path answers with, in the order of
// versionMetrics.requests.
var statusCodes = [...]int{200, 400, 404, 405, 413, 415, statusClientClosed, 500, 503, 504}

func statusIndex(code int) int {
	for i, c := range statusCodes {
		if c == code {
			return i
		}
	}
	panic("BUG: infer answered with unexpected status " + strconv.Itoa(code))
}

// protocols are the values of the protocol label of request series, by
// the protocolREST and protocolGRPC indices.
var protocols = [...]string{"rest", "grpc"}

// Indices of protocols.
const (
	protocolREST = iota
	protocolGRPC
)

// unrouted counts requests that named no loaded model version, by protocol.
var unrouted [len(protocols)][len(statusCodes)]*metrics.Counter

func init() {
	for p, protocol := range protocols {
		for i, code := range statusCodes {
			unrouted[p][i] = metrics.NewCounter(fmt.Sprintf(`infergate_requests_unrouted_total{protocol=%q,code="%d"}`, protocol, code))
		}
	}
}

// versionMetrics are one model version's series, created when it loads and
// unregistered when it goes, so the request path never creates a series.
type versionMetrics struct {
	set    *metrics.Set
	labels string
	// requests and latency are by protocol, then status.
	requests [len(protocols)][len(statusCodes)]*metrics.Counter
	latency  [len(protocols)]*metrics.PrometheusHistogram
	// compute is set for a version without a batcher; a batcher exports
	// the same series itself.
	compute *metrics.PrometheusHistogram
}

func newVersionMetrics(model, version string) *versionMetrics {
	labels := fmt.Sprintf(`model=%q,version=%q`, model, version)
	m := &versionMetrics{set: metrics.NewSet(), labels: labels}
	for p, protocol := range protocols {
		for i, code := range statusCodes {
			m.requests[p][i] = m.set.NewCounter(fmt.Sprintf(`infergate_requests_total{%s,protocol=%q,code="%d"}`, labels, protocol, code))
		}
		m.latency[p] = m.set.NewPrometheusHistogramExt(fmt.Sprintf(`infergate_request_duration_seconds{%s,protocol=%q}`, labels, protocol), latencyBuckets)
	}
	m.set.NewGauge(`infergate_model_version_loaded{`+labels+`}`, func() float64 { return 1 })
	metrics.RegisterSet(m.set)
	return m
}

// addCompute adds the compute histogram of a version that runs without a batcher.
func (m *versionMetrics) addCompute() {
	m.compute = m.set.NewPrometheusHistogramExt(`infergate_inference_duration_seconds{`+m.labels+`}`, latencyBuckets)
}

// observe counts a request of protocol (protocolREST or protocolGRPC)
// answered with code after took.
func (m *versionMetrics) observe(protocol, code int, took time.Duration) {
	m.requests[protocol][statusIndex(code)].Inc()
	m.latency[protocol].Update(took.Seconds())
}

func (m *versionMetrics) unregister() {
	metrics.UnregisterSet(m.set, true)
}
