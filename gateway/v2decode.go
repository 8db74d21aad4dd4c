package gateway

import "github.com/infergate/infergate/gateway/v2codec"

// inferRequest is a decoded V2 inference request (v2codec.Request): the
// handler acquires one per request and releases it when the response is
// written.
type inferRequest = v2codec.Request

// errTooManyValues is returned, wrapped, when a request's or a feedback's
// JSON holds more values than its reader allowed (HTTP 413).
var errTooManyValues = v2codec.ErrTooManyValues

// maxPooledJSONBytes bounds the body buffers a finished request leaves in
// the pool, so that one huge request does not leave its memory pinned there.
const maxPooledJSONBytes = 256 << 10

// acquireInferRequest returns an empty request from the pool.
func acquireInferRequest() *inferRequest { return v2codec.AcquireRequest() }

// releaseInferRequest returns r to the pool; nothing taken from it may be
// used afterwards.
func releaseInferRequest(r *inferRequest) { v2codec.ReleaseRequest(r) }
