package outbox

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"go.etcd.io/bbolt"
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

func openDB(t *testing.T, path string) *bbolt.DB {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func tempDB(t *testing.T) *bbolt.DB { return openDB(t, filepath.Join(t.TempDir(), "state.db")) }

func open(t *testing.T, o Options) *Outbox {
	t.Helper()
	ob, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ob.Close() })
	return ob
}

// fast is a target that retries within milliseconds.
func fast(name, url string) Target {
	return Target{Name: name, URL: url, BackoffBase: time.Millisecond, BackoffMax: 5 * time.Millisecond}
}

func emit(t *testing.T, ob *Outbox, typ string) Event {
	t.Helper()
	e, err := NewEvent("/infergate/test", typ, "iris/1", map[string]any{"share": 0.5})
	if err != nil {
		t.Fatal(err)
	}
	if err := ob.Emit(e); err != nil {
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

func TestDeliverySigned(t *testing.T) {
	t.Setenv("OUTBOX_TEST_SECRET", "s3cret")
	recv := newReceiver(t, always(http.StatusAccepted))
	set := metrics.NewSet()
	ob := open(t, Options{DB: tempDB(t), Metrics: set,
		Targets: []Target{{Name: "ci", URL: recv.URL, SecretEnv: "OUTBOX_TEST_SECRET"}}})
	e := emit(t, ob, TypeDriftDetected)
	waitFor(t, "the delivery", pendingIs(t, ob, 0))

	reqs := recv.requests()
	if len(reqs) != 1 {
		t.Fatalf("got %d requests, want 1", len(reqs))
	}
	req := reqs[0]
	if err := Verify(req.header.Get(SignatureHeader), []byte("s3cret"), req.body, time.Now(), time.Minute); err != nil {
		t.Fatalf("the receiver cannot verify the delivery: %v", err)
	}
	if ct := req.header.Get("Content-Type"); ct != ContentType {
		t.Fatalf("Content-Type %q, want %q", ct, ContentType)
	}
	if id := req.header.Get("ce-id"); id != e.ID {
		t.Fatalf("ce-id %q, want %q", id, e.ID)
	}
	var got Event
	if err := json.Unmarshal(req.body, &got); err != nil || got.ID != e.ID || got.Type != TypeDriftDetected || string(got.Data) != `{"share":0.5}` {
		t.Fatalf("the receiver got %s (%v)", req.body, err)
	}

	var out bytes.Buffer
	set.WritePrometheus(&out)
	for _, line := range []string{`infergate_webhook_deliveries_total{target="ci"} 1`, `infergate_webhook_pending 0`} {
		if !strings.Contains(out.String(), line+"\n") {
			t.Fatalf("metrics lack %q:\n%s", line, out.String())
		}
	}
	ob.Close()
	if names := set.ListMetricNames(); len(names) != 0 {
		t.Fatalf("Close left series behind: %v", names)
	}
	if err := ob.Emit(e); !errors.Is(err, ErrClosed) {
		t.Fatalf("Emit after Close: got %v, want ErrClosed", err)
	}
	if err := ob.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestGitHubDispatch(t *testing.T) {
	t.Setenv("OUTBOX_TEST_TOKEN", "ghp_test")
	recv := newReceiver(t, always(http.StatusNoContent))
	ob := open(t, Options{DB: tempDB(t), Targets: []Target{
		{Name: "gh", URL: recv.URL + "/repos/o/r/dispatches", Format: FormatGitHubDispatch, TokenEnv: "OUTBOX_TEST_TOKEN"}}})
	e := emit(t, ob, TypeDriftDetected)
	waitFor(t, "the delivery", pendingIs(t, ob, 0))

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
	if body.EventType != TypeDriftDetected || payload.ID != e.ID || payload.Subject != "iris/1" {
		t.Fatalf("unexpected body %s", req.body)
	}
}

func TestRetryUntilDelivered(t *testing.T) {
	recv := newReceiver(t, func(n int) int {
		if n <= 3 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	set := metrics.NewSet()
	ob := open(t, Options{DB: tempDB(t), Metrics: set, Rand: rand.New(rand.NewPCG(1, 2)), Targets: []Target{fast("ci", recv.URL)}})
	e := emit(t, ob, TypeCanaryPromoted)
	waitFor(t, "the delivery", pendingIs(t, ob, 0))
	if ids := recv.ids(t); len(ids) != 4 || ids[3] != e.ID {
		t.Fatalf("got %d requests, want 3 failed and 1 delivered", len(ids))
	}
	if dls, err := ob.DeadLetters(); err != nil || len(dls) != 0 {
		t.Fatalf("dead letters %v, %v", dls, err)
	}
	var out bytes.Buffer
	set.WritePrometheus(&out)
	if !strings.Contains(out.String(), `infergate_webhook_failed_attempts_total{target="ci"} 3`+"\n") {
		t.Fatalf("metrics:\n%s", out.String())
	}
}

func TestDeadLetterAndRedrive(t *testing.T) {
	var mu sync.Mutex
	code := http.StatusInternalServerError
	recv := newReceiver(t, func(int) int { mu.Lock(); defer mu.Unlock(); return code })
	tg := fast("ci", recv.URL)
	tg.MaxAttempts = 3
	db := tempDB(t)
	ob := open(t, Options{DB: db, Targets: []Target{tg}})
	e := emit(t, ob, TypeRetrainFailed)
	waitFor(t, "the dead letter", pendingIs(t, ob, 0))

	dls, err := ob.DeadLetters()
	if err != nil {
		t.Fatal(err)
	}
	if len(dls) != 1 {
		t.Fatalf("got %d dead letters, want 1", len(dls))
	}
	dl := dls[0]
	if dl.EventID != e.ID || dl.EventType != TypeRetrainFailed || dl.Target != "ci" || dl.Attempts != 3 ||
		!strings.Contains(dl.LastError, "500") || dl.DeadAt.IsZero() {
		t.Fatalf("unexpected dead letter %+v", dl)
	}
	if n := len(recv.requests()); n != 3 {
		t.Fatalf("got %d attempts, want 3", n)
	}
	if err := ob.Redrive(e.ID, "nobody"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Redrive to an unknown target: got %v", err)
	}
	if err := ob.Redrive("no-such-event", "ci"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Redrive of an unknown event: got %v", err)
	}

	mu.Lock()
	code = http.StatusOK
	mu.Unlock()
	if err := ob.Redrive(e.ID, "ci"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the redriven delivery", pendingIs(t, ob, 0))
	if ids := recv.ids(t); len(ids) != 4 || ids[3] != e.ID {
		t.Fatalf("got %d requests, want 4", len(ids))
	}
	if dls, err := ob.DeadLetters(); err != nil || len(dls) != 0 {
		t.Fatalf("dead letters after the redrive: %v, %v", dls, err)
	}
	if err := ob.Redrive(e.ID, "ci"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Redrive of a delivered event: got %v", err)
	}
	assertEmpty(t, db)
}

// assertEmpty checks that no event or delivery record is left in db.
func assertEmpty(t *testing.T, db *bbolt.DB) {
	t.Helper()
	db.View(func(tx *bbolt.Tx) error {
		for _, b := range [][]byte{eventsBucket, deliveriesBucket} {
			if n := tx.Bucket(b).Stats().KeyN; n != 0 {
				t.Fatalf("bucket %s holds %d keys after every delivery", b, n)
			}
		}
		return nil
	})
}

func TestRedriveOfPendingDelivery(t *testing.T) {
	ob := open(t, Options{DB: tempDB(t), Targets: []Target{{Name: "ci", URL: closedURL(t), BackoffBase: time.Hour, BackoffMax: time.Hour}}})
	e := emit(t, ob, TypeDriftDetected)
	if err := ob.Redrive(e.ID, "ci"); !errors.Is(err, ErrNotDead) {
		t.Fatalf("got %v, want ErrNotDead", err)
	}
}

func TestEventFilter(t *testing.T) {
	drift, canary, all := newReceiver(t, always(200)), newReceiver(t, always(200)), newReceiver(t, always(200))
	ob := open(t, Options{DB: tempDB(t), Targets: []Target{
		{Name: "drift", URL: drift.URL, Events: []string{"drift.detected", "drift.resolved"}},
		{Name: "canary", URL: canary.URL, Events: []string{TypeCanaryPromoted, "canary.rolledback"}},
		{Name: "all", URL: all.URL},
	}})
	detected := emit(t, ob, TypeDriftDetected)
	promoted := emit(t, ob, TypeCanaryPromoted)
	succeeded := emit(t, ob, TypeRetrainSucceeded)
	waitFor(t, "every delivery", pendingIs(t, ob, 0))

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
}

func TestEmitIdempotentAndBounded(t *testing.T) {
	ob := open(t, Options{DB: tempDB(t), MaxPending: 2,
		Targets: []Target{{Name: "ci", URL: closedURL(t), BackoffBase: time.Hour, BackoffMax: time.Hour}}})
	e := emit(t, ob, TypeDriftDetected)
	if err := ob.Emit(e); err != nil {
		t.Fatal(err)
	}
	if n, _ := ob.Pending(); n != 1 {
		t.Fatalf("emitting an event twice made %d deliveries pending, want 1", n)
	}
	emit(t, ob, TypeDriftDetected)
	e3, _ := NewEvent("s", TypeDriftDetected, "", nil)
	if err := ob.Emit(e3); !errors.Is(err, ErrFull) {
		t.Fatalf("got %v, want ErrFull", err)
	}
	if err := ob.Emit(Event{ID: "x", Type: TypeDriftDetected}); !errors.Is(err, ErrInvalidEvent) {
		t.Fatalf("got %v, want ErrInvalidEvent", err)
	}
}

func TestRestartDeliversEverything(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	db := openDB(t, path)
	down := Target{Name: "ci", URL: closedURL(t), MaxAttempts: 1000, BackoffBase: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond}
	ob, err := Open(Options{DB: db, Targets: []Target{down}})
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for range 20 {
		want = append(want, emit(t, ob, TypeDriftDetected).ID)
	}
	ob.Close()
	db.Close()

	recv := newReceiver(t, always(http.StatusOK))
	db = openDB(t, path)
	ob = open(t, Options{DB: db, Targets: []Target{fast("ci", recv.URL)}})
	waitFor(t, "every delivery", pendingIs(t, ob, 0))
	got := recv.ids(t)
	for _, id := range want {
		if !slices.Contains(got, id) {
			t.Fatalf("event %s was never delivered", id)
		}
	}
	assertEmpty(t, db)
}

func TestCloseCancelsInFlight(t *testing.T) {
	arrived := make(chan struct{}, 1)
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body) // the server notices a closed connection only after the body
		arrived <- struct{}{}
		<-r.Context().Done()
	}))
	defer hang.Close()
	path := filepath.Join(t.TempDir(), "state.db")
	db := openDB(t, path)
	ob, err := Open(Options{DB: db, Targets: []Target{{Name: "ci", URL: hang.URL, Timeout: time.Hour}}})
	if err != nil {
		t.Fatal(err)
	}
	e := emit(t, ob, TypeDriftDetected)
	<-arrived
	start := time.Now()
	ob.Close()
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Close took %s with a request in flight", d)
	}

	recv := newReceiver(t, always(http.StatusOK))
	ob = open(t, Options{DB: db, Targets: []Target{{Name: "ci", URL: recv.URL, MaxAttempts: 1}}})
	waitFor(t, "the delivery after the restart", pendingIs(t, ob, 0))
	if ids := recv.ids(t); len(ids) != 1 || ids[0] != e.ID {
		t.Fatalf("got %v, want %s", ids, e.ID)
	}
}

func TestRemovedTargetDeadLetters(t *testing.T) {
	db := tempDB(t)
	ob, err := Open(Options{DB: db, Targets: []Target{{Name: "old", URL: closedURL(t), BackoffBase: time.Hour, BackoffMax: time.Hour}}})
	if err != nil {
		t.Fatal(err)
	}
	e := emit(t, ob, TypeDriftDetected)
	ob.Close()
	ob = open(t, Options{DB: db, Targets: []Target{{Name: "new", URL: closedURL(t)}}})
	dls, err := ob.DeadLetters()
	if err != nil {
		t.Fatal(err)
	}
	if len(dls) != 1 || dls[0].EventID != e.ID || dls[0].Target != "old" || !strings.Contains(dls[0].LastError, "no longer configured") {
		t.Fatalf("unexpected dead letters %+v", dls)
	}
	if n, _ := ob.Pending(); n != 0 {
		t.Fatalf("%d pending, want 0", n)
	}
}

func TestOpenErrors(t *testing.T) {
	db := tempDB(t)
	f := func(o Options, wantErr string) {
		t.Helper()
		o.DB = db
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
	if _, err := Open(Options{}); err == nil {
		t.Fatal("no error without a DB")
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

// TestEmitWithCommitsTogether: the caller's writes and the events of
// EmitWith are committed together, or, when the caller's part fails,
// neither is.
func TestEmitWithCommitsTogether(t *testing.T) {
	recv := newReceiver(t, always(http.StatusOK))
	db := tempDB(t)
	ob := open(t, Options{DB: db, Targets: []Target{fast("ci", recv.URL)}})
	mine := []byte("mine")
	event := func() Event {
		e, err := NewEvent("/infergate/test", "dev.infergate.canary.promoted", "iris/2", nil)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	refused := errors.New("refused")
	failed := event()
	err := ob.EmitWith(func(tx *bbolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(mine)
		if err != nil {
			return err
		}
		if err := b.Put([]byte("k"), []byte("v1")); err != nil {
			return err
		}
		return refused
	}, failed)
	if !errors.Is(err, refused) {
		t.Fatalf("EmitWith returned %v, want the caller's error", err)
	}
	if n, _ := ob.Pending(); n != 0 {
		t.Fatalf("%d deliveries pending after an aborted EmitWith", n)
	}

	stored := event()
	if err := ob.EmitWith(func(tx *bbolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(mine)
		if err != nil {
			return err
		}
		return b.Put([]byte("k"), []byte("v2"))
	}, stored); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the delivery", pendingIs(t, ob, 0))
	if ids := recv.ids(t); len(ids) != 1 || ids[0] != stored.ID {
		t.Fatalf("delivered %v, want only %s", ids, stored.ID)
	}
	db.View(func(tx *bbolt.Tx) error {
		if got := string(tx.Bucket(mine).Get([]byte("k"))); got != "v2" {
			t.Errorf("the caller's key holds %q, want v2", got)
		}
		return nil
	})
}
