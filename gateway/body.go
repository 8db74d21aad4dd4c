package gateway

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"

	"github.com/valyala/fasthttp"

	"github.com/infergate/infergate/retrain/strictyaml"
)

// The server streams request bodies (fasthttp's StreamRequestBody): it holds
// at most a body's first 8 KiB (and what the connection's read buffer took
// in beside the headers) before the handler runs, and the handler charges
// a body to the memory budget as it arrives, a chunk ahead of what was
// read. So the bodies in flight are bounded by max_inflight_memory, not by
// the number of connections times max_body_size, and a client that stalls
// halfway holds only what it sent and one chunk.

// bodyChunk is the unit a body beyond its first chunk is read in: chunks
// come from a pool and are copied into one buffer of the body's exact size
// at its end, so a large body leaves no trail of outgrown buffers behind.
const bodyChunk = 64 << 10

var bodyChunks = sync.Pool{New: func() any { return new([bodyChunk]byte) }}

// readBody reads the request's body into *buf (reusing and keeping its
// capacity for a body of up to one chunk) and returns it, charged to the
// memory budget on held's account. A request built in memory, whose body
// is at hand, is charged its length. On failure it returns the status to
// answer with.
func (s *Server) readBody(ctx *fasthttp.RequestCtx, buf *[]byte, held *int64) ([]byte, int, error) {
	limit := int(s.cfg.MaxBodySize)
	stream := ctx.RequestBodyStream()
	if stream == nil {
		body := ctx.Request.Body()
		if len(body) > limit {
			return nil, fasthttp.StatusRequestEntityTooLarge, s.errBodyTooLarge()
		}
		if code, err := s.reserveMemory(held, int64(len(body))); err != nil {
			return nil, code, err
		}
		return body, 0, nil
	}
	size := ctx.Request.Header.ContentLength() // -1 or -2 when unknown
	if size > limit {
		return nil, fasthttp.StatusRequestEntityTooLarge, s.errBodyTooLarge()
	}
	r := bodyReader{s: s, stream: stream, size: size, limit: limit, held: held}
	defer r.release()
	first := bodyChunk
	if size >= 0 {
		first = min(size, bodyChunk)
	}
	if code, err := r.charge(first); err != nil {
		return nil, code, err
	}
	*buf = slices.Grow((*buf)[:0], first)
	body, done, code, err := r.read((*buf)[:first])
	if err != nil {
		return nil, code, err
	}
	for !done {
		if code, err := r.charge(bodyChunk); err != nil {
			return nil, code, err
		}
		chunk := bodyChunks.Get().(*[bodyChunk]byte)
		r.chunks = append(r.chunks, chunk)
		var part []byte
		if part, done, code, err = r.read(chunk[:]); err != nil {
			return nil, code, err
		}
		r.inChunks += len(part)
	}
	if len(r.chunks) > 0 {
		// The whole body, charged before it is put together.
		if code, err := r.charge(len(body) + r.inChunks); err != nil {
			return nil, code, err
		}
		whole := make([]byte, 0, len(body)+r.inChunks)
		whole = append(whole, body...)
		for _, chunk := range r.chunks {
			whole = append(whole, chunk[:min(bodyChunk, cap(whole)-len(whole))]...)
		}
		body = whole
	}
	// The body stays charged; what was charged beyond it goes back.
	excess := int64(r.charged - len(body))
	r.s.memory.release(excess)
	*r.held -= excess
	return body, 0, nil
}

// bodyReader is one body being read: what it charged and the chunks it holds.
type bodyReader struct {
	s           *Server
	stream      io.Reader
	size, limit int
	// held is the request's account, which the reader charges; the
	// caller releases it, also after a failure.
	held *int64
	// charged is what the reader added to held; count is the bytes read
	// so far, inChunks those read into chunks.
	charged, count, inChunks int
	chunks                   []*[bodyChunk]byte
}

// charge takes n more bytes of the memory budget on the request's account.
func (r *bodyReader) charge(n int) (int, error) {
	code, err := r.s.reserveMemory(r.held, int64(n))
	if err == nil {
		r.charged += n
	}
	return code, err
}

// read fills dst from the stream, up to its end; done says the body ended.
func (r *bodyReader) read(dst []byte) (part []byte, done bool, code int, err error) {
	n := 0
	for n < len(dst) {
		if r.size >= 0 && r.count == r.size {
			return dst[:n], true, 0, nil
		}
		m, err := r.stream.Read(dst[n:])
		n += m
		r.count += m
		switch {
		case r.count > r.limit:
			return nil, true, fasthttp.StatusRequestEntityTooLarge, r.s.errBodyTooLarge()
		case errors.Is(err, io.EOF) && r.size >= 0 && r.count < r.size:
			return nil, true, fasthttp.StatusBadRequest, fmt.Errorf("cannot read request body: it ended after %d of its %d bytes", r.count, r.size)
		case errors.Is(err, io.EOF):
			return dst[:n], true, 0, nil
		case err != nil:
			return nil, true, fasthttp.StatusBadRequest, fmt.Errorf("cannot read request body: %w", err)
		}
	}
	return dst[:n], r.size >= 0 && r.count == r.size, 0, nil
}

// release gives back the chunks.
func (r *bodyReader) release() {
	for _, chunk := range r.chunks {
		bodyChunks.Put(chunk)
	}
}

func (s *Server) errBodyTooLarge() error {
	return fmt.Errorf("request body too large: the limit is %s (max_body_size)", s.cfg.MaxBodySize)
}

// reserveMemory charges n bytes to the memory budget on held's account. A
// charge that cannot fit now is answered 503, to be retried; one that with
// what the request holds already is more than the whole budget 413, as it
// never will fit.
func (s *Server) reserveMemory(held *int64, n int64) (int, error) {
	if *held+n > s.memory.limit {
		return fasthttp.StatusRequestEntityTooLarge, fmt.Errorf("request too large: it needs %s, beyond max_inflight_memory %s",
			strictyaml.Size(*held+n), s.cfg.MaxInflightMemory)
	}
	if !s.memory.reserve(n) {
		return fasthttp.StatusServiceUnavailable, fmt.Errorf("cannot accept request: the requests in flight hold %s of max_inflight_memory %s and this one needs %s more; retry later or raise max_inflight_memory",
			strictyaml.Size(s.memory.used.Load()), s.cfg.MaxInflightMemory, strictyaml.Size(n))
	}
	*held += n
	return 0, nil
}

// readWholeBody reads the body of a request off the hot path (feedback)
// into a buffer of its own, charged to the memory budget on held's
// account until the caller releases it, or answers why it cannot.
func (s *Server) readWholeBody(ctx *fasthttp.RequestCtx, held *int64) ([]byte, bool) {
	var buf []byte
	body, code, err := s.readBody(ctx, &buf, held)
	if err != nil {
		writeError(ctx, code, err.Error())
		return nil, false
	}
	return body, true
}
