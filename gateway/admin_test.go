package gateway

import (
	"context"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/infergate/infergate/router"
)

func TestAdminAuth(t *testing.T) {
	cfg := abConfig(t, router.Config{})
	_, url := startServer(t, cfg)
	f := func(token string, wantCode int, wantBody string) {
		t.Helper()
		var headers []string
		if token != "" {
			headers = []string{"Authorization", token}
		}
		code, hdr, body := call(t, "GET", url+"/admin/models", nil, headers...)
		if code != wantCode || !strings.Contains(string(body), wantBody) {
			t.Fatalf("token %q: %d %s, want %d with %q", token, code, body, wantCode, wantBody)
		}
		if code == 401 && hdr.Get("WWW-Authenticate") == "" {
			t.Fatal("401 without WWW-Authenticate")
		}
	}
	f("", 401, "bearer token")
	f("Bearer wrong", 401, "bearer token")
	f(testToken, 401, "bearer token") // without "Bearer "
	f("Bearer "+testToken, 200, `"model_name":"ab"`)

	cfg.Admin.TokenEnv = ""
	cfg.StateDir = t.TempDir()
	_, off := startServer(t, cfg)
	if code, _, body := call(t, "GET", off+"/admin/models", nil, "Authorization", "Bearer "+testToken); code != 404 || !strings.Contains(string(body), "admin API is off") {
		t.Fatalf("admin off: %d %s", code, body)
	}
	cfg.Admin.TokenEnv = "INFERGATE_TEST_UNSET_TOKEN"
	if _, err := New(Options{Config: cfg, Env: testEnv, Log: quiet}); err == nil || !strings.Contains(err.Error(), "INFERGATE_TEST_UNSET_TOKEN") {
		t.Fatalf("a token_env that is unset: %v, want an error naming it", err)
	}
}

func admin(t *testing.T, method, url, path, body string) (int, string) {
	t.Helper()
	code, _, b := call(t, method, url+"/admin/"+path, []byte(body), "Authorization", "Bearer "+testToken)
	return code, string(b)
}

func routingOf(t *testing.T, url string) routingReport {
	t.Helper()
	code, body := admin(t, "GET", url, "models/ab/routing", "")
	if code != 200 {
		t.Fatalf("routing: %d %s", code, body)
	}
	var rep routingReport
	if err := json.Unmarshal([]byte(body), &rep); err != nil {
		t.Fatal(err)
	}
	return rep
}

func TestAdminRoutingChangesPersist(t *testing.T) {
	cfg := abConfig(t, router.Config{Split: map[string]int{"1": 1}})
	srv, url := startServer(t, cfg)

	// Malformed or unroutable changes are refused and change nothing.
	f := func(method, path, body string, wantCode int, wantBody string) {
		t.Helper()
		code, got := admin(t, method, url, path, body)
		if code != wantCode || !strings.Contains(got, wantBody) {
			t.Fatalf("%s %s %s: %d %s, want %d with %q", method, path, body, code, got, wantCode, wantBody)
		}
	}
	f("PUT", "models/ab/routing", "", 400, "needs a body")
	f("PUT", "models/ab/routing", `{"split": {"1": 1`, 400, "cannot decode")
	f("PUT", "models/ab/routing", `{"splitt": {"1": 1}}`, 400, `unknown field \"splitt\"`)
	f("PUT", "models/ab/routing", `{"split": {"7": 1}}`, 400, "version 7 is not loaded")
	f("PUT", "models/ab/routing", `{"split": {"1": -1}}`, 400, "routing.split.1: weight must be in")
	f("POST", "models/ab/canary/promote", "", 400, "has no canary")
	f("POST", "models/ab/canary", `{"version": "9"}`, 400, "not loaded")
	f("GET", "models/nope/routing", "", 404, "unknown model")
	f("PATCH", "models/ab/routing", "", 405, "not allowed")
	f("GET", "models/ab/bogus", "", 404, "no such admin endpoint")
	if rep := routingOf(t, url); rep.Source != "config" || rep.Effective["1"] != 1 || len(rep.Effective) != 1 {
		t.Fatalf("after refused changes: %+v", rep)
	}

	f("PUT", "models/ab/routing", `{"split": {"1": 1, "3": 3}, "sticky_header": "x-user"}`, 200, `"source":"admin"`)
	f("POST", "models/ab/canary", `{"version": "2", "interval": "1h"}`, 200, `"phase":"progressing"`)
	before := routingOf(t, url)
	if before.Effective["2"] == 0 || before.Config.StickyHeader != "x-user" || before.Canary.Weight != 10 {
		t.Fatalf("after admin changes: %+v", before)
	}
	// The same canary asked for again, as a client whose answer was lost
	// does, carries on rather than starting over.
	f("POST", "models/ab/canary", `{"version": "2", "interval": "1h"}`, 200, `"phase":"progressing"`)
	if again := routingOf(t, url); !again.Canary.StartedAt.Equal(before.Canary.StartedAt) {
		t.Fatalf("the same canary asked for again started over at %v (first at %v)", again.Canary.StartedAt, before.Canary.StartedAt)
	}

	// A restart on the same state_dir picks the changes up.
	srv.Shutdown(context.Background())
	srv, url = startServer(t, cfg)
	after := routingOf(t, url)
	if after.Source != "admin" || after.Canary == nil || after.Canary.Weight != 10 || after.Effective["3"] != before.Effective["3"] {
		t.Fatalf("after a restart: %+v, want %+v", after, before)
	}
	f("POST", "models/ab/canary/rollback", "", 200, `"phase":"rolledback"`)

	// A config file that changed since wins over the admin's routing.
	srv.Shutdown(context.Background())
	edited := cfg
	edited.Models = maps.Clone(cfg.Models)
	mc := edited.Models["ab"]
	mc.Routing = router.Config{Split: map[string]int{"3": 1}}
	edited.Models["ab"] = mc
	_, url = startServer(t, edited)
	if rep := routingOf(t, url); rep.Source != "config" || rep.Effective["3"] != 1 || len(rep.Effective) != 1 || rep.Canary != nil {
		t.Fatalf("after a config change: %+v", rep)
	}
}

// TestAdminBodiesAreStrict sends the admin API bodies that a lenient
// decoder would take: each is refused with 400 naming what is wrong, and the
// routing stays as it was.
func TestAdminBodiesAreStrict(t *testing.T) {
	_, url := startServer(t, abConfig(t, router.Config{Split: map[string]int{"1": 1}}))
	f := func(path, body, want string) {
		t.Helper()
		method := "PUT"
		if path != "models/ab/routing" {
			method = "POST"
		}
		code, got := admin(t, method, url, path, body)
		var answer struct {
			Error string `json:"error"`
		}
		if err := json.Unmarshal([]byte(got), &answer); err != nil || code != 400 || !strings.Contains(answer.Error, want) {
			t.Fatalf("%s %s %s: %d %s, want 400 with %q", method, path, body, code, got, want)
		}
	}
	const routing = "models/ab/routing"
	// Numbers: whole, in JSON's own syntax, never truncated.
	f(routing, `{"split": {"1": 1.9, "2": 0.5}}`, "cannot decode the routing body: split.1: a weight must be a whole number in 0..1000000, got 1.9")
	f(routing, `{"split": {"1": 1, "3": 2.5}}`, "split.3: a weight must be a whole number")
	f(routing, `{"split": {"1": 0x10}}`, "cannot decode the routing body")
	f(routing, `{"split": {"1": 1_000}}`, "cannot decode the routing body")
	f(routing, `{"split": {"1": 1}, "shadow_max_in_flight": 8.5}`, "shadow_max_in_flight: want int, got number 8.5")
	f(routing, `{"canary": {"version": "2", "step_weights": [5, 50.5]}}`, "canary.step_weights: want int, got number 50.5")
	// JSON, one value, each key once.
	f(routing, "split:\n  \"1\": 1\n", "cannot decode the routing body")
	f(routing, `{"split": {"1": 1}, "split": {"2": 1}}`, `duplicate key "split"`)
	f(routing, `{"split": {"1": 1, "1": 0}}`, `duplicate key "1"`)
	f(routing, `{"split": {"1": 100}, "SPLIT": {"2": 100}}`, `duplicate key "SPLIT"`) // encoding/json would merge them
	f(routing, `{"split": {"1": 1}} {"split": {"2": 1}}`, "cannot decode the routing body")
	f(routing, `{"split": {"1": 1}}x`, "cannot decode the routing body")
	// A header name is a token: no CR, LF or NUL to split a header with.
	f(routing, `{"sticky_header": "x-user\r\nx-evil: 1"}`, `sticky_header: "x-user\r\nx-evil: 1" is not a header name`)
	f(routing, `{"sticky_header": "x-user\n"}`, "is not a header name")
	f(routing, `{"sticky_header": "x-user\u0000"}`, "is not a header name")
	// A change sets something.
	for _, empty := range []string{"null", "{}", " { } "} {
		f(routing, empty, "cannot decode the routing body: it sets nothing")
		f("models/ab/canary", empty, "cannot decode the canary body: it sets nothing")
	}
	// Durations are Go durations, as in the config file.
	f("models/ab/canary", `{"version": "2", "interval": 60000000000}`, `interval: want a Go duration such as "30s" or "1m", got 60000000000`)
	if rep := routingOf(t, url); rep.Source != "config" || rep.Effective["1"] != 1 || len(rep.Effective) != 1 || rep.Canary != nil {
		t.Fatalf("after refused changes: %+v", rep)
	}
}

// TestAdminRoutingRoundTrips puts back what GET answered: durations, say,
// come out as they go in.
func TestAdminRoutingRoundTrips(t *testing.T) {
	_, url := startServer(t, abConfig(t, router.Config{Split: map[string]int{"1": 1}}))
	put := `{"split": {"1": 9, "3": 1}, "canary": {"version": "2", "interval": "1h30m"}}`
	if code, body := admin(t, "PUT", url, "models/ab/routing", put); code != 200 {
		t.Fatalf("put: %d %s", code, body)
	}
	_, body := admin(t, "GET", url, "models/ab/routing", "")
	var got struct {
		Config json.RawMessage `json:"config"`
	}
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(got.Config), `"interval":"1h30m0s"`) {
		t.Fatalf("GET answers the interval as %s, want a Go duration", got.Config)
	}
	if code, body := admin(t, "PUT", url, "models/ab/routing", string(got.Config)); code != 200 {
		t.Fatalf("putting back what GET answered: %d %s", code, body)
	}
	if c := routingOf(t, url).Config.Canary; c == nil || c.Interval != 90*time.Minute {
		t.Fatalf("after the round trip: %+v", c)
	}
}

// TestCanaryRoutingOutlivesItsVersion rolls a canary back, removes its
// version from the repository and reloads: the reload applies, and so does
// a restart on the same state_dir.
func TestCanaryRoutingOutlivesItsVersion(t *testing.T) {
	cfg := abConfig(t, router.Config{})
	srv, url := startServer(t, cfg)
	if code, body := admin(t, "POST", url, "models/ab/canary", `{"version": "2", "interval": "1h"}`); code != 200 {
		t.Fatalf("start canary: %d %s", code, body)
	}
	if code, body := admin(t, "POST", url, "models/ab/canary/rollback", ""); code != 200 {
		t.Fatalf("rollback: %d %s", code, body)
	}
	if err := os.RemoveAll(filepath.Join(cfg.Repository, "ab", "2")); err != nil {
		t.Fatal(err)
	}
	if err := srv.Reload(); err != nil {
		t.Fatalf("reload after removing the rolled-back version: %v", err)
	}
	srv.Shutdown(context.Background())
	if _, url = startServer(t, cfg); routingOf(t, url).Effective["3"] == 0 {
		t.Fatalf("after a restart: %+v, want version 3 serving", routingOf(t, url))
	}
}

// TestCanaryJudgesOnlyItsOwnTraffic sends pinned requests to a version
// before its canary starts: they must not count for the canary's first
// analysis, which with no traffic since holds. The control plane runs on
// the test's clock: an analysis is due only when the test says.
func TestCanaryJudgesOnlyItsOwnTraffic(t *testing.T) {
	clock := newTestClock()
	_, url := startServerWith(t, Options{Config: abConfig(t, router.Config{Split: map[string]int{"1": 1}}), Now: clock.Now})
	for range 30 {
		if code, _, body := call(t, "POST", url+"/v2/models/ab/versions/3/infer", []byte(abRequest)); code != 200 {
			t.Fatalf("pinned request: %d %s", code, body)
		}
	}
	if code, body := admin(t, "POST", url, "models/ab/canary", `{"version": "3", "interval": "200ms", "min_requests": 20}`); code != 200 {
		t.Fatalf("start canary: %d %s", code, body)
	}
	for range 3 {
		at := clock.Advance(200 * time.Millisecond)
		deadline := time.Now().Add(10 * time.Second)
		for !routingOf(t, url).Canary.LastEvaluation.Equal(at) {
			if time.Now().After(deadline) {
				t.Fatalf("no analysis at %s: %+v", at, routingOf(t, url).Canary)
			}
			time.Sleep(5 * time.Millisecond)
		}
		if c := routingOf(t, url).Canary; c.Weight != 10 || c.Phase != router.PhaseProgressing {
			t.Fatalf("with no traffic since it started the canary went to %+v; want it held at 10", c)
		}
	}
}
