package engine

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
)

// ErrNoAnswer is wrapped by errors that say the engine did not answer a
// call in time.
var ErrNoAnswer = errors.New("the engine did not answer in time")

// NoAnswer reports whether err says that the engine did not answer: no
// reply within the call's deadline, or no server to take the request. A
// cluster just formed, still electing the leaders of the streams it was
// asked for, answers so for a few seconds; so does one that lost a
// server. Such a call may succeed when made again.
func NoAnswer(err error) bool {
	return errors.Is(err, ErrNoAnswer) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrNoResponders)
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
