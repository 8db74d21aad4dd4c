package batcher

import (
	"fmt"
	"strconv"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

// durationBuckets resolve queue waits and compute times from 10µs to 10s,
// in steps of 1, 2.5 and 5 per decade.
var durationBuckets = []float64{
	10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1, 2.5, 5, 10,
}

// rowBuckets are batch sizes 1, 2, 4, ..., 1024.
var rowBuckets = metrics.ExponentialBuckets(1, 2, 11)

// MetricHelp is the HELP text of each metric family a Batcher exports, by
// family name, for a /metrics writer that adds HELP lines. It is read-only.
var MetricHelp = map[string]string{
	"infergate_batcher_queue_wait_seconds":  "Time in seconds from a request's arrival to its leaving the queue for a batch (0 for a request run at once on an idle instance), by the priority level it was queued at.",
	"infergate_batcher_batch_rows":          "Rows in each executed batch.",
	"infergate_inference_duration_seconds":  "Time in seconds the model took to compute each batch (or each request, for a version run without a batcher).",
	"infergate_batcher_rows_total":          "Rows computed in executed batches.",
	"infergate_batcher_executions_total":    "Batches of requests executed by the model (one model run each).",
	"infergate_batcher_runner_panics_total": "Batches whose model run panicked; their requests failed.",
	"infergate_batcher_queue_length":        "Requests waiting in the queue now.",
	"infergate_batcher_rejected_total":      "Requests refused, by reason: queue_full, deadline, too_large, canceled, stopped.",
}

// reason is why a request was rejected, a label of the rejected counter.
type reason int

const (
	reasonQueueFull reason = iota
	reasonDeadline
	// reasonTooLarge counts requests with a row count out of range: too
	// many rows (ErrTooLarge) or none (ErrNoRows).
	reasonTooLarge
	reasonCanceled
	reasonStopped
	reasonCount
)

var reasonNames = [reasonCount]string{"queue_full", "deadline", "too_large", "canceled", "stopped"}

// batcherMetrics are one batcher's series, all created by New so that the
// request path never creates one. They live in their own set, exported
// from New until Close.
type batcherMetrics struct {
	set *metrics.Set
	// queueWait holds one histogram per priority level, indexed by level.
	queueWait  []*metrics.PrometheusHistogram
	batchRows  *metrics.PrometheusHistogram
	compute    *metrics.PrometheusHistogram
	rows       *metrics.Counter
	executions *metrics.Counter
	// runnerPanics counts batches whose Runner panicked; their requests
	// failed with ErrRunnerPanic.
	runnerPanics *metrics.Counter
	rejected     [reasonCount]*metrics.Counter
}

func newMetrics(labels string, levels int, queueLength func() float64) (*batcherMetrics, error) {
	if labels != "" {
		if err := metrics.ValidateMetric("m{" + labels + "}"); err != nil {
			return nil, fmt.Errorf("invalid batcher metric labels %q: %w", labels, err)
		}
	}
	s := metrics.NewSet()
	m := &batcherMetrics{
		set:          s,
		queueWait:    make([]*metrics.PrometheusHistogram, levels),
		batchRows:    s.NewPrometheusHistogramExt(series("infergate_batcher_batch_rows", labels, ""), rowBuckets),
		compute:      s.NewPrometheusHistogramExt(series("infergate_inference_duration_seconds", labels, ""), durationBuckets),
		rows:         s.NewCounter(series("infergate_batcher_rows_total", labels, "")),
		executions:   s.NewCounter(series("infergate_batcher_executions_total", labels, "")),
		runnerPanics: s.NewCounter(series("infergate_batcher_runner_panics_total", labels, "")),
	}
	for level := range m.queueWait {
		m.queueWait[level] = s.NewPrometheusHistogramExt(series("infergate_batcher_queue_wait_seconds", labels,
			`priority="`+strconv.Itoa(level)+`"`), durationBuckets)
	}
	s.NewGauge(series("infergate_batcher_queue_length", labels, ""), queueLength)
	for i, name := range reasonNames {
		m.rejected[i] = s.NewCounter(series("infergate_batcher_rejected_total", labels, `reason="`+name+`"`))
	}
	return m, nil
}

// series names a series with the caller's labels and extra ones.
func series(name, labels, extra string) string {
	switch {
	case labels != "" && extra != "":
		return name + "{" + labels + "," + extra + "}"
	case labels != "" || extra != "":
		return name + "{" + labels + extra + "}"
	}
	return name
}

func (m *batcherMetrics) register()   { metrics.RegisterSet(m.set) }
func (m *batcherMetrics) unregister() { metrics.UnregisterSet(m.set, true) }

// observe records one executed batch; a successful one also teaches the
// adaptive model.
func (b *Batcher) observe(rows, requests int, d time.Duration, err error) {
	m := b.metrics
	m.executions.Inc()
	m.rows.Add(rows)
	m.batchRows.Update(float64(rows))
	m.compute.Update(d.Seconds())
	if err == nil {
		b.executed.Add(1)
	}
	if b.model != nil && err == nil {
		b.model.observe(rows, requests, d)
	}
}
