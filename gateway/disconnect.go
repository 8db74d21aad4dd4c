package gateway

import (
	"errors"
	"net"
	"syscall"
)

// clientGone reports whether the peer of conn has closed or reset the
// connection (a client that only half-closed after sending counts as gone,
// as in net/http). It peeks without waiting, so it consumes no byte of a
// next request the client may have pipelined, and it goes through Control,
// not Read, so that neither the read deadline fasthttp armed nor a reader
// of the connection stands in its way. Under TLS and the connection limits
// it looks at the TCP connection underneath: a TLS client that sent
// close_notify before closing is seen once its FIN is. A connection with
// no socket underneath is never gone.
func clientGone(conn net.Conn) bool {
	for {
		w, ok := conn.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		conn = w.NetConn()
	}
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	gone := false
	err = raw.Control(func(fd uintptr) {
		var b [1]byte
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		// 0 bytes and no error is the peer's FIN; EAGAIN means nothing
		// to read yet, which is what a waiting client looks like.
		gone = (n == 0 && err == nil) || errors.Is(err, syscall.ECONNRESET)
	})
	return err == nil && gone
}
