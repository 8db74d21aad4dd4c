package gateway

import (
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/infergate/infergate/batcher"
	"github.com/infergate/infergate/runtime"
)

// shadowTarget runs the copies of traffic mirrored to one version, through
// that version's own batcher, with at most maxInFlight copies queued or
// running; beyond that a copy is dropped and counted, never queued against
// the primary. It is safe for concurrent use.
type shadowTarget struct {
	v    *version
	sem  chan struct{}   // a token per copy in flight
	jobs chan *shadowJob // as large as sem, so a send never blocks
	stop chan struct{}
	wg   sync.WaitGroup
	once sync.Once // closes stop

	mirrored, dropped, failed *metrics.Counter
	comparedRows, agreedRows  *metrics.Counter
	absDiff                   *metrics.FloatCounter
	duration                  *metrics.PrometheusHistogram
	// For the report: the sums of both sides' latencies over the copies
	// compared, and, for a canary's agreement check, the rows compared and
	// agreed since the analysis last took them.
	shadowNanos, primaryNanos, compared atomic.Int64
	intervalRows, intervalAgreed        atomic.Int64
}

// shadowJob is one mirrored request: a copy of its inputs and of the
// primary's first output, which it is compared with.
type shadowJob struct {
	req            *inferRequest
	primary        runtime.Tensor
	primaryLatency time.Duration
	st             *state // whose in-flight count the copy holds
}

var shadowJobs = sync.Pool{New: func() any { return &shadowJob{req: &inferRequest{}} }}

// startShadow makes v a shadow target with maxInFlight workers, unless it
// is one already. It runs under the control lock.
func (v *version) startShadow(maxInFlight int) {
	if v.shadow.Load() != nil {
		return
	}
	maxInFlight = max(maxInFlight, 1)
	set, labels := v.metrics.set, v.metrics.labels
	t := &shadowTarget{
		v: v, sem: make(chan struct{}, maxInFlight), jobs: make(chan *shadowJob, maxInFlight), stop: make(chan struct{}),
		mirrored:     set.NewCounter(`infergate_shadow_requests_total{` + labels + `,result="mirrored"}`),
		dropped:      set.NewCounter(`infergate_shadow_requests_total{` + labels + `,result="dropped"}`),
		failed:       set.NewCounter(`infergate_shadow_requests_total{` + labels + `,result="failed"}`),
		comparedRows: set.NewCounter(`infergate_shadow_compared_rows_total{` + labels + `}`),
		agreedRows:   set.NewCounter(`infergate_shadow_agreed_rows_total{` + labels + `}`),
		absDiff:      set.NewFloatCounter(`infergate_shadow_abs_diff_total{` + labels + `}`),
		duration:     set.NewPrometheusHistogramExt(`infergate_shadow_duration_seconds{`+labels+`}`, latencyBuckets),
	}
	for range maxInFlight {
		t.wg.Add(1)
		go t.work()
	}
	v.shadow.Store(t)
}

// close stops t's workers once the copies they run finish.
func (t *shadowTarget) close() {
	t.once.Do(func() { close(t.stop) })
	t.wg.Wait()
}

// offer mirrors a request served by another version of the same model,
// unless the primary is busy or maxInFlight copies are already in flight.
// It copies what it needs, so the caller may reuse req and primary at once.
func (t *shadowTarget) offer(st *state, req *inferRequest, primary []runtime.Tensor, latency time.Duration, busy bool) {
	if busy {
		t.dropped.Inc()
		return
	}
	select {
	case t.sem <- struct{}{}:
	default:
		t.dropped.Inc()
		return
	}
	j := shadowJobs.Get().(*shadowJob)
	r := j.req
	if cap(r.Inputs) < len(req.Inputs) {
		r.Inputs = make([]runtime.Tensor, len(req.Inputs))
	}
	r.Inputs = r.Inputs[:len(req.Inputs)]
	for i, in := range req.Inputs {
		copyTensor(&r.Inputs[i], in)
	}
	copyTensor(&j.primary, primary[0])
	j.primaryLatency, j.st = latency, st
	st.inflight.Add(1)
	t.mirrored.Inc()
	t.jobs <- j
}

func copyTensor(dst *runtime.Tensor, src runtime.Tensor) {
	dst.DataType = src.DataType
	dst.Shape = append(dst.Shape[:0], src.Shape...)
	dst.Data = append(dst.Data[:0], src.Data...)
}

func (t *shadowTarget) work() {
	defer t.wg.Done()
	call := new(inferCall)
	for {
		select {
		case j := <-t.jobs:
			t.run(j, call)
			j.st.inflight.Add(-1)
			j.st = nil
			shadowJobs.Put(j)
			<-t.sem
		case <-t.stop:
			return
		}
	}
}

// run computes j on t's version and compares its first output with the
// primary's.
func (t *shadowTarget) run(j *shadowJob, call *inferCall) {
	breq := batcher.AcquireRequest()
	defer batcher.ReleaseRequest(breq)
	start := time.Now()
	if _, err := computeOn(t.v, j.req, breq, call); err != nil {
		t.failed.Inc()
		return
	}
	elapsed := time.Since(start)
	t.duration.Update(elapsed.Seconds())
	call.driftIn = appendFloats(call.driftIn[:0], call.results[0])
	call.driftOut = appendFloats(call.driftOut[:0], j.primary)
	rows := int(j.primary.Shape[0])
	agreed, absDiff := compareRows(call.driftIn, call.driftOut, rows)
	t.comparedRows.Add(rows)
	t.agreedRows.Add(agreed)
	t.absDiff.Add(absDiff)
	t.compared.Add(1)
	t.shadowNanos.Add(int64(elapsed))
	t.primaryNanos.Add(int64(j.primaryLatency))
	t.intervalRows.Add(int64(rows))
	t.intervalAgreed.Add(int64(agreed))
}

// compareRows compares two outputs of rows rows: a row agrees when both
// pick the same top class (for one column: when the values agree to 1e-3
// of their size). It returns the rows that agree and the sum over elements
// of the absolute differences.
func compareRows(a, b []float64, rows int) (agreed int, absDiff float64) {
	if rows <= 0 || len(a) != len(b) {
		return 0, 0
	}
	width := len(a) / rows
	for r := range rows {
		ra, rb := a[r*width:(r+1)*width], b[r*width:(r+1)*width]
		for i := range ra {
			absDiff += math.Abs(ra[i] - rb[i])
		}
		if width == 1 && math.Abs(ra[0]-rb[0]) <= 1e-3*max(1, math.Abs(rb[0])) || width > 1 && argmax(ra) == argmax(rb) {
			agreed++
		}
	}
	return agreed, absDiff
}

func argmax(xs []float64) int {
	best := 0
	for i, x := range xs {
		if x > xs[best] {
			best = i
		}
	}
	return best
}

// takeAgreement returns the rows compared and agreed since it was last called.
func (t *shadowTarget) takeAgreement() (rows, agreed int64) {
	return t.intervalRows.Swap(0), t.intervalAgreed.Swap(0)
}

// shadowReport is one shadow version's comparison with the primary.
type shadowReport struct {
	Version      string  `json:"version"`
	Mirrored     uint64  `json:"mirrored"`
	Dropped      uint64  `json:"dropped"`
	Failed       uint64  `json:"failed"`
	ComparedRows uint64  `json:"compared_rows"`
	Agreement    float64 `json:"agreement"`
	MeanAbsDiff  float64 `json:"mean_abs_diff"`
	// ShadowLatencyMs and PrimaryLatencyMs are mean latencies over the
	// compared copies: the shadow's compute and the primary's whole request.
	ShadowLatencyMs  float64 `json:"shadow_latency_ms"`
	PrimaryLatencyMs float64 `json:"primary_latency_ms"`
}

func (t *shadowTarget) report() shadowReport {
	rep := shadowReport{Version: t.v.name, Mirrored: t.mirrored.Get(), Dropped: t.dropped.Get(), Failed: t.failed.Get(),
		ComparedRows: t.comparedRows.Get()}
	if rep.ComparedRows > 0 {
		rep.Agreement = float64(t.agreedRows.Get()) / float64(rep.ComparedRows)
		if n := runtime.Elements(t.v.rt.Outputs()[0].Shape[1:]); n > 0 {
			rep.MeanAbsDiff = t.absDiff.Get() / float64(rep.ComparedRows) / float64(n)
		}
	}
	if n := t.compared.Load(); n > 0 {
		rep.ShadowLatencyMs = float64(t.shadowNanos.Load()) / float64(n) / 1e6
		rep.PrimaryLatencyMs = float64(t.primaryNanos.Load()) / float64(n) / 1e6
	}
	return rep
}
