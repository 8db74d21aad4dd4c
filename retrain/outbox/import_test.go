package outbox

import (
	"encoding/json"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/infergate/infergate/retrain/engine/enginetest"
)

// TestImportDeadLetter: an imported dead letter is listed as it was given,
// importing it again (or another of the same delivery) changes nothing,
// Redrive delivers it, and what cannot be a dead letter is refused.
func TestImportDeadLetter(t *testing.T) {
	e := enginetest.Start(t)
	recv := newReceiver(t, always(http.StatusOK))
	ob := started(t, e, Options{Targets: []Target{fast("ci", recv.URL)}})
	ev := newEvent(t, TypeDriftDetected)
	body, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	deadAt := time.Date(2026, 12, 6, 3, 46, 47, 0, time.UTC)
	dl := DeadLetter{EventID: ev.ID, EventType: ev.Type, Subject: ev.Subject, Target: "ci", Attempts: 5,
		LastError: "connection refused", DeadAt: deadAt, Replica: "old", Event: body}
	gone := DeadLetter{EventID: ev.ID, EventType: ev.Type, Target: "removed", Attempts: 1, LastError: "503", DeadAt: deadAt.Add(time.Second), Event: body}
	for _, d := range []DeadLetter{dl, dl, gone} {
		if err := ob.ImportDeadLetter(d); err != nil {
			t.Fatal(err)
		}
	}
	again := dl
	again.Attempts, again.LastError = 1, "a later import"
	if err := ob.ImportDeadLetter(again); err != nil {
		t.Fatal(err)
	}
	dls, err := ob.DeadLetters()
	if err != nil {
		t.Fatal(err)
	}
	if len(dls) != 2 || dls[0].Target != "ci" || dls[1].Target != "removed" {
		t.Fatalf("dead letters %+v, want those to ci and to removed", dls)
	}
	if got := dls[0]; got.Attempts != 5 || got.LastError != "connection refused" || !got.DeadAt.Equal(deadAt) || got.Replica != "old" || string(got.Event) != string(body) {
		t.Fatalf("imported %+v, listed %+v", dl, got)
	}

	f := func(d DeadLetter) {
		t.Helper()
		if err := ob.ImportDeadLetter(d); !errors.Is(err, ErrInvalidEvent) {
			t.Fatalf("importing %+v: got %v, want ErrInvalidEvent", d, err)
		}
	}
	f(DeadLetter{EventID: ev.ID, Event: body})
	f(DeadLetter{Target: "ci", Event: body})
	f(DeadLetter{EventID: "another", Target: "ci", Event: body})
	f(DeadLetter{EventID: ev.ID, Target: "ci", Event: json.RawMessage(`{"specversion":"1.0","id":"x"}`)})
	f(DeadLetter{EventID: ev.ID, Target: "ci", Event: json.RawMessage(`["not", "an", "event"]`)})
	f(DeadLetter{EventID: ev.ID, Target: "ci"})

	if err := ob.Redrive(ev.ID, "ci"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the redriven delivery", func() bool { return recv.count(t, ev.ID) == 1 })
	waitFor(t, "its acknowledgement", pendingIs(t, ob, 0))
	if dls, err := ob.DeadLetters(); err != nil || len(dls) != 1 || dls[0].Target != "removed" {
		t.Fatalf("dead letters after the redrive: %+v, %v", dls, err)
	}

	ob.Close()
	if err := ob.ImportDeadLetter(dl); !errors.Is(err, ErrClosed) {
		t.Fatalf("ImportDeadLetter after Close: got %v", err)
	}
}
