package bench

import (
	"bytes"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

func TestEchoServerAnswersTheCapturedBytes(t *testing.T) {
	body := []byte(`{"model_name":"m","outputs":[{"name":"y","datatype":"FP32","shape":[1,2],"data":[0.25,0.75]}]}`)
	addr := serve(t, func(ctx *fasthttp.RequestCtx) {
		ctx.Response.Header.Set("infergate-model-version", "3")
		ctx.SetContentType("application/json")
		ctx.SetBody(body)
	})
	a, err := Capture(inferRequest(addr), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	echo, err := StartEchoServer(a)
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()

	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://" + echo.Addr + "/anything")
	req.Header.SetMethod("POST")
	req.SetBodyString(`{"inputs":[]}`)
	if err := fasthttp.DoTimeout(req, resp, time.Second); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode() != 200 || !bytes.Equal(resp.Body(), body) ||
		string(resp.Header.Peek("infergate-model-version")) != "3" || string(resp.Header.ContentType()) != "application/json" {
		t.Fatalf("echo answered %d %q (version %q, type %q), want the captured answer",
			resp.StatusCode(), resp.Body(), resp.Header.Peek("infergate-model-version"), resp.Header.ContentType())
	}

	res := run(t, Options{Request: inferRequest(echo.Addr), Connections: 4, Duration: 200 * time.Millisecond})
	if res.OK < 10 || len(res.Errors) != 0 {
		t.Fatalf("load against the echo server: %d ok, errors %v", res.OK, res.Errors)
	}
}

func TestCaptureFailsWithoutServer(t *testing.T) {
	if _, err := Capture(Request{Addr: "127.0.0.1:1", Path: "/x"}, time.Second); err == nil {
		t.Fatal("capturing from a closed port succeeded")
	}
}
