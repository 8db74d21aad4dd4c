package gateway

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/infergate/infergate/retrain/outbox"
	"github.com/infergate/infergate/router"
)

const webhookSecretEnv = "INFERGATE_TEST_WEBHOOK_SECRET"

// eventReceiver is a webhook target on loopback that keeps the events
// delivered to it, failing the test on a bad signature. It is safe for
// concurrent use.
type eventReceiver struct {
	url string
	mu  sync.Mutex
	got []outbox.Event // guarded by mu
}

func newEventReceiver(t *testing.T) *eventReceiver {
	t.Helper()
	t.Setenv(webhookSecretEnv, "s3cret")
	r := &eventReceiver{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		e, code, err := outbox.Receive(req, []byte("s3cret"), time.Now(), time.Minute, 1<<20)
		if err != nil {
			t.Errorf("delivery refused: %v", err)
			http.Error(w, err.Error(), code)
			return
		}
		r.mu.Lock()
		r.got = append(r.got, e)
		r.mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	r.url = srv.URL
	return r
}

// targets returns the webhook config that delivers to r.
func (r *eventReceiver) targets() []outbox.Target {
	return []outbox.Target{{Name: "ci", URL: r.url, SecretEnv: webhookSecretEnv, BackoffBase: time.Millisecond}}
}

// events returns the events delivered so far.
func (r *eventReceiver) events() []outbox.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

// canaryTypes are the full types of the canary events.
var canaryTypes = []string{outbox.TypeCanaryStarted, outbox.TypeCanaryAdvanced, outbox.TypeCanaryHeld,
	outbox.TypeCanaryPromoted, outbox.TypeCanaryRolledBack}

// TestCanaryEventsReachWebhooks runs a canary to promotion and checks that
// each of its steps arrives at a webhook receiver on loopback, signed, with
// a full type and data that says what the step did.
func TestCanaryEventsReachWebhooks(t *testing.T) {
	receiver := newEventReceiver(t)
	cfg := abConfig(t, router.Config{Split: map[string]int{"1": 1}, Canary: canaryConfig("3")})
	cfg.Webhooks = receiver.targets()
	clock := newTestClock()
	srv, url := startServerWith(t, Options{Config: cfg, Now: clock.Now})
	stop := load(t, url)
	defer stop()
	driveCanary(t, srv, clock, 300*time.Millisecond, func() bool {
		srv.cp.mu.Lock()
		defer srv.cp.mu.Unlock()
		return srv.cp.routes["ab"].canary.Phase == router.PhasePromoted
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		byType := map[string]outbox.Event{}
		for _, e := range receiver.events() {
			if !slices.Contains(canaryTypes, e.Type) {
				t.Fatalf("event of type %q, want one of %v", e.Type, canaryTypes)
			}
			byType[e.Type] = e
		}
		if e, ok := byType[outbox.TypeCanaryPromoted]; ok && e.Subject == "ab/3" {
			advanced, ok := byType[outbox.TypeCanaryAdvanced]
			if !ok || byType[outbox.TypeCanaryStarted].Subject != "ab/3" {
				t.Fatalf("promoted without canary.started and canary.advanced: %v", byType)
			}
			var step canaryStep
			if err := json.Unmarshal(advanced.Data, &step); err != nil {
				t.Fatal(err)
			}
			if me := srv.cp.cluster.Replica; advanced.Replica != me || advanced.Leader != me || step.Replica != me || step.Leader != me {
				t.Fatalf("canary.advanced says replica %q leader %q (data: %q, %q), want %q for all", advanced.Replica, advanced.Leader, step.Replica, step.Leader, me)
			}
			if step.Step != router.KindAdvanced || step.WeightBefore != 20 || step.WeightAfter != 40 || step.Interval != "300ms" ||
				step.Checks == nil || step.Checks.Canary.Requests == 0 || !strings.HasSuffix(step.Checks.Canary.P99, "s") {
				t.Fatalf("canary.advanced data: %s", advanced.Data)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("webhook got %v, want canary.started, canary.advanced and canary.promoted for ab/3", byType)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestCanaryHeldEmitsOnce holds a canary that never gets enough traffic
// for many intervals: it emits canary.started and one canary.held, which
// says why, and nothing else.
func TestCanaryHeldEmitsOnce(t *testing.T) {
	receiver := newEventReceiver(t)
	canary := &router.CanaryConfig{Version: "3", StepWeights: []int{20, 40}, Interval: 20 * time.Millisecond, MinRequests: 1_000_000}
	cfg := abConfig(t, router.Config{Split: map[string]int{"1": 1}, Canary: canary})
	cfg.Webhooks = receiver.targets()
	clock := newTestClock()
	srv, _ := startServerWith(t, Options{Config: cfg, Now: clock.Now})
	held := metrics.GetOrCreateCounter(canaryTransitionSeries(`model="ab",version="3"`, router.KindHeld))
	base := held.Get()
	driveCanary(t, srv, clock, 20*time.Millisecond, func() bool { return held.Get() >= base+5 })
	deadline := time.Now().Add(30 * time.Second)
	for {
		// An event is stored before its step is counted, so once the
		// outbox is empty after five holds every event is delivered.
		pending, err := srv.cp.outbox.Pending()
		if err != nil {
			t.Fatal(err)
		}
		if held.Get() >= base+5 && pending == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d held analyses and %d events pending after 30s", held.Get()-base, pending)
		}
		time.Sleep(10 * time.Millisecond)
	}
	var types []string
	var step canaryStep
	for _, e := range receiver.events() {
		types = append(types, e.Type)
		if e.Type == outbox.TypeCanaryHeld {
			if err := json.Unmarshal(e.Data, &step); err != nil {
				t.Fatal(err)
			}
		}
	}
	if want := []string{outbox.TypeCanaryStarted, outbox.TypeCanaryHeld}; !slices.Equal(types, want) {
		t.Fatalf("after %d held analyses the webhook got %v, want %v", held.Get()-base, types, want)
	}
	if step.Step != router.KindHeld || step.WeightBefore != 20 || step.WeightAfter != 20 || step.Interval != "20ms" ||
		!strings.Contains(step.Reason, "fewer than min_requests 1000000") || step.Checks == nil || step.Checks.Canary.P99 != "0s" {
		t.Fatalf("canary.held data: %+v", step)
	}
}
