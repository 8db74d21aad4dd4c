// Package pipeline is the retrain-and-validate service: it receives signed
// drift webhooks and, one run at a time per model, selects data, trains,
// validates and publishes a candidate version, then asks the gateway to
// canary it.
//
// A Service owns one worker goroutine per configured model. The webhook
// handler verifies and records an event and queues a run in one bbolt
// transaction before it answers 202, so an accepted event survives a crash;
// while a model's run is queued, further events are coalesced into it, so a
// model has at most one run running and one queued. Runs, their steps and
// the ids of the events seen are kept in bbolt under state_dir: a run that
// was running when the process died is marked failed ("interrupted") when
// the Service opens again, and a queued one runs then. The outcome of every
// run is emitted as a retrain.succeeded or retrain.failed event through a
// durable outbox in the same bbolt file.
//
// A Service is safe for concurrent use: Handler's endpoints, Runs and Run
// may be called from any goroutine. Shutdown stops the workers, letting a
// running run finish until its context is done and then interrupting it,
// and closes the outbox and the store. Config values are plain data, safe to
// share when nobody modifies them. ListRuns opens the store read-only: it
// fails (after a second) while a Service holds the store.
package pipeline
