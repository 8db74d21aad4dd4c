package bench

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/valyala/fasthttp"
	"google.golang.org/grpc"
)

// Answer is one HTTP response (or gRPC answer) captured from a real
// server, which an EchoServer then gives to every request.
type Answer struct {
	// StatusCode is 200 for a gRPC answer, which is only captured when the
	// call succeeded.
	StatusCode int
	// GRPCMethod, when set, is the gRPC method the answer is to, and Body
	// its encoded message.
	GRPCMethod string
	// Server is the Server header, which the echo server sends as its name.
	Server string
	// Header holds the response's other headers but those the server sets
	// itself (Content-Length, Date, Connection), as key and value pairs.
	Header [][2]string
	Body   []byte
}

// Capture sends r once and returns the answer.
func Capture(r Request, timeout time.Duration) (Answer, error) {
	o := Options{Request: r}
	o = o.withDefaults()
	if err := o.validate(); err != nil {
		return Answer{}, err
	}
	if r.GRPC {
		return captureGRPC(r, timeout)
	}
	client := &fasthttp.HostClient{Addr: r.Addr, NoDefaultUserAgentHeader: true}
	defer client.CloseIdleConnections()
	w := newWorker(client, &o, new(recorder))
	w.timeout = timeout
	if _, err := w.send(); err != nil {
		return Answer{}, fmt.Errorf("cannot capture an answer from http://%s%s: %w", r.Addr, r.Path, err)
	}
	a := Answer{StatusCode: w.resp.StatusCode(), Body: append([]byte(nil), w.resp.Body()...)}
	for k, v := range w.resp.Header.All() {
		switch string(k) {
		case fasthttp.HeaderServer:
			a.Server = string(v)
			continue
		case fasthttp.HeaderContentLength, fasthttp.HeaderDate, fasthttp.HeaderConnection:
			continue
		}
		a.Header = append(a.Header, [2]string{string(k), string(v)})
	}
	return a, nil
}

// EchoServer is the HTTP ceiling: a fasthttp server on loopback that
// answers every request with the same captured bytes without doing any
// work, so a load run against it measures the client, HTTP and the machine
// alone. For a gRPC answer it is the gRPC ceiling: a grpc-go server whose
// one method takes the request's bytes and answers the captured message's,
// decoding and encoding nothing. It is safe for concurrent use.
type EchoServer struct {
	// Addr is the host:port it listens on.
	Addr   string
	srv    *fasthttp.Server
	grpc   *grpc.Server
	served chan error
}

// StartEchoServer listens on a free loopback port and answers a there.
func StartEchoServer(a Answer) (*EchoServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("cannot listen for the ceiling server: %w", err)
	}
	s := &EchoServer{Addr: ln.Addr().String(), served: make(chan error, 1)}
	if a.GRPCMethod != "" {
		if s.grpc, err = startGRPCEcho(ln, a); err != nil {
			ln.Close()
			return nil, err
		}
		go func() { s.served <- serveGRPC(s.grpc, ln) }()
		return s, nil
	}
	s.srv = &fasthttp.Server{
		Handler:                      a.handler(),
		Name:                         a.Server,
		NoDefaultServerHeader:        a.Server == "",
		NoDefaultContentType:         true,
		DisablePreParseMultipartForm: true,
		ReadBufferSize:               16 << 10,
		MaxRequestBodySize:           64 << 20,
		IdleTimeout:                  time.Minute,
	}
	go func() { s.served <- s.srv.Serve(ln) }()
	return s, nil
}

// handler answers a's status, headers and body; the body is shared by all
// answers and never written to.
func (a Answer) handler() fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		ctx.SetStatusCode(a.StatusCode)
		for _, kv := range a.Header {
			ctx.Response.Header.Set(kv[0], kv[1])
		}
		ctx.Response.SetBodyRaw(a.Body)
	}
}

// Close stops the server and waits for it to finish.
func (s *EchoServer) Close() error {
	if s.grpc != nil {
		s.grpc.Stop()
		return <-s.served
	}
	err := s.srv.Shutdown()
	if serr := <-s.served; serr != nil && !errors.Is(serr, net.ErrClosed) {
		err = errors.Join(err, serr)
	}
	return err
}
