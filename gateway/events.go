package gateway

import (
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/infergate/infergate/router"
)

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
}

var eventsDropped = metrics.NewCounter(`infergate_events_dropped_total`)

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

// emit hands e to Options.Events without blocking; an event that finds it
// full is logged and counted.
func (s *Server) emit(e Event) {
	if e.Type == "" || s.events == nil {
		return
	}
	select {
	case s.events <- e:
	default:
		eventsDropped.Inc()
		s.log.Error("event dropped: its consumer is not keeping up", "type", e.Type, "model", e.Model, "version", e.Version)
	}
}
