package pipeline

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/infergate/infergate/retrain/outbox"
)

// TestDamagedRecordIsRefused damages the records of a run store: the
// service's open, ListRuns and the requests that read one refuse it with
// an error that names the bucket and the key and says how to recover,
// never a panic, an empty store or a run silently left out.
func TestDamagedRecordIsRefused(t *testing.T) {
	wantDamaged := func(t *testing.T, err error, bucket, key string) {
		t.Helper()
		if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), bucket) || !strings.Contains(err.Error(), `"`+key+`"`) ||
			!strings.Contains(err.Error(), "nats kv del "+bucket+" "+key) {
			t.Fatalf("got %v, want an error that says record %q of bucket %s is damaged and how to recover", err, key, bucket)
		}
	}
	seed := func(fx *fixture) {
		for range 3 {
			fx.seed(Run{Model: "demo", Trigger: "e", Outcome: Succeeded, Notified: true, Steps: []Step{{Name: "data", Log: []string{"rows"}}}})
		}
	}
	put := func(t *testing.T, fx *fixture, key, value string) {
		t.Helper()
		if _, err := fx.store().runs.Put(context.Background(), key, []byte(value)); err != nil {
			t.Fatal(err)
		}
	}
	f := func(name, key, value string) {
		t.Run(name, func(t *testing.T) {
			fx := newFixture(t)
			seed(fx)
			put(t, fx, key, value)
			_, err := Open(Options{Config: fx.cfg, Engine: fx.engine.Conn, Env: testEnv, Log: testLog(t)})
			wantDamaged(t, err, RunsBucket, key)
			_, err = ListRuns(fx.engine.Conn)
			wantDamaged(t, err, RunsBucket, key)
		})
	}
	f("truncated", "2", `{"id":"2","model":"de`)
	f("not JSON", "3", "\x00\x00\x00\x00")
	f("another run's record", "2", `{"id":"7","model":"demo","outcome":"succeeded","steps":[]}`)
	f("not a run id", "x1", `{"id":"x1","model":"demo","outcome":"succeeded","steps":[]}`)

	t.Run("while the service runs", func(t *testing.T) {
		fx := newFixture(t)
		seed(fx)
		s, url := fx.open()
		put(t, fx, "2", "{")
		_, err := s.Run("2")
		wantDamaged(t, err, RunsBucket, "2")
		_, err = s.Runs("demo", 0)
		wantDamaged(t, err, RunsBucket, "2")
		if runs, err := s.Runs("demo", 1); err != nil || len(runs) != 1 || runs[0].ID != "3" {
			t.Fatalf("the newest run: %+v (%v), want run 3, read before the damaged one", runs, err)
		}
		resp, err := http.Get(url + "/runs/2")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusInternalServerError {
			t.Fatalf("GET /runs/2: %d, want 500", resp.StatusCode)
		}

		// A damaged last id refuses new runs; a damaged acceptance, its
		// event's re-delivery.
		put(t, fx, sequenceKey, "three")
		send(t, url, driftEvent(t, time.Time{}), http.StatusInternalServerError)
		ev := driftEvent(t, time.Time{})
		if _, err := fx.store().seen.Put(context.Background(), seenKey(ev.ID), []byte("{")); err != nil {
			t.Fatal(err)
		}
		_, _, err = s.accept(ev)
		wantDamaged(t, err, SeenBucket, seenKey(ev.ID))
		_, _, err = s.accept(outbox.Event{ID: "z", Source: "/x", Type: outbox.TypeDriftDetected, Subject: "demo/1"})
		wantDamaged(t, err, RunsBucket, sequenceKey)
	})
}

// TestStoreKeys checks the keys of runs and of seen events: run ids are
// canonical numbers, and an event id that is not a plain key is hashed,
// never mistaken for a plain one.
func TestStoreKeys(t *testing.T) {
	f := func(id, want string) {
		t.Helper()
		if got, err := runKey(id); got != want || (want == "") != (err != nil) {
			t.Errorf("runKey(%q) = %q, %v; want %q", id, got, err, want)
		}
	}
	f("1", "1")
	f("007", "7")
	f("0", "")
	f("x", "")
	f("-1", "")
	if k := seenKey("0b2a9c3e-8f1d-4a6b-9c2d-1e3f5a7b9c0d"); k != "0b2a9c3e-8f1d-4a6b-9c2d-1e3f5a7b9c0d" {
		t.Errorf("a UUID's key is %q, want itself", k)
	}
	for _, id := range []string{"a.b", "a b", "a/b", strings.Repeat("a", 129), "ünï"} {
		k := seenKey(id)
		if !strings.HasPrefix(k, "=") || len(k) != 44 || seenKey(id+"x") == k {
			t.Errorf("seenKey(%q) = %q, want '=' and a hash", id, k)
		}
	}
}
