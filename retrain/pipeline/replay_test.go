package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/infergate/infergate/retrain/outbox"
)

// TestReplayGetsTheFirstAnswer re-delivers accepted events: each gets 200
// with the body of its first answer, also after a restart, while a replay
// with a stale timestamp or a bad signature is still refused.
func TestReplayGetsTheFirstAnswer(t *testing.T) {
	fx := newFixture(t)
	// An event accepted before answers were kept (imported from such a
	// store): its arrival time alone.
	if _, err := fx.store().seen.Put(context.Background(), seenKey("old"), []byte(time.Now().UTC().Format(time.RFC3339Nano))); err != nil {
		t.Fatal(err)
	}
	s, url := fx.open()
	drift := driftEvent(t, time.Time{})
	other, _ := outbox.NewEvent("/infergate/gateway", outbox.TypeCanaryPromoted, "demo/1", nil)
	legacy := outbox.Event{ID: "old", Source: "/infergate/gateway", Type: driftEventType, Subject: "demo/1"}

	f := func(url string, ev outbox.Event, signedAt time.Time, secret string, wantCode int, wantAnswer string) string {
		t.Helper()
		body, _ := json.Marshal(ev)
		code, answer := post(t, url, body, outbox.Sign([]byte(secret), signedAt, body))
		if code != wantCode || wantAnswer != "" && answer != wantAnswer {
			t.Fatalf("event %s: %d %q, want %d %q", ev.ID, code, answer, wantCode, wantAnswer)
		}
		return answer
	}
	now := time.Now()
	first := f(url, drift, now, testSecret, http.StatusAccepted, "")
	firstOther := f(url, other, now, testSecret, http.StatusAccepted, "")
	f(url, drift, now, testSecret, http.StatusOK, first)
	f(url, other, now, testSecret, http.StatusOK, firstOther)
	f(url, legacy, now, testSecret, http.StatusOK, legacyAnswer)
	f(url, drift, now.Add(-6*time.Minute), testSecret, http.StatusUnauthorized, "")
	f(url, drift, now, "guess", http.StatusUnauthorized, "")
	if runs, err := s.Runs("demo", 0); err != nil || len(runs) != 1 {
		t.Fatalf("runs %+v (%v), want the one the first delivery queued", runs, err)
	}

	// The answers survive a restart (a SIGKILL after the 202 keeps what
	// the 202 was answered after: the engine's acknowledgement of it).
	waitRun(t, s, "1", finished)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, url = fx.open()
	f(url, drift, time.Now(), testSecret, http.StatusOK, first)
	f(url, other, time.Now(), testSecret, http.StatusOK, firstOther)
	f(url, drift, time.Now(), "guess", http.StatusUnauthorized, "")
	if runs, err := s.Runs("demo", 0); err != nil || len(runs) != 1 {
		t.Fatalf("runs %+v (%v), want the one the first delivery queued", runs, err)
	}
}

// TestSlowFirstAnswerIsDelivered delivers a drift event from a real outbox
// to the service, whose first answer comes after the outbox's attempt
// timeout: the event was accepted, so the re-delivery is answered 200 and
// the delivery counts as made, not dead-lettered.
func TestSlowFirstAnswerIsDelivered(t *testing.T) {
	fx := newFixture(t)
	s, _ := fx.open()
	var (
		mu      sync.Mutex
		answers []*httptest.ResponseRecorder // guarded by mu
	)
	// The first answer is held until the sender has given up on it.
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, r)
		mu.Lock()
		answers = append(answers, rec)
		n := len(answers)
		mu.Unlock()
		if n == 1 {
			<-r.Context().Done()
			return
		}
		w.Header().Set("Content-Type", rec.Header().Get("Content-Type"))
		w.WriteHeader(rec.Code)
		w.Write(rec.Body.Bytes())
	}))
	t.Cleanup(slow.Close)

	ob, err := outbox.Open(outbox.Options{Conn: fx.engine.Conn, Name: "gateway", Log: testLog(t), Targets: []outbox.Target{{Name: "retrain", URL: slow.URL + "/webhook",
		SecretEnv: "TEST_WEBHOOK_SECRET", Timeout: 300 * time.Millisecond, MaxAttempts: 3, BackoffBase: 10 * time.Millisecond}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ob.Close() })
	if err := ob.Start(); err != nil {
		t.Fatal(err)
	}
	if err := ob.Emit(context.Background(), driftEvent(t, time.Time{})); err != nil {
		t.Fatal(err)
	}
	// Pending may read 0 before the engine has counted the event: the
	// second answer comes first.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		mu.Lock()
		answered := len(answers)
		mu.Unlock()
		if n, err := ob.Pending(); answered >= 2 && (err != nil || n == 0) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the delivery is still pending")
		}
	}
	if dead, err := ob.DeadLetters(); err != nil || len(dead) != 0 {
		t.Fatalf("dead letters %+v (%v), want the delivery made", dead, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(answers) != 2 || answers[0].Code != http.StatusAccepted || answers[1].Code != http.StatusOK ||
		!bytes.Equal(answers[0].Body.Bytes(), answers[1].Body.Bytes()) {
		for _, a := range answers {
			t.Logf("answered %d %s", a.Code, a.Body)
		}
		t.Fatalf("%d answers, want 202 held past the attempt timeout, then 200 with the same body", len(answers))
	}
	if runs, err := s.Runs("demo", 0); err != nil || len(runs) != 1 {
		t.Fatalf("runs %+v (%v), want the one the first delivery queued", runs, err)
	}
}
