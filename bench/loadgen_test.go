package bench

import (
	"context"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// serve answers with handler on a loopback port until the test ends and
// returns the port's address.
func serve(t *testing.T, handler fasthttp.RequestHandler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: handler}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Shutdown()
		<-done
	})
	return ln.Addr().String()
}

func okHandler(ctx *fasthttp.RequestCtx) {
	ctx.SetContentType("application/json")
	ctx.SetBodyString(`{"outputs":[]}`)
}

func inferRequest(addr string) Request {
	return Request{Addr: addr, Path: "/v2/models/m/infer", Body: []byte(`{"inputs":[]}`), Rows: 4}
}

func run(t *testing.T, o Options) *Result {
	t.Helper()
	res, err := Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestClosedLoopCounts(t *testing.T) {
	var seen atomic.Int64
	addr := serve(t, func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Method()) != "POST" || string(ctx.Path()) != "/v2/models/m/infer" || string(ctx.PostBody()) != `{"inputs":[]}` {
			ctx.SetStatusCode(fasthttp.StatusBadRequest)
			return
		}
		seen.Add(1)
		okHandler(ctx)
	})
	res := run(t, Options{Name: "closed", Request: inferRequest(addr), Connections: 4,
		Duration: 300 * time.Millisecond, Warmup: 100 * time.Millisecond})
	if res.Mode != "closed" || res.Connections != 4 || res.RowsPerRequest != 4 {
		t.Errorf("got mode %q, %d connections, %d rows; want closed, 4, 4", res.Mode, res.Connections, res.RowsPerRequest)
	}
	if res.OK < 10 || res.OK != res.Requests || len(res.Errors) != 0 {
		t.Fatalf("got %d ok of %d answers, errors %v; want at least 10, all ok", res.OK, res.Requests, res.Errors)
	}
	if res.OK >= seen.Load() {
		t.Errorf("counted %d of the %d requests the server saw: warm-up not excluded?", res.OK, seen.Load())
	}
	if res.Latency.Count != uint64(res.OK) || res.Latency.P50 <= 0 || res.Latency.P50 > res.Latency.Max {
		t.Errorf("latency %+v does not fit %d ok answers", res.Latency, res.OK)
	}
	if want := float64(res.OK) / res.Seconds; res.OKPerSec != want || res.RowsPerSec != 4*want {
		t.Errorf("got %g ok/s and %g rows/s, want %g and %g", res.OKPerSec, res.RowsPerSec, want, 4*want)
	}
}

func TestOpenLoopCounts(t *testing.T) {
	addr := serve(t, okHandler)
	res := run(t, Options{Request: inferRequest(addr), Rate: 200, Connections: 8,
		Duration: time.Second, Warmup: 200 * time.Millisecond})
	if res.Mode != "open" || res.Rate != 200 {
		t.Errorf("got mode %q at %g/s, want open at 200/s", res.Mode, res.Rate)
	}
	// 200 arrivals are due in the measured second: each is answered or unsent.
	if got := res.OK + res.Unsent; got < 198 || got > 202 || res.OK < 150 {
		t.Fatalf("got %d ok and %d unsent, want about 200 in all, most of them ok", res.OK, res.Unsent)
	}
}

func TestOpenLoopLatencyIncludesSchedulingDelay(t *testing.T) {
	const service = 50 * time.Millisecond
	addr := serve(t, func(ctx *fasthttp.RequestCtx) {
		time.Sleep(service)
		okHandler(ctx)
	})
	// One connection serves 20 requests/s; 100/s arrive, so arrivals queue
	// behind each other and their wait must show in their latency.
	open := run(t, Options{Request: inferRequest(addr), Rate: 100, Connections: 1, Duration: time.Second})
	closed := run(t, Options{Request: inferRequest(addr), Connections: 1, Duration: 500 * time.Millisecond})
	if open.Latency.P99 < Millis(6*service) || open.Latency.Max < Millis(10*service) {
		t.Errorf("open loop against a slow server: p99 %s, max %s; want the queueing (> %s, > %s) counted",
			open.Latency.P99, open.Latency.Max, Millis(6*service), Millis(10*service))
	}
	if open.Unsent < 50 {
		t.Errorf("got %d unsent arrivals, want most of the 100 due", open.Unsent)
	}
	if closed.Latency.P50 < Millis(service) || closed.Latency.P50 > Millis(5*service) {
		t.Errorf("closed loop against a slow server: p50 %s, want about %s", closed.Latency.P50, Millis(service))
	}
}

func TestErrorsByStatusCode(t *testing.T) {
	var n atomic.Int64
	addr := serve(t, func(ctx *fasthttp.RequestCtx) {
		switch n.Add(1) % 3 {
		case 0:
			ctx.SetStatusCode(fasthttp.StatusServiceUnavailable)
		case 1:
			ctx.SetStatusCode(fasthttp.StatusBadRequest)
		default:
			okHandler(ctx)
		}
	})
	res := run(t, Options{Request: inferRequest(addr), Connections: 2, Duration: 300 * time.Millisecond})
	e503, e400 := res.Errors["503"], res.Errors["400"]
	if res.OK+e503+e400 != res.Requests || res.Requests < 30 {
		t.Fatalf("got %d ok, %d 503 and %d 400 of %d answers, errors %v; want all accounted for, at least 30", res.OK, e503, e400, res.Requests, res.Errors)
	}
	for name, got := range map[string]int64{"ok": res.OK, "503": e503, "400": e400} {
		if third := res.Requests / 3; got < third-3 || got > third+3 {
			t.Errorf("got %d %s answers of %d, want about a third", got, name, res.Requests)
		}
	}
	if res.ErrorLatency == nil || res.ErrorLatency.Count != uint64(e503+e400) {
		t.Errorf("error latency %+v, want one value per error answer", res.ErrorLatency)
	}
	if res.ErrorCount() != e503+e400 {
		t.Errorf("ErrorCount() = %d, want %d", res.ErrorCount(), e503+e400)
	}
}

func TestTransportErrorsCounted(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	res := run(t, Options{Request: inferRequest(addr), Connections: 2, Duration: 200 * time.Millisecond, Timeout: time.Second})
	if res.OK != 0 || res.Requests != 0 || res.Errors["connect"] == 0 || res.FirstError == "" {
		t.Fatalf("got %d ok, %d answers, errors %v, first error %q; want only connect errors", res.OK, res.Requests, res.Errors, res.FirstError)
	}
	if !strings.Contains(res.FirstError, "refused") {
		t.Errorf("first error %q does not say the connection was refused", res.FirstError)
	}
}

func TestRunStopsWhenCancelled(t *testing.T) {
	addr := serve(t, okHandler)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	res, err := Run(ctx, Options{Request: inferRequest(addr), Rate: 1, Connections: 4, Duration: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("a cancelled run took %s", took)
	}
	if res.Seconds > 5 {
		t.Errorf("a cancelled run reports %gs measured", res.Seconds)
	}
}

func TestOptionsValidated(t *testing.T) {
	f := func(o Options, want string) {
		t.Helper()
		_, err := Run(context.Background(), o)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("got %v, want an error about %q", err, want)
		}
	}
	f(Options{Request: Request{Path: "/x"}}, "no address")
	f(Options{Request: Request{Addr: "127.0.0.1:1", Path: "x"}}, "must start with /")
	f(Options{Request: Request{Addr: "127.0.0.1:1", Path: "/x"}, Rate: -1}, "rate")
}

func TestProgressBar(t *testing.T) {
	addr := serve(t, okHandler)
	var out strings.Builder
	run(t, Options{Name: "progress-test", Request: inferRequest(addr), Connections: 2,
		Duration: 600 * time.Millisecond, Warmup: 300 * time.Millisecond, Progress: &out})
	if !strings.Contains(out.String(), "progress-test") || !strings.Contains(out.String(), "req/s") {
		t.Fatalf("progress output lacks the run's name or rate: %q", out.String())
	}
}
