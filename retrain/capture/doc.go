// Package capture records sampled inference traffic and ground-truth labels to
// rotated zstd-compressed JSON-lines segments under state_dir/capture/<model>/,
// and reads them back, joined by request id, as training examples for the
// retrain pipeline.
//
// A model's folder holds segment-<unix nanos>.jsonl.zst files, each one
// complete zstd frame of JSON lines (one Record a line) that pandas, polars
// or DuckDB read as they are, for example
// pd.read_json(path, lines=True, compression="zstd"). The segment being
// written is named ....jsonl.zst.tmp and renamed into place when it is
// rotated (by size or age) or closed, so a reader never sees half a segment;
// the oldest segments are deleted beyond the retention bounds. A record
// counts as captured once it is flushed into the file (every second, and
// when the segment is finished); when a write fails (a full disk), the
// records not yet flushed are counted as lost, the error is logged once
// until a write succeeds again, and a segment that already holds records
// stays as .tmp for the next Open to finish, like a crash's. Labels go to
// labels-<unix nanos>.jsonl files beside them, one {"id", "time", "label"}
// object a line, fsynced before they are acknowledged.
//
// A Writer is safe for concurrent use: Sampled and Write may be called from
// any number of request goroutines and never block (Write is a non-blocking
// send into a bounded buffer; when the buffer is full the record is dropped
// and counted). The Writer's own goroutine encodes and writes; Close drains
// the buffer, finishes the current segment and stops it. A Labels store is
// safe for concurrent use: RecordLabels returns once the labels are on disk,
// and callers that arrive together share one fsync. Records, Examples and
// ReadLabeled may run concurrently with writers in this or another process:
// they read complete segments only.
package capture
