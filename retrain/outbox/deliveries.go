package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/infergate/infergate/retrain/engine"
)

// Delivery statuses, as Delivery.Status says them.
const (
	// StatusPending: no attempt ended yet (not taken, or in flight).
	StatusPending = "pending"
	// StatusRetrying: an attempt failed and another follows.
	StatusRetrying = "retrying"
	// StatusDelivered: the target answered 2xx.
	StatusDelivered = "delivered"
	// StatusDeadLettered: the last attempt failed; see DeadLetters.
	StatusDeadLettered = "dead_lettered"
	// StatusNotSubscribed: the target does not take the event's type.
	StatusNotSubscribed = "not_subscribed"
)

// keepDeliveries is how long the record of a delivery's last attempt is
// kept: long enough for an operator to look back at a day's events.
const keepDeliveries = 7 * 24 * time.Hour

// Delivery is what the outbox knows of one event's delivery to one
// target: the outcome of its last attempt. It names the target, never its
// URL or credentials. A Delivery is plain data.
type Delivery struct {
	Target      string    `json:"target"`
	Status      string    `json:"status"`
	Attempts    int       `json:"attempts"`
	LastError   string    `json:"last_error,omitempty"`
	LastAttempt time.Time `json:"last_attempt,omitzero"`
	// Replica made the last attempt.
	Replica      string `json:"replica,omitempty"`
	DeadLettered bool   `json:"dead_lettered"`
}

// deliveriesBucket returns the bucket of the outbox's delivery records.
func (ob *Outbox) deliveriesBucket() string {
	return "infergate_deliveries_" + strings.TrimPrefix(ob.streamName, "infergate_outbox_")
}

// openDeliveries creates or updates the bucket of delivery records: one
// key per target and event (deadLetterKey's), its last attempt, kept for
// keepDeliveries.
func (ob *Outbox) openDeliveries(ctx context.Context, replicas int) error {
	bucket := ob.deliveriesBucket()
	var err error
	ob.deliveries, err = engine.KeyValue(ctx, ob.js, jetstream.KeyValueConfig{
		Bucket:      bucket,
		Description: "infergate webhook deliveries: the last attempt of each, by target and event id",
		History:     1,
		TTL:         keepDeliveries,
		Storage:     jetstream.FileStorage,
		Replicas:    max(replicas, 1),
	})
	if err != nil {
		return fmt.Errorf("cannot create or update bucket %s: %w", bucket, err)
	}
	return nil
}

// recordAttempt stores the outcome of attempt of event e to t. It is best
// effort: the record only informs (Deliveries), so a failure is logged and
// delivery goes on.
func (ob *Outbox) recordAttempt(t *target, e Event, attempt int, status string, cause error) {
	d := Delivery{Target: t.Name, Status: status, Attempts: attempt, LastAttempt: ob.now().UTC(), Replica: ob.replica,
		DeadLettered: status == StatusDeadLettered}
	if cause != nil {
		d.LastError = ob.redact(t.Name, cause.Error())
		if len(d.LastError) > 1024 {
			d.LastError = d.LastError[:1024]
		}
	}
	b, err := json.Marshal(d)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
		_, err = ob.deliveries.Put(ctx, deadLetterKey(t.Name, e.ID), b)
		cancel()
	}
	if err != nil {
		ob.log.Warn("cannot record a webhook delivery attempt; delivery goes on", "event_id", e.ID, "target", t.Name, "error", err)
	}
}

// Deliveries returns the deliveries of the event eventID, of type
// eventType, to every configured target, in the order of the targets: the
// last attempt's outcome where one was recorded, dead-lettered where the
// dead letter is (whose attempts and error it gives), not_subscribed for
// a target that does not take the type, else pending.
func (ob *Outbox) Deliveries(eventID, eventType string) ([]Delivery, error) {
	if ob.closed.Load() {
		return nil, ErrClosed
	}
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	out := make([]Delivery, 0, len(ob.order))
	for _, t := range ob.order {
		d := Delivery{Target: t.Name, Status: StatusPending}
		if len(t.Events) > 0 && !slices.ContainsFunc(t.Events, func(name string) bool { return fullType(name) == eventType }) {
			d.Status = StatusNotSubscribed
			out = append(out, d)
			continue
		}
		key := deadLetterKey(t.Name, eventID)
		switch e, err := ob.deliveries.Get(ctx, key); {
		case err == nil:
			if err := json.Unmarshal(e.Value(), &d); err != nil {
				return nil, fmt.Errorf("cannot decode the delivery record %q of bucket %s: %w", key, ob.deliveriesBucket(), err)
			}
		case !errors.Is(err, jetstream.ErrKeyNotFound):
			return nil, fmt.Errorf("cannot read the delivery of event %q to %q: %w", eventID, t.Name, err)
		}
		// The dead letter outlives the record (and a redrive removes it).
		switch e, err := ob.dead.Get(ctx, key); {
		case err == nil:
			var dl DeadLetter
			if err := json.Unmarshal(e.Value(), &dl); err != nil {
				return nil, fmt.Errorf("cannot decode dead letter %q: %w", key, err)
			}
			d.Status, d.DeadLettered, d.Attempts, d.LastError, d.LastAttempt, d.Replica =
				StatusDeadLettered, true, dl.Attempts, ob.redact(t.Name, dl.LastError), dl.DeadAt, dl.Replica
		case errors.Is(err, jetstream.ErrKeyNotFound):
			if d.DeadLettered { // redriven since
				d.Status, d.DeadLettered = StatusPending, false
			}
		default:
			return nil, fmt.Errorf("cannot read the dead letter of event %q to %q: %w", eventID, t.Name, err)
		}
		out = append(out, d)
	}
	return out, nil
}

// redact returns msg with the URL of the target called name, which may
// carry credentials in its user info or query, replaced by a placeholder
// that names the target: an error of a POST names its URL.
func (ob *Outbox) redact(name, msg string) string {
	t := ob.targets[name]
	if t == nil || t.URL == "" {
		return msg
	}
	placeholder := fmt.Sprintf("<the URL of webhook target %q>", name)
	msg = strings.ReplaceAll(msg, t.URL, placeholder)
	if u, err := url.Parse(t.URL); err == nil {
		msg = strings.ReplaceAll(msg, u.Redacted(), placeholder)
		if u.RawQuery != "" {
			// The query alone, should an error quote it apart.
			msg = strings.ReplaceAll(msg, u.RawQuery, "<query>")
		}
	}
	return msg
}
