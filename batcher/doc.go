// Package batcher forms dynamic batches: it queues requests of whole rows in
// bounded priority queues, assembles them into contiguous batch buffers
// without splitting a request, runs each batch on one of its instance
// workers through a Runner, and hands every request its slice of the
// outputs. It knows nothing of ONNX.
//
// A batch goes when it is full (max_batch_size rows, or the next request
// would not fit), when its rows reach a preferred batch size, or when the
// oldest queued request has waited max_queue_delay. With max_queue_delay
// "auto", the wait instead lasts while the oldest request's wait plus the
// predicted compute of a batch one typical request larger stays within
// latency_target; the prediction is a least-squares line over the compute
// times of the recent batches.
//
// A request that finds nothing queued, an instance idle and itself due at
// once runs on its caller's goroutine, on that instance, without waking a
// worker: batching costs nothing at low load.
//
// A Batcher is safe for concurrent use. Each worker goroutine owns one
// Runner, which it lends to such a caller while idle; a Runner is never
// called by two goroutines at once. A Request belongs to one caller at a time:
// Do reads its Inputs until it returns, and its Outputs point into the
// worker's buffers, which the worker reuses only after every request of
// that batch was given back with ReleaseRequest. A request that is never
// released therefore stalls its worker; release each one as soon as its
// response is written.
package batcher
