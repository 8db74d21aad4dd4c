package outbox

import (
	"net/http"
	"strings"
	"testing"

	"github.com/infergate/infergate/retrain/engine/enginetest"
)

// TestDeliveriesSayWhatHappened follows one event to three targets: one
// that takes it at once, one that is down (retrying, then dead-lettered,
// then pending again once redriven) and one that does not take its type.
// The records name the targets and never their URLs.
func TestDeliveriesSayWhatHappened(t *testing.T) {
	e := enginetest.Start(t)
	ok := newReceiver(t, always(http.StatusOK))
	down := newReceiver(t, always(http.StatusServiceUnavailable))
	broken := stuck(t, "broken")
	broken.URL += "?token=s3cret"
	broken.MaxAttempts = 2
	flaky := fast("flaky", down.URL)
	flaky.MaxAttempts = 2
	gone := fast("gone", closedURL(t)+"?token=s3cret")
	gone.MaxAttempts = 1
	other := fast("other", ok.URL)
	other.Events = []string{"canary.promoted"}
	ob := started(t, e, Options{Targets: []Target{fast("ci", ok.URL), broken, flaky, gone, other}, Replica: "r1"})
	ev := emit(t, ob, TypeDriftDetected)

	byTarget := func() map[string]Delivery {
		t.Helper()
		ds, err := ob.Deliveries(ev.ID, ev.Type)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]Delivery{}
		for _, d := range ds {
			out[d.Target] = d
		}
		return out
	}
	waitFor(t, "the deliveries' outcomes", func() bool {
		ds := byTarget()
		return ds["ci"].Status == StatusDelivered && ds["broken"].Status == StatusRetrying && ds["flaky"].Status == StatusDeadLettered &&
			ds["gone"].Status == StatusDeadLettered
	})
	ds := byTarget()
	if d := ds["ci"]; d.Attempts != 1 || d.LastError != "" || d.Replica != "r1" || d.DeadLettered || d.LastAttempt.IsZero() {
		t.Fatalf("delivered: %+v", d)
	}
	if d := ds["broken"]; d.Attempts != 1 || d.LastError == "" || d.DeadLettered {
		t.Fatalf("retrying: %+v", d)
	}
	if d := ds["flaky"]; d.Attempts != 2 || !strings.Contains(d.LastError, "503") || !d.DeadLettered {
		t.Fatalf("dead-lettered: %+v", d)
	}
	if d := ds["other"]; d.Status != StatusNotSubscribed || d.Attempts != 0 {
		t.Fatalf("a target that does not take the type: %+v", d)
	}
	for _, d := range ds {
		if strings.Contains(d.LastError, "s3cret") || strings.Contains(d.LastError, "/hook") {
			t.Fatalf("a delivery record names the target's URL: %+v", d)
		}
	}
	if err := ob.Redrive(ev.ID, "flaky"); err != nil {
		t.Fatal(err)
	}
	if d := byTarget()["flaky"]; d.DeadLettered {
		t.Fatalf("redriven, the delivery still says dead-lettered: %+v", d)
	}
	// Dead letters too name the target, not its URL.
	dls, err := ob.DeadLetters()
	if err != nil {
		t.Fatal(err)
	}
	for _, dl := range dls {
		if strings.Contains(dl.LastError, "s3cret") || strings.Contains(dl.LastError, "/hook") ||
			dl.Target == "gone" && !strings.Contains(dl.LastError, `<the URL of webhook target "gone">`) {
			t.Fatalf("a dead letter names the target's URL: %+v", dl)
		}
	}
}
