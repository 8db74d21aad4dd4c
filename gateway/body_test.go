package gateway

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// rawRequest writes head and body on a new connection to url's host and
// returns the connection.
func rawRequest(t *testing.T, url, head, body string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := io.WriteString(conn, head+"\r\n\r\n"+body); err != nil {
		t.Fatal(err)
	}
	return conn
}

// readStatus reads the status and body of the answer on conn.
func readStatus(t *testing.T, conn net.Conn) (int, string) {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestStalledBodiesHoldOneStep: clients that declare large bodies and stall
// after their first kilobytes hold one read step of the memory budget
// each, not their declared length, so other clients are still served.
func TestStalledBodiesHoldOneStep(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxBodySize, cfg.MaxInflightMemory = 1<<20, 4<<20
	srv, url := startServer(t, cfg)
	const stalled = 8
	for range stalled {
		rawRequest(t, url, "POST /v2/models/demo/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1048576",
			strings.Repeat(" ", 9<<10))
	}
	for deadline := time.Now().Add(30 * time.Second); srv.memory.used.Load() < stalled*bodyChunk; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the stalled requests hold %d bytes, want %d: not all reached their handler", srv.memory.used.Load(), stalled*bodyChunk)
		}
	}
	if used := srv.memory.used.Load(); used != stalled*bodyChunk {
		t.Fatalf("%d stalled bodies of 1 MiB hold %d bytes of the budget, want one step (%d) each", stalled, used, bodyChunk)
	}
	if code, _, body := call(t, "POST", url+"/v2/models/demo/infer", []byte(demoRequest)); code != 200 {
		t.Fatalf("with %d stalled bodies: %d %s", stalled, code, body)
	}
}

// TestBodyReading: chunked bodies are read to their end within the limit
// and refused beyond it; a body shorter than its Content-Length is a 400;
// a request that needs more than the whole memory budget gets 413, not a
// 503 that asks to retry what can never fit.
func TestBodyReading(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxBodySize, cfg.MaxInflightMemory = 1<<20, 4<<20
	srv, url := startServer(t, cfg)
	chunked := func(body string) string {
		var b strings.Builder
		for len(body) > 0 {
			n := min(len(body), 1000)
			fmt.Fprintf(&b, "%x\r\n%s\r\n", n, body[:n])
			body = body[n:]
		}
		return b.String() + "0\r\n\r\n"
	}
	head := "POST /v2/models/demo/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked"
	f := func(conn net.Conn, wantCode int, wantBody string) {
		t.Helper()
		code, body := readStatus(t, conn)
		if code != wantCode || !strings.Contains(body, wantBody) {
			t.Fatalf("%d %s, want %d with %q", code, body, wantCode, wantBody)
		}
	}
	f(rawRequest(t, url, head, chunked(demoRequest)), 200, `"outputs"`)
	f(rawRequest(t, url, head, chunked(strings.Repeat(" ", 1<<20+1))), 413, "max_body_size")

	conn := rawRequest(t, url, "POST /v2/models/demo/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100000", strings.Repeat(" ", 20000))
	conn.(*net.TCPConn).CloseWrite()
	f(conn, 400, "ended after")

	// 50,000 values need about 4.8 MB of parse tree: beyond the 4 MiB budget.
	values := `{"inputs":[{"name":"input","datatype":"FP32","shape":[50000,1],"data":[` + strings.Repeat("0,", 49999) + `0]}]}`
	code, h, body := call(t, "POST", url+"/v2/models/versioned/infer", []byte(values))
	if code != 413 || !strings.Contains(string(body), "max_inflight_memory") || h.Get("Retry-After") != "" {
		t.Fatalf("a request beyond the whole budget: %d %s (Retry-After %q), want 413 naming max_inflight_memory", code, body, h.Get("Retry-After"))
	}
	// 30,000 values in 900 KB need the body twice and 2.9 MB of tree: with
	// what the request holds already, more than the budget, so 413 too.
	padded := `{"inputs":[{"name":"input","datatype":"FP32","shape":[30000,1],"data":[` + strings.Repeat("0,", 29999) + `0]}]}`
	padded += strings.Repeat(" ", 900_000-len(padded))
	code, _, body = call(t, "POST", url+"/v2/models/versioned/infer", []byte(padded))
	if code != 413 || !strings.Contains(string(body), "max_inflight_memory") {
		t.Fatalf("a request beyond the whole budget with what it holds: %d %s, want 413", code, body)
	}
	if used := srv.memory.used.Load(); used != 0 {
		t.Fatalf("%d bytes of the budget still held after the requests", used)
	}
}
