package capture

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/infergate/infergate/retrain/engine"
)

// ErrInvalidLabel is returned (wrapped) for a label without a request id or
// whose value is not JSON; the feedback endpoint answers it with 400.
var ErrInvalidLabel = errors.New("capture: invalid label")

// Label is the ground truth of one captured request: a line of a label
// message. Label is any JSON value: a scalar or object for the whole
// request, or an array with one entry per row (see Examples).
type Label struct {
	ID    string          `json:"id"`
	Time  time.Time       `json:"time"`
	Label json.RawMessage `json:"label"`
}

// Labels records the labels of every model into the models' label streams.
// It is safe for concurrent use: each call publishes its own messages and
// waits for the engine's acknowledgement, which comes once the engine has
// the label on disk (an embedded engine syncs every write; a cluster's
// streams are replicated).
type Labels struct {
	conn *engine.Conn
	cfg  LabelsConfig
	o    Options
	m    labelMetrics

	mu       sync.Mutex
	closed   bool
	inFlight sync.WaitGroup
	streams  map[string]*modelLabels // by model
}

// modelLabels is a model's label stream in a Labels store, created (or
// its retention set) once, by the first call that records a label of the
// model; calls for other models do not wait for it.
type modelLabels struct {
	mu          sync.Mutex
	provisioned bool
}

type labelMetrics struct {
	labels, messages, errors *metrics.Counter
}

// OpenLabels returns a Labels store on conn's engine. Close stops it.
func OpenLabels(conn *engine.Conn, cfg LabelsConfig, o Options) (*Labels, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate("feedback"); err != nil {
		return nil, fmt.Errorf("cannot open label store: %w", err)
	}
	if conn == nil {
		return nil, fmt.Errorf("cannot open label store: %w", errNoEngine)
	}
	o = o.withDefaults()
	return &Labels{
		conn: conn, cfg: cfg, o: o, streams: make(map[string]*modelLabels),
		m: labelMetrics{
			labels:   o.Metrics.NewCounter("infergate_capture_labels_total"),
			messages: o.Metrics.NewCounter("infergate_capture_label_messages_total"),
			errors:   o.Metrics.NewCounter("infergate_capture_label_errors_total"),
		},
	}, nil
}

// RecordLabel records label as the ground truth of request id of model,
// observed at t (zero means now). It returns once the label is durable.
func (l *Labels) RecordLabel(model, id string, label json.RawMessage, t time.Time) error {
	return l.RecordLabels(model, []Label{{ID: id, Time: t, Label: label}})
}

// RecordLabels records labels of model and returns once the engine has
// acknowledged every one. A zero Time means now. It fails with
// ErrInvalidLabel for a bad label (recording none) and ErrClosed after
// Close and ErrUnavailable while the engine is unreachable; on another
// error some of the labels may be recorded, and
// recording them again is harmless (the latest label of an id wins).
func (l *Labels) RecordLabels(model string, labels []Label) error {
	var msgs [][]byte
	var data []byte
	now := l.o.Now()
	for i := range labels {
		lb := labels[i]
		if lb.ID == "" || !json.Valid(lb.Label) {
			return fmt.Errorf("cannot record labels of model %q: %w: label %d needs a request id and a JSON value", model, ErrInvalidLabel, i)
		}
		if lb.Time.IsZero() {
			lb.Time = now
		}
		lb.Time = lb.Time.UTC()
		line, err := json.Marshal(lb) // compacts the label, so it is one line
		if err != nil {
			return fmt.Errorf("cannot record labels of model %q: %w: %w", model, ErrInvalidLabel, err)
		}
		if len(line) > maxBlock {
			return fmt.Errorf("cannot record labels of model %q: %w: label %d (request %q) is %d bytes as JSON, more than %s",
				model, ErrInvalidLabel, i, lb.ID, len(line), Size(maxBlock))
		}
		if len(data) > 0 && len(data)+len(line) >= maxBlock {
			msgs, data = append(msgs, data), nil
		}
		data = append(append(data, line...), '\n')
	}
	if len(labels) == 0 {
		return nil
	}
	msgs = append(msgs, data)
	s, err := l.begin(model)
	if err != nil {
		return err
	}
	defer l.inFlight.Done()
	for _, data := range msgs {
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		_, err := l.conn.JS.Publish(ctx, s.subject, data)
		cancel()
		if err != nil {
			l.m.errors.Inc()
			return fmt.Errorf("cannot record labels of model %q in stream %s: %w", model, s.name, err)
		}
		l.m.messages.Inc()
	}
	l.m.labels.Add(len(labels))
	return nil
}

// begin counts a call in flight and returns model's label stream, created
// on its first label.
func (l *Labels) begin(model string) (stream, error) {
	s := labelsOf(model, l.o.Replica)
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return s, ErrClosed
	}
	if !l.conn.Connected() {
		l.mu.Unlock()
		return s, fmt.Errorf("cannot record labels of model %q: %w", model, ErrUnavailable)
	}
	ls := l.streams[model]
	if ls == nil {
		ls = &modelLabels{}
		l.streams[model] = ls
	}
	l.inFlight.Add(1)
	l.mu.Unlock()
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if !ls.provisioned {
		if err := s.provision(l.conn, l.cfg.Retention, l.cfg.MaxAge); err != nil {
			l.m.errors.Inc()
			l.inFlight.Done()
			return s, fmt.Errorf("cannot record labels of model %q: %w", model, err)
		}
		ls.provisioned = true
	}
	return s, nil
}

// Close refuses new labels and waits for the calls in flight.
func (l *Labels) Close() error {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	l.inFlight.Wait()
	return nil
}
