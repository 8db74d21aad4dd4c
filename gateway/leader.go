package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/infergate/infergate/retrain/engine"
)

// leaseRenewedAt is the Unix time in nanoseconds of this process's last
// write of the leader key, 0 before the first, or leadsAlone for a gateway
// alone and stateless, which leads without a lease.
var leaseRenewedAt atomic.Int64

// leadsAlone marks leaseRenewedAt of a gateway without a lease: its
// infergate_cluster_lease_renewed_timestamp_seconds is always now.
const leadsAlone = -1

// The renewal gauge exports leaseRenewedAt, so that an alert can tell a
// leader whose lease is no longer renewed (a paused or cut-off process)
// from one that merely leads.
var _ = metrics.NewGauge(`infergate_cluster_lease_renewed_timestamp_seconds`, func() float64 {
	at := leaseRenewedAt.Load()
	if at == leadsAlone {
		at = time.Now().UnixNano()
	}
	return float64(at) / 1e9
})

// lease is a replica's side of the fleet's leadership: a key of the control
// bucket that expires unless its holder renews it. Only the holder runs
// canary analysis, judges fleet drift and delivers webhooks, and each of
// its writes is fenced (store.putFenced). The control plane's lock guards
// everything but until, which the outbox reads from its own goroutines.
type lease struct {
	store   *store
	replica string
	ttl     time.Duration

	// rev is the revision of the leader key this replica wrote last, 0
	// while it does not lead.
	rev uint64
	// until is when the lease runs out by this process's clock (a
	// monotonic reading, so that a process paused past it knows).
	until atomic.Pointer[time.Time]
	// leader is who leads as the watch last said ("" for nobody), since
	// when, and at which revision of the leader key.
	leader    string
	leaderRev uint64
	// renewed is when this replica last wrote the key.
	renewed time.Time
	// seen tells the log who leads.
	seen *leaderSeen
}

// leaseRecord is the leader key's value.
type leaseRecord struct {
	Replica string    `json:"replica"`
	Since   time.Time `json:"since"`
}

// holds reports whether this replica holds the lease at now.
func (l *lease) holds(now time.Time) bool {
	if l == nil {
		return true // a gateway alone and stateless leads itself
	}
	until := l.until.Load()
	return until != nil && now.Before(*until)
}

// tick acquires or renews the lease as due at now and reports whether this
// replica leads after it. A renewal is due after a third of the TTL; an
// acquisition is tried while nobody, or this replica's former life, holds
// the key.
func (l *lease) tick(now, since time.Time, lastSeq *uint64) bool {
	leading := l.holds(now)
	switch {
	case leading && now.Sub(l.renewed) < l.ttl/3:
	case leading:
		l.write(now, since, l.rev, lastSeq)
	case l.leader == l.replica && l.leaderRev != 0:
		// The key says this replica leads: a restart within the TTL takes
		// its lease back at once.
		l.write(now, since, l.leaderRev, lastSeq)
	case l.leader == "":
		l.write(now, since, 0, lastSeq)
	}
	return l.holds(now)
}

// write writes the leader key with the TTL: created when rev is 0 (the key
// is absent or expired), else only while the key is at rev. It sets the
// lease's end on success and drops the lease when another replica's write
// came first. A write the engine stored right after *lastSeq advances it:
// nothing came between, so the replica has seen all up to it.
func (l *lease) write(now, since time.Time, rev uint64, lastSeq *uint64) {
	data, _ := json.Marshal(leaseRecord{Replica: l.replica, Since: since})
	ctx, cancel := context.WithTimeout(context.Background(), min(storeTimeout, l.ttl/2))
	defer cancel()
	var seq uint64
	var err error
	if rev == 0 {
		seq, err = l.store.kv.Create(ctx, leaderKey, data, jetstream.KeyTTL(l.ttl))
	} else {
		msg := &nats.Msg{Subject: "$KV." + controlBucket + "." + leaderKey, Data: data}
		var ack *jetstream.PubAck
		if ack, err = l.store.js.PublishMsg(ctx, msg, jetstream.WithExpectLastSequencePerSubject(rev), jetstream.WithMsgTTL(l.ttl)); err == nil {
			seq = ack.Sequence
		}
	}
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) || engine.IsWrongSequence(err) {
			l.drop()
		}
		return // a lease not renewed runs out on its own
	}
	if seq == *lastSeq+1 {
		*lastSeq = seq
	}
	until := now.Add(l.ttl)
	l.rev, l.renewed = seq, now
	l.until.Store(&until)
	leaseRenewedAt.Store(time.Now().UnixNano()) // wall time, whatever clock the control plane has
}

// drop gives the lease up at once.
func (l *lease) drop() {
	l.rev = 0
	l.until.Store(nil)
}

// watched records what the watch says of the leader key: its holder and
// revision, or "" when the key is gone.
func (l *lease) watched(entry jetstream.KeyValueEntry) {
	if entry.Operation() != jetstream.KeyValuePut {
		l.leader, l.leaderRev = "", entry.Revision()
		l.seen.set("")
		return
	}
	var rec leaseRecord
	if json.Unmarshal(entry.Value(), &rec) != nil {
		rec.Replica = "?"
	}
	l.leader, l.leaderRev = rec.Replica, entry.Revision()
	l.seen.set(rec.Replica)
	if rec.Replica != l.replica && l.rev != 0 {
		l.drop() // another replica wrote the key: it leads
	}
}

// release gives the lease back at a clean shutdown, so that another
// replica leads at once rather than after the TTL. It needs the control
// plane's lock.
func (l *lease) release(now time.Time) {
	if l == nil || !l.holds(now) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), min(storeTimeout, l.ttl/2))
	defer cancel()
	l.store.kv.Delete(ctx, leaderKey, jetstream.LastRevision(l.rev))
	l.drop()
}

// leaderSeen is who leads as this replica last saw it, for every log line:
// a handler that adds it as the attribute leader ("" while nobody leads).
// It is safe for concurrent use.
type leaderSeen struct {
	slog.Handler
	name *atomic.Pointer[string]
}

// newLeaderSeen wraps h.
func newLeaderSeen(h slog.Handler) *leaderSeen {
	return &leaderSeen{Handler: h, name: new(atomic.Pointer[string])}
}

func (l *leaderSeen) set(name string) {
	if l != nil {
		l.name.Store(&name)
	}
}

// Handle adds the leader to r.
func (l *leaderSeen) Handle(ctx context.Context, r slog.Record) error {
	name := ""
	if p := l.name.Load(); p != nil {
		name = *p
	}
	r.AddAttrs(slog.String("leader", name))
	return l.Handler.Handle(ctx, r)
}

// WithAttrs and WithGroup keep adding the leader.
func (l *leaderSeen) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &leaderSeen{Handler: l.Handler.WithAttrs(attrs), name: l.name}
}

func (l *leaderSeen) WithGroup(name string) slog.Handler {
	return &leaderSeen{Handler: l.Handler.WithGroup(name), name: l.name}
}
