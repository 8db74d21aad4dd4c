package batcher

import (
	"sync"
	"time"
)

const (
	// computeSamples is how many recent batches the adaptive mode learns
	// from: enough to smooth noise, few enough to follow a changing load.
	computeSamples = 64
	// minFitSamples is how many batches the adaptive mode needs before it
	// trusts its fit; until then every batch is sent at once.
	minFitSamples = 8
	// busyShare is the share of the instances' time spent computing below
	// which the adaptive mode does not wait at all: waiting for a fuller
	// batch only buys throughput when the instances are the bottleneck, and
	// an idle instance may as well run what is there now.
	busyShare = 0.5
)

// computeModel predicts how long a batch takes to compute from the last
// computeSamples batches, fitting compute ≈ intercept + slope·rows by least
// squares, as BentoML's adaptive batching does. It is safe for concurrent
// use: workers add samples while others ask for predictions.
type computeModel struct {
	// instances is the number of workers sharing the load.
	instances int
	// minBusy is the busy share below which batches go at once (busyShare).
	minBusy float64

	mu sync.Mutex
	// samples is a ring of the recent batches; next is where the next goes
	// and n how many are filled.
	samples [computeSamples]computeSample
	next, n int
	// fit is the least-squares line over samples; fitted says it can be used.
	fit    line
	fitted bool
}

type computeSample struct {
	rows, requests int
	seconds        float64
	end            time.Time
}

// line is compute time in seconds as a function of batch rows.
type line struct{ intercept, slope float64 }

func (l line) at(rows int) time.Duration {
	return time.Duration(max(0, l.intercept+l.slope*float64(rows)) * float64(time.Second))
}

// observe adds one executed batch and refits.
func (m *computeModel) observe(rows, requests int, d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.samples[m.next] = computeSample{rows: rows, requests: requests, seconds: d.Seconds(), end: time.Now()}
	m.next = (m.next + 1) % computeSamples
	m.n = min(m.n+1, computeSamples)
	m.fit, m.fitted = fitLine(m.samples[:m.n])
}

// fitLine fits seconds ≈ intercept + slope·rows by least squares. It fails
// with fewer than minFitSamples samples or when the row counts do not vary,
// since then no slope can be told. A negative slope is noise (compute does
// not fall as rows grow), so it is flattened to the mean.
func fitLine(samples []computeSample) (line, bool) {
	if len(samples) < minFitSamples {
		return line{}, false
	}
	var sumX, sumY float64
	for _, s := range samples {
		sumX += float64(s.rows)
		sumY += s.seconds
	}
	n := float64(len(samples))
	meanX, meanY := sumX/n, sumY/n
	var sxx, sxy float64
	for _, s := range samples {
		dx := float64(s.rows) - meanX
		sxx += dx * dx
		sxy += dx * (s.seconds - meanY)
	}
	if sxx == 0 {
		return line{}, false
	}
	slope := max(0, sxy/sxx)
	return line{intercept: meanY - slope*meanX, slope: slope}, true
}

// typicalRowsLocked is the rows of a typical request: the mean over the
// sampled batches, rounded up.
func (m *computeModel) typicalRowsLocked() int {
	rows, requests := 0, 0
	for _, s := range m.samples[:m.n] {
		rows += s.rows
		requests += s.requests
	}
	if requests == 0 {
		return 1
	}
	return (rows + requests - 1) / requests
}

// busyLocked is the share of the instances' time spent computing, from the
// first sampled batch's start until now.
func (m *computeModel) busyLocked(now time.Time) float64 {
	var busy float64
	start := now
	for _, s := range m.samples[:m.n] {
		busy += s.seconds
		if begin := s.end.Add(-time.Duration(s.seconds * float64(time.Second))); begin.Before(start) {
			start = begin
		}
	}
	span := now.Sub(start).Seconds() * float64(max(m.instances, 1))
	if span <= 0 {
		return 1
	}
	return busy / span
}

// budget is how long, from its oldest request's arrival, a batch of rows
// may wait in all: latency target minus the predicted compute of the batch
// grown by one typical request. It is 0 (send now) when the model cannot
// predict yet, when the instances are mostly idle, or when such a request
// would not fit in maxRows anyway.
func (m *computeModel) budget(now time.Time, rows, maxRows int, target time.Duration) time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.fitted || m.busyLocked(now) < m.minBusy {
		return 0
	}
	grown := rows + m.typicalRowsLocked()
	if grown > maxRows {
		return 0
	}
	return target - m.fit.at(grown)
}
