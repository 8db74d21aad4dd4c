// Package outbox keeps emitted events durably in NATS JetStream and
// delivers them to webhook targets at least once.
//
// An event is a CloudEvents 1.0 document in structured JSON mode. Each
// producer ("gateway", "retrain") has its own stream, infergate_outbox_<name>,
// on the subjects infergate.outbox.<name>.>: Emit publishes an event to
// infergate.outbox.<name>.event.<type> with its id as the message id, and
// returns once the engine has stored it (on disk; on a quorum of a
// cluster), so an event emitted again within ten minutes is stored once.
// Every target has a durable pull consumer that takes the types it wants
// and its own redrive subject; a message stays in the stream (interest
// retention) until every target that takes it has acknowledged or given
// up on it, and a full stream refuses new events (ErrFull) rather than
// dropping old ones.
//
// Delivering is a POST with an HMAC-SHA256 signature, acknowledged to the
// engine after any 2xx; after a failure the message comes back after a
// capped exponential backoff with full jitter (and no sooner than the
// receiver's Retry-After). The attempt count is the engine's delivery
// count, so an event handed back unattempted (Stop, a lost lease) spends
// one of its target's attempts. After the last attempt the outbox stores a
// dead letter, with the event, in the bucket infergate_deadletters_<name>
// and only then terminates the message: a crash between the two is
// repaired by the next deliverer, which finds the dead letter and
// terminates the message without another attempt. The outcome of each
// delivery's last attempt is kept for a week in the bucket
// infergate_deliveries_<name>, which Deliveries reads (naming targets, never
// their URLs). DeadLetters lists the dead letters;
// Redrive sends one again as a new message; ImportDeadLetter adds one kept
// elsewhere before (the state file of an earlier version), and ImportLegacy
// takes over all that such a file's outbox kept. The consumer of
// a target no longer configured is deleted by the next Open, after its
// undelivered events are dead-lettered.
//
// At least once: a deliverer that ends between a receiver's answer and the
// acknowledgement, or a Stop during a POST, delivers that event again, and
// an event emitted again after ten minutes is a new message. Receivers
// deduplicate by event id and answer a delivery of an id they accepted
// before with 200, which the outbox counts as delivered.
//
// In a fleet every replica opens the same producer's outbox on the shared
// engine: there is one stream, and any replica may emit into it. Only a
// started Outbox delivers, and of those only while Options.MayDeliver says
// so; it is asked before every pull and again right before every POST,
// and an event taken by a replica that may no longer deliver goes back to
// the engine at once for the next. A gateway starts delivering when it
// wins the leadership lease, stops when it loses it, and passes "I still
// hold the lease" as MayDeliver, so a replica that lost the lease never
// sends an event.
//
// An Outbox is safe for concurrent use: Emit, Start, Stop, Redrive,
// DeadLetters, ImportDeadLetter, ImportLegacy and Pending may be called
// from any goroutine. While started it owns one pull goroutine per target
// and at most Options.Concurrency delivery goroutines, which Stop and
// Close cancel and wait for. Event, Target and the signature functions Sign and
// Verify hold no shared state and are safe for concurrent use; the retrain
// receiver verifies with the same Verify.
package outbox
