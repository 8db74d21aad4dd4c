package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// pullWait bounds one pull request, so that a deliverer that has stopped
// leaves none behind for long.
const pullWait = 5 * time.Second

// idleWait is how often a deliverer that may not deliver asks again, and
// about how long it waits after a failed pull.
const idleWait = 250 * time.Millisecond

// run is one period of delivering, from Start to Stop.
type run struct {
	ctx    context.Context // canceled by Stop
	cancel context.CancelFunc
	wg     sync.WaitGroup // the pull loops and the deliveries
}

// Start starts delivering: one pull loop per target, at most
// Options.Concurrency deliveries in flight. It returns ErrClosed after
// Close; it does nothing while started.
func (ob *Outbox) Start() error {
	ob.lifeMu.Lock()
	defer ob.lifeMu.Unlock()
	if ob.closed.Load() {
		return ErrClosed
	}
	if ob.run != nil {
		return nil
	}
	r := &run{}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	for _, t := range ob.order {
		r.wg.Add(1)
		go ob.pull(r, t)
	}
	ob.run = r
	ob.log.Info("webhook delivery started", "targets", len(ob.order))
	return nil
}

// Stop stops delivering and returns once nothing is in flight: requests
// in flight are canceled and their events handed back to the engine, for
// the next deliverer at once. It does nothing while stopped.
func (ob *Outbox) Stop() {
	ob.lifeMu.Lock()
	defer ob.lifeMu.Unlock()
	ob.stopLocked()
}

func (ob *Outbox) stopLocked() {
	r := ob.run
	if r == nil {
		return
	}
	ob.run = nil
	r.cancel()
	r.wg.Wait()
	ob.log.Info("webhook delivery stopped")
}

// pull takes t's events from its consumer one at a time while it may
// deliver, and hands each to a delivery.
func (ob *Outbox) pull(r *run, t *target) {
	defer r.wg.Done()
	lastErr := ""
	for r.ctx.Err() == nil {
		if !ob.mayDeliver() {
			sleep(r.ctx, idleWait)
			continue
		}
		ctx, cancel := context.WithTimeout(r.ctx, pullWait)
		batch, err := t.consumer.Fetch(1, jetstream.FetchContext(ctx))
		if err == nil {
			for msg := range batch.Messages() {
				ob.dispatch(r, t, msg)
			}
			err = batch.Error()
		}
		cancel()
		switch {
		case r.ctx.Err() != nil:
		case err != nil && !errors.Is(err, context.DeadlineExceeded):
			if err.Error() != lastErr {
				ob.log.Warn("cannot pull webhook deliveries; trying again", "target", t.Name, "error", err)
				lastErr = err.Error()
			}
			sleep(r.ctx, 4*idleWait)
		case lastErr != "":
			ob.log.Info("pulling webhook deliveries again", "target", t.Name)
			lastErr = ""
		}
	}
}

// sleep waits for d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// dispatch starts the delivery of msg once a slot is free, telling the
// engine meanwhile that msg is being worked on, so that it is not handed
// to another deliverer while it waits. When delivering stops first, msg
// goes back at once.
func (ob *Outbox) dispatch(r *run, t *target, msg jetstream.Msg) {
	keepAlive := time.NewTicker(max((t.Timeout+ackMargin)/3, 10*time.Millisecond))
	defer keepAlive.Stop()
	for {
		select {
		case ob.slots <- struct{}{}:
			r.wg.Add(1)
			go ob.deliver(r, t, msg)
			return
		case <-keepAlive.C:
			msg.InProgress()
		case <-r.ctx.Done():
			msg.Nak()
			return
		}
	}
}

// deliver makes one attempt of msg and tells the engine its outcome: an
// acknowledgement after a 2xx, the next attempt's delay after a failure,
// or a termination after the dead letter of the last.
func (ob *Outbox) deliver(r *run, t *target, msg jetstream.Msg) {
	defer func() {
		<-ob.slots
		r.wg.Done()
	}()
	md, err := msg.Metadata()
	if err != nil {
		panic(fmt.Sprintf("BUG: a message of consumer %s has no JetStream metadata: %v", t.durable, err))
	}
	var e Event
	if err := json.Unmarshal(msg.Data(), &e); err != nil {
		ob.log.Error("webhook delivery dropped: its message is not an event", "target", t.Name,
			"stream_seq", md.Sequence.Stream, "subject", msg.Subject(), "error", err)
		msg.Term()
		return
	}
	attempt := int(md.NumDelivered)
	if attempt > t.MaxAttempts && ob.hasDeadLetter(t, e.ID) {
		// Dead-lettered by a deliverer that ended before it could
		// terminate the message.
		msg.TermWithReason("dead-lettered")
		return
	}
	if !ob.mayDeliver() {
		ob.log.Info("webhook delivery handed back: this replica may not deliver", "event_id", e.ID, "target", t.Name)
		msg.Nak()
		return
	}
	retryAfter, err := ob.post(r.ctx, t, e.ID, e.Type, msg.Data())
	switch {
	case err == nil:
		ob.delivered(t, msg, e, attempt)
	case r.ctx.Err() != nil:
		// Stopping: whoever delivers next tries again at once.
		msg.Nak()
	default:
		ob.failed(t, msg, e, attempt, err, retryAfter)
	}
}

// hasDeadLetter reports whether the delivery of event eventID to t is
// dead-lettered; false when the bucket does not answer.
func (ob *Outbox) hasDeadLetter(t *target, eventID string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	_, err := ob.dead.Get(ctx, deadLetterKey(t.Name, eventID))
	return err == nil
}

// delivered counts the delivery, acknowledges msg at once (the POST may
// have taken most of its AckWait) and waits for the engine to confirm it,
// then records it: whoever sees the outbox empty sees the delivery
// counted, and its record soon after.
func (ob *Outbox) delivered(t *target, msg jetstream.Msg, e Event, attempt int) {
	t.delivered.Inc()
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	if err := msg.DoubleAck(ctx); err != nil {
		ob.log.Warn("webhook delivered, but the engine did not take the acknowledgement: it may be delivered again",
			"event_id", e.ID, "target", t.Name, "error", err)
	}
	ob.recordAttempt(t, e, attempt, StatusDelivered, nil)
	ob.log.Info("webhook delivered", "event_id", e.ID, "type", e.Type, "target", t.Name, "attempt", attempt)
}

// failed counts a failed attempt and asks for the next after its backoff,
// or dead-letters the delivery after the last. The dead letter is stored
// before msg is terminated, so a crash between them repeats the store,
// which replaces the first.
func (ob *Outbox) failed(t *target, msg jetstream.Msg, e Event, attempt int, cause error, retryAfter time.Duration) {
	t.failedAttempts.Inc()
	if attempt < t.MaxAttempts {
		ob.recordAttempt(t, e, attempt, StatusRetrying, cause)
		msg.NakWithDelay(ob.backoff(t, attempt, retryAfter))
		return
	}
	lastError := cause.Error()
	if len(lastError) > 1024 {
		lastError = lastError[:1024]
	}
	dl := DeadLetter{EventID: e.ID, EventType: e.Type, Subject: e.Subject, Target: t.Name, Attempts: attempt,
		LastError: lastError, DeadAt: ob.now(), Replica: ob.replica, Event: msg.Data()}
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	if err := ob.putDeadLetter(ctx, dl); err != nil {
		ob.log.Error("cannot dead-letter webhook delivery; it is tried again", "event_id", e.ID, "target", t.Name, "error", err)
		msg.NakWithDelay(ob.backoff(t, attempt, retryAfter))
		return
	}
	if err := msg.TermWithReason("dead-lettered"); err != nil {
		ob.log.Warn("webhook delivery dead-lettered, but the engine did not take the termination", "event_id", e.ID, "target", t.Name, "error", err)
	}
	t.deadLettered.Inc()
	ob.recordAttempt(t, e, attempt, StatusDeadLettered, cause)
	ob.log.Error("webhook delivery dead-lettered", "event_id", e.ID, "type", e.Type, "subject", e.Subject,
		"target", t.Name, "attempts", attempt, "error", lastError)
}

// backoff returns the delay after the attempts-th failed attempt: drawn
// uniformly from [0, min(BackoffMax, BackoffBase*2^(attempts-1))], but no
// less than the receiver's Retry-After, and never above BackoffMax.
func (ob *Outbox) backoff(t *target, attempts int, retryAfter time.Duration) time.Duration {
	ceiling := t.BackoffBase
	for i := 1; i < attempts && ceiling < t.BackoffMax; i++ {
		ceiling *= 2
	}
	ceiling = min(ceiling, t.BackoffMax)
	var d time.Duration
	if ob.rand != nil {
		ob.randMu.Lock()
		d = time.Duration(ob.rand.Int64N(int64(ceiling) + 1))
		ob.randMu.Unlock()
	} else {
		d = time.Duration(rand.Int64N(int64(ceiling) + 1))
	}
	return min(max(d, retryAfter), t.BackoffMax)
}
