package gateway

import (
	"fmt"
	"strconv"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

// latencyBuckets resolve request, compute and shadow times from 10µs (a
// cached answer) to 10s, in steps of 1, 2.5 and 5 per decade.
var latencyBuckets = []float64{
	10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
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
	// stats are the counters of Triton's model statistics (grpctriton.go).
	stats versionStats
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
	m.stats.observe(code, took)
}

// unregister removes the version's series: its set's, and the canary
// transitions counted for it.
func (m *versionMetrics) unregister() {
	metrics.UnregisterSet(m.set, true)
	for _, k := range canaryKinds {
		metrics.UnregisterMetric(canaryTransitionSeries(m.labels, k))
	}
}

// gatewayMetricHelp is the HELP text of each family the gateway registers
// (the batcher's, drift's, capture's, the outbox's and the runtime's are
// in their packages' tables). It is read-only.
var gatewayMetricHelp = map[string]string{
	"infergate_requests_total":                          "Infer requests answered by a loaded model version, by protocol (rest, grpc) and HTTP status code (499: the client left before its request was computed).",
	"infergate_requests_unrouted_total":                 "Requests that reached no loaded model version (unknown model, version or path) and gRPC messages that did not parse, by protocol and HTTP status code.",
	"infergate_request_duration_seconds":                "Time in seconds from decoding an infer request to encoding its answer, by protocol.",
	"infergate_model_version_loaded":                    "1 for each model version loaded and served.",
	"infergate_cache_hits_total":                        "Infer requests answered from the version's response cache.",
	"infergate_cache_misses_total":                      "Infer requests the version's response cache could not answer.",
	"infergate_shadow_requests_total":                   "Request copies for a shadow version, by result: mirrored, dropped (over shadow_max_in_flight) or failed.",
	"infergate_shadow_compared_rows_total":              "Rows of shadow outputs compared with the primary version's outputs.",
	"infergate_shadow_agreed_rows_total":                "Rows of shadow outputs whose top class matched the primary version's.",
	"infergate_shadow_abs_diff_total":                   "Sum of the absolute differences between the shadow's and the primary's first-output elements, in the output's unit.",
	"infergate_shadow_duration_seconds":                 "Time in seconds the shadow version took to compute each request copy.",
	"infergate_canary_weight":                           "The canary version's share of the model's unpinned traffic, in percent (0 once rolled back).",
	"infergate_canary_transitions_total":                "Canary analyses and actions of a canary version, by kind: started, advanced, held, failed, promoted, rolledback.",
	"infergate_config_reloads_total":                    "Config reloads tried.",
	"infergate_config_reload_errors_total":              "Config reloads refused; the config in effect stayed.",
	"infergate_config_last_reload_successful":           "1 when the last config reload was applied, 0 when it was refused.",
	"infergate_model_version_load_errors_total":         "Model versions a reload could not load.",
	"infergate_cluster_leader":                          "1 while this replica leads the fleet (a gateway alone and stateless always does), else 0.",
	"infergate_cluster_replicas":                        "Replicas heard from within cluster.grace, this one included.",
	"infergate_cluster_routing_revision":                "Newest revision of the control state each replica reported applying, by replica.",
	"infergate_cluster_lease_renewed_timestamp_seconds": "Unix time in seconds at which this replica last wrote its leader lease (the current time for a gateway alone and stateless; 0 before it ever led).",
	"infergate_accept_errors_total":                     "Errors accepting a TCP connection.",
	"infergate_connections_evicted_total":               "Idle connections closed to make room for new ones, by the limit that was reached.",
	"infergate_connections_refused_total":               "Connections refused, by the limit that was reached.",
	"infergate_connections_open":                        "Client connections open now.",
	"infergate_memory_budget_refused_total":             "Requests refused with 503 because their bodies would exceed the memory budget.",
	"infergate_events_dropped_total":                    "Events not handed to the in-process consumer because its queue was full.",
	"infergate_events_emit_errors_total":                "Events that could not be written to the outbox (the next leader emits them again).",
	"infergate_tls_reload_errors_total":                 "Failed reloads of the TLS certificate or key files; the old certificate stays in use.",
	"infergate_auth_refused_total":                      "Requests refused with 401 for a missing or invalid API key, by endpoint (infer, feedback).",
}
