package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/infergate/infergate/retrain/engine"
	"github.com/infergate/infergate/retrain/outbox"
	"github.com/infergate/infergate/router"
)

// controlBucket is the engine's KV bucket of the control plane: the
// leadership lease, each model's routing and each version's drift state.
const controlBucket = "infergate_control"

// The keys of controlBucket: leaderKey, routingPrefix+<model key> and
// driftPrefix+<model key>.<version>.
const (
	leaderKey     = "leader"
	routingPrefix = "routing."
	driftPrefix   = "drift."
)

// storeTimeout bounds one write or read of the engine.
const storeTimeout = 5 * time.Second

// errFenced is returned for a fenced write that the engine refused: the
// control state changed since this replica last saw it, or another
// replica leads now.
var errFenced = errors.New("the control state changed meanwhile (another replica wrote, or leads now)")

// errConflict is returned for a write by revision that lost to another.
var errConflict = errors.New("the routing was changed meanwhile by another replica; read it again and retry")

// store keeps the control plane's state in the engine's KV bucket. A nil
// store keeps nothing: a gateway without state_dir or cluster is
// stateless. It is safe for concurrent use.
type store struct {
	js jetstream.JetStream
	kv jetstream.KeyValue
}

// routeRecord is a model's stored routing, with the config file's section
// as it was then, so that a later change of the file can win over it, and
// the events of the change that wrote it, so that whoever leads next can
// emit them again should the writer have died before it did (receivers
// deduplicate by event id).
type routeRecord struct {
	File   router.Config  `json:"file"`
	Base   router.Config  `json:"base"`
	Admin  bool           `json:"admin"`
	Canary *router.Canary `json:"canary,omitempty"`
	written
}

// written is what every record of the control bucket says of the write
// that made it: the events of its change not yet in the outbox, the
// replica that wrote it and the leader then.
type written struct {
	Events  []outbox.Event `json:"events,omitempty"`
	Replica string         `json:"replica,omitempty"`
	Leader  string         `json:"leader,omitempty"`
}

// forget drops the events ids from w and says who writes it now; it
// reports false when w holds none of them.
func (w *written) forget(ids []string, replica, leader string) bool {
	kept := slices.DeleteFunc(slices.Clone(w.Events), func(e outbox.Event) bool { return slices.Contains(ids, e.ID) })
	if len(kept) == len(w.Events) {
		return false
	}
	w.Events, w.Replica, w.Leader = kept, replica, leader
	return true
}

// sameRouting reports whether r and o route alike, whoever wrote them.
func (r *routeRecord) sameRouting(o *routeRecord) bool {
	a, _ := json.Marshal(routeRecord{File: r.File, Base: r.Base, Admin: r.Admin, Canary: r.Canary})
	b, _ := json.Marshal(routeRecord{File: o.File, Base: o.Base, Admin: o.Admin, Canary: o.Canary})
	return string(a) == string(b)
}

// openStore creates (or opens) the control bucket on conn; a nil conn
// gives the nil store.
func openStore(conn *engine.Conn) (*store, error) {
	if conn == nil {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	kv, err := engine.KeyValue(ctx, conn.JS, jetstream.KeyValueConfig{
		Bucket:      controlBucket,
		Description: "infergate's control plane: leadership, routing, drift state",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    conn.Replicas,
		// Keys with a TTL (the lease) leave a marker when they expire, so
		// that every replica's watch sees the leader go.
		LimitMarkerTTL: time.Minute,
	})
	if err != nil {
		return nil, fmt.Errorf("cannot open the control bucket %s at %s (the lease needs nats-server 2.11 or newer): %w", controlBucket, conn.URL, err)
	}
	return &store{js: conn.JS, kv: kv}, nil
}

func routingKey(model string) string { return routingPrefix + engine.Token(model) }

func driftStateKey(model, version string) string {
	return driftPrefix + engine.Token(model) + "." + version
}

// decodeRoutes decodes the stored routing of model held at key; an error
// names the key and what to do.
func decodeRoutes(model string, data []byte) (*routeRecord, error) {
	rec := new(routeRecord)
	if err := json.Unmarshal(data, rec); err != nil {
		return nil, fmt.Errorf("cannot read the stored routing of model %q (key %s of bucket %s): %w; delete the key to start from the config file's routing (losing admin changes and canaries)",
			model, routingKey(model), controlBucket, err)
	}
	return rec, nil
}

// put writes value at key by revision: created when rev is 0, else only
// while the key is still at rev (errConflict otherwise). It returns the
// new revision.
func (s *store) put(key string, value []byte, rev uint64) (uint64, error) {
	if err := s.reachable(); err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	var err error
	var next uint64
	if rev == 0 {
		next, err = s.kv.Create(ctx, key, value)
	} else {
		next, err = s.kv.Update(ctx, key, value, rev)
	}
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return 0, errConflict
	}
	return next, err
}

// putFenced writes value at key only while the bucket's newest revision
// is still last: nothing was written since this replica saw it, its lease
// included, so that a leader that lost its lease (paused past it, say)
// writes nothing. It returns the new revision.
func (s *store) putFenced(key string, value []byte, last uint64) (uint64, error) {
	if err := s.reachable(); err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	msg := &nats.Msg{Subject: "$KV." + controlBucket + "." + key, Data: value}
	ack, err := s.js.PublishMsg(ctx, msg, jetstream.WithExpectLastSequence(last))
	if err != nil {
		if engine.IsWrongSequence(err) {
			return 0, errFenced
		}
		return 0, err
	}
	return ack.Sequence, nil
}

// errUnreachable is returned for a write while the connection to the
// engine is down: it fails at once rather than when its timeout runs out.
var errUnreachable = errors.New("the engine is unreachable (reconnecting)")

// reachable returns errUnreachable while the connection is down.
func (s *store) reachable() error {
	if !s.js.Conn().IsConnected() {
		return errUnreachable
	}
	return nil
}

// watch starts a watch of the whole bucket and returns it with the
// bucket's current entries, read until the watch says it has sent them
// all, within timeout. A watch made after the timeout (nats.go may take its
// own 5 s to give up) is stopped as soon as it exists.
func (s *store) watch(timeout time.Duration) (jetstream.KeyWatcher, []jetstream.KeyValueEntry, error) {
	type made struct {
		w   jetstream.KeyWatcher
		err error
	}
	ch := make(chan made, 1)
	go func() {
		w, err := s.kv.WatchAll(context.Background())
		ch <- made{w, err}
	}()
	expired := time.NewTimer(timeout)
	defer expired.Stop()
	var w jetstream.KeyWatcher
	select {
	case m := <-ch:
		if m.err != nil {
			return nil, nil, fmt.Errorf("cannot watch the control bucket %s: %w", controlBucket, m.err)
		}
		w = m.w
	case <-expired.C:
		go func() {
			if m := <-ch; m.w != nil {
				m.w.Stop()
			}
		}()
		return nil, nil, fmt.Errorf("cannot watch the control bucket %s: %w: no answer within %s", controlBucket, engine.ErrNoAnswer, timeout)
	}
	var entries []jetstream.KeyValueEntry
	for {
		select {
		case e := <-w.Updates():
			if e == nil {
				return w, entries, nil
			}
			entries = append(entries, e)
		case <-expired.C:
			w.Stop()
			return nil, nil, fmt.Errorf("cannot read the control bucket %s: %w: no answer within %s", controlBucket, engine.ErrNoAnswer, timeout)
		}
	}
}
