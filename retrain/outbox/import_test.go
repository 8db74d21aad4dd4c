package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/infergate/infergate/retrain/engine/enginetest"
	"github.com/infergate/infergate/retrain/legacy"
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

// TestImportLegacy: of an outbox kept before the engine, a pending
// delivery's event is emitted once however many targets it had, dead
// deliveries and pending ones to a target no longer configured become
// dead letters, what cannot be sent is counted and logged, importing again
// stores nothing twice, and without an outbox every delivery is counted
// as not importable.
func TestImportLegacy(t *testing.T) {
	e := enginetest.Start(t)
	recv := newReceiver(t, always(http.StatusOK))
	var logs logBuffer
	ob := open(t, e, Options{Targets: []Target{fast("audit", recv.URL), fast("ci", recv.URL)}, Replica: "r1", Log: logs.logger()})
	raw := func(ev Event) json.RawMessage {
		b, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	pendingEv, deadEv, goneEv := newEvent(t, TypeDriftDetected), newEvent(t, TypeCanaryStarted), newEvent(t, TypeDriftDetected)
	deadAt := time.Date(2026, 12, 6, 3, 46, 47, 0, time.UTC)
	old := legacy.Outbox{
		Events: map[string]json.RawMessage{pendingEv.ID: raw(pendingEv), deadEv.ID: raw(deadEv), goneEv.ID: raw(goneEv),
			"broken": json.RawMessage(`{"specversion":"1.0","id":"broken"}`)},
		Deliveries: []legacy.Delivery{
			{EventID: pendingEv.ID, Target: "audit", Seq: 1, Type: pendingEv.Type, Attempts: 2, LastError: "503"},
			{EventID: pendingEv.ID, Target: "ci", Seq: 1, Type: pendingEv.Type},
			{EventID: deadEv.ID, Target: "ci", Seq: 2, Type: deadEv.Type, Subject: deadEv.Subject, Dead: true, Attempts: 5, LastError: "502", DeadAt: deadAt},
			{EventID: goneEv.ID, Target: "removed", Seq: 3, Type: goneEv.Type, Attempts: 1, LastError: "connection refused"},
			{EventID: "broken", Target: "ci", Seq: 4, Type: TypeDriftDetected},
			{EventID: "missing", Target: "ci", Seq: 5, Type: TypeDriftDetected, Dead: true},
		},
	}
	now := deadAt.Add(time.Hour)
	want := LegacyCounts{Emitted: 1, DeadLetters: 2, Unimportable: 2}
	for range 2 {
		n, err := ob.ImportLegacy(context.Background(), old, now)
		if err != nil || n != want {
			t.Fatalf("imported %+v (%v), want %+v", n, err, want)
		}
		if got := stored(t, e, "test"); got != 1 {
			t.Fatalf("the stream holds %d events, want the pending one", got)
		}
	}
	for _, line := range []string{"not importing a webhook delivery whose event cannot be sent", "not importing a dead letter whose event cannot be read"} {
		if !strings.Contains(logs.String(), line) {
			t.Errorf("the log lacks %q:\n%s", line, logs.String())
		}
	}
	dls, err := ob.DeadLetters()
	if err != nil {
		t.Fatal(err)
	}
	if len(dls) != 2 {
		t.Fatalf("dead letters %+v, want those of the dead delivery and of the removed target", dls)
	}
	byEvent := map[string]DeadLetter{dls[0].EventID: dls[0], dls[1].EventID: dls[1]}
	if dl := byEvent[deadEv.ID]; dl.Target != "ci" || dl.Attempts != 5 || dl.LastError != "502" || !dl.DeadAt.Equal(deadAt) ||
		dl.Subject != deadEv.Subject || dl.Replica != "r1" || string(dl.Event) != string(raw(deadEv)) {
		t.Fatalf("the dead delivery's letter: %+v", dl)
	}
	if dl := byEvent[goneEv.ID]; dl.Target != "removed" || dl.Attempts != 1 || !dl.DeadAt.Equal(now) ||
		!strings.Contains(dl.LastError, `"removed" is no longer configured`) || !strings.Contains(dl.LastError, "connection refused") {
		t.Fatalf("the removed target's letter: %+v", dl)
	}

	if err := ob.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the pending delivery", func() bool { return recv.count(t, pendingEv.ID) == 2 })
	waitFor(t, "its acknowledgements", pendingIs(t, ob, 0))
	if ids := recv.ids(t); len(ids) != 2 {
		t.Fatalf("the receiver got %v, want the pending event once per target", ids)
	}

	var none *Outbox
	if n, err := none.ImportLegacy(context.Background(), old, now); err != nil || n != (LegacyCounts{Unimportable: len(old.Deliveries)}) {
		t.Fatalf("without an outbox: %+v (%v)", n, err)
	}
}
