//go:build !race

package bench

import (
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

func TestSendAllocatesNothing(t *testing.T) {
	addr := serve(t, okHandler)
	o := Options{Request: inferRequest(addr), Connections: 1}.withDefaults()
	client := &fasthttp.HostClient{Addr: addr, MaxConns: 1}
	defer client.CloseIdleConnections()
	rec := new(recorder)
	w := newWorker(client, &o, rec)
	w.send() // dial and size the buffers
	n := testing.AllocsPerRun(200, func() {
		start := time.Now()
		code, err := w.send()
		rec.record(code, err, time.Since(start))
	})
	if n != 0 {
		t.Fatalf("a request and its record allocate %.1f times, want 0", n)
	}
}
