package gateway

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/infergate/infergate/batcher"
	"github.com/infergate/infergate/retrain/onnxexport"
	"github.com/infergate/infergate/router"
	"github.com/infergate/infergate/runtime"
)

// abRepository writes model "ab" with three versions over FP32 [batch, 2]:
// 1 and 3 echo their input, 2 swaps its two columns, so its top class
// disagrees with theirs on every row whose columns differ.
func abRepository(t testing.TB) string {
	t.Helper()
	echo, err := onnxexport.Echo(runtime.FP32, 2)
	if err != nil {
		t.Fatal(err)
	}
	swap, err := onnxexport.MLP{Layers: []onnxexport.Dense{{In: 2, Out: 2, Weights: []float32{0, 1, 1, 0}, Bias: []float32{0, 0}}}}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	for v, data := range map[string][]byte{"1": echo, "2": swap, "3": echo} {
		writeModel(t, filepath.Join(root, "ab", v), data)
	}
	return root
}

func writeModel(t testing.TB, dir string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "model.onnx"), data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// testToken is the admin token the test configs name (see TestMain).
const testToken = "test-admin-token"

var batcher16 = batcher.Config{MaxBatchSize: 16, Instances: 1}

// abConfig serves abRepository with every version loaded and routing r.
func abConfig(t testing.TB, r router.Config) Config {
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.Repository = abRepository(t)
	cfg.StateDir = t.TempDir()
	cfg.Admin.TokenEnv = testTokenEnv
	cfg.Models = map[string]ModelConfig{"ab": {
		ModelConfig: runtime.ModelConfig{VersionPolicy: runtime.VersionPolicy{All: true}},
		Batching:    batcher16,
		Routing:     r,
	}}
	return cfg
}

// abRequest is one row whose first column is the larger: the echo
// versions' top class is 0, the swapping version's is 1.
const abRequest = `{"inputs":[{"name":"input","datatype":"FP32","shape":[1,2],"data":[2,1]}]}`

// inferAB posts abRequest with the headers and returns the version that answered.
func inferAB(t testing.TB, client *fasthttp.Client, url string, headers ...string) string {
	t.Helper()
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(url + "/v2/models/ab/infer")
	req.Header.SetMethod("POST")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	req.SetBodyString(abRequest)
	if err := client.Do(req, resp); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode() != 200 {
		t.Fatalf("infer answered %d: %s", resp.StatusCode(), resp.Body())
	}
	return string(resp.Header.Peek(headerModelVersion))
}

func TestWeightedAndStickyRouting(t *testing.T) {
	_, url := startServer(t, abConfig(t, router.Config{Split: map[string]int{"1": 70, "2": 30}, StickyHeader: "x-user"}))
	client := &fasthttp.Client{}
	counts := map[string]int{}
	const n = 3000
	for range n {
		counts[inferAB(t, client, url)]++
	}
	// 3000 draws at 30%: the standard deviation of the share is 0.84pp.
	if share := float64(counts["2"]) / n; share < 0.26 || share > 0.34 || counts["1"]+counts["2"] != n {
		t.Fatalf("versions answered %v of %d requests; want about 70/30 between 1 and 2 only", counts, n)
	}
	for key := range 50 {
		user := fmt.Sprintf("user-%d", key)
		first := inferAB(t, client, url, "x-user", user)
		for range 5 {
			if got := inferAB(t, client, url, "x-user", user); got != first {
				t.Fatalf("sticky key %s went to version %s, then %s", user, first, got)
			}
		}
	}
	// A pinned request bypasses the split.
	code, hdr, body := call(t, "POST", url+"/v2/models/ab/versions/3/infer", []byte(abRequest))
	if code != 200 || hdr.Get(headerModelVersion) != "3" {
		t.Fatalf("pinned request: %d from version %q: %s", code, hdr.Get(headerModelVersion), body)
	}
}

func TestShadowMirrorsAndCompares(t *testing.T) {
	_, url := startServerWith(t, Options{Config: abConfig(t, router.Config{
		Split:  map[string]int{"1": 1},
		Shadow: []router.Shadow{{Version: "2", Percent: 100}, {Version: "3", Percent: 50}},
	})})
	client := &fasthttp.Client{}
	const n = 400
	for range n {
		if v := inferAB(t, client, url); v != "1" {
			t.Fatalf("version %s answered; shadows must never answer", v)
		}
	}
	shadows := waitShadows(t, url, func(r map[string]shadowReport) bool {
		return r["2"].ComparedRows+r["2"].Dropped+r["2"].Failed == n && r["3"].Mirrored > 0 && r["3"].ComparedRows == r["3"].Mirrored
	})
	if s := shadows["2"]; s.Agreement != 0 || s.MeanAbsDiff != 1 || s.Failed != 0 {
		t.Errorf("swapping shadow: %+v; want agreement 0 and mean abs diff 1 (|2-1| per element)", s)
	}
	if s := shadows["3"]; s.Agreement != 1 || s.MeanAbsDiff != 0 || s.Mirrored < n/2-60 || s.Mirrored > n/2+60 {
		t.Errorf("echo shadow at 50%%: %+v; want about %d mirrored, all agreeing", s, n/2)
	}
}

// waitShadows polls the admin shadow report until done holds.
func waitShadows(t *testing.T, url string, done func(map[string]shadowReport) bool) map[string]shadowReport {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var rep struct {
			Shadows []shadowReport `json:"shadows"`
		}
		code, _, body := call(t, "GET", url+"/admin/models/ab/shadow", nil, "Authorization", "Bearer "+testToken)
		if code != 200 {
			t.Fatalf("shadow report: %d %s", code, body)
		}
		if err := json.Unmarshal(body, &rep); err != nil {
			t.Fatal(err)
		}
		byVersion := map[string]shadowReport{}
		for _, s := range rep.Shadows {
			byVersion[s.Version] = s
		}
		if done(byVersion) {
			return byVersion
		}
		if time.Now().After(deadline) {
			t.Fatalf("shadow report never settled: %+v", byVersion)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// load sends abRequest from two clients until the returned stop is called,
// which reports the answers that were not 200.
func load(t *testing.T, url string) (stop func() (ok, failed int, firstFailure string)) {
	t.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var okCount, failedCount int
	var first string
	quit := make(chan struct{})
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &fasthttp.Client{}
			for {
				select {
				case <-quit:
					return
				default:
				}
				code, body := post(client, url+"/v2/models/ab/infer", abRequest)
				mu.Lock()
				if code == 200 {
					okCount++
				} else if failedCount++; first == "" {
					first = fmt.Sprintf("%d %s", code, body)
				}
				mu.Unlock()
			}
		}()
	}
	return func() (int, int, string) {
		close(quit)
		wg.Wait()
		return okCount, failedCount, first
	}
}

// canaryConfig checks agreement on every mirrored request each 300ms.
func canaryConfig(version string) *router.CanaryConfig {
	return &router.CanaryConfig{
		Version: version, StepWeights: []int{20, 40}, Interval: 300 * time.Millisecond, Threshold: 2,
		MinRequests: 5, MinAgreement: 0.9, AgreementPercent: 100, MaxLatencyRatio: 100, MaxErrorRate: 0.5,
	}
}

func TestCanaryPromotesHealthyVersion(t *testing.T) {
	events := make(chan Event, 16)
	clock := newTestClock()
	srv, url := startServerWith(t, Options{Events: events, Now: clock.Now, Config: abConfig(t, router.Config{
		Split: map[string]int{"1": 1}, Canary: canaryConfig("3"),
	})})
	stop := load(t, url)
	driveCanary(t, srv, clock, 300*time.Millisecond, func() bool { return canaryEnded(srv) })
	got := waitEvent(t, events, "canary.promoted", 20*time.Second)
	_, failed, first := stop()
	if failed != 0 {
		t.Fatalf("%d requests failed during the canary, the first: %s", failed, first)
	}
	c := got.Data.(canaryStep)
	if c.Phase != router.PhasePromoted || c.FailedChecks != 0 {
		t.Fatalf("promoted canary: %+v", c)
	}
	client := &fasthttp.Client{}
	for range 20 {
		if v := inferAB(t, client, url); v != "3" {
			t.Fatalf("after promotion version %s answered, want 3", v)
		}
	}
}

func TestCanaryRollsBackDisagreeingVersion(t *testing.T) {
	events := make(chan Event, 16)
	clock := newTestClock()
	srv, url := startServerWith(t, Options{Events: events, Now: clock.Now, Config: abConfig(t, router.Config{
		Split: map[string]int{"1": 1}, Canary: canaryConfig("2"),
	})})
	stop := load(t, url)
	start := time.Now()
	driveCanary(t, srv, clock, 300*time.Millisecond, func() bool { return canaryEnded(srv) })
	got := waitEvent(t, events, "canary.rolledback", 20*time.Second)
	stop()
	c := got.Data.(canaryStep)
	// Threshold 2: the second failed analysis rolls back, two intervals in.
	if c.WeightAfter != 0 || c.FailedChecks != 2 || !strings.Contains(c.Reason, "agreement") {
		t.Fatalf("rolled-back canary: %+v", c)
	}
	t.Logf("rolled back after %s: %s", time.Since(start).Round(time.Millisecond), c.Reason)
	client := &fasthttp.Client{}
	for range 20 {
		if v := inferAB(t, client, url); v != "1" {
			t.Fatalf("after rollback version %s answered, want 1", v)
		}
	}
}

// canaryEnded reports whether model ab's canary was promoted or rolled back.
func canaryEnded(srv *Server) bool {
	srv.cp.mu.Lock()
	defer srv.cp.mu.Unlock()
	c := srv.cp.routes["ab"].canary
	return c != nil && c.Phase != router.PhaseProgressing
}

// waitEvent returns the first event of type typ, failing on a canary
// event that ends the canary otherwise.
func waitEvent(t *testing.T, events <-chan Event, typ string, timeout time.Duration) Event {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case e := <-events:
			if e.Type == typ {
				return e
			}
			if e.Type == "canary.promoted" || e.Type == "canary.rolledback" {
				t.Fatalf("got %s (%+v), want %s", e.Type, e.Data, typ)
			}
		case <-deadline:
			t.Fatalf("no %s event within %s", typ, timeout)
		}
	}
}
