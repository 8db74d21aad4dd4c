package capture

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/infergate/infergate/retrain/engine"
)

// The streams of a model m (its name through engine.Token) and the subjects
// a replica r publishes on:
//
//	infergate_capture_<m>  infergate.capture.<m>.<r>  zstd blocks of records
//	infergate_labels_<m>   infergate.labels.<m>.<r>   JSON lines of labels
const (
	captureStream, captureSubject = "infergate_capture_", "infergate.capture."
	labelStream, labelSubject     = "infergate_labels_", "infergate.labels."
)

// maxBlock bounds the uncompressed records of one captured block and the
// labels of one message, well below the engine's default 1MiB payload.
const maxBlock = 256 << 10

// opTimeout bounds one call to the engine: a publish, a stream's creation.
const opTimeout = 10 * time.Second

// ErrUnavailable is returned (wrapped) while the connection to the engine
// is down: a label is not recorded then; the feedback endpoint answers it
// with 503.
var ErrUnavailable = errors.New("the engine is unreachable")

// errNoEngine is returned where a capture or label store is opened without
// a connection to the engine.
var errNoEngine = errors.New("capture: no connection to the engine")

// stream names model's capture or label stream and the subject replica
// publishes it on.
type stream struct {
	name, subject string
}

// StreamName is the name of model's capture stream.
func StreamName(model string) string { return captureOf(model, "").name }

func captureOf(model, replica string) stream {
	m := engine.Token(model)
	return stream{captureStream + m, captureSubject + m + "." + engine.Token(replica)}
}

func labelsOf(model, replica string) stream {
	m := engine.Token(model)
	return stream{labelStream + m, labelSubject + m + "." + engine.Token(replica)}
}

// provision creates s's stream, or updates its retention to maxBytes and
// maxAge; replicas is its replication.
func (s stream) provision(conn *engine.Conn, maxBytes Size, maxAge time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	prefix := s.subject[:len(s.subject)-len(lastToken(s.subject))]
	_, err := engine.Stream(ctx, conn.JS, jetstream.StreamConfig{
		Name:       s.name,
		Subjects:   []string{prefix + "*"},
		Storage:    jetstream.FileStorage,
		Replicas:   max(conn.Replicas, 1),
		MaxBytes:   int64(maxBytes),
		MaxAge:     maxAge,
		Discard:    jetstream.DiscardOld,
		Duplicates: 2 * time.Minute,
	})
	if err != nil {
		return fmt.Errorf("cannot create stream %s at %s: %w", s.name, conn.URL, err)
	}
	return nil
}

func lastToken(subject string) string {
	for i := len(subject) - 1; i >= 0; i-- {
		if subject[i] == '.' {
			return subject[i+1:]
		}
	}
	return subject
}
