package gateway

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// errBodyTooLarge is answered with 413.
var errBodyTooLarge = errors.New("request body too large")

// codecs compresses and decompresses bodies with gzip and zstd. It is safe
// for concurrent use.
type codecs struct {
	limit       int
	zstdDecoder *zstd.Decoder
	zstdEncoder *zstd.Encoder
	gzipReaders sync.Pool
	gzipWriters sync.Pool
}

func newCodecs(limit int) (*codecs, error) {
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(uint64(limit)))
	if err != nil {
		return nil, fmt.Errorf("cannot create zstd decoder: %w", err)
	}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest))
	if err != nil {
		return nil, fmt.Errorf("cannot create zstd encoder: %w", err)
	}
	return &codecs{limit: limit, zstdDecoder: dec, zstdEncoder: enc}, nil
}

func (c *codecs) close() {
	c.zstdDecoder.Close()
	c.zstdEncoder.Close()
}

// decode appends the decompressed body to dst. encoding is the request's
// Content-Encoding; the result may not exceed the body limit.
func (c *codecs) decode(dst, body, encoding []byte) ([]byte, error) {
	switch string(encoding) {
	case "zstd":
		out, err := c.zstdDecoder.DecodeAll(body, dst)
		if errors.Is(err, zstd.ErrDecoderSizeExceeded) || errors.Is(err, zstd.ErrWindowSizeExceeded) || len(out)-len(dst) > c.limit {
			return dst, errBodyTooLarge
		}
		if err != nil {
			return dst, fmt.Errorf("cannot decompress zstd body: %w", err)
		}
		return out, nil
	case "gzip":
		return c.gunzip(dst, body)
	}
	return dst, fmt.Errorf("unsupported Content-Encoding %q (use gzip, zstd or none)", encoding)
}

func (c *codecs) gunzip(dst, body []byte) ([]byte, error) {
	zr, _ := c.gzipReaders.Get().(*gzip.Reader)
	var err error
	if zr == nil {
		zr, err = gzip.NewReader(bytes.NewReader(body))
	} else {
		err = zr.Reset(bytes.NewReader(body))
	}
	if err != nil {
		return dst, fmt.Errorf("cannot decompress gzip body: %w", err)
	}
	defer c.gzipReaders.Put(zr)
	// The trailer's size (modulo 2^32) sizes the buffer once, rather than
	// by doubling, within the limit.
	if len(body) >= 4 {
		dst = slices.Grow(dst, min(int(binary.LittleEndian.Uint32(body[len(body)-4:])), c.limit+1))
	}
	w := appendWriter{buf: dst}
	n, err := io.Copy(&w, io.LimitReader(zr, int64(c.limit)+1))
	if n > int64(c.limit) {
		return dst, errBodyTooLarge
	}
	if err != nil {
		return dst, fmt.Errorf("cannot decompress gzip body: %w", err)
	}
	return w.buf, nil
}

// encode appends body compressed with encoding ("gzip" or "zstd") to dst.
func (c *codecs) encode(dst, body []byte, encoding string) []byte {
	if encoding == "zstd" {
		return c.zstdEncoder.EncodeAll(body, dst)
	}
	zw, _ := c.gzipWriters.Get().(*gzip.Writer)
	w := appendWriter{buf: dst}
	if zw == nil {
		zw, _ = gzip.NewWriterLevel(&w, gzip.BestSpeed)
	} else {
		zw.Reset(&w)
	}
	zw.Write(body) // appendWriter never fails
	zw.Close()
	c.gzipWriters.Put(zw)
	return w.buf
}

// appendWriter is an io.Writer appending to buf.
type appendWriter struct{ buf []byte }

func (w *appendWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	return len(p), nil
}
