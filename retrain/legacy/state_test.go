package legacy

import (
	"encoding/json"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"testing"
	"time"
)

// at parses an RFC 3339 time of the fixtures.
func at(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestReadGateway reads what the gateway of commit 0255404 stored: the
// admin routing of ab with its canary, demo's record, demo/1's drift
// state, and the outbox's dead letter and pending delivery.
func TestReadGateway(t *testing.T) {
	st, err := ReadGateway("testdata/infergate.db")
	if err != nil {
		t.Fatal(err)
	}

	if got := slices.Sorted(maps.Keys(st.Routes)); !slices.Equal(got, []string{"ab", "demo"}) {
		t.Fatalf("routes of %q, want ab and demo", got)
	}
	var ab struct {
		File struct{ Split map[string]int }
		Base struct {
			Split        map[string]int
			StickyHeader string `json:"sticky_header"`
		}
		Admin  bool
		Canary struct {
			Config struct{ Version, Interval string }
			Phase  string
			Weight int
			Reason string
		}
	}
	if err := json.Unmarshal(st.Routes["ab"], &ab); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(ab.File.Split, map[string]int{"1": 1}) || !reflect.DeepEqual(ab.Base.Split, map[string]int{"1": 1, "3": 3}) ||
		ab.Base.StickyHeader != "x-user" || !ab.Admin || ab.Canary.Config.Version != "2" || ab.Canary.Config.Interval != "1h0m0s" ||
		ab.Canary.Phase != "progressing" || ab.Canary.Weight != 10 || ab.Canary.Reason != "canary 2 started" {
		t.Errorf("routes[ab] = %s", st.Routes["ab"])
	}
	if got, want := string(st.Routes["demo"]), `{"file":{"shadow_max_in_flight":64},"base":{"shadow_max_in_flight":64},"admin":false}`; got != want {
		t.Errorf("routes[demo] = %s, want %s", got, want)
	}

	if len(st.Drift) != 1 || st.Drift[0].Model != "demo" || st.Drift[0].Version != "1" ||
		string(st.Drift[0].State) != `{"drifted":true,"reason":"features","cooldown_until":"2026-12-06T03:56:47.30008641Z","concept":{"rows":0,"errors":0,"min_rate":0,"min_std":0}}` {
		t.Errorf("drift = %+v", st.Drift)
	}

	const driftID, canaryID = "02bfb54a-ec85-4368-9030-8a878e415e91", "a7458571-d94b-4e7c-b185-7c878c2c681f"
	ob := st.Outbox
	if got := slices.Sorted(maps.Keys(ob.Events)); !slices.Equal(got, []string{driftID, canaryID}) || ob.Sequence != 2 {
		t.Fatalf("events %q with sequence %d, want the drift and the canary event with 2", got, ob.Sequence)
	}
	var drift, canary struct{ ID, Type, Subject, Source string }
	json.Unmarshal(ob.Events[driftID], &drift)
	json.Unmarshal(ob.Events[canaryID], &canary)
	if len(ob.Events[driftID]) != 5954 || drift.ID != driftID || drift.Type != "dev.infergate.drift.detected" || drift.Subject != "demo/1" ||
		canary.ID != canaryID || canary.Type != "dev.infergate.canary.started" || canary.Subject != "ab/2" || canary.Source != "/infergate/gateway" {
		t.Errorf("events %+v and %+v (%d bytes)", drift, canary, len(ob.Events[driftID]))
	}
	want := []Delivery{{
		EventID: canaryID, Target: "audit", Seq: 1, Type: "dev.infergate.canary.started", Subject: "ab/2",
		Dead: true, Attempts: 1, Due: at(t, "2026-12-06T03:46:47.275500671Z"),
		LastError: `the receiver answered 503 Service Unavailable: "receiver down for maintenance"`,
		DeadAt:    at(t, "2026-12-06T03:46:47.279796922Z"),
	}, {
		EventID: driftID, Target: "ci", Seq: 2, Type: "dev.infergate.drift.detected", Subject: "demo/1",
		Attempts: 1, Due: at(t, "2026-12-06T04:30:06.81949995Z"),
		LastError: `Post "http://127.0.0.1:1/hook": dial tcp 127.0.0.1:1: connect: connection refused`,
	}}
	if !reflect.DeepEqual(ob.Deliveries, want) {
		t.Errorf("deliveries\n%+v,\nwant\n%+v", ob.Deliveries, want)
	}
}

// TestReadRetrain reads what the retrain service of commit 0255404
// stored: three runs, 61 seen events (one of the form before answers were
// kept) and the outbox's dead letter and pending delivery.
func TestReadRetrain(t *testing.T) {
	st, err := ReadRetrain("testdata/retrain.db")
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Runs) != 3 || st.RunSequence != 3 {
		t.Fatalf("%d runs, sequence %d, want 3 and 3", len(st.Runs), st.RunSequence)
	}
	for i, want := range []struct {
		model, outcome, candidate string
		notified                  bool
	}{{"demo", "succeeded", "2", true}, {"demo", "failed", "", true}, {"fraud", "queued", "", false}} {
		var r struct {
			ID, Model, Outcome string
			Candidate          string `json:"candidate_version"`
			Notified           bool
		}
		if err := json.Unmarshal(st.Runs[i].Record, &r); err != nil {
			t.Fatal(err)
		}
		if st.Runs[i].ID != uint64(i+1) || r.ID != strconv.FormatUint(st.Runs[i].ID, 10) || r.Model != want.model || r.Outcome != want.outcome ||
			r.Candidate != want.candidate || r.Notified != want.notified {
			t.Errorf("run %d: %d %+v", i, st.Runs[i].ID, r)
		}
	}
	if len(st.Seen) != 61 || string(st.Seen["legacy-seen"]) != "2026-11-29T12:00:00Z" ||
		string(st.Seen["seen-059-xxxxxxxxxxxxxxxxxxxxxxxx"]) != `{"at":"2026-11-30T09:59:00Z","answer":"{\"status\": \"accepted\", \"run\": \"3\"}\n"}` {
		t.Errorf("%d seen events; legacy-seen %q, seen-059 %q", len(st.Seen), st.Seen["legacy-seen"], st.Seen["seen-059-xxxxxxxxxxxxxxxxxxxxxxxx"])
	}
	const okID, failedID = "e3b5d6f0-1a2b-4c3d-8e9f-0a1b2c3d4e5f", "7f6e5d4c-3b2a-4190-8f7e-6d5c4b3a2918"
	if got := string(st.Outbox.Events[failedID]); got != `{"specversion":"1.0","id":"7f6e5d4c-3b2a-4190-8f7e-6d5c4b3a2918","source":"/infergate/retrain","type":"dev.infergate.retrain.failed","subject":"demo","time":"2026-12-01T09:00:03Z","datacontenttype":"application/json","data":{"run":"2","model":"demo","reason":"only 40 labeled rows"}}` ||
		len(st.Outbox.Events) != 2 || st.Outbox.Sequence != 2 {
		t.Errorf("events %d, sequence %d, the failed run's %s", len(st.Outbox.Events), st.Outbox.Sequence, got)
	}
	want := []Delivery{{
		EventID: okID, Target: "chat", Seq: 1, Type: "dev.infergate.retrain.succeeded", Subject: "demo/2",
		Dead: true, Attempts: 1, Due: at(t, "2026-12-06T03:47:15.289871365Z"),
		LastError: `the receiver answered 502 Bad Gateway: "bad gateway"`, DeadAt: at(t, "2026-12-06T03:47:15.291398374Z"),
	}, {
		EventID: failedID, Target: "ci", Seq: 2, Type: "dev.infergate.retrain.failed", Subject: "demo",
		Attempts: 1, Due: at(t, "2026-12-06T04:25:56.187888442Z"),
		LastError: `Post "http://127.0.0.1:1/hook": dial tcp 127.0.0.1:1: connect: connection refused`,
	}}
	if !reflect.DeepEqual(st.Outbox.Deliveries, want) {
		t.Errorf("deliveries\n%+v,\nwant\n%+v", st.Outbox.Deliveries, want)
	}
}

// TestReadOtherFile reads each file as the other kind: the buckets it
// lacks read as empty, and nothing it holds is mistaken for them.
func TestReadOtherFile(t *testing.T) {
	g, err := ReadGateway("testdata/retrain.db")
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Routes) != 0 || len(g.Drift) != 0 || len(g.Outbox.Deliveries) != 2 {
		t.Errorf("retrain.db as a gateway's: %d routes, %d drift states, %d deliveries", len(g.Routes), len(g.Drift), len(g.Outbox.Deliveries))
	}
	r, err := ReadRetrain("testdata/small.db")
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Runs) != 0 || r.RunSequence != 0 || len(r.Seen) != 0 || len(r.Outbox.Events) != 0 || len(r.Outbox.Deliveries) != 0 {
		t.Errorf("small.db as a retrain service's: %+v", r)
	}
}
