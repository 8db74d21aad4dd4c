package legacy

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
)

// The buckets that infergate kept, as commit 0255404 named them.
const (
	// RoutesBucket maps a model to its routing record (gateway).
	RoutesBucket = "routes"
	// DriftBucket maps "<model>/<version>" to a drift.State (gateway).
	DriftBucket = "drift"
	// EventsBucket maps an event id to the CloudEvent as sent (outbox,
	// in both files); its sequence orders the events.
	EventsBucket = "outbox.events"
	// DeliveriesBucket maps "<event id>\x00<target>" to a delivery
	// record (outbox, in both files).
	DeliveriesBucket = "outbox.deliveries"
	// RunsBucket maps a run id, 8 bytes big-endian, to a pipeline.Run;
	// its sequence is the last id handed out (retrain service).
	RunsBucket = "pipeline.runs"
	// SeenBucket maps the id of an accepted event to when it arrived and
	// its answer (retrain service).
	SeenBucket = "pipeline.seen"
)

// GatewayState is what a gateway kept in its infergate.db. Records are
// copies of the stored bytes, not decoded: the gateway owns their types.
// It is plain data.
type GatewayState struct {
	// Routes maps a model to its stored routing record, the JSON of the
	// gateway's routeRecord (file and base router.Config, admin, canary);
	// a record of an early version holds intervals in nanoseconds.
	Routes map[string]json.RawMessage
	// Drift holds the stored drift state of each monitored version, in
	// key order.
	Drift []DriftState
	// Outbox holds the events not yet delivered to every target, and
	// their deliveries.
	Outbox Outbox
}

// DriftState is the stored drift monitoring state of one model version.
// It is plain data.
type DriftState struct {
	Model   string
	Version string
	// State is the JSON of a drift.State.
	State json.RawMessage
}

// Outbox is what an outbox kept: events, and the deliveries of each to
// its targets, pending or dead-lettered. It is plain data.
type Outbox struct {
	// Events maps an event id to the event as it is sent: a CloudEvent
	// in structured JSON mode.
	Events map[string]json.RawMessage
	// Sequence is the last emit sequence number handed out.
	Sequence uint64
	// Deliveries are in emit order (Seq), then by target name; each one's
	// event is in Events.
	Deliveries []Delivery
}

// Delivery is the stored state of one delivery of one event to one
// webhook target. It is plain data.
type Delivery struct {
	EventID string
	Target  string
	// Seq is the event's emit order, from 1.
	Seq     uint64
	Type    string
	Subject string
	// Dead is set once the target's last attempt failed, at DeadAt.
	Dead     bool
	Attempts int
	// Due is when the next attempt is due (pending deliveries).
	Due       time.Time
	LastError string
	DeadAt    time.Time
}

// deliveryRecord is a Delivery as the outbox stored it.
type deliveryRecord struct {
	Seq       uint64    `json:"seq"`
	Type      string    `json:"type"`
	Subject   string    `json:"subject"`
	Dead      bool      `json:"dead"`
	Attempts  int       `json:"attempts"`
	Due       time.Time `json:"due"`
	LastError string    `json:"last_error"`
	DeadAt    time.Time `json:"dead_at"`
}

// RetrainState is what a retrain service kept in its retrain.db. Records
// are copies of the stored bytes, not decoded: the pipeline owns their
// types. It is plain data.
type RetrainState struct {
	// Runs are the stored runs, oldest (lowest id) first.
	Runs []Run
	// RunSequence is the last run id handed out; runs pruned since may
	// have held ids above the highest in Runs, so a new store continues
	// after RunSequence.
	RunSequence uint64
	// Seen maps the id of an accepted drift event to what the service
	// kept of it: the JSON of {"at": time, "answer": text}, or, from
	// versions before answers were kept, the arrival time alone in RFC
	// 3339 text.
	Seen map[string][]byte
	// Outbox holds the outcome events not yet delivered to every target.
	Outbox Outbox
}

// Run is one stored run of the retrain pipeline. It is plain data.
type Run struct {
	ID uint64
	// Record is the JSON of a pipeline.Run.
	Record json.RawMessage
}

// ReadGateway reads the gateway state that the bbolt file at path holds
// (see Open for its errors). A bucket the file lacks is read as empty. A
// drift key that is not <model>/<version>, an event that is not JSON, a
// delivery record that cannot be decoded or whose event is missing is
// damage; routing records and drift states are not decoded here.
func ReadGateway(path string) (*GatewayState, error) {
	f, err := Open(path)
	if err != nil {
		return nil, err
	}
	return f.gateway()
}

// gateway decodes the gateway state of f.
func (f *File) gateway() (*GatewayState, error) {
	st := &GatewayState{Routes: map[string]json.RawMessage{}, Drift: []DriftState{}}
	f.ForEach(RoutesBucket, func(k, v []byte) error {
		st.Routes[string(k)] = clone(v)
		return nil
	})
	err := f.ForEach(DriftBucket, func(k, v []byte) error {
		model, version, ok := cutLast(string(k), "/")
		if !ok || model == "" || version == "" || v == nil {
			return f.damaged("bucket %q holds %s, not a <model>/<version> key with a drift state", DriftBucket, quoteKey(k))
		}
		st.Drift = append(st.Drift, DriftState{Model: model, Version: version, State: clone(v)})
		return nil
	})
	if err != nil {
		return nil, err
	}
	if st.Outbox, err = f.outbox(); err != nil {
		return nil, err
	}
	return st, nil
}

// ReadRetrain reads the retrain service's state that the bbolt file at
// path holds (see Open for its errors). A bucket the file lacks is read
// as empty. A run key that is not an id is damage, and so is an outbox
// record as ReadGateway says; runs and seen events are not decoded here.
func ReadRetrain(path string) (*RetrainState, error) {
	f, err := Open(path)
	if err != nil {
		return nil, err
	}
	return f.retrain()
}

// retrain decodes the retrain service's state of f.
func (f *File) retrain() (*RetrainState, error) {
	st := &RetrainState{Runs: []Run{}, RunSequence: f.Sequence(RunsBucket), Seen: map[string][]byte{}}
	err := f.ForEach(RunsBucket, func(k, v []byte) error {
		if len(k) != 8 || binary.BigEndian.Uint64(k) == 0 || v == nil {
			return f.damaged("bucket %q holds %s, not a run id with a run", RunsBucket, quoteKey(k))
		}
		st.Runs = append(st.Runs, Run{ID: binary.BigEndian.Uint64(k), Record: clone(v)})
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = f.ForEach(SeenBucket, func(k, v []byte) error {
		if v == nil {
			return f.damaged("bucket %q holds a nested bucket %s", SeenBucket, quoteKey(k))
		}
		st.Seen[string(k)] = clone(v)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if st.Outbox, err = f.outbox(); err != nil {
		return nil, err
	}
	return st, nil
}

// outbox reads the outbox buckets of f.
func (f *File) outbox() (Outbox, error) {
	ob := Outbox{Events: map[string]json.RawMessage{}, Sequence: f.Sequence(EventsBucket), Deliveries: []Delivery{}}
	err := f.ForEach(EventsBucket, func(k, v []byte) error {
		if v == nil || !json.Valid(v) {
			return f.damaged("bucket %q: event %s is not JSON", EventsBucket, quoteKey(k))
		}
		ob.Events[string(k)] = clone(v)
		return nil
	})
	if err != nil {
		return Outbox{}, err
	}
	err = f.ForEach(DeliveriesBucket, func(k, v []byte) error {
		id, target, ok := bytes.Cut(k, []byte{0})
		if !ok || len(id) == 0 || len(target) == 0 || v == nil {
			return f.damaged("bucket %q holds %s, not an <event id>\\x00<target> key with a delivery record", DeliveriesBucket, quoteKey(k))
		}
		var rec deliveryRecord
		if err := json.Unmarshal(v, &rec); err != nil {
			return f.damaged("bucket %q: the delivery record of %s cannot be decoded: %v", DeliveriesBucket, quoteKey(k), err)
		}
		if _, ok := ob.Events[string(id)]; !ok {
			return f.damaged("bucket %q holds the delivery %s, but bucket %q lacks its event", DeliveriesBucket, quoteKey(k), EventsBucket)
		}
		ob.Deliveries = append(ob.Deliveries, Delivery{
			EventID: string(id), Target: string(target),
			Seq: rec.Seq, Type: rec.Type, Subject: rec.Subject, Dead: rec.Dead, Attempts: rec.Attempts,
			Due: rec.Due, LastError: rec.LastError, DeadAt: rec.DeadAt,
		})
		return nil
	})
	if err != nil {
		return Outbox{}, err
	}
	slices.SortFunc(ob.Deliveries, func(a, b Delivery) int {
		return cmp.Or(cmp.Compare(a.Seq, b.Seq), strings.Compare(a.Target, b.Target), strings.Compare(a.EventID, b.EventID))
	})
	return ob, nil
}

// damaged returns the damage error of f's file.
func (f *File) damaged(format string, args ...any) error {
	return damaged(f.path, fmt.Sprintf(format, args...))
}

// cutLast slices s around the last sep.
func cutLast(s, sep string) (before, after string, found bool) {
	if i := strings.LastIndex(s, sep); i >= 0 {
		return s[:i], s[i+len(sep):], true
	}
	return s, "", false
}

// clone copies b, so that what a File returns does not keep the whole
// file in memory.
func clone(b []byte) []byte { return append([]byte{}, b...) }
