package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
	"google.golang.org/grpc"
)

// Request is the one HTTP request (or gRPC call) a run sends over and
// over. Its Body is shared by every connection and must not change while a
// run uses it.
type Request struct {
	// Addr is the server's host:port.
	Addr string
	// GRPC makes the request a unary gRPC call, without TLS, of the method
	// Path (such as ModelInferMethod) with Body as the encoded message; its
	// Header goes as metadata, and Method and ContentType do not apply. A
	// run's workers then share at most MaxGRPCConnections connections.
	GRPC bool
	// Method defaults to POST.
	Method string
	// Path is the request path, such as /v2/models/demo/infer.
	Path string
	// ContentType defaults to application/json.
	ContentType string
	// Header holds extra headers, such as Accept-Encoding.
	Header map[string]string
	Body   []byte
	// Rows is the number of rows one request carries, for rows/s (default 1).
	Rows int
}

// Options configure one load run.
type Options struct {
	// Name labels the run in reports.
	Name    string
	Request Request
	// Connections is, in closed loop, the number of connections, each sending
	// its next request once the last is answered (default 32). In open loop
	// it bounds the connections and workers that keep up with the arrival
	// rate (default 512): once all are busy, arrivals wait and their wait
	// counts in their latency.
	Connections int
	// Rate is the arrival rate in requests per second of an open-loop run;
	// 0 makes the run closed loop. An arrival that has to wait for a free
	// connection counts that wait in its latency.
	Rate float64
	// Duration is how long the measurement lasts (default 10s).
	Duration time.Duration
	// Warmup is how long the load runs before the measurement starts; what
	// it sends is not counted.
	Warmup time.Duration
	// Timeout bounds one request (default 10s).
	Timeout time.Duration
	// Progress, when set, shows a progress bar there while the run lasts.
	Progress io.Writer
}

// Defaults for Options.
const (
	DefaultClosedConnections = 32
	DefaultOpenConnections   = 512
	DefaultDuration          = 10 * time.Second
	DefaultTimeout           = 10 * time.Second
)

func (o Options) withDefaults() Options {
	if o.Connections <= 0 {
		o.Connections = DefaultClosedConnections
		if o.Rate > 0 {
			o.Connections = DefaultOpenConnections
		}
	}
	if o.Duration <= 0 {
		o.Duration = DefaultDuration
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Request.Method == "" {
		o.Request.Method = fasthttp.MethodPost
	}
	if o.Request.ContentType == "" {
		o.Request.ContentType = "application/json"
	}
	if o.Request.Rows <= 0 {
		o.Request.Rows = 1
	}
	return o
}

func (o *Options) validate() error {
	switch {
	case o.Request.Addr == "":
		return errors.New("bench: the request has no address")
	case o.Request.GRPC && o.Request.Method != fasthttp.MethodPost:
		return fmt.Errorf("bench: a gRPC call has no HTTP method, got %s", o.Request.Method)
	case o.Request.Path == "" || o.Request.Path[0] != '/':
		return fmt.Errorf("bench: request path %q must start with /", o.Request.Path)
	case o.Rate < 0:
		return fmt.Errorf("bench: rate must not be negative, got %g", o.Rate)
	case o.Warmup < 0:
		return fmt.Errorf("bench: warm-up must not be negative, got %s", o.Warmup)
	}
	return nil
}

// Run sends o.Request for o.Warmup plus o.Duration, closed loop when o.Rate
// is 0 and open loop otherwise, and returns what the measurement saw.
// Requests count in the measurement when they were sent (closed loop) or
// scheduled (open loop) within it; those still in flight at its end are
// waited for. A cancelled ctx ends the run early with the result so far.
func Run(ctx context.Context, o Options) (*Result, error) {
	o = o.withDefaults()
	if err := o.validate(); err != nil {
		return nil, err
	}
	client := &fasthttp.HostClient{
		Addr:                          o.Request.Addr,
		MaxConns:                      o.Connections,
		MaxIdleConnDuration:           time.Minute,
		ReadTimeout:                   o.Timeout,
		WriteTimeout:                  o.Timeout,
		NoDefaultUserAgentHeader:      true,
		DisableHeaderNamesNormalizing: true,
		DisablePathNormalizing:        true,
		ReadBufferSize:                16 << 10,
		WriteBufferSize:               16 << 10,
	}
	defer client.CloseIdleConnections()
	var conns []*grpc.ClientConn
	if o.Request.GRPC {
		var err error
		if conns, err = dialGRPC(o.Request.Addr, min(o.Connections, MaxGRPCConnections)); err != nil {
			return nil, err
		}
		defer closeGRPC(conns)
	}

	rec := new(recorder)
	start := time.Now()
	ph := phases{start: start, measure: start.Add(o.Warmup), end: start.Add(o.Warmup + o.Duration)}
	var sched *schedule
	if o.Rate > 0 {
		sched = newSchedule(start, o.Rate)
	}
	stopProgress := startProgress(o.Progress, o.Name, ph, rec)

	var wg sync.WaitGroup
	for i := range o.Connections {
		w := newWorker(client, &o, rec)
		if conns != nil {
			w.call = newGRPCCall(conns[i%len(conns)], &o.Request, o.Timeout)
		}
		wg.Go(func() {
			if sched != nil {
				w.runOpen(ctx, ph, sched)
			} else {
				w.runClosed(ctx, ph)
			}
		})
	}
	wg.Wait()
	stopProgress()

	window := o.Duration
	if stopped := time.Now(); stopped.Before(ph.end) { // cancelled
		window = max(stopped.Sub(ph.measure), 0)
	}
	res := rec.result(&o, window)
	if sched != nil {
		res.Unsent = max(sched.countBetween(ph.measure, ph.measure.Add(window))-res.Requests-res.transportErrors(), 0)
	}
	return res, nil
}

// phases are the instants a run goes through.
type phases struct {
	start, measure, end time.Time
}

// worker sends requests over the shared client with its own request and
// response, so the loop allocates nothing per HTTP request, or makes its
// gRPC call.
type worker struct {
	client  *fasthttp.HostClient
	timeout time.Duration
	rec     *recorder
	req     fasthttp.Request
	resp    fasthttp.Response
	// call, when set, is the gRPC call the worker makes instead.
	call *grpcCall
}

func newWorker(client *fasthttp.HostClient, o *Options, rec *recorder) *worker {
	w := &worker{client: client, timeout: o.Timeout, rec: rec}
	r := &o.Request
	w.req.Header.SetMethod(r.Method)
	w.req.SetRequestURI(r.Path)
	w.req.Header.SetHost(r.Addr)
	if len(r.Body) > 0 || r.Method == fasthttp.MethodPost {
		w.req.Header.SetContentType(r.ContentType)
		w.req.SetBodyRaw(r.Body)
	}
	for k, v := range r.Header {
		w.req.Header.Set(k, v)
	}
	return w
}

// send performs one request and returns its status code.
func (w *worker) send() (int, error) {
	if w.call != nil {
		return w.call.send()
	}
	err := w.client.DoTimeout(&w.req, &w.resp, w.timeout)
	return w.resp.StatusCode(), err
}

// errorPause is how long a closed-loop connection rests after a transport
// error, so that a server that is down does not make the generator spin.
const errorPause = 10 * time.Millisecond

// runClosed sends the next request as soon as the last one is answered,
// until the run ends.
func (w *worker) runClosed(ctx context.Context, ph phases) {
	for ctx.Err() == nil {
		sent := time.Now()
		if !sent.Before(ph.end) {
			return
		}
		code, err := w.send()
		done := time.Now()
		w.rec.done.Add(1)
		if !sent.Before(ph.measure) {
			w.rec.record(code, err, done.Sub(sent))
		}
		if err != nil {
			pause(ctx, errorPause)
		}
	}
}

func pause(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
