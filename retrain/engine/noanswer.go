package engine

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrNoAnswer is wrapped by errors that say the engine did not answer a
// call in time.
var ErrNoAnswer = errors.New("the engine did not answer in time")

// The JetStream API's error codes of a cluster that cannot take a request
// yet (nats-server's errors.json).
const (
	codeNoPeers       jetstream.ErrorCode = 10005 // no suitable peers for placement
	codeNotAvailable  jetstream.ErrorCode = 10008 // JetStream system temporarily unavailable
	codeNotMetaLeader jetstream.ErrorCode = 10009 // JetStream cluster can not handle request
)

// NoAnswer reports whether err says that the engine did not answer: no
// reply within the call's deadline, or no server to take the request, or
// a cluster that cannot take it yet (no meta leader, or a peer it needs
// is offline). A cluster just formed, still electing its leaders and
// learning its peers, answers so for a few seconds; so does one that lost
// a server. Such a call may succeed when made again. A server without
// JetStream at all answers as one whose JetStream has yet to start, so a
// caller waits for it too, until its start timeout. A placement refused
// for any other reason (too few servers, storage, tags) is a
// configuration error, and is not an absent answer.
func NoAnswer(err error) bool {
	if errors.Is(err, ErrNoAnswer) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrNoResponders) {
		return true
	}
	// nats.go says JetStream is not enabled when its account query found
	// no responders (CreateKeyValue's first call), as a server whose
	// JetStream has yet to start answers.
	if errors.Is(err, jetstream.ErrJetStreamNotEnabled) {
		return true
	}
	var jsErr jetstream.JetStreamError
	if !errors.As(err, &jsErr) || jsErr.APIError() == nil {
		return false
	}
	apiErr := jsErr.APIError()
	switch apiErr.ErrorCode {
	case codeNotAvailable, codeNotMetaLeader:
		return true
	case codeNoPeers:
		return strings.Contains(apiErr.Description, "peer offline")
	}
	return false
}

// StartTimeout is how long a process waits at start for the engine: to
// connect, and to answer its first calls (cluster.connect_timeout,
// default 1m).
func (c Config) StartTimeout() time.Duration {
	if c.ConnectTimeout > 0 {
		return c.ConnectTimeout
	}
	return time.Minute
}
