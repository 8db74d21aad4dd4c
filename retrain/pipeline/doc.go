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
// for 30 days; and per model, in the KV bucket LeaseBucket, its queue (the
// ids of its queued run and of its running one, changed by revision) and
// its lease. The webhook handler verifies an event, stores the run it
// queues (or coalesces it into) and then records the event as seen before
// it answers 202, so an accepted event survives a crash: the recovery of
// a model records the events of its runs queued or running as seen, in
// case the crash came between the two writes. While a model's run is
// queued, further events are coalesced into it, so a model has at most
// one run running and one queued. The outcome of every run is emitted as
// a retrain.succeeded or retrain.failed event through a durable outbox on
// the same engine (see OutboxName), after the run's record; the record
// carries the event's id and Notified, so Open emits again the event of a
// finished run not yet recorded as notified, with the same id, which the
// engine and the receivers drop as a copy.
//
// Runs start from what the gateway keeps in the same engine: its model
// versions (the model store, which a gateway fills from its repository
// when it starts) and its captured traffic. So the service shares the
// gateway's engine, its state_dir on one machine or its cluster in a
// fleet; Open warns when the model store holds no version of any
// configured model.
//
// Any number of processes may run a Service on one engine, with the same
// models: a fleet's `infergate retrain`. A process runs a model's runs
// only while it holds the model's lease, a key created with a TTL
// (Options.LeaseTTL, 10s by default) and renewed every third of it by its
// holder, a per-process id (host name, pid and a random part); it gives
// the lease back once the model has no run queued. An event goes to the
// model's queue whichever process receives it: an accept reads the queue
// and coalesces the event into the queued run, or stores a new run and
// names it in the queue, each write in place of the revision read, and
// reads again after a conflict; an event that the queued or the running
// run holds already is answered as the first time, so the same event sent
// to two processes at once queues one run. A worker whose process queued
// a run, and every idle worker once every quarter of the TTL, takes the
// lease when the model's queue names a run and nobody holds it. Whoever
// takes a model's lease puts the model's runs in order first: at Open and
// whenever it takes the lease later, so a process that survives finishes
// what a dead one left. A run that was running when its process died is
// marked failed ("interrupted") and done again by a new run unless
// another is queued (see also resume); a queued run that the queue does
// not name (a crash between an accept's two writes) is named, or
// coalesced into the one named, once a minute old or at Open; then the
// queued run runs. A run whose process was killed is so taken up within
// the TTL and a quarter of it.
//
// A holder that cannot renew its lease (the engine unreachable, the
// process paused) drops it a tenth of the TTL before the engine can let
// the key expire, by its own monotonic clock: the run's context is
// cancelled then, so that the run stops before its next step, publish and
// canary included, and the calls under way are cancelled; the worker
// records nothing of the run from then on, and every record it would
// write is in place of the revision it wrote last, so it fails once the
// next holder recorded the run as interrupted. What can still happen: a
// write already sent when the lease ran out lands (a version being
// published, the gateway's canary request in flight), and the run that
// the next holder does again publishes another version, or starts the
// canary again unless the gateway already shows it (see resume); and an
// accept paused for longer than a minute between storing a run and naming
// it in the queue may answer with a run superseded by the queued one,
// which holds the event.
//
// A Service is safe for concurrent use: Handler's endpoints, Runs and Run
// may be called from any goroutine. Shutdown stops the workers, letting a
// running run finish until its context is done and then interrupting it,
// gives back the leases and closes the outbox; the engine connection stays
// the caller's. Config values are plain data, safe to share when nobody
// modifies them. ListRuns reads the runs while a Service runs.
package pipeline
