package gateway

import (
	"fmt"
	"time"

	"github.com/VictoriaMetrics/metrics"
	bolt "go.etcd.io/bbolt"

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
// started, advanced, started holding, was promoted or rolled back. Its
// Type is the CloudEvents type without the "dev.infergate." prefix, such
// as "canary.promoted".
type Event struct {
	Type    string
	Model   string
	Version string
	Time    time.Time
	// Data holds the decision's details (a canaryStep); it marshals to
	// JSON.
	Data any

	// stored says the event is in the outbox already, committed with the
	// routing change that caused it.
	stored bool
}

var (
	eventsDropped = metrics.NewCounter(`infergate_events_dropped_total`)
	eventsFailed  = metrics.NewCounter(`infergate_events_emit_errors_total`)
)

// canaryEventType returns the event a canary transition emits, or "" when
// it emits none: every step that moves the weight or ends the canary
// emits one, and of a run of analyses that hold the weight (too little
// traffic, or a failed check) only the first, as canary.held.
func canaryEventType(tr router.Transition) string {
	switch tr.Kind {
	case router.KindStarted, router.KindAdvanced, router.KindPromoted, router.KindRolledBack:
		return "canary." + string(tr.Kind)
	case router.KindHeld, router.KindFailed:
		if tr.StartedHolding {
			return "canary.held"
		}
	}
	return ""
}

// canaryStep is the data of a canary event: what the step did and why,
// with what the analysis measured and the canary's standing after it.
// Durations are Go duration strings ("1m30s").
type canaryStep struct {
	// Step is what happened: started, advanced, held, failed (a failed
	// check that held the weight), promoted or rolledback.
	Step         router.Kind  `json:"step"`
	Version      string       `json:"version"`
	Phase        router.Phase `json:"phase"`
	WeightBefore int          `json:"weight_before"`
	WeightAfter  int          `json:"weight_after"`
	// Reason says why, naming each failed check with its numbers.
	Reason       string `json:"reason"`
	FailedChecks int    `json:"failed_checks"`
	Threshold    int    `json:"failed_checks_threshold"`
	// Checks is what the analysis judged, absent for a step that judged
	// nothing (a start, an operator's promote or rollback).
	Checks    *canaryChecks `json:"checks,omitempty"`
	Interval  string        `json:"interval"`
	StartedAt time.Time     `json:"started_at"`
}

// canaryChecks is one analysis interval's measurements.
type canaryChecks struct {
	Canary           canaryStats `json:"canary"`
	Primary          canaryStats `json:"primary"`
	AgreementSamples int64       `json:"agreement_samples"`
	Agreed           int64       `json:"agreed"`
}

// canaryStats is router.Stats with its latency as a duration string.
type canaryStats struct {
	Requests int64  `json:"requests"`
	Errors   int64  `json:"errors"`
	P99      string `json:"p99"`
	Labeled  int64  `json:"labeled"`
	Correct  int64  `json:"correct"`
}

func newCanaryStats(s router.Stats) canaryStats {
	return canaryStats{Requests: s.Requests, Errors: s.Errors, P99: s.P99.String(), Labeled: s.Labeled, Correct: s.Correct}
}

// newCanaryStep describes tr, which canary c has just done.
func newCanaryStep(c *router.Canary, tr router.Transition) canaryStep {
	st := canaryStep{
		Step: tr.Kind, Version: c.Config.Version, Phase: c.Phase, WeightBefore: tr.From, WeightAfter: tr.Weight,
		Reason: tr.Reason, FailedChecks: tr.FailedChecks, Threshold: c.Config.Threshold,
		Interval: c.Config.Interval.String(), StartedAt: c.StartedAt,
	}
	if m := tr.Measured; m != nil {
		st.Checks = &canaryChecks{Canary: newCanaryStats(m.Canary), Primary: newCanaryStats(m.Primary),
			AgreementSamples: m.AgreementSamples, Agreed: m.Agreed}
	}
	return st
}

// emit queues e for the event loop without blocking; an event that finds
// the queue full is logged and counted.
func (s *Server) emit(e Event) {
	select {
	case s.eventsIn <- e:
	default:
		eventsDropped.Inc()
		s.log.Error("event dropped: the event loop is not keeping up", "type", e.Type, "model", e.Model, "version", e.Version)
	}
}

// eventLoop writes every canary event not stored yet to the outbox (when
// webhooks are configured) and hands it to Options.Events, until Shutdown
// closes stopEvents; what is queued then is still written. Drift decisions
// do not pass here: each monitor stores its own (see commitDrift).
func (s *Server) eventLoop() {
	defer close(s.eventsDone)
	for {
		select {
		case e := <-s.eventsIn:
			s.deliverEvent(e)
		case <-s.stopEvents:
			// Nothing is queued after stopEvents closes; what was still
			// goes out first.
			if len(s.eventsIn) == 0 {
				return
			}
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
	var emitted []*Event
	for i := range steps {
		if e := steps[i].event; e != nil {
			emitted = append(emitted, e)
		}
	}
	if s.outbox == nil || len(emitted) == 0 {
		return s.store.saveRoutes(model, rec)
	}
	events := make([]outbox.Event, len(emitted))
	for i, e := range emitted {
		oe, err := newOutboxEvent(e.Type, e.Model, e.Version, e.Data)
		if err != nil {
			return err
		}
		events[i] = oe
	}
	if err := s.outbox.EmitWith(func(tx *bolt.Tx) error { return putRoutes(tx, model, rec) }, events...); err != nil {
		return err
	}
	for i, e := range emitted {
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
