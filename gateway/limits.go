package gateway

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/netip"
	goruntime "runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/infergate/infergate/runtime"
)

// jsonValueCost is what a parsed JSON value costs in memory: the parser's
// node (80 bytes), its slot in its parent, and at most 8 bytes of tensor.
const jsonValueCost = 96

// requestSlackValues leaves room, beyond the tensors' elements, for a
// request's id, names, datatypes, shapes, parameters and outputs.
const requestSlackValues = 1024

// requestValueLimit returns the most JSON values a request can need to
// carry inputs of this model at up to maxRows rows (0: no bound on rows):
// every input's elements, plus room for the rest of the request. Where a
// dimension is free and unbounded only maxBody bounds it: a value takes at
// least a byte.
func requestValueLimit(inputs []runtime.TensorInfo, maxRows, maxBody int) int {
	total := requestSlackValues
	for _, in := range inputs {
		elements := int64(1)
		for j, d := range in.Shape {
			switch {
			case d == runtime.Dynamic && j == 0 && maxRows > 0:
				d = int64(maxRows)
			case d == runtime.Dynamic:
				return maxBody
			}
			elements *= d
			if elements > int64(maxBody) {
				return maxBody
			}
		}
		total += int(elements) + len(in.Shape) + 16
	}
	return min(total, maxBody)
}

// memoryBudget bounds the bytes that requests in flight hold in bodies,
// parse trees and tensors, so that many large requests at once are refused
// with 503 rather than run the process out of memory. It is safe for
// concurrent use.
type memoryBudget struct {
	limit int64
	used  atomic.Int64
	// high is set once a quarter of the budget was in use; the release
	// that brings the use back under a sixteenth clears it and signals
	// drained, so that the memory goes back to the system (returnMemory).
	high    atomic.Bool
	drained chan struct{}
}

// reserve takes n bytes of the budget, or reports false, taking nothing,
// when they do not fit.
func (b *memoryBudget) reserve(n int64) bool {
	used := b.used.Add(n)
	if used > b.limit {
		b.used.Add(-n)
		memoryRefused.Inc()
		return false
	}
	if used > b.limit/4 && !b.high.Load() {
		b.high.Store(true)
	}
	return true
}

// releaseHeld gives back what *held took and zeroes it.
func (b *memoryBudget) releaseHeld(held *int64) {
	b.release(*held)
	*held = 0
}

// release gives back n bytes that reserve took.
func (b *memoryBudget) release(n int64) {
	if b.used.Add(-n) < b.limit/16 && b.high.Load() && b.high.CompareAndSwap(true, false) {
		select {
		case b.drained <- struct{}{}:
		default:
		}
	}
}

// returnMemoryAfter is how long returnMemory lets a burst settle.
const returnMemoryAfter = time.Second

// returnMemory hands the heap that a burst of large requests grew back to
// the system once the burst has passed, until stop is closed. Without it
// the memory stays with the process until the next collection, which an
// idle gateway may not run for minutes.
func (b *memoryBudget) returnMemory(stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case <-b.drained:
		}
		select {
		case <-stop:
			return
		case <-time.After(returnMemoryAfter):
		}
		if b.used.Load() < b.limit/16 {
			// Two collections: the first leaves pooled buffers (body
			// chunks, parsers) in sync.Pool's victim cache, the second,
			// FreeOSMemory's, frees them and returns the pages.
			goruntime.GC()
			debug.FreeOSMemory()
		}
	}
}

var memoryRefused = metrics.NewCounter(`infergate_memory_budget_refused_total`)

// acceptBackoff bounds the pause after an accept error.
const (
	minAcceptBackoff = 5 * time.Millisecond
	maxAcceptBackoff = time.Second
)

// guardedListener is the listener the HTTP server accepts from. It
// survives the accept errors a busy server meets (out of file descriptors,
// of memory for sockets, connections aborted before they were taken): it
// counts each, logs the first of a run, waits with exponential backoff and
// accepts again, where fasthttp would stop serving. And it refuses a
// connection from an address that holds perIP already (fasthttp's own
// per-IP limit hides the TCP connection the disconnect check needs). Errors
// of a closed listener end Accept as usual. It is safe for concurrent use.
type guardedListener struct {
	net.Listener
	log   *slog.Logger
	perIP int
	// sleep waits for the backoff; tests replace it.
	sleep func(time.Duration)

	// mu guards conns, the open connections by address, and lastRefusal.
	mu          sync.Mutex
	conns       map[netip.Addr]int
	lastRefusal time.Time
}

var (
	acceptErrors = metrics.NewCounter(`infergate_accept_errors_total`)
	perIPRefused = metrics.NewCounter(`infergate_connections_refused_total{reason="per_ip"}`)
)

// tooManyConnections is written to a connection refused for its address.
var tooManyConnections = func() string {
	body := `{"error":"too many connections from your address (max_connections_per_ip)"}`
	return fmt.Sprintf("HTTP/1.1 429 Too Many Requests\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
}()

func (l *guardedListener) Accept() (net.Conn, error) {
	backoff := time.Duration(0)
	for {
		c, err := l.Listener.Accept()
		if err != nil && retryableAccept(err) {
			acceptErrors.Inc()
			if backoff == 0 {
				l.log.Warn("cannot accept connection; retrying with backoff (raise the descriptor limit, ulimit -n, or lower max_connections)",
					"error", err)
				backoff = minAcceptBackoff
			} else {
				backoff = min(2*backoff, maxAcceptBackoff)
			}
			l.sleep(backoff)
			continue
		}
		if err != nil {
			return nil, err
		}
		if backoff > 0 {
			l.log.Info("accepting connections again")
			backoff = 0
		}
		if gc := l.admit(c); gc != nil {
			return gc, nil
		}
	}
}

// admit counts c against its address, or refuses and closes it.
func (l *guardedListener) admit(c net.Conn) net.Conn {
	ap, _ := netip.ParseAddrPort(c.RemoteAddr().String())
	ip := ap.Addr()
	l.mu.Lock()
	n := l.conns[ip]
	refuse := n >= l.perIP
	if !refuse {
		l.conns[ip] = n + 1
	}
	logIt := refuse && time.Since(l.lastRefusal) > time.Minute
	if logIt {
		l.lastRefusal = time.Now()
	}
	l.mu.Unlock()
	if !refuse {
		return &guardedConn{Conn: c, l: l, ip: ip}
	}
	perIPRefused.Inc()
	if logIt {
		l.log.Warn("refusing connections from an address over max_connections_per_ip", "address", ip.String(), "limit", l.perIP)
	}
	// The answer fits the socket's buffer: the write does not block.
	c.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
	io.WriteString(c, tooManyConnections)
	c.Close()
	return nil
}

// guardedConn is an accepted connection counted against its address until
// it closes.
type guardedConn struct {
	net.Conn
	l      *guardedListener
	ip     netip.Addr
	closed atomic.Bool
}

func (c *guardedConn) Close() error {
	if !c.closed.Swap(true) {
		c.l.mu.Lock()
		if c.l.conns[c.ip]--; c.l.conns[c.ip] <= 0 {
			delete(c.l.conns, c.ip)
		}
		c.l.mu.Unlock()
	}
	return c.Conn.Close()
}

// NetConn returns the TCP connection, as tls.Conn's does.
func (c *guardedConn) NetConn() net.Conn { return c.Conn }

// retryableAccept reports whether an accept error passes with time.
func retryableAccept(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) || errors.Is(err, syscall.ENOBUFS) ||
		errors.Is(err, syscall.ENOMEM) || errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.EINTR)
}

// descriptorLimit returns the process's soft limit on open files, or a
// conservative guess where it cannot be read.
func descriptorLimit() int {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Cur == 0 {
		return 1024
	}
	return int(min(lim.Cur, math.MaxInt32))
}

// defaultMaxConnections leaves an eighth of the descriptors (at least 64)
// to model files, state, logs and outgoing webhooks.
func defaultMaxConnections(descriptors int) int {
	return max(descriptors-max(descriptors/8, 64), 16)
}
