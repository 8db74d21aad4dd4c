package gateway

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/infergate/infergate/batcher"
	"github.com/infergate/infergate/drift"
	"github.com/infergate/infergate/retrain/trainer"
	"github.com/infergate/infergate/router"
)

// stepsPage is GET /admin/models/{m}/canary/steps's answer.
type stepsPage = page[struct {
	Seq  uint64            `json:"seq"`
	Data consoleCanaryStep `json:"data"`
}]

// TestCanaryStepsArePagedAndBounded runs ab's canary to promotion with a
// step history of 3 and reads it a page at a time: newest first, the
// oldest steps gone beyond the bound, each analysis with its checks, and
// the admin token required.
func TestCanaryStepsArePagedAndBounded(t *testing.T) {
	cfg := abConfig(t, router.Config{Split: map[string]int{"1": 1}, Canary: canaryConfig("3")})
	cfg.Console.CanarySteps = 3
	clock := newTestClock()
	srv, url := startServerWith(t, Options{Config: cfg, Now: clock.Now})
	stop := load(t, url)
	driveCanary(t, srv, clock, 300*time.Millisecond, func() bool { return canaryEnded(srv) })
	stop()

	var all stepsPage
	waitUntil(t, "the promotion in the step history", 10*time.Second, func() bool {
		adminJSON(t, url, "models/ab/canary/steps", &all)
		return len(all.Items) > 0 && all.Items[0].Data.Step == router.KindPromoted
	})
	// started, advanced (20 -> 40), promoted, and maybe held analyses
	// before them: 3 kept.
	if len(all.Items) != 3 || all.NextBefore != 0 {
		t.Fatalf("%d steps kept (next_before %d), want the bound, 3, on one page", len(all.Items), all.NextBefore)
	}
	for i, it := range all.Items {
		if i > 0 && it.Seq != all.Items[i-1].Seq-1 {
			t.Fatalf("steps %d and %d of the page have seq %d and %d, want newest first, one apart", i-1, i, all.Items[i-1].Seq, it.Seq)
		}
		st := it.Data
		if st.Model != "ab" || st.Version != "3" || st.Replica == "" || st.Threshold != 2 {
			t.Fatalf("step %+v", st)
		}
		if st.Step == router.KindAdvanced || st.Step == router.KindPromoted {
			names := []string{}
			for _, c := range st.Checks {
				if c.Status != router.CheckPassed {
					t.Fatalf("%s with check %+v", st.Step, c)
				}
				names = append(names, c.Name)
			}
			if got := strings.Join(names, ","); got != "min_requests,max_error_rate,max_latency_ratio,min_agreement" {
				t.Fatalf("%s judged %s", st.Step, got)
			}
		}
	}
	if all.Items[0].Data.WeightBefore != 40 || all.Items[0].Data.WeightAfter != 100 {
		t.Fatalf("promotion from %d to %d, want 40 to 100", all.Items[0].Data.WeightBefore, all.Items[0].Data.WeightAfter)
	}

	var first, rest stepsPage
	adminJSON(t, url, "models/ab/canary/steps?limit=1", &first)
	if len(first.Items) != 1 || first.Items[0].Seq != all.Items[0].Seq || first.NextBefore != all.Items[0].Seq {
		t.Fatalf("limit=1: %+v, want the newest step and next_before its seq %d", first, all.Items[0].Seq)
	}
	adminJSON(t, url, fmt.Sprintf("models/ab/canary/steps?limit=5&before=%d", first.NextBefore), &rest)
	if len(rest.Items) != 2 || rest.Items[0].Seq != all.Items[1].Seq || rest.NextBefore != 0 {
		t.Fatalf("the second page: %+v, want the 2 older steps and no next_before", rest)
	}

	f := func(path, token string, wantCode int, wantBody string) {
		t.Helper()
		var headers []string
		if token != "" {
			headers = []string{"Authorization", "Bearer " + token}
		}
		code, _, body := call(t, "GET", url+path, nil, headers...)
		if code != wantCode || !strings.Contains(string(body), wantBody) {
			t.Fatalf("GET %s: %d %s, want %d with %q", path, code, body, wantCode, wantBody)
		}
	}
	f("/admin/models/ab/canary/steps", "", 401, "bearer token")
	f("/admin/models/ab/canary/steps", "wrong", 401, "bearer token")
	f("/admin/webhooks/events", "", 401, "bearer token")
	f("/admin/retrain/runs", "", 401, "bearer token")
	f("/admin/models/ab/canary/steps?limit=0", testToken, 400, "limit")
	f("/admin/models/ab/canary/steps?before=x", testToken, 400, "before")
	f("/admin/models/nope/canary/steps", testToken, 404, "unknown model")
	f("/admin/retrain/runs", testToken, 200, `{"items":[]}`)
	f("/v2/models/ab/versions/1/drift/windows", "", 404, "no drift monitoring")
	f("/console/nope.js", "", 404, "no such console file")
	f("/console/sub/console.js", "", 404, "no such console file")
}

// TestConsoleServesItsPageAlone checks the console's files: served from
// the binary with their types and a policy that lets the page load
// nothing from elsewhere, on a stateless gateway too, whose histories
// are in memory.
func TestConsoleServesItsPageAlone(t *testing.T) {
	cfg := testConfig(t)
	cfg.StateDir = ""
	cfg.Models["demo"] = ModelConfig{Batching: batcher.Config{MaxBatchSize: 128, Instances: 1}, Drift: drift.Config{Window: drift.WindowConfig{Rows: 200}}}
	_, url := startServer(t, cfg)
	for path, ctype := range map[string]string{"/console/": "text/html", "/console/console.js": "text/javascript", "/console/console.css": "text/css"} {
		code, hdr, body := call(t, "GET", url+path, nil)
		if code != 200 || !strings.HasPrefix(hdr.Get("Content-Type"), ctype) || len(body) == 0 {
			t.Fatalf("GET %s: %d %s", path, code, hdr.Get("Content-Type"))
		}
		if csp := hdr.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "connect-src 'self'") {
			t.Fatalf("GET %s: Content-Security-Policy %q", path, csp)
		}
		if text := strings.ReplaceAll(string(body), `"http://www.w3.org/2000/svg"`, ""); strings.Contains(text, "http://") || strings.Contains(text, "https://") {
			t.Fatalf("%s names another site", path)
		}
	}
	if code, hdr, _ := call(t, "GET", url+"/console", nil); code != 301 || hdr.Get("Location") == "" {
		t.Fatalf("GET /console: %d, want a redirect to /console/", code)
	}
	if code, _, _ := call(t, "POST", url+"/console/", nil); code != 405 {
		t.Fatalf("POST /console/: %d, want 405", code)
	}
	// A stateless gateway keeps the windows in memory.
	sendRows(t, &fasthttp.Client{}, url, trainer.Synthetic(1, 4400).X[4000:], make([]float64, 8))
	waitUntil(t, "two windows in the drift history", 10*time.Second, func() bool {
		var p page[struct {
			Data drift.WindowResult `json:"data"`
		}]
		if err := json.Unmarshal([]byte(get(t, url+"/v2/models/demo/versions/1/drift/windows")), &p); err != nil {
			t.Fatal(err)
		}
		return len(p.Items) == 2 && p.Items[0].Data.Rows == 200 && len(p.Items[0].Data.Features[0].ReferenceCounts) > 0
	})
}

// TestHistoryKeepsTheNewest checks a history list's bounds: the newest
// keep items, no more than maxHistoryBytes, each id once, and sequence
// numbers that go on past what was dropped.
func TestHistoryKeepsTheNewest(t *testing.T) {
	var items []historyItem
	add := func(id string, size int) {
		items = appendHistory(items, historyAppend{key: "k", keep: 3, item: historyItem{ID: id, Data: json.RawMessage(`"` + strings.Repeat("x", size) + `"`)}})
	}
	for i := range 5 {
		add(fmt.Sprint(i), 1)
	}
	if len(items) != 3 || items[0].Seq != 3 || items[2].Seq != 5 {
		t.Fatalf("after 5 appends with keep 3: %+v", items)
	}
	add("4", 1) // an id the list holds
	if len(items) != 3 || items[2].Seq != 5 {
		t.Fatalf("an id appended again: %+v", items)
	}
	add("big", maxHistoryBytes/2)
	add("bigger", maxHistoryBytes/2)
	if len(items) != 1 || items[0].ID != "bigger" || items[0].Seq != 7 {
		t.Fatalf("past maxHistoryBytes: %d items, the last %q seq %d", len(items), items[len(items)-1].ID, items[len(items)-1].Seq)
	}
}

// TestConsoleHistoryIsTheFleets starts a canary through one replica and
// promotes it through the other: either replica serves both steps, each
// saying which replica made it.
func TestConsoleHistoryIsTheFleets(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t)
	cfg.StateDir = dir
	cfg.Admin.TokenEnv = testTokenEnv
	a, aURL := startReplica(t, cfg, "a", dir)
	b, bURL := startReplica(t, cfg, "b", dir)
	waitLeader(t, map[string]*Server{"a": a, "b": b})
	if code, body := admin(t, "PUT", aURL, "models/versioned/routing", `{"split":{"1":1}}`); code != 200 {
		t.Fatalf("PUT routing: %d %s", code, body)
	}
	if code, body := admin(t, "POST", aURL, "models/versioned/canary", `{"version":"3","step_weights":[10,50],"interval":"1h"}`); code != 200 {
		t.Fatalf("POST canary on a: %d %s", code, body)
	}
	waitUntil(t, "the canary reaching b", 5*time.Second, func() bool {
		b.cp.mu.Lock()
		defer b.cp.mu.Unlock()
		c := b.cp.routes["versioned"].report().Canary
		return c != nil && c.Phase == router.PhaseProgressing
	})
	if code, body := admin(t, "POST", bURL, "models/versioned/canary/promote", ""); code != 200 {
		t.Fatalf("promote on b: %d %s", code, body)
	}
	for _, url := range []string{aURL, bURL} {
		var p stepsPage
		waitUntil(t, "both steps in the history", 10*time.Second, func() bool {
			adminJSON(t, url, "models/versioned/canary/steps", &p)
			return len(p.Items) == 2
		})
		if got := fmt.Sprintf("%s by %s, %s by %s", p.Items[0].Data.Step, p.Items[0].Data.Replica, p.Items[1].Data.Step, p.Items[1].Data.Replica); got != "promoted by b, started by a" {
			t.Fatalf("%s serves %s, want promoted by b, started by a", url, got)
		}
	}
}
