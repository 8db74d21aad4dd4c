package engine

import (
	"errors"

	"github.com/nats-io/nats.go/jetstream"
)

// IsWrongSequence reports whether err is the engine refusing a write whose
// expected last sequence is not the stream's or key's: another writer came
// first (jetstream.WithExpectLastSequence, WithExpectLastSequencePerSubject,
// or a key-value update at a revision).
func IsWrongSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}
