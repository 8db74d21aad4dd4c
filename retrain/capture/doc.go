// Package capture ships sampled inference traffic and ground-truth labels to
// the engine's JetStream streams, one pair per model, and reads them back,
// joined by request id, for the retrain pipeline and `infergate capture
// export`.
//
// Every replica publishes on subjects of its own in the model's streams
// (see streams.go for the names): infergate_capture_<model> holds blocks of
// records, each one zstd frame of JSON lines (one Record a line, at most
// 256KiB before compression), and infergate_labels_<model> holds labels,
// JSON lines of {"id", "time", "label"}. Retention is by age and size on
// each stream, so the oldest blocks and labels go first.
//
// A Writer is safe for concurrent use: Sampled and Write may be called from
// any number of request goroutines and never block (Write is a non-blocking
// send into a bounded buffer; when the buffer is full the record is dropped
// and counted). The Writer's goroutine gathers records into a block and
// publishes it every second or once it is full. A block the engine does not
// acknowledge (it is unreachable, or electing a stream leader) is kept, up
// to 16, and published again, with a message id so that the stream drops a
// duplicate; beyond that the oldest is dropped and its records counted
// lost. Close ships what is left, trying for a few seconds.
//
// A Labels store is safe for concurrent use: RecordLabels returns once the
// engine has acknowledged the labels, which it does once they are on disk
// (the embedded engine syncs every write) or replicated (a cluster's R3
// streams), so a label acknowledged to a client is never lost. While the
// connection is down it fails at once with ErrUnavailable.
//
// Records and Examples read a stream as it is when the call begins, with an
// ordered consumer, from every replica; they run concurrently with writers
// in this or any other process.
package capture
