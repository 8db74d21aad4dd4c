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
	f("PUT", "models/ab/routing", `{"splitt": {"1": 1}}`, 400, `splitt: unknown key (did you mean`)
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
// analysis, which with no traffic since holds.
func TestCanaryJudgesOnlyItsOwnTraffic(t *testing.T) {
	_, url := startServer(t, abConfig(t, router.Config{Split: map[string]int{"1": 1}}))
	for range 30 {
		if code, _, body := call(t, "POST", url+"/v2/models/ab/versions/3/infer", []byte(abRequest)); code != 200 {
			t.Fatalf("pinned request: %d %s", code, body)
		}
	}
	if code, body := admin(t, "POST", url, "models/ab/canary", `{"version": "3", "interval": "200ms", "min_requests": 20}`); code != 200 {
		t.Fatalf("start canary: %d %s", code, body)
	}
	time.Sleep(700 * time.Millisecond)
	if c := routingOf(t, url).Canary; c.Weight != 10 || c.Phase != router.PhaseProgressing {
		t.Fatalf("with no traffic since it started the canary went to %+v; want it held at 10", c)
	}
}
