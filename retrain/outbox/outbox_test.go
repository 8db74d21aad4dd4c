package outbox

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/infergate/infergate/retrain/engine/enginetest"
)

// receiver is a webhook receiver on loopback that records every request and
// answers with status(n) to the n-th (from 1).
type receiver struct {
	*httptest.Server
	mu  sync.Mutex
	got []received
}

type received struct {
	header http.Header
	body   []byte
}

func newReceiver(t *testing.T, status func(n int) int) *receiver {
	t.Helper()
	r := &receiver{}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.got = append(r.got, received{req.Header.Clone(), body})
		n := len(r.got)
		r.mu.Unlock()
		code := status(n)
		w.WriteHeader(code)
		if code >= 300 {
			io.WriteString(w, "try again later\n")
		}
	}))
	t.Cleanup(r.Close)
	return r
}

func always(code int) func(int) int { return func(int) int { return code } }

func (r *receiver) requests() []received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

// ids returns the ids of the CloudEvents received so far.
func (r *receiver) ids(t *testing.T) []string {
	t.Helper()
	var ids []string
	for _, req := range r.requests() {
		var e Event
		if err := json.Unmarshal(req.body, &e); err != nil {
			t.Fatalf("receiver got an undecodable event %s: %v", req.body, err)
		}
		ids = append(ids, e.ID)
	}
	return ids
}

// count returns how often the receiver got event id.
func (r *receiver) count(t *testing.T, id string) int {
	t.Helper()
	n := 0
	for _, got := range r.ids(t) {
		if got == id {
			n++
		}
	}
	return n
}

// closedURL returns a loopback URL that refuses connections.
func closedURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr + "/hook"
}

// open opens an outbox called "test" on e with o, closed when t ends.
func open(t *testing.T, e *enginetest.Engine, o Options) *Outbox {
	t.Helper()
	o.Conn = e.Conn
	if o.Name == "" {
		o.Name = "test"
	}
	ob, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ob.Close() })
	return ob
}

// started opens an outbox as open does and starts delivering.
func started(t *testing.T, e *enginetest.Engine, o Options) *Outbox {
	t.Helper()
	ob := open(t, e, o)
	if err := ob.Start(); err != nil {
		t.Fatal(err)
	}
	return ob
}

// fast is a target that retries within milliseconds.
func fast(name, url string) Target {
	return Target{Name: name, URL: url, Timeout: 5 * time.Second, BackoffBase: time.Millisecond, BackoffMax: 5 * time.Millisecond}
}

// stuck is a target whose receiver refuses connections and that waits an
// hour before its second attempt.
func stuck(t *testing.T, name string) Target {
	return Target{Name: name, URL: closedURL(t), BackoffBase: time.Hour, BackoffMax: time.Hour}
}

func newEvent(t *testing.T, typ string) Event {
	t.Helper()
	e, err := NewEvent("/infergate/test", typ, "iris/1", map[string]any{"share": 0.5})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func emit(t *testing.T, ob *Outbox, typ string) Event {
	t.Helper()
	e := newEvent(t, typ)
	if err := ob.Emit(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	return e
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func pendingIs(t *testing.T, ob *Outbox, want int) func() bool {
	return func() bool {
		n, err := ob.Pending()
		if err != nil {
			t.Fatal(err)
		}
		return n == want
	}
}

func pending(t *testing.T, ob *Outbox) int {
	t.Helper()
	n, err := ob.Pending()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// stored returns the number of events in the stream of the producer
// called name. Unlike Pending, which the engine updates a moment after it
// acknowledges a publish, it is exact as soon as Emit returns.
func stored(t *testing.T, e *enginetest.Engine, name string) uint64 {
	t.Helper()
	s, err := e.JS.Stream(context.Background(), "infergate_outbox_"+name)
	if err != nil {
		t.Fatal(err)
	}
	return s.CachedInfo().State.Msgs
}

// assertDrained checks that the stream keeps no event once every target
// has taken or given up on it.
func assertDrained(t *testing.T, e *enginetest.Engine, name string) {
	t.Helper()
	if n := stored(t, e, name); n != 0 {
		t.Fatalf("the stream keeps %d events after every delivery", n)
	}
}

func metricsText(set *metrics.Set) string {
	var out bytes.Buffer
	set.WritePrometheus(&out)
	return out.String()
}

// logBuffer collects an outbox's log lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) logger() *slog.Logger { return slog.New(slog.NewTextHandler(b, nil)) }

func TestDeliverySigned(t *testing.T) {
	t.Setenv("OUTBOX_TEST_SECRET", "s3cret")
	e := enginetest.Start(t)
	recv := newReceiver(t, always(http.StatusAccepted))
	set := metrics.NewSet()
	var logs logBuffer
	ob := started(t, e, Options{Metrics: set, Replica: "replica-1", Log: logs.logger(),
		Targets: []Target{{Name: "ci", URL: recv.URL, SecretEnv: "OUTBOX_TEST_SECRET"}}})
	ev := emit(t, ob, TypeDriftDetected)
	waitFor(t, "the delivery", func() bool { return len(recv.requests()) == 1 })
	waitFor(t, "the acknowledgement", pendingIs(t, ob, 0))

	req := recv.requests()[0]
	if err := Verify(req.header.Get(SignatureHeader), []byte("s3cret"), req.body, time.Now(), time.Minute); err != nil {
		t.Fatalf("the receiver cannot verify the delivery: %v", err)
	}
	if ct := req.header.Get("Content-Type"); ct != ContentType {
		t.Fatalf("Content-Type %q, want %q", ct, ContentType)
	}
	if id := req.header.Get("ce-id"); id != ev.ID {
		t.Fatalf("ce-id %q, want %q", id, ev.ID)
	}
	var got Event
	if err := json.Unmarshal(req.body, &got); err != nil || got.ID != ev.ID || got.Type != TypeDriftDetected || string(got.Data) != `{"share":0.5}` {
		t.Fatalf("the receiver got %s (%v)", req.body, err)
	}
	assertDrained(t, e, "test")

	out := metricsText(set)
	for _, line := range []string{`infergate_webhook_deliveries_total{target="ci"} 1`, `infergate_webhook_pending 0`, `infergate_webhook_dead_letters 0`} {
		if !strings.Contains(out, line+"\n") {
			t.Fatalf("metrics lack %q:\n%s", line, out)
		}
	}
	waitFor(t, "the delivery's log line", func() bool {
		return strings.Contains(logs.String(), `msg="webhook delivered" event_id=`+ev.ID)
	})
	ob.Close()
	if names := set.ListMetricNames(); len(names) != 0 {
		t.Fatalf("Close left series behind: %v", names)
	}
	if err := ob.Emit(context.Background(), ev); !errors.Is(err, ErrClosed) {
		t.Fatalf("Emit after Close: got %v, want ErrClosed", err)
	}
	if err := ob.Start(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Start after Close: got %v, want ErrClosed", err)
	}
	if err := ob.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestGitHubDispatch(t *testing.T) {
	t.Setenv("OUTBOX_TEST_TOKEN", "ghp_test")
	e := enginetest.Start(t)
	recv := newReceiver(t, always(http.StatusNoContent))
	ob := started(t, e, Options{Targets: []Target{
		{Name: "gh", URL: recv.URL + "/repos/o/r/dispatches", Format: FormatGitHubDispatch, TokenEnv: "OUTBOX_TEST_TOKEN"}}})
	ev := emit(t, ob, TypeDriftDetected)
	waitFor(t, "the delivery", func() bool { return len(recv.requests()) == 1 })

	req := recv.requests()[0]
	if h := req.header.Get("Authorization"); h != "Bearer ghp_test" {
		t.Fatalf("Authorization %q", h)
	}
	if h := req.header.Get("Accept"); h != "application/vnd.github+json" {
		t.Fatalf("Accept %q", h)
	}
	if h := req.header.Get(SignatureHeader); h != "" {
		t.Fatalf("an unsigned target sent %s: %s", SignatureHeader, h)
	}
	var body struct {
		EventType     string          `json:"event_type"`
		ClientPayload json.RawMessage `json:"client_payload"`
	}
	if err := json.Unmarshal(req.body, &body); err != nil {
		t.Fatalf("cannot decode %s: %v", req.body, err)
	}
	var payload Event
	if err := json.Unmarshal(body.ClientPayload, &payload); err != nil {
		t.Fatalf("client_payload is not a CloudEvent: %v", err)
	}
	if body.EventType != TypeDriftDetected || payload.ID != ev.ID || payload.Subject != "iris/1" {
		t.Fatalf("unexpected body %s", req.body)
	}
}

func TestRetryUntilDelivered(t *testing.T) {
	e := enginetest.Start(t)
	recv := newReceiver(t, func(n int) int {
		if n <= 3 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	set := metrics.NewSet()
	ob := started(t, e, Options{Metrics: set, Rand: rand.New(rand.NewPCG(1, 2)), Targets: []Target{fast("ci", recv.URL)}})
	ev := emit(t, ob, TypeCanaryPromoted)
	waitFor(t, "the delivery", func() bool { return len(recv.requests()) == 4 })
	waitFor(t, "the acknowledgement", pendingIs(t, ob, 0))
	if ids := recv.ids(t); len(ids) != 4 || ids[3] != ev.ID {
		t.Fatalf("got %d requests, want 3 failed and 1 delivered", len(ids))
	}
	if dls, err := ob.DeadLetters(); err != nil || len(dls) != 0 {
		t.Fatalf("dead letters %v, %v", dls, err)
	}
	out := metricsText(set)
	for _, line := range []string{`infergate_webhook_failed_attempts_total{target="ci"} 3`, `infergate_webhook_deliveries_total{target="ci"} 1`} {
		if !strings.Contains(out, line+"\n") {
			t.Fatalf("metrics lack %q:\n%s", line, out)
		}
	}
}

// TestRetryAfterIsHonoured: a 429 with Retry-After: 1 delays the next
// attempt by at least a second although the target's backoff is a
// millisecond.
func TestRetryAfterIsHonoured(t *testing.T) {
	e := enginetest.Start(t)
	var mu sync.Mutex
	var at []time.Time
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		mu.Lock()
		at = append(at, time.Now())
		n := len(at)
		mu.Unlock()
		if n == 1 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
		}
	}))
	defer recv.Close()
	tg := fast("ci", recv.URL)
	tg.BackoffMax = 2 * time.Second
	ob := started(t, e, Options{Targets: []Target{tg}})
	emit(t, ob, TypeDriftDetected)
	waitFor(t, "the second attempt", func() bool { mu.Lock(); defer mu.Unlock(); return len(at) == 2 })
	if d := at[1].Sub(at[0]); d < time.Second {
		t.Fatalf("the second attempt came %s after a Retry-After of 1s", d)
	}
}

func TestDeadLetterAndRedrive(t *testing.T) {
	e := enginetest.Start(t)
	var mu sync.Mutex
	code := http.StatusInternalServerError
	recv := newReceiver(t, func(int) int { mu.Lock(); defer mu.Unlock(); return code })
	tg := fast("ci", recv.URL)
	tg.MaxAttempts = 3
	set := metrics.NewSet()
	ob := started(t, e, Options{Targets: []Target{tg}, Replica: "r1", Metrics: set})
	ev := emit(t, ob, TypeRetrainFailed)
	waitFor(t, "the dead letter", func() bool { dls, _ := ob.DeadLetters(); return len(dls) == 1 })
	waitFor(t, "the termination", pendingIs(t, ob, 0))

	dls, err := ob.DeadLetters()
	if err != nil {
		t.Fatal(err)
	}
	dl := dls[0]
	var body Event
	if err := json.Unmarshal(dl.Event, &body); err != nil || body.ID != ev.ID {
		t.Fatalf("the dead letter keeps %s as its event (%v)", dl.Event, err)
	}
	if dl.EventID != ev.ID || dl.EventType != TypeRetrainFailed || dl.Subject != "iris/1" || dl.Target != "ci" || dl.Attempts != 3 ||
		!strings.Contains(dl.LastError, "500") || dl.DeadAt.IsZero() || dl.Replica != "r1" {
		t.Fatalf("unexpected dead letter %+v", dl)
	}
	if n := len(recv.requests()); n != 3 {
		t.Fatalf("got %d attempts, want 3", n)
	}
	out := metricsText(set)
	for _, line := range []string{`infergate_webhook_dead_lettered_total{target="ci"} 1`, `infergate_webhook_dead_letters 1`, `infergate_webhook_failed_attempts_total{target="ci"} 3`} {
		if !strings.Contains(out, line+"\n") {
			t.Fatalf("metrics lack %q:\n%s", line, out)
		}
	}
	if err := ob.Redrive(ev.ID, "nobody"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Redrive to an unknown target: got %v", err)
	}
	if err := ob.Redrive("no-such-event", "ci"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Redrive of an unknown event: got %v", err)
	}

	mu.Lock()
	code = http.StatusOK
	mu.Unlock()
	if err := ob.Redrive(ev.ID, "ci"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the redriven delivery", func() bool { return len(recv.requests()) == 4 })
	waitFor(t, "its acknowledgement", pendingIs(t, ob, 0))
	if ids := recv.ids(t); ids[3] != ev.ID {
		t.Fatalf("the redrive delivered %s, want %s", ids[3], ev.ID)
	}
	if dls, err := ob.DeadLetters(); err != nil || len(dls) != 0 {
		t.Fatalf("dead letters after the redrive: %v, %v", dls, err)
	}
	if err := ob.Redrive(ev.ID, "ci"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Redrive of a delivered event: got %v", err)
	}
	assertDrained(t, e, "test")
}

// TestRedriveFailsAgain: a redriven delivery that fails its last attempt
// again is a dead letter again, and a second redrive delivers it (its
// message id is new, so the stream does not drop it as a duplicate).
func TestRedriveFailsAgain(t *testing.T) {
	e := enginetest.Start(t)
	var fail atomic.Int32
	fail.Store(4)
	recv := newReceiver(t, func(int) int {
		if fail.Add(-1) >= 0 {
			return http.StatusBadGateway
		}
		return http.StatusOK
	})
	tg := fast("ci", recv.URL)
	tg.MaxAttempts = 2
	ob := started(t, e, Options{Targets: []Target{tg}})
	ev := emit(t, ob, TypeDriftDetected)
	for round := range 2 {
		waitFor(t, "the dead letter", func() bool { dls, _ := ob.DeadLetters(); return len(dls) == 1 })
		if err := ob.Redrive(ev.ID, "ci"); err != nil {
			t.Fatalf("redrive %d: %v", round+1, err)
		}
	}
	waitFor(t, "the delivery", func() bool { return recv.count(t, ev.ID) == 5 })
	waitFor(t, "its acknowledgement", pendingIs(t, ob, 0))
	if dls, _ := ob.DeadLetters(); len(dls) != 0 {
		t.Fatalf("dead letters after the delivery: %+v", dls)
	}
}

// TestDeadLetterThenCrash: a deliverer that stored the dead letter and
// ended before it terminated the message leaves it to the next, which
// terminates it without another attempt or another dead letter.
func TestDeadLetterThenCrash(t *testing.T) {
	e := enginetest.Start(t)
	recv := newReceiver(t, always(http.StatusInternalServerError))
	tg := fast("ci", recv.URL)
	tg.MaxAttempts = 1
	set := metrics.NewSet()
	ob := open(t, e, Options{Targets: []Target{tg}, Metrics: set})
	ev := emit(t, ob, TypeDriftDetected)

	// The first deliverer's last attempt: it takes the message, stores the
	// dead letter and is gone; the engine hands the message out again.
	batch, err := ob.targets["ci"].consumer.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	msg := <-batch.Messages()
	if msg == nil {
		t.Fatalf("no message to take: %v", batch.Error())
	}
	if err := ob.putDeadLetter(context.Background(), DeadLetter{EventID: ev.ID, EventType: ev.Type, Target: "ci", Attempts: 1,
		LastError: "the receiver answered 500", DeadAt: time.Now(), Event: msg.Data()}); err != nil {
		t.Fatal(err)
	}
	if err := msg.Nak(); err != nil {
		t.Fatal(err)
	}

	if err := ob.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the termination", pendingIs(t, ob, 0))
	if n := len(recv.requests()); n != 0 {
		t.Fatalf("%d attempts after the last", n)
	}
	if dls, err := ob.DeadLetters(); err != nil || len(dls) != 1 || dls[0].EventID != ev.ID {
		t.Fatalf("dead letters %+v, %v; want the one", dls, err)
	}
	if out := metricsText(set); !strings.Contains(out, `infergate_webhook_dead_lettered_total{target="ci"} 0`+"\n") {
		t.Fatalf("the dead letter was counted again:\n%s", out)
	}
}

func TestEventFilter(t *testing.T) {
	e := enginetest.Start(t)
	drift, canary, all := newReceiver(t, always(200)), newReceiver(t, always(200)), newReceiver(t, always(200))
	ob := started(t, e, Options{Targets: []Target{
		{Name: "drift", URL: drift.URL, Events: []string{"drift.detected", "drift.resolved", TypeDriftDetected}},
		{Name: "canary.team", URL: canary.URL, Events: []string{TypeCanaryPromoted, "canary.rolledback"}},
		{Name: "all", URL: all.URL},
	}})
	detected := emit(t, ob, TypeDriftDetected)
	promoted := emit(t, ob, TypeCanaryPromoted)
	succeeded := emit(t, ob, TypeRetrainSucceeded)
	waitFor(t, "every delivery", func() bool { return len(drift.requests())+len(canary.requests())+len(all.requests()) == 5 })
	waitFor(t, "every acknowledgement", pendingIs(t, ob, 0))

	f := func(r *receiver, want ...string) {
		t.Helper()
		got := r.ids(t)
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
	f(drift, detected.ID)
	f(canary, promoted.ID)
	f(all, detected.ID, promoted.ID, succeeded.ID)
	assertDrained(t, e, "test")
}

// TestTargetEventsChange: a target's events filter, changed between two
// opens, applies to the events emitted after the second.
func TestTargetEventsChange(t *testing.T) {
	e := enginetest.Start(t)
	recv := newReceiver(t, always(http.StatusOK))
	tg := fast("ci", recv.URL)
	tg.Events = []string{"drift.detected"}
	open(t, e, Options{Targets: []Target{tg}}).Close()
	tg.Events = []string{"canary.promoted"}
	ob := started(t, e, Options{Targets: []Target{tg}})
	emit(t, ob, TypeDriftDetected)
	promoted := emit(t, ob, TypeCanaryPromoted)
	waitFor(t, "the delivery", func() bool { return len(recv.requests()) == 1 })
	waitFor(t, "its acknowledgement", pendingIs(t, ob, 0))
	if ids := recv.ids(t); !slices.Equal(ids, []string{promoted.ID}) {
		t.Fatalf("delivered %v, want only %s", ids, promoted.ID)
	}
}

func TestEmitIdempotentAndBounded(t *testing.T) {
	e := enginetest.Start(t)
	ob := open(t, e, Options{MaxPending: 2, Targets: []Target{{Name: "ci", URL: closedURL(t), Events: []string{"drift.detected"}}}})
	ev := emit(t, ob, TypeDriftDetected)
	if err := ob.Emit(context.Background(), ev, ev); err != nil {
		t.Fatal(err)
	}
	if n := stored(t, e, "test"); n != 1 {
		t.Fatalf("emitting an event three times stored it %d times", n)
	}
	emit(t, ob, TypeDriftDetected)
	if err := ob.Emit(context.Background(), newEvent(t, TypeDriftDetected)); !errors.Is(err, ErrFull) {
		t.Fatalf("got %v, want ErrFull", err)
	}
	// An event that no target takes is not stored, so it fits.
	if err := ob.Emit(context.Background(), newEvent(t, TypeCanaryHeld)); err != nil {
		t.Fatalf("an event no target takes: %v", err)
	}
	if err := ob.Emit(context.Background(), Event{ID: "x", Type: TypeDriftDetected}); !errors.Is(err, ErrInvalidEvent) {
		t.Fatalf("got %v, want ErrInvalidEvent", err)
	}
	if err := ob.Emit(context.Background(), Event{ID: "x\r\ny", Source: "s", Type: TypeDriftDetected}); !errors.Is(err, ErrInvalidEvent) {
		t.Fatalf("an id with a line break: got %v, want ErrInvalidEvent", err)
	}
	if n := stored(t, e, "test"); n != 2 {
		t.Fatalf("%d events stored, want 2", n)
	}
	waitFor(t, "both to be pending", pendingIs(t, ob, 2))
}

// TestUnknownTypeToCatchAll: a target without an events filter takes any
// type that can be a subject; one that cannot is refused.
func TestUnknownTypeToCatchAll(t *testing.T) {
	e := enginetest.Start(t)
	ob := open(t, e, Options{Targets: []Target{stuck(t, "all")}})
	ev := newEvent(t, "com.example.custom")
	if err := ob.Emit(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	ev = newEvent(t, "com.example.*")
	if err := ob.Emit(context.Background(), ev); !errors.Is(err, ErrInvalidEvent) {
		t.Fatalf("a type with a wildcard: got %v, want ErrInvalidEvent", err)
	}
	if n := stored(t, e, "test"); n != 1 {
		t.Fatalf("%d events stored, want 1", n)
	}
}

// TestDuplicateDeliveredOnce: an event emitted again after its delivery,
// within the stream's duplicate window, is not delivered again.
func TestDuplicateDeliveredOnce(t *testing.T) {
	e := enginetest.Start(t)
	recv := newReceiver(t, always(http.StatusOK))
	ob := started(t, e, Options{Concurrency: 1, Targets: []Target{fast("ci", recv.URL)}})
	ev := emit(t, ob, TypeDriftDetected)
	waitFor(t, "the delivery", func() bool { return recv.count(t, ev.ID) == 1 })
	if err := ob.Emit(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	// A second outbox of the same producer, as another replica.
	other := open(t, e, Options{Targets: []Target{fast("ci", recv.URL)}})
	if err := other.Emit(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	marker := emit(t, ob, TypeDriftDetected)
	waitFor(t, "the next event", func() bool { return recv.count(t, marker.ID) == 1 })
	waitFor(t, "every acknowledgement", pendingIs(t, ob, 0))
	if n := recv.count(t, ev.ID); n != 1 {
		t.Fatalf("the event emitted three times was delivered %d times", n)
	}
}

// TestMayDeliver: while MayDeliver says no, a started outbox posts
// nothing; once it says yes, it delivers.
func TestMayDeliver(t *testing.T) {
	e := enginetest.Start(t)
	recv := newReceiver(t, always(http.StatusOK))
	var may atomic.Bool
	var asked atomic.Int64
	ob := started(t, e, Options{Targets: []Target{fast("ci", recv.URL)},
		MayDeliver: func() bool { asked.Add(1); return may.Load() }})
	ev := emit(t, ob, TypeDriftDetected)
	from := asked.Load()
	waitFor(t, "MayDeliver to be asked again", func() bool { return asked.Load() >= from+4 })
	if n := len(recv.requests()); n != 0 {
		t.Fatalf("posted %d times while it may not", n)
	}
	if n := pending(t, ob); n != 1 {
		t.Fatalf("%d pending, want 1", n)
	}
	may.Store(true)
	waitFor(t, "the delivery", func() bool { return recv.count(t, ev.ID) == 1 })
	waitFor(t, "its acknowledgement", pendingIs(t, ob, 0))
}

// TestFleetOnlyTheLeaderPosts: two replicas of a producer share the
// stream. The first takes an event, then loses its lease before the POST:
// it hands the event back and posts nothing; the second, which holds the
// lease, delivers it, although a third replica emitted it.
func TestFleetOnlyTheLeaderPosts(t *testing.T) {
	e := enginetest.Start(t)
	oldLeader, newLeader := newReceiver(t, always(http.StatusOK)), newReceiver(t, always(http.StatusOK))
	var asked atomic.Int64
	var logs logBuffer
	a := open(t, e, Options{Replica: "a", Log: logs.logger(), Targets: []Target{fast("ci", oldLeader.URL)},
		// The lease holds when the pull starts and is lost by the POST.
		MayDeliver: func() bool { return asked.Add(1) == 1 }})
	b := open(t, e, Options{Replica: "b", Targets: []Target{fast("ci", newLeader.URL)}})
	c := open(t, e, Options{Replica: "c", Targets: []Target{fast("ci", closedURL(t))}})
	ev := emit(t, c, TypeDriftDetected)
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the first replica to hand the event back", func() bool {
		return strings.Contains(logs.String(), "webhook delivery handed back")
	})
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the delivery by the leader", func() bool { return newLeader.count(t, ev.ID) == 1 })
	waitFor(t, "its acknowledgement", pendingIs(t, b, 0))
	if n := len(oldLeader.requests()); n != 0 {
		t.Fatalf("the replica without the lease posted %d times", n)
	}
}

// TestStopStart: Stop cancels a request in flight and hands its event
// back at once; nothing is posted while stopped; Start delivers again.
func TestStopStart(t *testing.T) {
	e := enginetest.Start(t)
	arrived := make(chan struct{}, 1)
	var hang atomic.Bool
	hang.Store(true)
	var mu sync.Mutex
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body) // the server notices a closed connection only after the body
		if hang.Load() {
			arrived <- struct{}{}
			<-r.Context().Done()
			return
		}
		mu.Lock()
		got = append(got, r.Header.Get("ce-id"))
		mu.Unlock()
	}))
	defer srv.Close()
	delivered := func(id string) func() bool {
		return func() bool { mu.Lock(); defer mu.Unlock(); return slices.Contains(got, id) }
	}
	// An hour's Timeout: the event comes back after the Stop only because
	// it is handed back, not because its acknowledgement wait ends.
	ob := started(t, e, Options{Targets: []Target{{Name: "ci", URL: srv.URL, Timeout: time.Hour}}})
	first := emit(t, ob, TypeDriftDetected)
	<-arrived
	begin := time.Now()
	ob.Stop()
	if d := time.Since(begin); d > 5*time.Second {
		t.Fatalf("Stop took %s with a request in flight", d)
	}
	ob.Stop()
	hang.Store(false)
	second := emit(t, ob, TypeDriftDetected)
	waitFor(t, "both events to be pending", pendingIs(t, ob, 2))
	if err := ob.Start(); err != nil {
		t.Fatal(err)
	}
	if err := ob.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both deliveries after the Start", func() bool { return delivered(first.ID)() && delivered(second.ID)() })
	waitFor(t, "their acknowledgements", pendingIs(t, ob, 0))
}

// TestRestartDeliversEverything: what one outbox emitted and could not
// deliver, the next one opened on the engine delivers.
func TestRestartDeliversEverything(t *testing.T) {
	e := enginetest.Start(t)
	down := Target{Name: "ci", URL: closedURL(t), MaxAttempts: 1000, BackoffBase: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond}
	ob, err := Open(Options{Conn: e.Conn, Name: "test", Targets: []Target{down}})
	if err != nil {
		t.Fatal(err)
	}
	if err := ob.Start(); err != nil {
		t.Fatal(err)
	}
	var want []string
	for range 20 {
		want = append(want, emit(t, ob, TypeDriftDetected).ID)
	}
	ob.Close()

	recv := newReceiver(t, always(http.StatusOK))
	ob = started(t, e, Options{Targets: []Target{fast("ci", recv.URL)}})
	waitFor(t, "every delivery", func() bool {
		got := recv.ids(t)
		return !slices.ContainsFunc(want, func(id string) bool { return !slices.Contains(got, id) })
	})
	waitFor(t, "every acknowledgement", pendingIs(t, ob, 0))
	assertDrained(t, e, "test")
}

func TestRemovedTargetDeadLetters(t *testing.T) {
	e := enginetest.Start(t)
	var logs logBuffer
	ob := open(t, e, Options{Targets: []Target{stuck(t, "old"), stuck(t, "kept")}})
	ev := emit(t, ob, TypeDriftDetected)
	ob.Close()
	ob = open(t, e, Options{Log: logs.logger(), Targets: []Target{stuck(t, "kept")}})
	dls, err := ob.DeadLetters()
	if err != nil {
		t.Fatal(err)
	}
	if len(dls) != 1 || dls[0].EventID != ev.ID || dls[0].Target != "old" || dls[0].Attempts != 0 ||
		!strings.Contains(dls[0].LastError, "no longer configured") || len(dls[0].Event) == 0 {
		t.Fatalf("unexpected dead letters %+v", dls)
	}
	if n := pending(t, ob); n != 1 {
		t.Fatalf("%d pending, want the kept target's 1", n)
	}
	if _, err := e.JS.Consumer(context.Background(), "infergate_outbox_test", "old"); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Fatalf("the removed target's consumer: %v, want it deleted", err)
	}
	if !strings.Contains(logs.String(), "target=old dead_lettered=1 dropped=0") {
		t.Fatalf("no log line says what became of the removed target's events:\n%s", logs.String())
	}
}

// TestProducersAreSeparate: two producers' outboxes on one engine keep
// their events apart.
func TestProducersAreSeparate(t *testing.T) {
	e := enginetest.Start(t)
	gw, rt := newReceiver(t, always(http.StatusOK)), newReceiver(t, always(http.StatusOK))
	gateway := started(t, e, Options{Name: "gateway", Targets: []Target{fast("ci", gw.URL)}})
	retrain := started(t, e, Options{Name: "retrain", Targets: []Target{fast("ci", rt.URL)}})
	a := emit(t, gateway, TypeDriftDetected)
	b := emit(t, retrain, TypeRetrainSucceeded)
	waitFor(t, "both deliveries", func() bool { return len(gw.requests()) == 1 && len(rt.requests()) == 1 })
	if gw.ids(t)[0] != a.ID || rt.ids(t)[0] != b.ID {
		t.Fatalf("the gateway's target got %v, the retrain service's %v", gw.ids(t), rt.ids(t))
	}
}

func TestOpenErrors(t *testing.T) {
	e := enginetest.Start(t)
	f := func(o Options, wantErr string) {
		t.Helper()
		if o.Name == "" {
			o.Name = "test"
		}
		o.Conn = e.Conn
		ob, err := Open(o)
		if err == nil {
			ob.Close()
		}
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("got error %v, want one containing %q", err, wantErr)
		}
	}
	f(Options{Targets: []Target{{Name: "ci", URL: "http://x/", SecretEnv: "OUTBOX_TEST_UNSET"}}},
		`webhook target "ci": secret_env: environment variable OUTBOX_TEST_UNSET is not set`)
	f(Options{Targets: []Target{{Name: "ci", URL: "http://x/", Format: FormatGitHubDispatch, TokenEnv: "OUTBOX_TEST_UNSET"}}},
		"token_env: environment variable OUTBOX_TEST_UNSET is not set")
	f(Options{Targets: []Target{{Name: "ci"}}}, "webhooks[0].url")
	f(Options{Name: "a.b"}, `name "a.b"`)
	if _, err := Open(Options{Name: "test"}); err == nil || !strings.Contains(err.Error(), "no engine connection") {
		t.Fatalf("without a connection: %v", err)
	}
}

func TestEscape(t *testing.T) {
	f := func(in, want string) {
		t.Helper()
		if got := escape(in); got != want {
			t.Fatalf("escape(%q) = %q, want %q", in, got, want)
		}
	}
	f("ci", "ci")
	f("a.b", "a_2Eb")
	f("a_2Eb", "a_5F2Eb")
	f("9f1c-x/y=z", "9f1c-x_2Fy_3Dz")
	if k := deadLetterKey("ci.prod", "e.1"); k != "ci_2Eprod.e_2E1" {
		t.Fatalf("deadLetterKey = %q", k)
	}
}

func TestBackoff(t *testing.T) {
	ob := &Outbox{rand: rand.New(rand.NewPCG(3, 4))}
	tg := &target{Target: Target{BackoffBase: 100 * time.Millisecond, BackoffMax: time.Second}}
	for attempts := 1; attempts <= 70; attempts++ {
		ceiling := min(100*time.Millisecond<<min(attempts-1, 10), time.Second)
		var longest time.Duration
		for range 200 {
			d := ob.backoff(tg, attempts, 0)
			if d < 0 || d > ceiling {
				t.Fatalf("attempt %d: delay %s outside [0, %s]", attempts, d, ceiling)
			}
			longest = max(longest, d)
		}
		if longest < ceiling/2 {
			t.Fatalf("attempt %d: no delay above %s in 200 draws below %s: no jitter", attempts, longest, ceiling)
		}
	}
	if d := ob.backoff(tg, 1, 500*time.Millisecond); d < 500*time.Millisecond {
		t.Fatalf("delay %s ignores Retry-After", d)
	}
	if d := ob.backoff(tg, 1, time.Hour); d != time.Second {
		t.Fatalf("delay %s, want Retry-After capped at backoff_max", d)
	}

	now := time.Now()
	f := func(header string, want time.Duration) {
		t.Helper()
		if got := retryAfter(header, now); got < want-time.Second || got > want {
			t.Fatalf("retryAfter(%q) = %s, want %s", header, got, want)
		}
	}
	f("", 0)
	f("7", 7*time.Second)
	f("soon", 0)
	f(now.Add(30*time.Second).UTC().Format(http.TimeFormat), 30*time.Second)
}
