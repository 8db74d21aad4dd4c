package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/infergate/infergate/retrain/legacy"
)

// ImportDeadLetter stores dl, a dead letter kept elsewhere before (in the
// state file of an infergate that predates the engine), unless the bucket
// holds a dead letter of the same delivery (event and target) already:
// importing one twice stores it once, and never replaces a newer one. The
// target need not be configured; Redrive sends a dead letter only to one
// that is. It returns an error wrapping ErrInvalidEvent when dl lacks its
// event id or target, or when its Event is not the CloudEvent of that id,
// and ErrClosed after Close.
func (ob *Outbox) ImportDeadLetter(dl DeadLetter) error {
	if ob.closed.Load() {
		return ErrClosed
	}
	if dl.EventID == "" || dl.Target == "" {
		return fmt.Errorf("cannot import a dead letter of event %q to %q: %w: it needs both the event id and the target", dl.EventID, dl.Target, ErrInvalidEvent)
	}
	var e Event
	if err := json.Unmarshal(dl.Event, &e); err != nil {
		if !errors.Is(err, ErrInvalidEvent) {
			err = fmt.Errorf("%w: %w", ErrInvalidEvent, err)
		}
		return fmt.Errorf("cannot import the dead letter of event %q to %q: %w", dl.EventID, dl.Target, err)
	}
	if e.ID != dl.EventID {
		return fmt.Errorf("cannot import the dead letter of event %q to %q: %w: it holds event %q", dl.EventID, dl.Target, ErrInvalidEvent, e.ID)
	}
	b, err := json.Marshal(dl)
	if err != nil {
		return fmt.Errorf("cannot encode the dead letter of event %q: %w", dl.EventID, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	if _, err := ob.dead.Create(ctx, deadLetterKey(dl.Target, dl.EventID), b); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("cannot store the dead letter of event %q to %q: %w", dl.EventID, dl.Target, err)
	}
	return nil
}

// LegacyCounts counts what ImportLegacy did with the deliveries of an
// outbox kept before the engine.
type LegacyCounts struct {
	// Emitted are the events emitted again for their pending deliveries.
	Emitted int
	// DeadLetters are the dead letters stored (or stored already).
	DeadLetters int
	// Unimportable are the deliveries left out: no outbox to take them
	// (no webhooks are configured), or their event cannot be sent.
	Unimportable int
}

// ImportLegacy hands the deliveries that old kept (the outbox in the state
// file of an infergate that predates the engine) to ob. The event of a
// pending delivery to a configured target is emitted again with its own
// id, so that an import done twice within ten minutes stores it once
// (every target that takes its type gets it, so one that had it already
// gets it again: receivers deduplicate by id; its attempts count from one
// again, at once). A dead delivery, and a pending one to a target no
// longer configured, become dead letters (see ImportDeadLetter), the
// latter dead at now; both are listed and redriven as ob's own. A delivery
// whose event cannot be sent is logged and counted, not an error. A nil
// ob (no webhooks configured) imports nothing and counts every delivery as
// unimportable. ctx bounds the emits, each of which is bounded on its own
// too. An error is the engine's: importing again is harmless.
func (ob *Outbox) ImportLegacy(ctx context.Context, old legacy.Outbox, now time.Time) (LegacyCounts, error) {
	var n LegacyCounts
	if ob == nil {
		n.Unimportable = len(old.Deliveries)
		return n, nil
	}
	emitted := make(map[string]bool)
	for _, d := range old.Deliveries {
		raw := old.Events[d.EventID]
		dl := DeadLetter{EventID: d.EventID, EventType: d.Type, Subject: d.Subject, Target: d.Target,
			Attempts: d.Attempts, LastError: d.LastError, DeadAt: d.DeadAt, Replica: ob.replica, Event: raw}
		switch {
		case d.Dead:
		case ob.targets[d.Target] == nil:
			dl.LastError = fmt.Sprintf("webhook target %q is no longer configured (the last attempt before: %s)", d.Target, d.LastError)
			dl.DeadAt = now
		case emitted[d.EventID]:
			continue
		default:
			err := ob.emitLegacy(ctx, raw)
			if errors.Is(err, ErrInvalidEvent) {
				n.Unimportable++
				ob.log.Error("not importing a webhook delivery whose event cannot be sent", "event_id", d.EventID, "target", d.Target, "error", err)
				continue
			}
			if err != nil {
				return n, err
			}
			emitted[d.EventID] = true
			n.Emitted++
			continue
		}
		err := ob.ImportDeadLetter(dl)
		if errors.Is(err, ErrInvalidEvent) {
			n.Unimportable++
			ob.log.Error("not importing a dead letter whose event cannot be read", "event_id", d.EventID, "target", d.Target, "error", err)
			continue
		}
		if err != nil {
			return n, err
		}
		n.DeadLetters++
	}
	return n, nil
}

// emitLegacy emits raw, an event as an outbox before the engine kept it;
// one that is not a CloudEvent is an error wrapping ErrInvalidEvent.
func (ob *Outbox) emitLegacy(ctx context.Context, raw json.RawMessage) error {
	var e Event
	if err := json.Unmarshal(raw, &e); err != nil {
		if !errors.Is(err, ErrInvalidEvent) {
			err = fmt.Errorf("%w: %w", ErrInvalidEvent, err)
		}
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	return ob.Emit(ctx, e)
}
