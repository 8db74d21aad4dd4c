package bench

import (
	"errors"
	"maps"
	"net"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	grpccodes "google.golang.org/grpc/codes"
)

// Result is what one run measured.
type Result struct {
	Name string `json:"name"`
	// Mode is "closed" or "open".
	Mode        string `json:"mode"`
	Connections int    `json:"connections"`
	// Rate is the arrival rate asked for in open loop, requests per second.
	Rate float64 `json:"target_rate,omitempty"`
	// RowsPerRequest is the rows each request carries.
	RowsPerRequest int `json:"rows_per_request"`
	// Seconds is the length of the measurement.
	Seconds float64 `json:"seconds"`
	// Requests is the number of HTTP answers of any status; OK of them were 2xx.
	Requests int64 `json:"requests"`
	OK       int64 `json:"ok"`
	// OKPerSec and RowsPerSec are the achieved throughput of 2xx answers;
	// AnsweredPerSec counts every HTTP answer.
	OKPerSec       float64 `json:"ok_per_s"`
	RowsPerSec     float64 `json:"rows_per_s"`
	AnsweredPerSec float64 `json:"answered_per_s"`
	// Errors counts non-2xx answers by status code ("503"), gRPC calls
	// answered with an error status by its name ("Unavailable"), and
	// transport failures by kind ("timeout", "closed", "connect").
	Errors map[string]int64 `json:"errors,omitempty"`
	// FirstError is the text of the first transport failure, if any.
	FirstError string `json:"first_error,omitempty"`
	// Unsent counts open-loop arrivals due in the measurement that no
	// worker could send before the run ended.
	Unsent int64 `json:"unsent,omitempty"`
	// Latency is that of 2xx answers; in open loop it runs from the
	// scheduled send time for arrivals that had to wait for a free
	// connection, so queueing behind a slow server counts.
	Latency Latency `json:"latency"`
	// SendLatency is that of 2xx answers from the moment each request was
	// actually sent, in open loop, where it differs from Latency: a gap
	// between the two is time arrivals waited for a free connection, as the
	// server (or the generator) fell behind the schedule.
	SendLatency *Latency `json:"send_latency,omitempty"`
	// ErrorLatency is that of non-2xx answers, such as quick 503
	// rejections, and ErrorSendLatency the same from the actual send.
	ErrorLatency     *Latency `json:"error_latency,omitempty"`
	ErrorSendLatency *Latency `json:"error_send_latency,omitempty"`
}

// transportErrors returns the failures that got no HTTP answer.
func (r *Result) transportErrors() int64 {
	var n int64
	for _, k := range transportKinds {
		n += r.Errors[k]
	}
	return n
}

// ErrorCount returns the number of non-2xx answers and transport failures.
func (r *Result) ErrorCount() int64 {
	var n int64
	for _, c := range r.Errors {
		n += c
	}
	return n
}

// ErrorKeys returns the keys of r.Errors, sorted.
func (r *Result) ErrorKeys() []string { return slices.Sorted(maps.Keys(r.Errors)) }

// Transport failure kinds, as Result.Errors names them.
const (
	errTimeout = iota
	errClosed
	errConnect
	errOther
	errKinds
)

var transportKinds = [errKinds]string{"timeout", "closed", "connect", "transport"}

// recorder collects a run's answers. It is safe for concurrent use and
// allocates nothing per answer but the first failure's text.
type recorder struct {
	// ok and failed hold the latency of 2xx and other answers; okSent and
	// failedSent the same from the actual send time (open loop only).
	ok, failed, okSent, failedSent Histogram
	// codes counts answers by HTTP status code, and gRPC status codes
	// from grpcStatusBase on.
	codes      [grpcStatusBase + grpcStatuses]atomic.Int64
	transport  [errKinds]atomic.Int64
	firstError atomic.Pointer[string]
	// done counts every answer and failure, warm-up included, for progress.
	done atomic.Int64
}

// recordSent records how long an answer took from its actual send time.
func (r *recorder) recordSent(code int, err error, latency time.Duration) {
	switch {
	case err != nil:
	case code >= 200 && code < 300:
		r.okSent.Record(latency)
	default:
		r.failedSent.Record(latency)
	}
}

func (r *recorder) record(code int, err error, latency time.Duration) {
	if err != nil {
		r.transport[errorKind(err)].Add(1)
		if r.firstError.Load() == nil {
			msg := err.Error()
			r.firstError.CompareAndSwap(nil, &msg)
		}
		return
	}
	if code >= 200 && code < 300 {
		r.ok.Record(latency)
	} else {
		r.failed.Record(latency)
	}
	if code >= 0 && code < len(r.codes) {
		r.codes[code].Add(1)
	}
}

func errorKind(err error) int {
	if kind, ok := grpcErrorKind(err); ok {
		return kind
	}
	switch {
	case errors.Is(err, fasthttp.ErrTimeout), errors.Is(err, fasthttp.ErrDialTimeout):
		return errTimeout
	case errors.Is(err, fasthttp.ErrConnectionClosed):
		return errClosed
	}
	var dial interface{ Timeout() bool }
	if errors.As(err, &dial) && dial.Timeout() {
		return errTimeout
	}
	if isDialError(err) {
		return errConnect
	}
	return errOther
}

func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

func (r *recorder) result(o *Options, window time.Duration) *Result {
	res := &Result{
		Name:           o.Name,
		Mode:           "closed",
		Connections:    o.Connections,
		Rate:           o.Rate,
		RowsPerRequest: o.Request.Rows,
		Seconds:        window.Seconds(),
		Latency:        r.ok.Summary(),
	}
	if o.Rate > 0 {
		res.Mode = "open"
	}
	for code := range r.codes {
		n := r.codes[code].Load()
		if n == 0 {
			continue
		}
		res.Requests += n
		if code >= 200 && code < 300 {
			res.OK += n
			continue
		}
		if code >= grpcStatusBase {
			res.addError(grpccodes.Code(code-grpcStatusBase).String(), n)
			continue
		}
		res.addError(strconv.Itoa(code), n)
	}
	for kind := range r.transport {
		if n := r.transport[kind].Load(); n > 0 {
			res.addError(transportKinds[kind], n)
		}
	}
	if msg := r.firstError.Load(); msg != nil {
		res.FirstError = *msg
	}
	if r.failed.Count() > 0 {
		res.ErrorLatency = summary(&r.failed)
	}
	if o.Rate > 0 {
		res.SendLatency = summary(&r.okSent)
		if r.failedSent.Count() > 0 {
			res.ErrorSendLatency = summary(&r.failedSent)
		}
	}
	if s := window.Seconds(); s > 0 {
		res.OKPerSec = float64(res.OK) / s
		res.RowsPerSec = float64(res.OK*int64(res.RowsPerRequest)) / s
		res.AnsweredPerSec = float64(res.Requests) / s
	}
	return res
}

func summary(h *Histogram) *Latency {
	l := h.Summary()
	return &l
}

func (r *Result) addError(key string, n int64) {
	if r.Errors == nil {
		r.Errors = make(map[string]int64)
	}
	r.Errors[key] += n
}
