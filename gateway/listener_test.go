package gateway

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// waitClosed reports whether the server closed conn within the deadline.
func waitClosed(conn net.Conn) bool {
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := conn.Read(make([]byte, 1))
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)
}

// dialFrom opens an idle connection to url's host from local address ip.
func dialFrom(t *testing.T, url, ip string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	conn, err := d.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// TestIdleConnectionsMakeRoom: at max_connections_per_ip a new connection
// from that address closes the one of that address idle longest, and at
// max_connections the one idle longest of all; connections of other
// addresses and busy ones stay.
func TestIdleConnectionsMakeRoom(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxConnections, cfg.MaxConnectionsPerIP = 6, 3
	_, url := startServer(t, cfg)
	var mine []net.Conn
	for range 3 {
		mine = append(mine, dialFrom(t, url, "127.0.0.1"))
	}
	other := dialFrom(t, url, "127.0.0.2")
	// The fourth from 127.0.0.1 takes the place of its first.
	if code, _, body := call(t, "POST", url+"/v2/models/demo/infer", []byte(demoRequest)); code != 200 {
		t.Fatalf("at max_connections_per_ip: %d %s", code, body)
	}
	if !waitClosed(mine[0]) {
		t.Fatal("the connection idle longest from the address at its limit was not closed")
	}
	// Three of 127.0.0.1 (two idle ones and the client's keep-alive one)
	// and other: two more fill max_connections, and the third closes the
	// one idle longest of all, mine[1]; other stays.
	for range 3 {
		dialFrom(t, url, "127.0.0.3")
	}
	if !waitClosed(mine[1]) {
		t.Fatal("at max_connections the connection idle longest was not closed")
	}
	other.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if _, err := other.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a connection idle for less long was closed: %v", err)
	}
}

// TestBusyConnectionsRefuseNewcomers: when every connection is busy with a
// request, a new one is answered 503 in JSON and closed.
func TestBusyConnectionsRefuseNewcomers(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxConnections, cfg.MaxConnectionsPerIP = 2, 10
	srv, url := startServer(t, cfg)
	for range 2 { // busy: their bodies never arrive in full
		rawRequest(t, url, "POST /v2/models/demo/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100000", strings.Repeat(" ", 9<<10))
	}
	for deadline := time.Now().Add(30 * time.Second); srv.memory.used.Load() < 2*bodyChunk; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the stalled requests did not reach their handler")
		}
	}
	conn := rawRequest(t, url, "GET /v2/health/live HTTP/1.1\r\nHost: x", "")
	if code, body := readStatus(t, conn); code != 503 || !strings.Contains(body, `"error"`) || !strings.Contains(body, "(max_connections)") {
		t.Fatalf("a newcomer with every connection busy: %d %s, want 503 in JSON", code, body)
	}
}

// TestAcceptErrorsAreSurvived: an accept that fails for want of
// descriptors is retried with growing pauses, and the next connection is
// served; a closed listener ends Accept.
func TestAcceptErrorsAreSurvived(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	fake := &flakyListener{errs: []error{syscall.EMFILE, syscall.EMFILE, syscall.ENFILE}, conn: &pipeConn{server}}
	var slept []time.Duration
	l := newGuardedListener(fake, slog.New(slog.DiscardHandler), 10, 10, true)
	l.sleep = func(d time.Duration) { slept = append(slept, d) }
	c, err := l.Accept()
	if err != nil || c == nil {
		t.Fatalf("Accept after EMFILE: %v", err)
	}
	c.Close()
	if want := []time.Duration{5 * time.Millisecond, 10 * time.Millisecond, 20 * time.Millisecond}; !slices.Equal(slept, want) {
		t.Fatalf("pauses %v, want %v", slept, want)
	}
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept on a closed listener: %v, want net.ErrClosed", err)
	}
}

// flakyListener fails with errs, then hands out conn once, then is closed.
type flakyListener struct {
	net.Listener
	errs []error
	conn net.Conn
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if len(l.errs) > 0 {
		err := l.errs[0]
		l.errs = l.errs[1:]
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: err}
	}
	if c := l.conn; c != nil {
		l.conn = nil
		return c, nil
	}
	return nil, net.ErrClosed
}

// pipeConn is a net.Pipe end with a TCP remote address.
type pipeConn struct{ net.Conn }

func (pipeConn) RemoteAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }
