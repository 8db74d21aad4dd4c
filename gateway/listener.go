package gateway

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/valyala/fasthttp"
)

// acceptBackoff bounds the pause after an accept error.
const (
	minAcceptBackoff = 5 * time.Millisecond
	maxAcceptBackoff = time.Second
)

var (
	acceptErrors     = metrics.NewCounter(`infergate_accept_errors_total`)
	evictedTotal     = metrics.NewCounter(`infergate_connections_evicted_total{limit="max_connections"}`)
	evictedPerIP     = metrics.NewCounter(`infergate_connections_evicted_total{limit="max_connections_per_ip"}`)
	refusedTotal     = metrics.NewCounter(`infergate_connections_refused_total{limit="max_connections"}`)
	refusedPerIP     = metrics.NewCounter(`infergate_connections_refused_total{limit="max_connections_per_ip"}`)
	openConnections  = metrics.NewGauge(`infergate_connections_open`, nil)
	refusalsToLogDur = time.Minute
)

// guardedListener is the listener the HTTP server accepts from. It keeps
// the open connections within max_connections, and those of one address
// within max_connections_per_ip, without turning away a client that comes
// to make a request: at a limit it closes the connection that has been
// idle longest (one that sent nothing yet, or waits between requests), of
// the same address for the per-address limit, and refuses the newcomer only
// when every connection is busy with a request. So idle connections, held
// open by an attacker or a careless client, cannot lock others out.
//
// It also survives the accept errors a busy server meets (out of file
// descriptors, of memory for sockets, connections aborted before they were
// taken): it counts each, logs the first of a run, waits with exponential
// backoff and accepts again, where fasthttp would stop serving. Errors of a
// closed listener end Accept as usual. It is safe for concurrent use.
type guardedListener struct {
	net.Listener
	log          *slog.Logger
	total, perIP int
	// plain is set when the listener serves HTTP without TLS, so that a
	// refusal can be written as an HTTP answer.
	plain bool
	// sleep waits for the backoff; tests replace it.
	sleep func(time.Duration)
	// idleSeq orders the moments connections fell idle.
	idleSeq atomic.Int64

	// mu guards the open connections and their count by address. Only
	// accept and close take it: a request's state changes are atomic.
	mu          sync.Mutex
	conns       map[*guardedConn]struct{}
	byIP        map[netip.Addr]int
	lastRefusal time.Time
}

func newGuardedListener(ln net.Listener, log *slog.Logger, total, perIP int, plain bool) *guardedListener {
	return &guardedListener{Listener: ln, log: log, total: total, perIP: perIP, plain: plain,
		sleep: time.Sleep, conns: make(map[*guardedConn]struct{}), byIP: make(map[netip.Addr]int)}
}

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

// admit counts c in, making room by closing the longest idle connection
// where a limit is reached, or refuses and closes c when none is idle.
func (l *guardedListener) admit(c net.Conn) net.Conn {
	ap, _ := netip.ParseAddrPort(c.RemoteAddr().String())
	ip := ap.Addr()
	var evict []*guardedConn
	var refused string
	l.mu.Lock()
	if l.byIP[ip] >= l.perIP {
		if victim := l.longestIdleLocked(ip); victim != nil {
			evict = append(evict, victim)
			evictedPerIP.Inc()
		} else {
			refused = "max_connections_per_ip"
			refusedPerIP.Inc()
		}
	}
	if refused == "" && len(l.conns)-len(evict) >= l.total {
		if victim := l.longestIdleLocked(netip.Addr{}); victim != nil {
			evict = append(evict, victim)
			evictedTotal.Inc()
		} else {
			refused = "max_connections"
			refusedTotal.Inc()
		}
	}
	gc := &guardedConn{Conn: c, l: l, ip: ip}
	if refused == "" {
		gc.idleSince.Store(l.idleSeq.Add(1)) // idle until fasthttp reads a request
		l.conns[gc] = struct{}{}
		l.byIP[ip]++
		openConnections.Inc()
	}
	logIt := refused != "" && time.Since(l.lastRefusal) > refusalsToLogDur
	if logIt {
		l.lastRefusal = time.Now()
	}
	l.mu.Unlock()

	for _, victim := range evict {
		victim.Close()
	}
	if refused == "" {
		return gc
	}
	if logIt {
		l.log.Warn("refusing connections: every connection is busy with a request", "limit", refused,
			"address", ip.String(), "max_connections", l.total, "max_connections_per_ip", l.perIP)
	}
	if l.plain {
		// The answer fits the socket's buffer: the write does not block.
		body := fmt.Sprintf(`{"error":"too many connections busy with requests (%s); retry later"}`, refused)
		c.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
		fmt.Fprintf(c, "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
			len(body), body)
	}
	c.Close()
	return nil
}

// longestIdleLocked claims the connection idle longest, of address ip
// unless ip is the zero address, or returns nil. Only a listener at a limit
// looks, so a scan of the open connections is cheap enough; one that turns
// busy while it is claimed is passed over.
func (l *guardedListener) longestIdleLocked(ip netip.Addr) *guardedConn {
	for {
		var victim *guardedConn
		var since int64
		for gc := range l.conns {
			s := gc.idleSince.Load()
			if s > 0 && (victim == nil || s < since) && (!ip.IsValid() || gc.ip == ip) {
				victim, since = gc, s
			}
		}
		if victim == nil || victim.idleSince.CompareAndSwap(since, claimed) {
			return victim
		}
	}
}

// claimed marks a connection idleSince taken for closing.
const claimed = -1

// trackConnState follows fasthttp's view of each connection (it is
// Server.ConnState): one is idle from its accept and between requests,
// busy while a request is read, served and answered. It takes no lock.
func trackConnState(c net.Conn, state fasthttp.ConnState) {
	gc, ok := unwrapConn(c).(*guardedConn)
	if !ok {
		return
	}
	switch state {
	case fasthttp.StateIdle:
		if s := gc.idleSince.Load(); s != claimed {
			gc.idleSince.CompareAndSwap(s, gc.l.idleSeq.Add(1))
		}
	case fasthttp.StateActive:
		if s := gc.idleSince.Load(); s != claimed {
			gc.idleSince.CompareAndSwap(s, 0)
		}
	}
}

// guardedConn is an accepted connection, counted until it closes.
type guardedConn struct {
	net.Conn
	l  *guardedListener
	ip netip.Addr
	// idleSince is when it fell idle in the listener's order, 0 while it
	// is busy, claimed once the listener took it for closing.
	idleSince atomic.Int64
	closed    atomic.Bool
}

func (c *guardedConn) Close() error {
	if !c.closed.Swap(true) {
		l := c.l
		l.mu.Lock()
		delete(l.conns, c)
		if l.byIP[c.ip]--; l.byIP[c.ip] <= 0 {
			delete(l.byIP, c.ip)
		}
		l.mu.Unlock()
		openConnections.Dec()
	}
	return c.Conn.Close()
}

// NetConn returns the TCP connection, as tls.Conn's does.
func (c *guardedConn) NetConn() net.Conn { return c.Conn }

// unwrapConn returns the connection under TLS and the listener's wrapping.
func unwrapConn(c net.Conn) net.Conn {
	for {
		w, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return c
		}
		if _, guarded := c.(*guardedConn); guarded {
			return c
		}
		c = w.NetConn()
	}
}

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
