package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
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
