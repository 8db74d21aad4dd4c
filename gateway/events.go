package gateway

import (
	"fmt"
	"time"

	"github.com/VictoriaMetrics/metrics"
	bolt "go.etcd.io/bbolt"

	"github.com/infergate/infergate/drift"
	"github.com/infergate/infergate/retrain/outbox"
	"github.com/infergate/infergate/router"
)

// eventSource is the CloudEvents source of the gateway's events, and
// eventTypePrefix what makes a type such as "drift.detected" a CloudEvents
// type.
const (
	eventSource     = "/infergate/gateway"
	eventTypePrefix = "dev.infergate."
)

// eventQueue bounds the decisions waiting for the event loop.
const eventQueue = 256

// Event is a decision of the gateway worth telling the outside: a canary
// started, promoted or rolled back. Its Type is the CloudEvents type
// without the "dev.infergate." prefix, such as "canary.promoted".
type Event struct {
	Type    string
	Model   string
	Version string
	Time    time.Time
	// Data holds the decision's details; it marshals to JSON.
	Data any

	// stored says the event is in the outbox already, committed with the
	// routing change that caused it.
	stored bool
}

var (
	eventsDropped = metrics.NewCounter(`infergate_events_dropped_total`)
	eventsFailed  = metrics.NewCounter(`infergate_events_emit_errors_total`)
)

// canaryEventType returns the event a canary transition of kind k emits,
// or "" when it emits none.
func canaryEventType(k router.Kind) string {
	switch k {
	case router.KindStarted:
		return "canary.started"
	case router.KindPromoted:
		return "canary.promoted"
	case router.KindRolledBack:
		return "canary.rolledback"
	}
	return ""
}

// emit queues e for the event loop without blocking; an event that finds
// the queue full is logged and counted.
func (s *Server) emit(e Event) {
	if e.Type == "" {
		return
	}
	select {
	case s.eventsIn <- e:
	default:
		eventsDropped.Inc()
		s.log.Error("event dropped: the event loop is not keeping up", "type", e.Type, "model", e.Model, "version", e.Version)
	}
}

// eventLoop writes every drift decision and canary event to the outbox
// (when webhooks are configured) and hands it to the Options' channels,
// until Shutdown closes stopEvents; what is queued then is still written.
func (s *Server) eventLoop() {
	defer close(s.eventsDone)
	for {
		select {
		case d := <-s.decisions:
			s.deliverDecision(d)
		case e := <-s.eventsIn:
			s.deliverEvent(e)
		case <-s.stopEvents:
			// Nothing is queued after stopEvents closes; what was still
			// goes out first.
			if len(s.decisions) == 0 && len(s.eventsIn) == 0 {
				return
			}
		}
	}
}

func (s *Server) deliverDecision(d drift.Decision) {
	s.toOutbox(string(d.Type), d.Model, d.Version, d)
	if s.o.DriftDecisions != nil {
		select {
		case s.o.DriftDecisions <- d:
		default:
			eventsDropped.Inc()
		}
	}
}

func (s *Server) deliverEvent(e Event) {
	if !e.stored {
		s.toOutbox(e.Type, e.Model, e.Version, e.Data)
	}
	if s.o.Events != nil {
		select {
		case s.o.Events <- e:
		default:
			eventsDropped.Inc()
		}
	}
}

// toOutbox stores one event in the outbox, durably, for its webhooks.
func (s *Server) toOutbox(typ, model, version string, data any) {
	if s.outbox == nil {
		return
	}
	e, err := newOutboxEvent(typ, model, version, data)
	if err == nil {
		err = s.outbox.Emit(e)
	}
	if err != nil {
		eventsFailed.Inc()
		s.log.Error("cannot emit event", "type", typ, "model", model, "version", version, "error", err)
		return
	}
	s.logEmitted(typ, model, version, e.ID)
}

// logEmitted logs that an event is stored in the outbox for delivery.
func (s *Server) logEmitted(typ, model, version, id string) {
	s.log.Info("event emitted", "type", typ, "model", model, "version", version, "id", id)
}

// newOutboxEvent returns the CloudEvent of one gateway event.
func newOutboxEvent(typ, model, version string, data any) (outbox.Event, error) {
	return outbox.NewEvent(eventSource, eventTypePrefix+typ, model+"/"+version, data)
}

// saveRoutes stores rec as model's routing and, in the same transaction,
// the events of steps in the outbox, so that a crash keeps both or neither;
// those events then go only to Options.Events from the event loop.
func (s *Server) saveRoutes(model string, rec routeRecord, steps []transition) error {
	if s.outbox == nil || len(steps) == 0 {
		return s.store.saveRoutes(model, rec)
	}
	events := make([]outbox.Event, len(steps))
	for i, st := range steps {
		e, err := newOutboxEvent(st.event.Type, st.event.Model, st.event.Version, st.event.Data)
		if err != nil {
			return err
		}
		events[i] = e
	}
	if err := s.outbox.EmitWith(func(tx *bolt.Tx) error { return putRoutes(tx, model, rec) }, events...); err != nil {
		return err
	}
	for i := range steps {
		e := &steps[i].event
		e.stored = true
		s.logEmitted(e.Type, e.Model, e.Version, events[i].ID)
	}
	return nil
}

// openOutbox opens the webhook outbox in the state store.
func (s *Server) openOutbox(cfg Config) error {
	if len(cfg.Webhooks) == 0 {
		return nil
	}
	if s.store == nil {
		return fmt.Errorf("webhooks: need state_dir, where the outbox keeps events until they are delivered")
	}
	var err error
	s.outbox, err = outbox.Open(outbox.Options{DB: s.store.db, Targets: cfg.Webhooks, Log: s.log.With("component", "outbox"), Metrics: s.webhookSet})
	return err
}
