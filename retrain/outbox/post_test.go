package outbox

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/infergate/infergate/retrain/engine/enginetest"
)

// TestAny2xxIsDelivered holds the sender's half of the receivers'
// contract: any 2xx is a delivery made at once (a receiver answers 200 to
// an event id it accepted before), anything else is tried again, 409
// included, until it is dead-lettered.
func TestAny2xxIsDelivered(t *testing.T) {
	f := func(code, wantRequests int, wantDead bool) {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			e := enginetest.Start(t)
			recv := newReceiver(t, always(code))
			target := fast("ci", recv.URL)
			target.MaxAttempts = 2
			ob := started(t, e, Options{Targets: []Target{target}})
			emit(t, ob, TypeDriftDetected)
			waitFor(t, "the delivery's end", func() bool { return len(recv.requests()) == wantRequests })
			waitFor(t, "its outcome", pendingIs(t, ob, 0))
			dls, err := ob.DeadLetters()
			if err != nil {
				t.Fatal(err)
			}
			if n := len(recv.requests()); n != wantRequests || (len(dls) == 1) != wantDead {
				t.Fatalf("%d requests, dead letters %+v; want %d requests, dead-lettered: %t", n, dls, wantRequests, wantDead)
			}
			if wantDead && !strings.Contains(dls[0].LastError, fmt.Sprint(code)) {
				t.Fatalf("last error %q", dls[0].LastError)
			}
		})
	}
	f(http.StatusOK, 1, false)
	f(http.StatusCreated, 1, false)
	f(http.StatusAccepted, 1, false)
	f(http.StatusNoContent, 1, false)
	f(http.StatusConflict, 2, true)
}
