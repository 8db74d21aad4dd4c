package gateway

import (
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/valyala/fasthttp"
)

// The server streams request bodies (fasthttp's StreamRequestBody): it reads
// at most a few KiB of a body before the handler runs, and the handler
// charges a body to the memory budget before reading it. So the bodies in
// flight are bounded by max_inflight_memory, not by the number of
// connections times max_body_size.

// readBody reads the request's body into *buf (reusing and keeping its
// capacity) and returns it, charged to the memory budget on held's account: its
// Content-Length before a byte of it is read, or max_body_size for a body
// of unknown length until its length is known. A request built in memory,
// whose body is at hand, is charged its length. On failure it returns the
// status to answer with.
func (s *Server) readBody(ctx *fasthttp.RequestCtx, buf *[]byte, held *int64) ([]byte, int, error) {
	limit := int(s.cfg.MaxBodySize)
	stream := ctx.RequestBodyStream()
	if stream == nil {
		body := ctx.Request.Body()
		if len(body) > limit {
			return nil, fasthttp.StatusRequestEntityTooLarge, s.errBodyTooLarge()
		}
		if err := s.reserveMemory(held, int64(len(body))); err != nil {
			return nil, fasthttp.StatusServiceUnavailable, err
		}
		return body, 0, nil
	}
	size := ctx.Request.Header.ContentLength()
	if size > limit {
		return nil, fasthttp.StatusRequestEntityTooLarge, s.errBodyTooLarge()
	}
	charge := limit
	if size >= 0 {
		charge = size
	}
	if err := s.reserveMemory(held, int64(charge)); err != nil {
		return nil, fasthttp.StatusServiceUnavailable, err
	}
	body, err := readStream(stream, (*buf)[:0], size, limit)
	*buf = body
	if unused := charge - len(body); unused > 0 {
		s.memory.release(int64(unused))
		*held -= int64(unused)
	}
	switch {
	case errors.Is(err, errBodyTooLarge):
		return nil, fasthttp.StatusRequestEntityTooLarge, s.errBodyTooLarge()
	case err != nil:
		return nil, fasthttp.StatusBadRequest, fmt.Errorf("cannot read request body: %w", err)
	}
	return body, 0, nil
}

// readStream appends the stream to dst up to its end, sizing dst once for a
// known size; more than limit bytes is errBodyTooLarge.
func readStream(stream io.Reader, dst []byte, size, limit int) ([]byte, error) {
	if size >= 0 {
		dst = slices.Grow(dst, size)
	}
	for {
		if len(dst) == cap(dst) {
			dst = slices.Grow(dst, min(max(cap(dst), 4<<10), limit+1-len(dst)))
		}
		n, err := stream.Read(dst[len(dst):cap(dst)])
		dst = dst[:len(dst)+n]
		switch {
		case len(dst) > limit:
			return dst, errBodyTooLarge
		case errors.Is(err, io.EOF):
			return dst, nil
		case err != nil:
			return dst, err
		}
	}
}

func (s *Server) errBodyTooLarge() error {
	return fmt.Errorf("request body too large: the limit is %s (max_body_size)", s.cfg.MaxBodySize)
}

// readWholeBody reads the body of a request off the hot path (feedback,
// admin) into a buffer of its own, charged to the memory budget on held's
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
