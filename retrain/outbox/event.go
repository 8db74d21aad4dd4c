package outbox

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// ContentType is the media type of an event in CloudEvents structured JSON
// mode, the body of a delivery in the cloudevents format.
const ContentType = "application/cloudevents+json"

// The event types that infergate emits.
const (
	TypeDriftDetected    = "dev.infergate.drift.detected"
	TypeDriftResolved    = "dev.infergate.drift.resolved"
	TypeCanaryStarted    = "dev.infergate.canary.started"
	TypeCanaryAdvanced   = "dev.infergate.canary.advanced"
	TypeCanaryHeld       = "dev.infergate.canary.held"
	TypeCanaryPromoted   = "dev.infergate.canary.promoted"
	TypeCanaryRolledBack = "dev.infergate.canary.rolledback"
	TypeRetrainSucceeded = "dev.infergate.retrain.succeeded"
	TypeRetrainFailed    = "dev.infergate.retrain.failed"
)

// typePrefix is what a short type name in a target's events lacks.
const typePrefix = "dev.infergate."

var knownTypes = []string{
	TypeDriftDetected, TypeDriftResolved, TypeCanaryStarted, TypeCanaryAdvanced, TypeCanaryHeld,
	TypeCanaryPromoted, TypeCanaryRolledBack, TypeRetrainSucceeded, TypeRetrainFailed,
}

// ErrInvalidEvent is returned for an event that lacks a required attribute
// or is not a CloudEvents 1.0 document.
var ErrInvalidEvent = errors.New("outbox: invalid event")

// Event is a CloudEvents 1.0 event. It marshals to and from structured JSON
// mode: {"specversion":"1.0","id":...,"source":...,"type":...,"subject":...,
// "time":...,"datacontenttype":"application/json","data":...}. ID, Source
// and Type are required; ID must not contain a NUL byte. Data is JSON or
// empty. An Event is a plain value, safe to share when nobody modifies it.
type Event struct {
	// ID identifies the event; receivers deduplicate by it.
	ID string
	// Source names the emitter, e.g. "/infergate/gateway".
	Source string
	// Type is one of the Type constants.
	Type string
	// Subject is the model and version the event is about, e.g. "iris/3".
	Subject string
	// Time is when the decision was taken.
	Time time.Time
	// Data holds the decision's details as JSON.
	Data json.RawMessage
	// Replica is the gateway replica that made the decision, and Leader
	// the fleet's leader then: the CloudEvents extension attributes
	// infergatereplica and infergateleader (absent when empty).
	Replica, Leader string
}

// wireEvent is an Event in structured JSON mode.
type wireEvent struct {
	SpecVersion     string          `json:"specversion"`
	ID              string          `json:"id"`
	Source          string          `json:"source"`
	Type            string          `json:"type"`
	Subject         string          `json:"subject,omitempty"`
	Time            string          `json:"time,omitempty"`
	DataContentType string          `json:"datacontenttype,omitempty"`
	Data            json.RawMessage `json:"data,omitempty"`
	Replica         string          `json:"infergatereplica,omitempty"`
	Leader          string          `json:"infergateleader,omitempty"`
}

// NewEvent returns an event of type typ about subject from source, with a
// random UUID (version 4) for its id, the current time, and data encoded as
// JSON (none when data is nil).
func NewEvent(source, typ, subject string, data any) (Event, error) {
	e := Event{ID: newID(), Source: source, Type: typ, Subject: subject, Time: time.Now().UTC()}
	if data != nil {
		b, err := json.Marshal(data)
		if err != nil {
			return Event{}, fmt.Errorf("cannot encode the data of a %s event: %w", typ, err)
		}
		e.Data = b
	}
	return e, e.validate()
}

// newID returns a random version 4 UUID.
func newID() string {
	var b [16]byte
	rand.Read(b[:]) // never fails; see crypto/rand.Read
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

func (e Event) validate() error {
	switch {
	case e.ID == "" || e.Source == "" || e.Type == "":
		return fmt.Errorf("%w: id, source and type are required", ErrInvalidEvent)
	case strings.IndexByte(e.ID, 0) >= 0:
		return fmt.Errorf("%w: id contains a NUL byte", ErrInvalidEvent)
	}
	return nil
}

// MarshalJSON encodes e in CloudEvents structured JSON mode.
func (e Event) MarshalJSON() ([]byte, error) {
	w := wireEvent{SpecVersion: "1.0", ID: e.ID, Source: e.Source, Type: e.Type, Subject: e.Subject, Data: e.Data,
		Replica: e.Replica, Leader: e.Leader}
	if !e.Time.IsZero() {
		w.Time = e.Time.UTC().Format(time.RFC3339Nano)
	}
	if len(e.Data) > 0 {
		w.DataContentType = "application/json"
	}
	return json.Marshal(w)
}

// UnmarshalJSON decodes e from CloudEvents structured JSON mode. It rejects
// a document whose specversion is not 1.0 or that lacks id, source or type.
func (e *Event) UnmarshalJSON(b []byte) error {
	var w wireEvent
	if err := json.Unmarshal(b, &w); err != nil {
		return fmt.Errorf("cannot decode event: %w", err)
	}
	if w.SpecVersion != "1.0" {
		return fmt.Errorf("%w: specversion %q, want 1.0", ErrInvalidEvent, w.SpecVersion)
	}
	ev := Event{ID: w.ID, Source: w.Source, Type: w.Type, Subject: w.Subject, Data: w.Data, Replica: w.Replica, Leader: w.Leader}
	if w.Time != "" {
		t, err := time.Parse(time.RFC3339Nano, w.Time)
		if err != nil {
			return fmt.Errorf("%w: time: %w", ErrInvalidEvent, err)
		}
		ev.Time = t
	}
	if err := ev.validate(); err != nil {
		return err
	}
	*e = ev
	return nil
}

// fullType returns the event type that a target's events entry names: a
// full type, or a short one without the "dev.infergate." prefix. It returns
// "" for an unknown type.
func fullType(name string) string {
	for _, t := range knownTypes {
		if name == t || typePrefix+name == t {
			return t
		}
	}
	return ""
}
