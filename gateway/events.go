package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/infergate/infergate/retrain/engine"
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

	// cloud is the CloudEvent the outbox gets, stored with the routing
	// change that caused it. fenced says the leader made the change: its
	// event goes out only while this replica still holds the lease (the
	// next leader emits it otherwise). repair marks an event emitted again
	// by a new leader, for the outbox only.
	cloud          *outbox.Event
	fenced, repair bool
	// key is the control bucket's record that holds the event; last
	// marks the last event of a write, after whose emission the record is
	// written again without the events emitted (see forgetEvents).
	key  string
	last bool
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
	// Replica made the step while Leader led; Reporting are the replicas
	// whose counts the analysis merged, and Missing those that had not
	// reported within the grace period (absent for a gateway alone).
	Replica   string   `json:"replica"`
	Leader    string   `json:"leader"`
	Reporting []string `json:"replicas_reporting,omitempty"`
	Missing   []string `json:"replicas_missing,omitempty"`
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

// emitLocked queues e for the event loop without blocking; an event that
// finds the queue full is logged and counted (its change is stored: the
// next leader emits it again).
func (cp *controlPlane) emitLocked(e Event) {
	select {
	case cp.eventsIn <- e:
	default:
		eventsDropped.Inc()
		cp.log.Error("event dropped: the event loop is not keeping up", "type", e.Type, "model", e.Model, "version", e.Version)
	}
}

// eventLoop hands every event to the outbox (when webhooks are configured)
// and to Options.Events, until closeEvents closes stopEvents; what is
// queued then still goes out.
func (cp *controlPlane) eventLoop() {
	defer close(cp.eventsDone)
	for {
		select {
		case e := <-cp.eventsIn:
			cp.deliverEvent(e)
		case <-cp.stopEvents:
			// Nothing is queued after stopEvents closes; what was still
			// goes out first.
			if len(cp.eventsIn) == 0 {
				return
			}
		}
	}
}

func (cp *controlPlane) deliverEvent(e Event) {
	if e.cloud != nil {
		cp.recordEvent(e.cloud)
	}
	if cp.outbox != nil && e.cloud != nil && cp.emitEvent(e) && e.key != "" {
		cp.emitted[e.key] = append(cp.emitted[e.key], e.cloud.ID)
		if e.last {
			cp.forgetEvents(e.key, cp.emitted[e.key], e.fenced)
			delete(cp.emitted, e.key)
		}
	}
	if cp.events != nil && !e.repair && e.Type != "" {
		select {
		case cp.events <- e:
		default:
			eventsDropped.Inc()
		}
	}
}

// The backoff of an event the outbox did not take.
const (
	emitRetryMin = 100 * time.Millisecond
	emitRetryMax = 5 * time.Second
)

// emitEvent puts e in the outbox, trying again with backoff until the
// engine takes it (the events queued after it wait: they keep their
// order). It gives up, reporting false, when the change was the leader's
// and this replica lost the lease, or at shutdown: the record of the
// change keeps the event until it is emitted, for whoever leads next.
func (cp *controlPlane) emitEvent(e Event) bool {
	wait := emitRetryMin
	for attempt := 1; ; attempt++ {
		if e.fenced && !cp.lease.holds(cp.now()) {
			cp.log.Warn("event not emitted: this replica lost the lease since its change; the next leader emits it",
				"type", e.cloud.Type, "id", e.cloud.ID)
			return false
		}
		ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
		err := cp.outbox.Emit(ctx, *e.cloud)
		cancel()
		if err == nil {
			if !e.repair {
				model, version, _ := strings.Cut(e.cloud.Subject, "/")
				cp.log.Info("event emitted", "type", strings.TrimPrefix(e.cloud.Type, eventTypePrefix), "model", model, "version", version, "id", e.cloud.ID)
			}
			return true
		}
		eventsFailed.Inc()
		if attempt == 1 || errors.Is(err, outbox.ErrClosed) {
			cp.log.Error("cannot emit event; trying again", "type", e.cloud.Type, "id", e.cloud.ID, "error", err)
		}
		if errors.Is(err, outbox.ErrClosed) {
			return false
		}
		select {
		case <-cp.stopEvents:
			cp.log.Warn("event not emitted before shutdown; it stays stored with its change, for the next leader", "type", e.cloud.Type, "id", e.cloud.ID)
			return false
		case <-time.After(wait):
		}
		wait = min(2*wait, emitRetryMax)
	}
}

// forgetEvents writes the record at key again without the events ids,
// once they are in the outbox, so that the next leader does not emit them
// again. The write is by revision (a record changed meanwhile is left: it
// keeps them, and receivers deduplicate), says who made it, and is fenced
// like the change was: a leader that lost its lease since writes nothing.
func (cp *controlPlane) forgetEvents(key string, ids []string, fenced bool) {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if cp.store == nil {
		return
	}
	write := func(rec any, rev uint64) (uint64, error) {
		data, err := json.Marshal(rec)
		switch {
		case err != nil:
			return 0, err
		case !fenced:
			return cp.store.put(key, data, rev)
		case !cp.lease.holds(cp.now()):
			return 0, errFenced
		}
		next, err := cp.store.putFenced(key, data, cp.lastSeq)
		if err == nil {
			cp.lastSeq = next
		}
		return next, err
	}
	replica, leader := cp.cluster.Replica, cp.leaderName()
	switch {
	case strings.HasPrefix(key, routingPrefix):
		model, _ := engine.ParseToken(key[len(routingPrefix):])
		if cp.records[model] == nil {
			return
		}
		done := *cp.records[model]
		if !done.forget(ids, replica, leader) {
			return
		}
		if next, err := write(done, cp.revs[model]); err == nil {
			cp.revs[model], cp.records[model] = next, &done
		}
	case strings.HasPrefix(key, driftPrefix):
		if cp.drifts[key] == nil {
			return
		}
		done := *cp.drifts[key]
		if !done.forget(ids, replica, leader) {
			return
		}
		if next, err := write(done, done.rev); err == nil {
			done.rev = next
			cp.drifts[key] = &done
		}
	}
}

// newOutboxEvent returns the CloudEvent of one gateway event.
func newOutboxEvent(typ, model, version string, data any) (outbox.Event, error) {
	return outbox.NewEvent(eventSource, eventTypePrefix+typ, model+"/"+version, data)
}

// openOutbox opens the webhook outbox on the engine; it delivers only while
// this replica leads.
func (cp *controlPlane) openOutbox(cfg Config, conn *engine.Conn, set *metrics.Set) error {
	if len(cfg.Webhooks) == 0 {
		return nil
	}
	if conn == nil {
		return fmt.Errorf("webhooks: need state_dir or cluster.nats_url, where the outbox keeps events until they are delivered")
	}
	var err error
	cp.outbox, err = outbox.Open(outbox.Options{
		Conn: conn, Name: "gateway", Targets: cfg.Webhooks, Replica: cp.cluster.Replica,
		Log: cp.log.With("component", "outbox"), Metrics: set,
		MayDeliver: func() bool { return cp.lease.holds(cp.now()) },
	})
	if err != nil {
		return fmt.Errorf("cannot open the webhook outbox: %w", err)
	}
	return nil
}
