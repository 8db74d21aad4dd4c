package outbox

import (
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestEventJSON(t *testing.T) {
	e := Event{
		ID: "id-1", Source: "/infergate/gateway", Type: TypeDriftDetected, Subject: "iris/3",
		Time: time.Date(2025, 1, 2, 3, 4, 5, 600, time.FixedZone("CET", 3600)),
		Data: json.RawMessage(`{"share": 0.75, "features": ["a"]}`),
	}
	got, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"specversion":"1.0","id":"id-1","source":"/infergate/gateway","type":"dev.infergate.drift.detected",` +
		`"subject":"iris/3","time":"2025-01-02T02:04:05.0000006Z","datacontenttype":"application/json",` +
		`"data":{"share":0.75,"features":["a"]}}`
	if string(got) != want {
		t.Fatalf("unexpected JSON\ngot  %s\nwant %s", got, want)
	}
	var back Event
	if err := json.Unmarshal(got, &back); err != nil {
		t.Fatal(err)
	}
	if back.ID != e.ID || back.Source != e.Source || back.Type != e.Type || back.Subject != e.Subject ||
		!back.Time.Equal(e.Time) || string(back.Data) != `{"share":0.75,"features":["a"]}` {
		t.Fatalf("round trip changed the event: %+v", back)
	}

	// Without subject, time and data those attributes are left out.
	got, err = json.Marshal(Event{ID: "x", Source: "s", Type: TypeCanaryStarted})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"specversion":"1.0","id":"x","source":"s","type":"dev.infergate.canary.started"}`; string(got) != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}

func TestEventUnmarshalErrors(t *testing.T) {
	f := func(doc, wantErr string) {
		t.Helper()
		var e Event
		err := json.Unmarshal([]byte(doc), &e)
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("decoding %s: got error %v, want one containing %q", doc, err, wantErr)
		}
	}
	f(`{"specversion":"0.3","id":"x","source":"s","type":"t"}`, "specversion")
	f(`{"id":"x","source":"s","type":"t"}`, "specversion")
	f(`{"specversion":"1.0","source":"s","type":"t"}`, "id, source and type are required")
	f(`{"specversion":"1.0","id":"x","source":"s","type":"t","time":"yesterday"}`, "time")
	f(`[1]`, "cannot decode event")
}

func TestNewEvent(t *testing.T) {
	uuid := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	seen := map[string]bool{}
	for range 100 {
		e, err := NewEvent("/infergate/gateway", TypeRetrainFailed, "iris/4", map[string]string{"reason": "worse"})
		if err != nil {
			t.Fatal(err)
		}
		if !uuid.MatchString(e.ID) || seen[e.ID] {
			t.Fatalf("id %q is not a fresh version 4 UUID", e.ID)
		}
		seen[e.ID] = true
		if string(e.Data) != `{"reason":"worse"}` || e.Time.IsZero() || e.Subject != "iris/4" {
			t.Fatalf("unexpected event %+v", e)
		}
	}
	if _, err := NewEvent("s", TypeDriftDetected, "", make(chan int)); err == nil {
		t.Fatal("no error for data that JSON cannot encode")
	}
	if _, err := NewEvent("", TypeDriftDetected, "", nil); !errors.Is(err, ErrInvalidEvent) {
		t.Fatalf("got %v, want ErrInvalidEvent for an event without source", err)
	}
}
