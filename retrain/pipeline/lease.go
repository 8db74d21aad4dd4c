package pipeline

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/infergate/infergate/retrain/engine"
)

// LeaseBucket holds, per model, the lease of the process that runs the
// model's runs (key "<model>.lease", written with a TTL) and the model's
// queue (key "<model>.queue": its queued run and its running one). The
// model's name is in the keys as engine.Token writes it.
const LeaseBucket = "infergate_retrain_leases"

// DefaultLeaseTTL is Options.LeaseTTL's default: how long a model's lease
// lasts without a renewal, the longest a run that a dead process left
// waits before another process takes it up.
const DefaultLeaseTTL = 10 * time.Second

// errLeaseLost is the cause of a run stopped because its process no
// longer holds its model's lease.
var errLeaseLost = errors.New("this process lost the model's lease: another process may run the model now")

// leaseRecord is a lease key's value; it tells an operator who holds the
// lease (`nats kv get infergate_retrain_leases demo.lease`).
type leaseRecord struct {
	Holder string    `json:"holder"`
	Since  time.Time `json:"since"`
}

// holderID returns this process's name as a lease holder: its host name,
// its pid and a random part, so that a restarted process (which may get
// the same pid in a container) is another holder.
func holderID() string {
	host, _ := os.Hostname()
	var b [4]byte
	rand.Read(b[:])
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}

// openLeases creates (or opens) LeaseBucket on conn's JetStream. Keys with
// a TTL leave a marker when they expire, so that a watch sees them go.
func openLeases(js jetstream.JetStream, replicas int) (jetstream.KeyValue, error) {
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	kv, err := engine.KeyValue(ctx, js, jetstream.KeyValueConfig{Bucket: LeaseBucket,
		Description: "infergate retrain: per model, the lease of the process running its runs, and its queue",
		History:     1, Storage: jetstream.FileStorage, Replicas: replicas, LimitMarkerTTL: time.Minute})
	if err != nil {
		return nil, fmt.Errorf("cannot create the bucket %s (model leases need nats-server 2.11 or newer): %w", LeaseBucket, err)
	}
	return kv, nil
}

// lease is this process's side of one model's lease: a key of LeaseBucket
// that expires unless its holder renews it. Its process runs the model's
// runs only while it holds it. acquire and release are called by one
// goroutine at a time (the model's worker, or Open before it starts);
// holds and context are safe for concurrent use.
type lease struct {
	kv      jetstream.KeyValue
	js      jetstream.JetStream
	key     string
	subject string // the key's subject, for renewals with a TTL
	holder  string
	ttl     time.Duration
	log     *slog.Logger

	mu sync.Mutex
	// rev is the revision of the key this process wrote last, 0 while it
	// does not hold the lease.
	rev uint64 // guarded by mu
	// until is when the lease runs out by this process's clock (a
	// monotonic reading, so that a process paused past it knows), a tenth
	// of the TTL before the engine lets the key expire at the soonest.
	until time.Time // guarded by mu
	// ctx is cancelled, with errLeaseLost as its cause, when the lease is
	// lost or released.
	ctx    context.Context         // guarded by mu
	cancel context.CancelCauseFunc // guarded by mu
	expiry *time.Timer             // guarded by mu: fires at until
	stop   chan struct{}           // closed by release: the keeper stops
	kept   sync.WaitGroup          // the keeper
}

// newLease returns model's lease on kv, not held.
func newLease(kv jetstream.KeyValue, js jetstream.JetStream, model, holder string, ttl time.Duration, log *slog.Logger) *lease {
	key := engine.Token(model) + ".lease"
	return &lease{kv: kv, js: js, key: key, subject: "$KV." + LeaseBucket + "." + key, holder: holder, ttl: ttl, log: log.With("lease", key)}
}

// acquire takes the lease unless another process holds it, and keeps it
// (renewed every third of the TTL) until release or until it is lost. ok
// is false when another holds it; the lease's context derives from parent.
// A lease this process holds already is kept as it is.
func (l *lease) acquire(parent context.Context) (ok bool, err error) {
	if l.holds() {
		return true, nil
	}
	l.release() // one lost, or running out: its keeper stops
	start := time.Now()
	data, _ := json.Marshal(leaseRecord{Holder: l.holder, Since: start.UTC()})
	ctx, cancel := context.WithTimeout(context.Background(), min(storeTimeout, l.ttl/2))
	defer cancel()
	rev, err := l.kv.Create(ctx, l.key, data, jetstream.KeyTTL(l.ttl))
	if errors.Is(err, jetstream.ErrKeyExists) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("cannot take the lease %s: %w", l.key, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.rev, l.until = rev, start.Add(l.ttl-l.ttl/10)
	l.ctx, l.cancel = context.WithCancelCause(parent)
	l.expiry = time.AfterFunc(time.Until(l.until), l.expire)
	l.stop = make(chan struct{})
	l.kept.Add(1)
	go l.keep(l.stop, data)
	return true, nil
}

// keep renews the lease every third of the TTL until stop is closed.
func (l *lease) keep(stop <-chan struct{}, data []byte) {
	defer l.kept.Done()
	t := time.NewTicker(l.ttl / 3)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		err := l.renew(data)
		switch {
		case err != nil && !failing:
			l.log.Warn("cannot renew the model's lease; runs stop if it runs out", "error", err)
		case err == nil && failing:
			l.log.Info("renewed the model's lease again")
		}
		failing = err != nil
	}
}

// renew writes the key again with the TTL, only while it is at the
// revision this process wrote last. A write refused for another revision
// reads the key: one that still names this holder is a renewal the engine
// applied after its client gave up waiting (so this process never learnt
// its revision), whose revision is adopted and renewed at once; one that
// names another holder, or is gone, means another process took the
// lease: it is lost at once.
func (l *lease) renew(data []byte) error {
	l.mu.Lock()
	held := l.rev
	l.mu.Unlock()
	if held == 0 {
		return nil // lost: the worker releases it
	}
	ctx, cancel := context.WithTimeout(context.Background(), min(storeTimeout, l.ttl/2))
	defer cancel()
	rev := held
	for adopted := 0; ; adopted++ {
		start := time.Now()
		ack, err := l.js.PublishMsg(ctx, &nats.Msg{Subject: l.subject, Data: data},
			jetstream.WithExpectLastSequencePerSubject(rev), jetstream.WithMsgTTL(l.ttl))
		if err == nil {
			l.mu.Lock()
			defer l.mu.Unlock()
			if l.rev != held {
				// Lost or released meanwhile: the key this write made
				// would keep everyone, this process too, from the lease
				// for a TTL.
				l.kv.Delete(ctx, l.key, jetstream.LastRevision(ack.Sequence))
				return nil
			}
			l.rev, l.until = ack.Sequence, start.Add(l.ttl-l.ttl/10)
			l.expiry.Reset(time.Until(l.until))
			return nil
		}
		if !engine.IsWrongSequence(err) {
			return err
		}
		current, mine, err := l.read(ctx)
		if err != nil {
			return fmt.Errorf("cannot read the lease key %s after a renewal refused for its revision: %w", l.key, err)
		}
		if !mine {
			l.mu.Lock()
			defer l.mu.Unlock()
			if l.rev == held {
				l.loseLocked("another process wrote the lease key")
			}
			return nil
		}
		if adopted == 2 {
			return fmt.Errorf("cannot renew the lease %s: its key keeps changing under this holder's name", l.key)
		}
		l.log.Info("the lease key is at a revision this process wrote without learning it (a renewal that timed out here but was applied); renewing from it", "revision", current, "expected", rev)
		rev = current
	}
}

// read returns the lease key's revision and whether it names this holder;
// a key gone (deleted or expired) names nobody.
func (l *lease) read(ctx context.Context) (rev uint64, mine bool, err error) {
	e, err := l.kv.Get(ctx, l.key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	var rec leaseRecord
	if e.Operation() != jetstream.KeyValuePut || json.Unmarshal(e.Value(), &rec) != nil {
		return e.Revision(), false, nil
	}
	return e.Revision(), rec.Holder == l.holder, nil
}

// expire drops the lease once until has passed without a renewal.
func (l *lease) expire() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.rev != 0 && !time.Now().Before(l.until) {
		l.loseLocked("not renewed within its TTL")
	}
}

// loseLocked drops the lease and cancels its context. It needs l.mu.
func (l *lease) loseLocked(why string) {
	l.log.Warn("lost the model's lease: its run stops", "reason", why, "ttl", l.ttl)
	l.rev = 0
	l.cancel(errLeaseLost)
	l.expiry.Stop()
}

// holds reports whether this process holds the lease now.
func (l *lease) holds() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rev != 0 && time.Now().Before(l.until)
}

// context returns the context of the lease as held now: cancelled when
// it is lost (cause errLeaseLost) or released. It needs the lease held.
func (l *lease) context() context.Context {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ctx == nil {
		panic("BUG: the context of a lease never held")
	}
	return l.ctx
}

// release stops renewing the lease and, while it is held, deletes the key
// at the revision this process wrote last, so that another process may
// take it at once rather than after the TTL. It is a no-op for a lease
// never taken.
func (l *lease) release() {
	l.mu.Lock()
	stop := l.stop
	l.stop = nil
	l.mu.Unlock()
	if stop == nil {
		return
	}
	close(stop)
	l.kept.Wait()
	l.mu.Lock()
	rev := l.rev
	l.rev = 0
	l.cancel(context.Canceled)
	l.expiry.Stop()
	l.mu.Unlock()
	if rev == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), min(storeTimeout, l.ttl/2))
	defer cancel()
	if err := l.kv.Delete(ctx, l.key, jetstream.LastRevision(rev)); err != nil {
		l.log.Warn("cannot give the model's lease back: it runs out on its own", "error", err, "ttl", l.ttl)
	}
}
