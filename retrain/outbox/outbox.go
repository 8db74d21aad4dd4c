package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/infergate/infergate/retrain/engine"
)

// Errors of an Outbox.
var (
	ErrClosed   = errors.New("outbox: closed")
	ErrFull     = errors.New("outbox: too many undelivered events; check that the webhook targets are reachable")
	ErrNotFound = errors.New("outbox: no such dead letter")
)

// dedupeWindow is how long the stream remembers an event id: an event
// emitted again within it is not stored again.
const dedupeWindow = 10 * time.Minute

// ackMargin is what a target's AckWait adds to its Timeout: the time to
// record the outcome of an attempt after the POST has ended.
const ackMargin = 5 * time.Second

// requestTimeout bounds one request to the engine made without a caller's
// context.
const requestTimeout = 10 * time.Second

// targetMetaKey is the metadata key of a target's consumer that holds the
// target's name; consumers without it are not the outbox's.
const targetMetaKey = "infergate_target"

// DeadLetter is a delivery that failed its target's last attempt.
type DeadLetter struct {
	EventID   string    `json:"event_id"`
	EventType string    `json:"event_type"`
	Subject   string    `json:"subject,omitempty"`
	Target    string    `json:"target"`
	Attempts  int       `json:"attempts"`
	LastError string    `json:"last_error"`
	DeadAt    time.Time `json:"dead_at"`
	// Replica is the replica that made the last attempt.
	Replica string `json:"replica,omitempty"`
	// Event is the CloudEvent as it was emitted; Redrive sends it again.
	Event json.RawMessage `json:"event"`
}

// Options are what an Outbox is opened with. Conn and Name are required.
type Options struct {
	// Conn is the connection to the engine; the caller closes it after
	// Close. Its Replicas is the replication of the stream and bucket.
	Conn *engine.Conn
	// Name names the producer, e.g. "gateway" or "retrain": its events go
	// to the stream infergate_outbox_<Name>, its dead letters to the bucket
	// infergate_deadletters_<Name>. Letters, digits, '_' and '-' only. Every
	// replica of a producer opens the same Name.
	Name string
	// Targets are the webhook receivers; Open validates them.
	Targets []Target
	// Replica names this process in dead letters; Log says which replica
	// writes when the caller wants it to.
	Replica string
	// MayDeliver, when set, is asked before every POST and before every
	// pull; while it returns false, this Outbox posts nothing and hands
	// the events it holds back to the engine for another deliverer. A
	// gateway passes "I still hold the leadership lease".
	MayDeliver func() bool
	// Log gets one line per delivery, dead letter and redrive (default:
	// discarded).
	Log *slog.Logger
	// Metrics gets the outbox's series, removed again by Close (default: a
	// private set). Only one open Outbox may use a set.
	Metrics *metrics.Set
	// Client sends the deliveries (default: a client of its own that does
	// not follow redirects); each attempt is bounded by its target's Timeout.
	Client *http.Client
	// Now is the clock of signatures and dead letters (default time.Now).
	Now func() time.Time
	// Rand draws the backoff jitter (default: math/rand/v2's global source).
	Rand *rand.Rand
	// Concurrency bounds the deliveries in flight while started (default 4).
	Concurrency int
	// MaxPending bounds the events that some target has not yet taken or
	// given up on; Emit returns ErrFull beyond it (default 10000). Every
	// replica should open with the same value: the last Open sets it.
	MaxPending int
}

// Outbox keeps events in a JetStream stream and, while started, delivers
// them to their targets. It is safe for concurrent use; see the package
// documentation.
type Outbox struct {
	js         jetstream.JetStream
	stream     jetstream.Stream
	streamName string
	prefix     string // of the stream's subjects: "infergate.outbox.<name>."
	dead       jetstream.KeyValue
	deliveries jetstream.KeyValue // the last attempt of each delivery
	targets    map[string]*target // immutable after Open
	order      []*target          // Options.Targets order
	log        *slog.Logger
	client     *http.Client
	ownClient  bool
	now        func() time.Time
	mayDeliver func() bool
	replica    string
	slots      chan struct{} // a token per delivery in flight

	randMu sync.Mutex
	rand   *rand.Rand // guarded by randMu; nil: the global source

	closed atomic.Bool

	lifeMu sync.Mutex // serializes Start, Stop and Close
	run    *run       // guarded by lifeMu; nil while stopped

	metricsSet   *metrics.Set
	metricsNames []string
	lastPending  atomic.Int64 // reported when the engine does not answer a scrape
	lastDead     atomic.Int64
}

// target is a Target with its defaults, secrets, consumer and series.
type target struct {
	Target
	secret   []byte
	token    string
	durable  string // the consumer's name
	redrive  string // the subject of its redriven events
	consumer jetstream.Consumer

	delivered      *metrics.Counter
	failedAttempts *metrics.Counter
	deadLettered   *metrics.Counter
}

// Open creates or updates the producer's stream, one durable consumer per
// target and the dead-letter bucket, reads the targets' secrets from the
// environment and deletes the consumers of targets no longer configured,
// dead-lettering what they had not yet taken. It does not deliver: Start
// does. Close releases it.
func Open(o Options) (*Outbox, error) {
	if o.Conn == nil {
		return nil, errors.New("cannot open outbox: no engine connection")
	}
	if o.Name == "" || strings.TrimLeft(o.Name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") != "" {
		return nil, fmt.Errorf("cannot open outbox: name %q: must be letters, digits, '_' or '-'", o.Name)
	}
	if err := ValidateTargets("webhooks", o.Targets); err != nil {
		return nil, fmt.Errorf("cannot open outbox %s: %w", o.Name, err)
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.MayDeliver == nil {
		o.MayDeliver = func() bool { return true }
	}
	ob := &Outbox{
		js: o.Conn.JS, streamName: "infergate_outbox_" + o.Name, prefix: "infergate.outbox." + o.Name + ".",
		targets: make(map[string]*target), log: o.Log, client: o.Client, now: o.Now, mayDeliver: o.MayDeliver,
		replica: o.Replica, rand: o.Rand, slots: make(chan struct{}, cmpOr(o.Concurrency, 4)), metricsSet: o.Metrics,
	}
	for _, t := range o.Targets {
		tg := &target{Target: t.WithDefaults(), durable: escape(t.Name)}
		tg.redrive = ob.prefix + "redrive." + tg.durable
		var err error
		if tg.secret, err = fromEnv(t.SecretEnv); err != nil {
			return nil, fmt.Errorf("cannot open outbox %s: webhook target %q: secret_env: %w", o.Name, t.Name, err)
		}
		token, err := fromEnv(t.TokenEnv)
		if err != nil {
			return nil, fmt.Errorf("cannot open outbox %s: webhook target %q: token_env: %w", o.Name, t.Name, err)
		}
		tg.token = string(token)
		if tg.secret == nil {
			ob.log.Warn("webhook deliveries are unsigned: the target has no secret_env", "target", t.Name)
		}
		ob.targets[t.Name] = tg
		ob.order = append(ob.order, tg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*requestTimeout)
	defer cancel()
	if err := ob.provision(ctx, o.Conn.Replicas, cmpOr(o.MaxPending, 10000)); err != nil {
		return nil, fmt.Errorf("cannot open outbox %s: %w", o.Name, err)
	}
	if ob.client == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		ob.client = &http.Client{
			Transport:     tr,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
		ob.ownClient = true
	}
	pending, _ := ob.pending(ctx)
	dead, _ := ob.countDeadLetters(ctx)
	ob.lastPending.Store(int64(pending))
	ob.lastDead.Store(int64(dead))
	ob.registerMetrics()
	ob.log.Info("webhook outbox opened", "stream", ob.streamName, "targets", len(ob.order), "pending", pending, "dead_letters", dead)
	return ob, nil
}

// provision creates or updates the stream, the bucket and the consumers,
// and retires the consumers of targets that have gone.
func (ob *Outbox) provision(ctx context.Context, replicas, maxPending int) error {
	cfg := jetstream.StreamConfig{
		Name:        ob.streamName,
		Description: "infergate webhook outbox: events until every target has taken or given up on them",
		Subjects:    []string{ob.prefix + ">"},
		// A message goes once every consumer that takes it has acknowledged
		// or terminated it.
		Retention: jetstream.InterestPolicy,
		// A full stream refuses new events rather than dropping old ones.
		Discard:    jetstream.DiscardNew,
		MaxMsgs:    int64(maxPending),
		Storage:    jetstream.FileStorage,
		Replicas:   max(replicas, 1),
		Duplicates: dedupeWindow,
	}
	var err error
	if ob.stream, err = engine.Stream(ctx, ob.js, cfg); err != nil {
		return fmt.Errorf("cannot create or update stream %s: %w", ob.streamName, err)
	}
	bucket := "infergate_deadletters_" + strings.TrimPrefix(ob.streamName, "infergate_outbox_")
	ob.dead, err = engine.KeyValue(ctx, ob.js, jetstream.KeyValueConfig{
		Bucket:      bucket,
		Description: "infergate webhook dead letters, by target and event id",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    max(replicas, 1),
	})
	if err != nil {
		return fmt.Errorf("cannot create or update bucket %s: %w", bucket, err)
	}
	if err := ob.openDeliveries(ctx, replicas); err != nil {
		return err
	}
	keep := map[string]bool{}
	for _, t := range ob.order {
		keep[t.durable] = true
		t.consumer, err = ob.js.CreateOrUpdateConsumer(ctx, ob.streamName, jetstream.ConsumerConfig{
			Durable:     t.durable,
			Description: "webhook deliveries to " + t.Name,
			// A target added later gets the events emitted after it.
			DeliverPolicy:  jetstream.DeliverNewPolicy,
			AckPolicy:      jetstream.AckExplicitPolicy,
			AckWait:        t.Timeout + ackMargin,
			MaxDeliver:     -1, // the outbox counts attempts and dead-letters
			MaxAckPending:  maxPending,
			FilterSubjects: ob.filters(t),
			Metadata:       map[string]string{targetMetaKey: t.Name},
		})
		if err != nil {
			return fmt.Errorf("cannot create or update the consumer of webhook target %q: %w", t.Name, err)
		}
	}
	lister := ob.stream.ListConsumers(ctx)
	var gone []*jetstream.ConsumerInfo
	for info := range lister.Info() {
		if info.Config.Metadata[targetMetaKey] != "" && !keep[info.Name] {
			gone = append(gone, info)
		}
	}
	if err := lister.Err(); err != nil {
		return fmt.Errorf("cannot list the consumers of stream %s: %w", ob.streamName, err)
	}
	for _, info := range gone {
		// Another replica may be retiring it too; this one works without.
		if err := ob.retire(ctx, info); err != nil {
			ob.log.Error("cannot retire a removed webhook target; the next Open tries again", "error", err)
		}
	}
	return nil
}

// filters returns the subjects of t's consumer: those of the event types t
// takes, and t's redrive subject.
func (ob *Outbox) filters(t *target) []string {
	if len(t.Events) == 0 {
		return []string{ob.prefix + "event.>", t.redrive}
	}
	var subjects []string
	for _, name := range t.Events {
		if s := ob.eventSubject(fullType(name)); !slices.Contains(subjects, s) {
			subjects = append(subjects, s)
		}
	}
	return append(subjects, t.redrive)
}

func (ob *Outbox) eventSubject(typ string) string { return ob.prefix + "event." + typ }

// retire dead-letters the events that the consumer of a target no longer
// configured has not yet handed out, then deletes it. Events in flight at
// another deliverer or waiting for their next attempt cannot be fetched
// now: they are dropped, and counted in the log line.
func (ob *Outbox) retire(ctx context.Context, info *jetstream.ConsumerInfo) error {
	name := info.Config.Metadata[targetMetaKey]
	cons, err := ob.stream.Consumer(ctx, info.Name)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil // retired by another replica
	}
	if err != nil {
		return fmt.Errorf("cannot retire the consumer of removed webhook target %q: %w", name, err)
	}
	deadLettered := 0
	for {
		batch, err := cons.FetchNoWait(256)
		if err != nil {
			return fmt.Errorf("cannot read the undelivered events of removed webhook target %q: %w", name, err)
		}
		got := 0
		for msg := range batch.Messages() {
			got++
			md, _ := msg.Metadata()
			var e Event
			if json.Unmarshal(msg.Data(), &e) == nil {
				attempts := 0
				if md != nil {
					attempts = int(md.NumDelivered) - 1 // this delivery is no attempt
				}
				dl := DeadLetter{EventID: e.ID, EventType: e.Type, Subject: e.Subject, Target: name, Attempts: attempts,
					LastError: fmt.Sprintf("webhook target %q is no longer configured", name), DeadAt: ob.now(),
					Replica: ob.replica, Event: msg.Data()}
				if err := ob.putDeadLetter(ctx, dl); err != nil {
					msg.Nak()
					return fmt.Errorf("cannot dead-letter the events of removed webhook target %q: %w", name, err)
				}
				deadLettered++
			}
			msg.Term()
		}
		if err := batch.Error(); err != nil {
			return fmt.Errorf("cannot read the undelivered events of removed webhook target %q: %w", name, err)
		}
		if got == 0 {
			break
		}
	}
	var dropped uint64
	if info, err := cons.Info(ctx); err == nil {
		dropped = info.NumPending + uint64(info.NumAckPending)
	}
	if err := ob.stream.DeleteConsumer(ctx, info.Name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("cannot delete the consumer of removed webhook target %q: %w", name, err)
	}
	if deadLettered > 0 || dropped > 0 {
		ob.log.Error("webhook target removed: its undelivered events are dead-lettered, those in flight or waiting to retry dropped",
			"target", name, "dead_lettered", deadLettered, "dropped", dropped)
	} else {
		ob.log.Info("webhook target removed", "target", name)
	}
	return nil
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

// escape maps s to letters, digits, '-' and '_' only, one to one: any
// other byte, and '_' itself, becomes '_' and its two hex digits. The
// result is a valid subject token, consumer name and bucket key.
func escape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-':
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "_%02X", c)
		}
	}
	return b.String()
}

// deadLetterKey is the bucket key of the dead letter of event eventID to
// the target called targetName.
func deadLetterKey(targetName, eventID string) string {
	return escape(targetName) + "." + escape(eventID)
}

// validType reports whether typ can be a part of a subject: tokens of
// letters, digits, '_' and '-', separated by dots.
func validType(typ string) bool {
	for token := range strings.SplitSeq(typ, ".") {
		if token == "" || strings.TrimLeft(token, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") != "" {
			return false
		}
	}
	return true
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
	// The gauges ask the engine at each scrape, so they are the fleet's.
	ob.engineGauge(set, name("infergate_webhook_pending"), &ob.lastPending, ob.pending)
	ob.engineGauge(set, name("infergate_webhook_dead_letters"), &ob.lastDead, ob.countDeadLetters)
}

// engineGauge registers the gauge name in set, whose value count asks the
// engine for at each scrape and keeps in last; when the engine does not
// answer, or after Close, the gauge repeats the last answer.
func (ob *Outbox) engineGauge(set *metrics.Set, name string, last *atomic.Int64, count func(context.Context) (int, error)) {
	set.NewGauge(name, func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if n, err := count(ctx); err == nil && !ob.closed.Load() {
			last.Store(int64(n))
		}
		return float64(last.Load())
	})
}

// Close stops delivering as Stop does and removes the outbox's series from
// Options.Metrics. The stream, its consumers and the dead letters stay in
// the engine, for the next Open; the connection stays open. Close is
// idempotent.
func (ob *Outbox) Close() error {
	ob.lifeMu.Lock()
	defer ob.lifeMu.Unlock()
	if ob.closed.Swap(true) {
		return nil
	}
	ob.stopLocked()
	if ob.ownClient {
		ob.client.CloseIdleConnections()
	}
	for _, n := range ob.metricsNames {
		ob.metricsSet.UnregisterMetric(n)
	}
	return nil
}

// Emit publishes each event that some target takes to the stream, with
// its id as the message id, and returns once the engine has stored them
// (on disk, on a quorum of a cluster): when Emit returns nil, the events
// will be delivered. An event that no target takes is not published; one
// whose id was emitted in the last ten minutes is not stored again. On an
// error, the events before the one named are stored; emitting them again
// is harmless. Emit returns an error wrapping ErrInvalidEvent for an event
// that cannot be sent, ErrFull when the stream holds Options.MaxPending
// undelivered events, and ErrClosed after Close.
func (ob *Outbox) Emit(ctx context.Context, events ...Event) error {
	if ob.closed.Load() {
		return ErrClosed
	}
	type staged struct {
		id, subject string
		body        []byte
	}
	var all []staged
	for _, e := range events {
		if err := e.validate(); err != nil {
			return fmt.Errorf("cannot emit event %q: %w", e.ID, err)
		}
		if !slices.ContainsFunc(ob.order, func(t *target) bool { return t.wants(e.Type) }) {
			continue
		}
		if !validType(e.Type) {
			return fmt.Errorf("cannot emit event %q: %w: type %q is not dot-separated letters, digits, '_' and '-'", e.ID, ErrInvalidEvent, e.Type)
		}
		if strings.ContainsFunc(e.ID, func(r rune) bool { return r < ' ' || r == 0x7f }) {
			return fmt.Errorf("cannot emit event %q: %w: id contains a control character", e.ID, ErrInvalidEvent)
		}
		body, err := e.MarshalJSON()
		if err != nil {
			return fmt.Errorf("cannot emit event %q: %w", e.ID, err)
		}
		all = append(all, staged{e.ID, ob.eventSubject(e.Type), body})
	}
	for _, st := range all {
		_, err := ob.js.PublishMsg(ctx, &nats.Msg{Subject: st.subject, Data: st.body},
			jetstream.WithMsgID(st.id), jetstream.WithExpectStream(ob.streamName))
		if err != nil {
			if isFull(err) {
				err = ErrFull
			}
			return fmt.Errorf("cannot emit event %q: %w", st.id, err)
		}
	}
	return nil
}

// isFull reports whether err is the stream's refusal of a message beyond
// its limits.
func isFull(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == 10077 && strings.Contains(apiErr.Description, "maximum")
}

// putDeadLetter stores dl; a second store of the same delivery replaces
// the first.
func (ob *Outbox) putDeadLetter(ctx context.Context, dl DeadLetter) error {
	b, err := json.Marshal(dl)
	if err != nil {
		return fmt.Errorf("cannot encode the dead letter of event %q: %w", dl.EventID, err)
	}
	if _, err := ob.dead.Put(ctx, deadLetterKey(dl.Target, dl.EventID), b); err != nil {
		return fmt.Errorf("cannot store the dead letter of event %q to %q: %w", dl.EventID, dl.Target, err)
	}
	return nil
}

// DeadLetters returns the dead-lettered deliveries, oldest first.
func (ob *Outbox) DeadLetters() ([]DeadLetter, error) {
	if ob.closed.Load() {
		return nil, ErrClosed
	}
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	var dls []DeadLetter
	err := ob.eachDeadLetter(ctx, false, func(e jetstream.KeyValueEntry) error {
		var dl DeadLetter
		if err := json.Unmarshal(e.Value(), &dl); err != nil {
			return fmt.Errorf("cannot decode dead letter %q: %w", e.Key(), err)
		}
		dl.LastError = ob.redact(dl.Target, dl.LastError)
		dls = append(dls, dl)
		return nil
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

// countDeadLetters returns the number of dead letters.
func (ob *Outbox) countDeadLetters(ctx context.Context) (int, error) {
	n := 0
	err := ob.eachDeadLetter(ctx, true, func(jetstream.KeyValueEntry) error { n++; return nil })
	return n, err
}

// eachDeadLetter calls f with every dead letter in the bucket, without its
// value when metaOnly.
func (ob *Outbox) eachDeadLetter(ctx context.Context, metaOnly bool, f func(jetstream.KeyValueEntry) error) error {
	opts := []jetstream.WatchOpt{jetstream.IgnoreDeletes()}
	if metaOnly {
		opts = append(opts, jetstream.MetaOnly())
	}
	w, err := ob.dead.WatchAll(ctx, opts...)
	if err != nil {
		return err
	}
	defer w.Stop()
	for {
		select {
		case e := <-w.Updates():
			if e == nil { // the end of the values present at the start
				return nil
			}
			if err := f(e); err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Redrive sends the dead-lettered event eventID to the target called
// targetName again, as a new message with its attempts counted from zero,
// and then removes the dead letter. It returns an error wrapping
// ErrNotFound when the target is not configured or the event has no dead
// letter for it (it is pending, delivered or was never emitted), ErrFull
// when the stream is full, and ErrClosed after Close. A crash between the
// send and the removal leaves the dead letter; redriving it again within
// ten minutes sends nothing more.
func (ob *Outbox) Redrive(eventID, targetName string) error {
	if ob.closed.Load() {
		return ErrClosed
	}
	t := ob.targets[targetName]
	if t == nil {
		return fmt.Errorf("cannot redrive event %q to %q: %w: the target is not configured", eventID, targetName, ErrNotFound)
	}
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	key := deadLetterKey(targetName, eventID)
	entry, err := ob.dead.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("cannot redrive event %q to %q: %w", eventID, targetName, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("cannot redrive event %q to %q: %w", eventID, targetName, err)
	}
	var dl DeadLetter
	if err := json.Unmarshal(entry.Value(), &dl); err != nil || len(dl.Event) == 0 {
		return fmt.Errorf("cannot redrive event %q to %q: cannot decode its dead letter: %v", eventID, targetName, err)
	}
	// The revision is new with every dead letter, so the message id is
	// new for each redrive of a new failure, and the same for a retried
	// redrive of one.
	msgID := eventID + "/redrive/" + strconv.FormatUint(entry.Revision(), 10)
	_, err = ob.js.PublishMsg(ctx, &nats.Msg{Subject: t.redrive, Data: dl.Event},
		jetstream.WithMsgID(msgID), jetstream.WithExpectStream(ob.streamName))
	if err != nil {
		if isFull(err) {
			err = ErrFull
		}
		return fmt.Errorf("cannot redrive event %q to %q: %w", eventID, targetName, err)
	}
	if err := ob.dead.Delete(ctx, key, jetstream.LastRevision(entry.Revision())); err != nil {
		ob.log.Warn("webhook delivery re-driven, but its dead letter stays", "event_id", eventID, "target", targetName, "error", err)
	}
	ob.log.Info("webhook delivery re-driven", "event_id", eventID, "type", dl.EventType, "target", targetName)
	return nil
}

// Pending returns the number of deliveries not yet made and not
// dead-lettered, including those in flight and those waiting for their
// next attempt, over every target: the fleet's, not this process's. The
// engine counts an event a moment after Emit returns, not at once.
func (ob *Outbox) Pending() (int, error) {
	if ob.closed.Load() {
		return 0, ErrClosed
	}
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	return ob.pending(ctx)
}

func (ob *Outbox) pending(ctx context.Context) (int, error) {
	n := 0
	for _, t := range ob.order {
		info, err := t.consumer.Info(ctx)
		if err != nil {
			return 0, fmt.Errorf("cannot read the pending deliveries to %q: %w", t.Name, err)
		}
		n += int(info.NumPending) + info.NumAckPending
	}
	return n, nil
}

// MetricHelp is the HELP text of each metric family an Outbox exports, by
// family name, for a /metrics writer that adds HELP lines. It is read-only.
var MetricHelp = map[string]string{
	"infergate_webhook_deliveries_total":      "Events delivered to the webhook target (answered 2xx).",
	"infergate_webhook_failed_attempts_total": "Delivery attempts to the webhook target that failed (retried with backoff).",
	"infergate_webhook_dead_lettered_total":   "Deliveries to the webhook target given up after max_attempts and kept as dead letters.",
	"infergate_webhook_pending":               "Deliveries waiting in the outbox, over every target.",
	"infergate_webhook_dead_letters":          "Dead letters kept in the outbox, over every target.",
}
