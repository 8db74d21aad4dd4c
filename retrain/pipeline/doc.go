// Package pipeline is the retrain-and-validate service: it receives signed
// drift webhooks and, one run at a time per model, selects data, trains,
// validates and publishes a candidate version, then asks the gateway to
// canary it.
//
// A Service owns one worker goroutine per configured model. Its state is
// in the engine (NATS JetStream, Options.Engine): the runs, their steps and
// the last id handed out in the KV bucket RunsBucket, each run updated in
// place of the revision it was read from, so that a write made meanwhile
// by another writer fails instead of being overwritten; the ids of the
// events seen, with their answers, in the KV bucket SeenBucket, each kept
// for 30 days. The webhook handler verifies an event, stores the run it
// queues (or coalesces it into) and then records the event as seen before
// it answers 202, so an accepted event survives a crash: Open records the
// events of the runs it finds queued or running as seen, in case the crash
// came between the two writes. While a model's run is queued, further
// events are coalesced into it, so a model has at most one run running and
// one queued. A run that was running when the process died is marked
// failed ("interrupted") when the Service opens again, and done again by a
// new run unless another is queued; a queued one runs then. The outcome of
// every run is emitted as a retrain.succeeded or retrain.failed event
// through a durable outbox on the same engine (see OutboxName), after the
// run's record; the record carries the event's id and Notified, so Open
// emits again the event of a finished run not yet recorded as notified,
// with the same id, which the engine and the receivers drop as a copy.
//
// A Service is safe for concurrent use: Handler's endpoints, Runs and Run
// may be called from any goroutine. Shutdown stops the workers, letting a
// running run finish until its context is done and then interrupting it,
// and closes the outbox; the engine connection stays the caller's. Config
// values are plain data, safe to share when nobody modifies them. ListRuns
// reads the runs while a Service runs. The run store assumes one Service
// per engine: a second one's writes to the same run fail, but two
// services would both run queued runs.
package pipeline
