package engine

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestNoAnswer: the errors of an engine that did not answer are told from
// the others, wrapped or not.
func TestNoAnswer(t *testing.T) {
	for _, err := range []error{ErrNoAnswer, context.DeadlineExceeded, nats.ErrTimeout, nats.ErrNoResponders,
		fmt.Errorf("cannot open the control bucket: %w", context.DeadlineExceeded),
		fmt.Errorf("cannot open the model store: %w", &jetstream.APIError{Code: 400, ErrorCode: 10005,
			Description: "no suitable peers for placement, peer offline"}),
		&jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"},
		fmt.Errorf("cannot open bucket: %w", jetstream.ErrJetStreamNotEnabled)} {
		if !NoAnswer(err) {
			t.Errorf("%v: not an engine that did not answer", err)
		}
	}
	for _, err := range []error{nil, errors.New("bad config"), nats.ErrAuthorization, context.Canceled,
		&jetstream.APIError{Code: 400, ErrorCode: 10005, Description: "no suitable peers for placement, insufficient resources"},
		jetstream.ErrStreamNotFound} {
		if NoAnswer(err) {
			t.Errorf("%v: taken for an engine that did not answer", err)
		}
	}
	if got := (Config{}).StartTimeout(); got != time.Minute {
		t.Errorf("default start timeout %s, want 1m", got)
	}
	if got := (Config{ConnectTimeout: time.Second}).StartTimeout(); got != time.Second {
		t.Errorf("start timeout %s, want connect_timeout's 1s", got)
	}
}
