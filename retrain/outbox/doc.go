// Package outbox keeps emitted events durably and delivers them to webhook
// targets at least once: an event is a CloudEvents 1.0 document in
// structured JSON mode, written to bbolt together with one delivery record
// per matching target in a single fsynced transaction, then POSTed to each
// target with an HMAC-SHA256 signature, retried with capped exponential
// backoff and full jitter, and dead-lettered after the target's last
// attempt. Dead letters can be listed and re-driven. Receivers must be
// idempotent by event id, since a crash between a delivery and its record's
// removal delivers that event again after the restart.
//
// An Outbox is safe for concurrent use: Emit, Redrive, DeadLetters and
// Pending may be called from any goroutine. It owns one scheduling goroutine
// and at most Options.Concurrency delivery goroutines, all of which Close
// stops and waits for, canceling requests in flight. Event, Target and the
// signature functions Sign and Verify hold no shared state and are safe for
// concurrent use; the retrain receiver verifies with the same Verify.
package outbox
