package outbox

import (
	"bytes"
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"go.etcd.io/bbolt"
)

// Errors of an Outbox.
var (
	ErrClosed   = errors.New("outbox: closed")
	ErrFull     = errors.New("outbox: too many pending deliveries; check that the webhook targets are reachable")
	ErrNotFound = errors.New("outbox: no such delivery")
	ErrNotDead  = errors.New("outbox: delivery is not dead-lettered")
)

// The buckets of the outbox in the caller's bbolt file. Events are keyed by
// id and hold the CloudEvent as sent; deliveries are keyed by
// "<event id>\x00<target name>" and hold a record.
var (
	eventsBucket     = []byte("outbox.events")
	deliveriesBucket = []byte("outbox.deliveries")
)

// record is the stored state of one delivery of one event to one target.
type record struct {
	Seq       uint64    `json:"seq"` // the event's emit order
	Type      string    `json:"type"`
	Subject   string    `json:"subject,omitempty"`
	Dead      bool      `json:"dead,omitempty"`
	Attempts  int       `json:"attempts"`
	Due       time.Time `json:"due"`
	LastError string    `json:"last_error,omitempty"`
	DeadAt    time.Time `json:"dead_at,omitzero"`
}

// DeadLetter is a delivery that failed its target's last attempt.
type DeadLetter struct {
	EventID   string    `json:"event_id"`
	EventType string    `json:"event_type"`
	Subject   string    `json:"subject,omitempty"`
	Target    string    `json:"target"`
	Attempts  int       `json:"attempts"`
	LastError string    `json:"last_error"`
	DeadAt    time.Time `json:"dead_at"`
}

// Options are what an Outbox is opened with. Only DB is required.
type Options struct {
	// DB holds the outbox's buckets. The caller opens and closes it, after
	// Close.
	DB *bbolt.DB
	// Targets are the webhook receivers; Open validates them.
	Targets []Target
	// Log gets one line per dead letter and redrive (default: discarded).
	Log *slog.Logger
	// Metrics gets the outbox's series, removed again by Close (default: a
	// private set). Only one open Outbox may use a set.
	Metrics *metrics.Set
	// Client sends the deliveries (default: a client of its own that does
	// not follow redirects); each attempt is bounded by its target's Timeout.
	Client *http.Client
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Rand draws the backoff jitter (default: math/rand/v2's global source).
	Rand *rand.Rand
	// Concurrency bounds the deliveries in flight (default 4).
	Concurrency int
	// MaxPending bounds the undelivered, not dead-lettered deliveries; Emit
	// returns ErrFull beyond it (default 10000).
	MaxPending int
}

// Outbox keeps events in bbolt and delivers them to their targets. It is
// safe for concurrent use; see the package documentation. Close it before
// its DB.
type Outbox struct {
	db        *bbolt.DB
	targets   map[string]*target // immutable after Open
	order     []*target          // Options.Targets order
	log       *slog.Logger
	client    *http.Client
	ownClient bool
	now       func() time.Time
	rand      *rand.Rand // guarded by mu
	max       int

	ctx    context.Context // canceled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // the scheduler and the deliveries
	wake   chan struct{}  // 1-buffered; merged triggers of the scheduler
	slots  chan struct{}  // a token per delivery in flight

	closeMu sync.RWMutex // held for reading by the public methods, so Close waits for them
	closed  bool         // guarded by closeMu

	mu      sync.Mutex
	queue   schedule // guarded by mu: pending deliveries not in flight
	pending int      // guarded by mu: pending deliveries, queued or in flight
	dead    int      // guarded by mu: dead letters

	metricsSet   *metrics.Set
	metricsNames []string
}

// target is a Target with its defaults, secrets and series.
type target struct {
	Target
	secret []byte
	token  string

	delivered      *metrics.Counter
	failedAttempts *metrics.Counter
	deadLettered   *metrics.Counter
}

// item is a pending delivery in the schedule.
type item struct {
	key    string
	target *target
	seq    uint64
	due    time.Time
}

// schedule is a min-heap of items by due time, then emit order.
type schedule []*item

func (s schedule) Len() int { return len(s) }
func (s schedule) Less(i, j int) bool {
	if !s[i].due.Equal(s[j].due) {
		return s[i].due.Before(s[j].due)
	}
	return s[i].seq < s[j].seq
}
func (s schedule) Swap(i, j int) { s[i], s[j] = s[j], s[i] }
func (s *schedule) Push(x any)   { *s = append(*s, x.(*item)) }
func (s *schedule) Pop() any {
	old := *s
	it := old[len(old)-1]
	old[len(old)-1] = nil
	*s = old[:len(old)-1]
	return it
}

func deliveryKey(eventID, targetName string) string { return eventID + "\x00" + targetName }

// Open creates the outbox's buckets in o.DB if needed, reads the targets'
// secrets from the environment, schedules every pending delivery in the DB
// and starts delivering. Deliveries to a target that is no longer configured
// are dead-lettered. Close stops it.
func Open(o Options) (*Outbox, error) {
	if o.DB == nil {
		return nil, errors.New("cannot open outbox: no bbolt DB")
	}
	if err := ValidateTargets("webhooks", o.Targets); err != nil {
		return nil, fmt.Errorf("cannot open outbox: %w", err)
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	ob := &Outbox{
		db: o.DB, targets: make(map[string]*target), log: o.Log, client: o.Client, now: o.Now,
		rand: o.Rand, max: cmpOr(o.MaxPending, 10000), wake: make(chan struct{}, 1),
		slots: make(chan struct{}, cmpOr(o.Concurrency, 4)), metricsSet: o.Metrics,
	}
	for _, t := range o.Targets {
		tg := &target{Target: t.WithDefaults()}
		var err error
		if tg.secret, err = fromEnv(t.SecretEnv); err != nil {
			return nil, fmt.Errorf("cannot open outbox: webhook target %q: secret_env: %w", t.Name, err)
		}
		token, err := fromEnv(t.TokenEnv)
		if err != nil {
			return nil, fmt.Errorf("cannot open outbox: webhook target %q: token_env: %w", t.Name, err)
		}
		tg.token = string(token)
		if tg.secret == nil {
			ob.log.Warn("webhook deliveries are unsigned: the target has no secret_env", "target", t.Name)
		}
		ob.targets[t.Name] = tg
		ob.order = append(ob.order, tg)
	}
	if ob.client == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		ob.client = &http.Client{
			Transport:     tr,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
		ob.ownClient = true
	}
	if err := ob.load(); err != nil {
		return nil, fmt.Errorf("cannot open outbox: %w", err)
	}
	ob.registerMetrics()
	ob.log.Info("webhook outbox opened", "targets", len(ob.order), "pending", ob.pending, "dead_letters", ob.dead)
	ob.ctx, ob.cancel = context.WithCancel(context.Background())
	ob.wg.Add(1)
	go ob.run()
	return ob, nil
}

// fromEnv returns the value of the environment variable name, nil when name
// is empty, and an error when the variable is unset or empty.
func fromEnv(name string) ([]byte, error) {
	if name == "" {
		return nil, nil
	}
	v := os.Getenv(name)
	if v == "" {
		return nil, fmt.Errorf("environment variable %s is not set", name)
	}
	return []byte(v), nil
}

func cmpOr(v, def int) int {
	if v <= 0 {
		return def
	}
	return v
}

// load creates the buckets, schedules the pending deliveries and
// dead-letters those whose target has gone.
func (ob *Outbox) load() error {
	now := ob.now()
	orphans := 0
	err := ob.db.Update(func(tx *bbolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(eventsBucket); err != nil {
			return err
		}
		d, err := tx.CreateBucketIfNotExists(deliveriesBucket)
		if err != nil {
			return err
		}
		updates := map[string][]byte{}
		err = d.ForEach(func(k, v []byte) error {
			var rec record
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("cannot decode delivery record %q: %w", k, err)
			}
			if rec.Dead {
				ob.dead++
				return nil
			}
			_, name, _ := strings.Cut(string(k), "\x00")
			t := ob.targets[name]
			if t == nil {
				rec.Dead, rec.DeadAt, rec.LastError = true, now, fmt.Sprintf("webhook target %q is no longer configured", name)
				b, _ := json.Marshal(rec)
				updates[string(k)] = b
				ob.dead++
				orphans++
				return nil
			}
			ob.queue = append(ob.queue, &item{key: string(k), target: t, seq: rec.Seq, due: rec.Due})
			ob.pending++
			return nil
		})
		if err != nil {
			return err
		}
		for k, v := range updates {
			if err := d.Put([]byte(k), v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("cannot load pending deliveries: %w", err)
	}
	heap.Init(&ob.queue)
	if orphans > 0 {
		ob.log.Error("webhook deliveries dead-lettered: their target is no longer configured", "deliveries", orphans)
	}
	return nil
}

func (ob *Outbox) registerMetrics() {
	if ob.metricsSet == nil {
		ob.metricsSet = metrics.NewSet()
	}
	set := ob.metricsSet
	name := func(n string) string { ob.metricsNames = append(ob.metricsNames, n); return n }
	for _, t := range ob.order {
		label := `{target="` + t.Name + `"}`
		t.delivered = set.NewCounter(name("infergate_webhook_deliveries_total" + label))
		t.failedAttempts = set.NewCounter(name("infergate_webhook_failed_attempts_total" + label))
		t.deadLettered = set.NewCounter(name("infergate_webhook_dead_lettered_total" + label))
	}
	locked := func(v *int) func() float64 {
		return func() float64 { ob.mu.Lock(); defer ob.mu.Unlock(); return float64(*v) }
	}
	set.NewGauge(name("infergate_webhook_pending"), locked(&ob.pending))
	set.NewGauge(name("infergate_webhook_dead_letters"), locked(&ob.dead))
}

// Close stops delivering, cancels the requests in flight (their deliveries
// stay pending, for the next Open) and waits for the outbox's goroutines.
// It removes the outbox's series from Options.Metrics. The DB stays open.
// Close is idempotent.
func (ob *Outbox) Close() error {
	ob.closeMu.Lock()
	if ob.closed {
		ob.closeMu.Unlock()
		return nil
	}
	ob.closed = true
	ob.closeMu.Unlock()
	ob.cancel()
	ob.wg.Wait()
	if ob.ownClient {
		ob.client.CloseIdleConnections()
	}
	for _, n := range ob.metricsNames {
		ob.metricsSet.UnregisterMetric(n)
	}
	return nil
}

// Emit stores e with one delivery per target that takes its type, in one
// bbolt transaction: when Emit returns nil, e survives a crash and will be
// delivered. An event that no target takes is not stored; one whose id is
// already in the outbox is not stored again. Emit returns an error wrapping
// ErrFull when Options.MaxPending deliveries are pending, and ErrClosed
// after Close.
func (ob *Outbox) Emit(e Event) error {
	return ob.EmitWith(nil, e)
}

// EmitWith stores events as Emit does and runs also, when not nil, in the
// same bbolt transaction of the outbox's DB: the caller's own writes and
// the events they cause are committed together or not at all, so that a
// crash can lose neither one without the other. An error of also aborts
// the transaction and is returned as it is.
func (ob *Outbox) EmitWith(also func(tx *bbolt.Tx) error, events ...Event) error {
	ob.closeMu.RLock()
	defer ob.closeMu.RUnlock()
	if ob.closed {
		return ErrClosed
	}
	type staged struct {
		e       Event
		body    []byte
		targets []*target
	}
	var all []staged
	want := 0
	for _, e := range events {
		if err := e.validate(); err != nil {
			return fmt.Errorf("cannot emit event %q: %w", e.ID, err)
		}
		body, err := e.MarshalJSON()
		if err != nil {
			return fmt.Errorf("cannot emit event %q: %w", e.ID, err)
		}
		st := staged{e: e, body: body}
		for _, t := range ob.order {
			if t.wants(e.Type) {
				st.targets = append(st.targets, t)
			}
		}
		want += len(st.targets)
		all = append(all, st)
	}
	if want == 0 && also == nil {
		return nil
	}
	ob.mu.Lock()
	if ob.pending+want > ob.max {
		ob.mu.Unlock()
		return fmt.Errorf("cannot emit %s: %w", describe(events), ErrFull)
	}
	ob.pending += want // reserved, so that concurrent Emits respect max
	ob.mu.Unlock()

	now := ob.now()
	var items []*item
	var alsoErr error
	err := ob.db.Update(func(tx *bbolt.Tx) error {
		items = items[:0]
		eventsB, deliveries := tx.Bucket(eventsBucket), tx.Bucket(deliveriesBucket)
		for _, st := range all {
			if len(st.targets) == 0 || eventsB.Get([]byte(st.e.ID)) != nil {
				continue
			}
			seq, err := eventsB.NextSequence()
			if err != nil {
				return err
			}
			if err := eventsB.Put([]byte(st.e.ID), st.body); err != nil {
				return err
			}
			rec, _ := json.Marshal(record{Seq: seq, Type: st.e.Type, Subject: st.e.Subject, Due: now})
			for _, t := range st.targets {
				key := deliveryKey(st.e.ID, t.Name)
				if err := deliveries.Put([]byte(key), rec); err != nil {
					return err
				}
				items = append(items, &item{key: key, target: t, seq: seq, due: now})
			}
		}
		if also != nil {
			alsoErr = also(tx)
			return alsoErr
		}
		return nil
	})
	if err != nil {
		items = nil
	}
	ob.mu.Lock()
	ob.pending -= want - len(items)
	for _, it := range items {
		heap.Push(&ob.queue, it)
	}
	ob.mu.Unlock()
	switch {
	case alsoErr != nil:
		return alsoErr
	case err != nil:
		return fmt.Errorf("cannot store %s: %w", describe(events), err)
	}
	ob.trigger()
	return nil
}

// describe names events in an error: the one event's id, or how many.
func describe(events []Event) string {
	if len(events) == 1 {
		return fmt.Sprintf("event %q", events[0].ID)
	}
	return fmt.Sprintf("%d events", len(events))
}

// trigger wakes the scheduler; triggers merge while it is busy.
func (ob *Outbox) trigger() {
	select {
	case ob.wake <- struct{}{}:
	default:
	}
}

// run is the scheduler: it starts the due deliveries while slots are free
// and sleeps until the next one is due or something changes.
func (ob *Outbox) run() {
	defer ob.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		timer.Stop()
		if wait, ok := ob.dispatch(); ok {
			timer.Reset(wait)
		}
		select {
		case <-ob.ctx.Done():
			return
		case <-ob.wake:
		case <-timer.C:
		}
	}
}

// dispatch starts the due deliveries that fit in the free slots and returns
// how long until the next one is due; ok is false when nothing is queued or
// every slot is taken (a finishing delivery triggers the scheduler).
func (ob *Outbox) dispatch() (wait time.Duration, ok bool) {
	ob.mu.Lock()
	defer ob.mu.Unlock()
	now := ob.now()
	for len(ob.queue) > 0 && ob.ctx.Err() == nil {
		if d := ob.queue[0].due.Sub(now); d > 0 {
			return d, true
		}
		select {
		case ob.slots <- struct{}{}:
		default:
			return 0, false
		}
		it := heap.Pop(&ob.queue).(*item)
		ob.wg.Add(1)
		go ob.deliver(it)
	}
	return 0, false
}

// deliver makes one attempt of it and records the outcome.
func (ob *Outbox) deliver(it *item) {
	defer func() {
		<-ob.slots
		ob.trigger()
		ob.wg.Done()
	}()
	eventID, _, _ := strings.Cut(it.key, "\x00")
	var body []byte
	var rec record
	err := ob.db.View(func(tx *bbolt.Tx) error {
		v := tx.Bucket(deliveriesBucket).Get([]byte(it.key))
		body = bytes.Clone(tx.Bucket(eventsBucket).Get([]byte(eventID)))
		if v == nil || body == nil {
			return ErrNotFound
		}
		return json.Unmarshal(v, &rec)
	})
	if err != nil {
		ob.log.Error("cannot read webhook delivery", "event_id", eventID, "target", it.target.Name, "error", err)
		ob.mu.Lock()
		ob.pending--
		ob.mu.Unlock()
		return
	}
	retryAfter, err := ob.post(it.target, eventID, rec.Type, body)
	switch {
	case err == nil:
		ob.delivered(it, eventID)
	case ob.ctx.Err() != nil:
		// Closing: the attempt does not count and the record stays pending.
	default:
		ob.failed(it, eventID, rec, err, retryAfter)
	}
}

// delivered removes the delivery's record, and the event's with its last.
func (ob *Outbox) delivered(it *item, eventID string) {
	err := ob.db.Update(func(tx *bbolt.Tx) error {
		deliveries := tx.Bucket(deliveriesBucket)
		if err := deliveries.Delete([]byte(it.key)); err != nil {
			return err
		}
		prefix := []byte(eventID + "\x00")
		if k, _ := deliveries.Cursor().Seek(prefix); !bytes.HasPrefix(k, prefix) {
			return tx.Bucket(eventsBucket).Delete([]byte(eventID))
		}
		return nil
	})
	if err != nil {
		// The receiver has it; after a restart it gets it again.
		ob.log.Error("cannot remove delivered webhook record", "event_id", eventID, "target", it.target.Name, "error", err)
	}
	it.target.delivered.Inc()
	ob.log.Info("webhook delivered", "event_id", eventID, "target", it.target.Name)
	ob.mu.Lock()
	ob.pending--
	ob.mu.Unlock()
}

// failed counts a failed attempt and schedules the next, or dead-letters the
// delivery after its last.
func (ob *Outbox) failed(it *item, eventID string, rec record, cause error, retryAfter time.Duration) {
	t := it.target
	t.failedAttempts.Inc()
	rec.Attempts++
	rec.LastError = cause.Error()
	if len(rec.LastError) > 1024 {
		rec.LastError = rec.LastError[:1024]
	}
	now := ob.now()
	dead := rec.Attempts >= t.MaxAttempts
	if dead {
		rec.Dead, rec.DeadAt = true, now
	} else {
		rec.Due = now.Add(ob.backoff(t, rec.Attempts, retryAfter))
	}
	b, _ := json.Marshal(rec)
	err := ob.db.Update(func(tx *bbolt.Tx) error { return tx.Bucket(deliveriesBucket).Put([]byte(it.key), b) })
	if err != nil {
		// Keep retrying from memory; the record on disk keeps its old state.
		ob.log.Error("cannot update webhook delivery record", "event_id", eventID, "target", t.Name, "error", err)
	}
	ob.mu.Lock()
	if dead {
		ob.pending--
		ob.dead++
	} else {
		it.due = rec.Due
		heap.Push(&ob.queue, it)
	}
	ob.mu.Unlock()
	if dead {
		t.deadLettered.Inc()
		ob.log.Error("webhook delivery dead-lettered", "event_id", eventID, "type", rec.Type, "subject", rec.Subject,
			"target", t.Name, "attempts", rec.Attempts, "error", rec.LastError)
	}
}

// backoff returns the delay after the attempts-th failed attempt: drawn
// uniformly from [0, min(BackoffMax, BackoffBase*2^(attempts-1))], but no
// less than the receiver's Retry-After, and never above BackoffMax.
func (ob *Outbox) backoff(t *target, attempts int, retryAfter time.Duration) time.Duration {
	ceiling := t.BackoffBase
	for i := 1; i < attempts && ceiling < t.BackoffMax; i++ {
		ceiling *= 2
	}
	ceiling = min(ceiling, t.BackoffMax)
	var d time.Duration
	if ob.rand != nil {
		ob.mu.Lock()
		d = time.Duration(ob.rand.Int64N(int64(ceiling) + 1))
		ob.mu.Unlock()
	} else {
		d = time.Duration(rand.Int64N(int64(ceiling) + 1))
	}
	return min(max(d, retryAfter), t.BackoffMax)
}

// DeadLetters returns the dead-lettered deliveries, oldest first.
func (ob *Outbox) DeadLetters() ([]DeadLetter, error) {
	ob.closeMu.RLock()
	defer ob.closeMu.RUnlock()
	if ob.closed {
		return nil, ErrClosed
	}
	var dls []DeadLetter
	err := ob.db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(deliveriesBucket).ForEach(func(k, v []byte) error {
			var rec record
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("cannot decode delivery record %q: %w", k, err)
			}
			if rec.Dead {
				id, name, _ := strings.Cut(string(k), "\x00")
				dls = append(dls, DeadLetter{EventID: id, EventType: rec.Type, Subject: rec.Subject, Target: name,
					Attempts: rec.Attempts, LastError: rec.LastError, DeadAt: rec.DeadAt})
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("cannot list dead letters: %w", err)
	}
	slices.SortFunc(dls, func(a, b DeadLetter) int {
		if c := a.DeadAt.Compare(b.DeadAt); c != 0 {
			return c
		}
		return strings.Compare(a.EventID+"\x00"+a.Target, b.EventID+"\x00"+b.Target)
	})
	return dls, nil
}

// Redrive puts the dead-lettered delivery of event eventID to target back
// to pending with its attempts reset, due now. It returns an error wrapping
// ErrNotFound when there is no such delivery or target, and ErrNotDead when
// the delivery is still pending.
func (ob *Outbox) Redrive(eventID, targetName string) error {
	ob.closeMu.RLock()
	defer ob.closeMu.RUnlock()
	if ob.closed {
		return ErrClosed
	}
	t := ob.targets[targetName]
	if t == nil {
		return fmt.Errorf("cannot redrive event %q to %q: %w: the target is not configured", eventID, targetName, ErrNotFound)
	}
	key := deliveryKey(eventID, targetName)
	now := ob.now()
	var rec record
	err := ob.db.Update(func(tx *bbolt.Tx) error {
		deliveries := tx.Bucket(deliveriesBucket)
		v := deliveries.Get([]byte(key))
		if v == nil {
			return ErrNotFound
		}
		if err := json.Unmarshal(v, &rec); err != nil {
			return fmt.Errorf("cannot decode delivery record: %w", err)
		}
		if !rec.Dead {
			return ErrNotDead
		}
		rec.Dead, rec.Attempts, rec.DeadAt, rec.LastError, rec.Due = false, 0, time.Time{}, "", now
		b, _ := json.Marshal(rec)
		return deliveries.Put([]byte(key), b)
	})
	if err != nil {
		return fmt.Errorf("cannot redrive event %q to %q: %w", eventID, targetName, err)
	}
	ob.mu.Lock()
	ob.dead--
	ob.pending++
	heap.Push(&ob.queue, &item{key: key, target: t, seq: rec.Seq, due: now})
	ob.mu.Unlock()
	ob.trigger()
	ob.log.Info("webhook delivery re-driven", "event_id", eventID, "type", rec.Type, "target", targetName)
	return nil
}

// Pending returns the number of deliveries not yet made and not
// dead-lettered, including those in flight.
func (ob *Outbox) Pending() (int, error) {
	ob.closeMu.RLock()
	defer ob.closeMu.RUnlock()
	if ob.closed {
		return 0, ErrClosed
	}
	ob.mu.Lock()
	defer ob.mu.Unlock()
	return ob.pending, nil
}
