package gateway

import (
	"context"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// TestMalformedBodies sends hundreds of broken requests: every truncation of
// a valid body and seeded random corruptions of it. Each gets a 4xx (or a
// 200 when the corruption happens to stay valid), never a 5xx, and the
// server keeps answering.
func TestMalformedBodies(t *testing.T) {
	_, url := startServer(t, testConfig(t))
	valid := []byte(demoRequest)
	var bodies [][]byte
	for i := range len(valid) {
		bodies = append(bodies, valid[:i])
	}
	rng := rand.New(rand.NewPCG(1, 2))
	junk := []string{`"NaN"`, `-1`, `1e999`, `[`, `]`, `{}`, `null`, `"x"`, `99999999999999999999`, `true`, `,`, `:`}
	for range 300 {
		b := []byte(strings.Clone(demoRequest))
		at := rng.IntN(len(b))
		switch rng.IntN(3) {
		case 0:
			b[at] = byte(rng.IntN(256))
		case 1:
			b = append(b[:at], append([]byte(junk[rng.IntN(len(junk))]), b[at:]...)...)
		case 2:
			b = append(b[:at], b[min(at+1+rng.IntN(8), len(b)):]...)
		}
		bodies = append(bodies, b)
	}
	for _, shape := range []string{"[1e12,1e12]", "[-1,8]", "[1,-8]", "[9223372036854775807,2]", "[]", "[1,8,1]", `["1","8"]`, "[0,8]"} {
		bodies = append(bodies, []byte(strings.Replace(demoRequest, "[2,8]", shape, 1)))
	}
	for i, body := range bodies {
		code, _, resp := call(t, "POST", url+"/v2/models/demo/infer", body)
		if code >= 500 || (code != 200 && code/100 != 4) {
			t.Fatalf("body %d %q: status %d %s", i, body, code, resp)
		}
		if code != 200 && !strings.Contains(string(resp), `"error":`) {
			t.Fatalf("body %d %q: error without an error body: %s", i, body, resp)
		}
	}
	for _, path := range []string{"/v2/models/nope/infer", "/v2/models//infer", "/v2/models/demo/versions/x/infer", "/v2/models/demo/versions//infer"} {
		if code, _, _ := call(t, "POST", url+path, []byte(demoRequest)); code != 404 {
			t.Fatalf("%s: status %d, want 404", path, code)
		}
	}
	if code, _, body := call(t, "POST", url+"/v2/models/demo/infer", valid); code != 200 {
		t.Fatalf("after malformed bodies: %d %s", code, body)
	}
}

// TestPanicBecomes500 makes a handler panic: that request gets a 500 and
// the recovery leaves no half-written protocol headers behind.
func TestPanicBecomes500(t *testing.T) {
	srv, _ := startServer(t, testConfig(t))
	var ctx fasthttp.RequestCtx
	ctx.Request.SetRequestURI("/v2/models/demo/infer")
	func() {
		defer srv.recoverPanic(&ctx)
		ctx.Response.Header.Set(headerInferenceLen, "12")
		panic("boom")
	}()
	if ctx.Response.StatusCode() != 500 || string(ctx.Response.Body()) != `{"error":"internal error"}` || len(ctx.Response.Header.Peek(headerInferenceLen)) != 0 {
		t.Fatalf("after a panic: %d %q", ctx.Response.StatusCode(), ctx.Response.Body())
	}
}

// TestShutdownDrains shuts the server down under load: every request that
// was accepted is answered 200, and the models unload only afterwards.
func TestShutdownDrains(t *testing.T) {
	srv, url := startServer(t, testConfig(t))
	var wg sync.WaitGroup
	var mu sync.Mutex
	answered := 0
	stop := make(chan struct{})
	for range 8 {
		wg.Go(func() {
			client := &fasthttp.Client{}
			for {
				select {
				case <-stop:
					return
				default:
				}
				req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
				req.SetRequestURI(url + "/v2/models/demo/infer")
				req.Header.SetMethod("POST")
				req.SetBodyString(demoRequest)
				err := client.Do(req, resp)
				code := resp.StatusCode()
				fasthttp.ReleaseRequest(req)
				fasthttp.ReleaseResponse(resp)
				if err != nil {
					return // the listener closed: nothing was accepted
				}
				if code != 200 {
					t.Errorf("a request accepted before shutdown got %d", code)
					return
				}
				mu.Lock()
				answered++
				mu.Unlock()
			}
		})
	}
	// Under load: some requests answered (a fixed pause may see none on a
	// loaded machine), then more in flight as the shutdown starts.
	waitUntil(t, "a request answered before shutdown", 30*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return answered > 0
	})
	time.Sleep(100 * time.Millisecond)
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	close(stop)
	wg.Wait()
	if answered == 0 {
		t.Fatal("no request was answered before shutdown")
	}
}
