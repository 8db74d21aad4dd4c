package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	neturl "net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/infergate/infergate/batcher"
	"github.com/infergate/infergate/drift"
	"github.com/infergate/infergate/retrain/capture"
	"github.com/infergate/infergate/retrain/outbox"
	"github.com/infergate/infergate/router"
)

// tool returns the path of a Prometheus program, failing the test when it
// is not installed: these tests never skip.
func tool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("cannot find %s (%v): make prometheus installs it (Debian's prometheus package)", name, err)
	}
	return path
}

// observedGateway serves every metric family the gateway has: model ab
// (abRepository) with version 1 primary, a canary of version 2 that is
// rolled back, version 3 shadowed and cached; the demo model with drift
// windows of 50 rows and every request captured; a webhook target that
// takes deliveries and one on a closed port that dead-letters them.
func observedGateway(t *testing.T) (srv *Server, url string, clock *testClock) {
	t.Helper()
	receiver := newEventReceiver(t)
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedURL := "http://" + closed.Addr().String()
	closed.Close()

	cfg := abConfig(t, router.Config{
		Split: map[string]int{"1": 1}, Canary: canaryConfig("2"),
		Shadow: []router.Shadow{{Version: "3", Percent: 100}},
	})
	ab := cfg.Models["ab"]
	ab.Cache = CacheConfig{Entries: 64}
	ab.Drift = drift.Config{Window: drift.WindowConfig{Rows: 50}, MinRows: 50}
	cfg.Models["ab"] = ab
	// ab's reference: both columns around 1.5, as abRequest's 2 and 1 are.
	values := make([]float64, 1000)
	for i := range values {
		values[i] = 1 + float64(i)/1000
	}
	ref, err := json.Marshal(drift.Reference{Rows: len(values), Features: []drift.Profile{
		drift.BuildProfile("input[0]", drift.Numeric, values, drift.ProfileOptions{}),
		drift.BuildProfile("input[1]", drift.Numeric, values, drift.ProfileOptions{}),
	}})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"1", "2", "3"} {
		if err := os.WriteFile(filepath.Join(cfg.Repository, "ab", v, "reference.json"), ref, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"model.onnx", "reference.json"} {
		data, err := os.ReadFile("../configs/models/demo/1/" + f)
		if err != nil {
			t.Fatal(err)
		}
		os.MkdirAll(filepath.Join(cfg.Repository, "demo", "1"), 0o755)
		if err := os.WriteFile(filepath.Join(cfg.Repository, "demo", "1", f), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg.Models["demo"] = ModelConfig{
		Batching: batcher.Config{MaxBatchSize: 16, Instances: 1},
		Drift:    drift.Config{Window: drift.WindowConfig{Rows: 50}, MinRows: 50},
		Capture:  capture.Config{Sample: 1},
	}
	cfg.Webhooks = append(receiver.targets(),
		outbox.Target{Name: "closed", URL: closedURL, MaxAttempts: 1, BackoffBase: time.Millisecond})
	clock = newTestClock()
	srv, url = startServerWith(t, Options{Now: clock.Now, Config: cfg})

	stop := load(t, url)
	driveCanary(t, srv, clock, 300*time.Millisecond, func() bool { return canaryEnded(srv) })
	stop()
	srv.cp.mu.Lock()
	phase := srv.cp.routes["ab"].canary.Phase
	srv.cp.mu.Unlock()
	if phase != router.PhaseRolledBack {
		t.Fatalf("canary of ab/2 ended %s, want rolled back", phase)
	}
	return srv, url, clock
}

// sendTraffic sends, every 20ms until d has passed, an ab request (primary
// version 1, copied to shadow 3), a pinned ab/3 request (answered from the
// cache after the first), a demo request (two rows, drift and capture)
// and, every fifth tick, an ab request that is refused (400).
func sendTraffic(t *testing.T, url string, d time.Duration) {
	t.Helper()
	client := &fasthttp.Client{}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	end := time.Now().Add(d)
	for i := 0; time.Now().Before(end); i++ {
		<-tick.C
		for _, r := range []struct{ path, body string }{
			{"/v2/models/ab/infer", abRequest},
			{"/v2/models/ab/versions/3/infer", abRequest},
			{"/v2/models/demo/infer", demoRequest},
		} {
			if code, body := post(client, url+r.path, r.body); code != 200 {
				t.Fatalf("%s: %d %s", r.path, code, body)
			}
		}
		if i%5 == 0 {
			if code, _ := post(client, url+"/v2/models/ab/infer", `{"inputs":[]}`); code != 400 {
				t.Fatalf("an empty request answered %d, want 400", code)
			}
		}
	}
}

// TestObservability serves every metric family with traffic, checks the
// exposition with promtool, then scrapes it with a real Prometheus and
// runs every query of the Grafana dashboard against it: each must answer
// series, and the request rate, p99 latency and average batch size must
// agree with the gateway's own counts.
func TestObservability(t *testing.T) {
	promtool, prometheus := tool(t, "promtool"), tool(t, "prometheus")
	srv, url, _ := observedGateway(t)
	repository := srv.cfg.Repository
	sendTraffic(t, url, time.Second)

	t.Run("promtool check metrics", func(t *testing.T) {
		text := get(t, url+"/metrics")
		checkExposition(t, text)
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = strings.NewReader(text)
		if out, err := cmd.CombinedOutput(); err != nil || len(out) > 0 {
			t.Fatalf("promtool check metrics: %v\n%s", err, out)
		}
	})

	promURL := startPrometheus(t, prometheus, strings.TrimPrefix(url, "http://"))
	waitScraped(t, promURL, time.Now()) // its first scrape comes seconds after it starts
	t0, before := time.Now(), get(t, url+"/metrics")
	sendTraffic(t, url, 12*time.Second)
	t1, after := time.Now(), get(t, url+"/metrics")
	waitScraped(t, promURL, t1)

	// The events whose panels would be empty without them did happen.
	for series, atLeast := range map[string]float64{
		`infergate_canary_transitions_total{model="ab",version="2",kind="rolledback"}`: 1,
		`infergate_webhook_dead_lettered_total{target="closed"}`:                       1,
		`infergate_webhook_deliveries_total{target="ci"}`:                              1,
		`infergate_drift_windows_total{model="demo",version="1",result="judged"}`:      1,
		`infergate_capture_records_total{model="demo"}`:                                1,
		`infergate_cache_hits_total{model="ab",version="3"}`:                           1,
		`infergate_shadow_requests_total{model="ab",version="3",result="mirrored"}`:    1,
	} {
		if got := metricValue(t, after, series); got < atLeast {
			t.Errorf("%s = %v, want at least %v", series, got, atLeast)
		}
	}

	queries := dashboardQueries(t)
	vars := strings.NewReplacer(`$model`, `.+`, `$version`, `.+`, `$__rate_interval`, `10s`)
	for _, q := range queries {
		if got := promQuery(t, promURL, vars.Replace(q.expr), t1); len(got) == 0 {
			t.Errorf("panel %q: %s answered no series", q.panel, q.expr)
		}
	}

	sum := func(text, family, labels string) float64 {
		total := 0.0
		for line := range strings.Lines(text) {
			if strings.HasPrefix(line, family+"{") && strings.Contains(line, labels) {
				v, _ := strconv.ParseFloat(strings.TrimSpace(line[strings.LastIndexByte(line, ' '):]), 64)
				total += v
			}
		}
		return total
	}
	delta := func(family, labels string) float64 { return sum(after, family, labels) - sum(before, family, labels) }
	panel := func(title string) float64 {
		t.Helper()
		i := slices.IndexFunc(queries, func(q dashboardQuery) bool { return q.panel == title })
		if i < 0 {
			t.Fatalf("the dashboard has no panel %q", title)
		}
		total := 0.0
		for _, s := range promQuery(t, promURL, vars.Replace(queries[i].expr), t1) {
			if s.model == "ab" && s.version == "1" {
				total += s.value
			}
		}
		return total
	}
	secs := t1.Sub(t0).Seconds()
	ab1 := `model="ab",version="1"`

	// Request rate: a steady pace (60 requests a second to ab/1 when the
	// machine keeps up), the 10s rate window inside the 12s of traffic;
	// a third off allows for Prometheus' extrapolation and an uneven pace.
	wantRate := delta("infergate_requests_total", ab1) / secs
	if got := panel("Request rate"); math.Abs(got-wantRate) > wantRate/3 {
		t.Errorf("dashboard request rate of ab/1: %.1f/s, the gateway counted %.1f/s", got, wantRate)
	}

	// p99: Prometheus interpolates inside the bucket the gateway's own
	// counts put the 99th percentile in (a neighbour allowed, for the
	// slightly different window).
	lo, hi := bucketOf(t, before, after, `infergate_request_duration_seconds_bucket{`+ab1+`,protocol="rest"`, 0.99)
	if got := panel("Latency p99"); got < lo || got > hi {
		t.Errorf("dashboard p99 of ab/1: %v, the gateway's buckets say within [%v, %v]", got, lo, hi)
	}

	wantBatch := delta("infergate_batcher_rows_total", ab1) / delta("infergate_batcher_executions_total", ab1)
	if got := panel("Average batch size"); math.Abs(got-wantBatch) > wantBatch/3 {
		t.Errorf("dashboard average batch size of ab/1: %.2f, the gateway counted %.2f", got, wantBatch)
	}

	t.Run("an unloaded version leaves no series", func(t *testing.T) {
		ab2 := `model="ab",version="2"`
		text := get(t, url+"/metrics")
		for _, family := range []string{"infergate_requests_total", "infergate_request_duration_seconds_bucket", "infergate_model_version_loaded",
			"infergate_batcher_rows_total", "infergate_inference_duration_seconds_bucket", "infergate_cache_hits_total",
			"infergate_shadow_requests_total", "infergate_shadow_duration_seconds_bucket", "infergate_drift_rows_total",
			"infergate_canary_weight", "infergate_canary_transitions_total"} {
			if !strings.Contains(text, family+"{"+ab2) {
				t.Errorf("before the unload, /metrics lacks %s{%s...}", family, ab2)
			}
		}
		if err := os.RemoveAll(filepath.Join(repository, "ab", "2")); err != nil {
			t.Fatal(err)
		}
		if err := srv.Reload(); err != nil {
			t.Fatal(err)
		}
		for line := range strings.Lines(get(t, url+"/metrics")) {
			if strings.Contains(line, ab2) {
				t.Errorf("after version 2 of ab was unloaded: %s", line)
			}
		}
	})
}

// checkExposition checks that each family in text has one HELP line with
// a sentence from the HELP tables and one TYPE line, both before its
// series, and that no family is split.
func checkExposition(t *testing.T, text string) {
	t.Helper()
	help, typ := map[string]int{}, map[string]int{}
	seen := map[string]bool{}
	current := ""
	for line := range strings.Lines(text) {
		switch fields := strings.Fields(line); {
		case strings.HasPrefix(line, "# HELP "):
			help[fields[2]]++
			if metricHelp[fields[2]] == "" || !strings.HasSuffix(line, ".\n") {
				t.Errorf("family %s has no HELP sentence of its own: %q", fields[2], line)
			}
		case strings.HasPrefix(line, "# TYPE "):
			typ[fields[2]]++
			if seen[fields[2]] {
				t.Errorf("family %s is split: a second TYPE line after its series", fields[2])
			}
			current = fields[2]
			seen[current] = true
		default:
			name := strings.FieldsFunc(line, func(r rune) bool { return r == '{' || r == ' ' })[0]
			if !strings.HasPrefix(name, current) {
				t.Errorf("series %s under family %s", name, current)
			}
		}
	}
	for name := range seen {
		if help[name] != 1 || typ[name] != 1 {
			t.Errorf("family %s: %d HELP and %d TYPE lines, want one each", name, help[name], typ[name])
		}
	}
	for _, family := range []string{"infergate_requests_total", "infergate_canary_transitions_total", "infergate_shadow_abs_diff_total",
		"infergate_drift_statistic", "infergate_webhook_dead_lettered_total", "infergate_capture_records_total", "go_goroutines"} {
		if !seen[family] {
			t.Errorf("/metrics lacks family %s", family)
		}
	}
}

// bucketOf returns the bounds of the histogram bucket, between the
// before and after expositions, that holds quantile q of the series whose
// bucket lines start with prefix, widened by a bucket on each side.
func bucketOf(t *testing.T, before, after, prefix string, q float64) (lo, hi float64) {
	t.Helper()
	le := regexp.MustCompile(`le="([^"]+)"\} (\S+)`)
	counts := func(text string) (bounds, n []float64) {
		for line := range strings.Lines(text) {
			if m := le.FindStringSubmatch(line); m != nil && strings.HasPrefix(line, prefix) {
				b, _ := strconv.ParseFloat(m[1], 64)
				c, _ := strconv.ParseFloat(m[2], 64)
				bounds, n = append(bounds, b), append(n, c)
			}
		}
		return bounds, n
	}
	bounds, n1 := counts(after)
	_, n0 := counts(before)
	if len(bounds) == 0 || len(n0) != len(n1) {
		t.Fatalf("no buckets %s in /metrics", prefix)
	}
	total := n1[len(n1)-1] - n0[len(n0)-1]
	for i := range bounds {
		if n1[i]-n0[i] >= q*total {
			lo, hi = 0, bounds[min(i+1, len(bounds)-1)]
			if i >= 2 {
				lo = bounds[i-2]
			}
			return lo, hi
		}
	}
	t.Fatalf("quantile %v beyond the buckets of %s", q, prefix)
	return 0, 0
}

// dashboardQuery is one target of a panel of the Grafana dashboard.
type dashboardQuery struct{ panel, expr string }

// dashboardQueries reads every panel's queries from the dashboard.
func dashboardQueries(t *testing.T) []dashboardQuery {
	t.Helper()
	data, err := os.ReadFile("../configs/grafana/infergate.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("cannot decode the dashboard: %v", err)
	}
	var qs []dashboardQuery
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			qs = append(qs, dashboardQuery{p.Title, tg.Expr})
		}
	}
	if len(qs) < 20 {
		t.Fatalf("the dashboard has %d queries, want at least 20", len(qs))
	}
	return qs
}

// startPrometheus runs prometheus on a free loopback port, scraping target
// every second, with its data in a temporary folder, and returns its URL.
func startPrometheus(t *testing.T, prometheus, target string) string {
	t.Helper()
	dir := t.TempDir()
	config := fmt.Sprintf("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n"+
		"  - job_name: infergate\n    static_configs:\n      - targets: [%q]\n", target)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	var out bytes.Buffer
	cmd := exec.Command(prometheus, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+addr)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("cannot start prometheus: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		http.DefaultClient.CloseIdleConnections() // no connection goroutine outlives the test
	})
	url := "http://" + addr
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(url + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return url
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus not ready after 30s:\n%s", out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitScraped waits until Prometheus has scraped the gateway after at.
func waitScraped(t *testing.T, promURL string, at time.Time) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if res := promQuery(t, promURL, `timestamp(up{job="infergate"} == 1)`, time.Now()); len(res) == 1 && res[0].value > float64(at.UnixNano())/1e9 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("prometheus did not scrape the gateway within 30s")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// promSample is one series of an instant query's answer.
type promSample struct {
	model, version string
	value          float64
}

// promQuery runs the instant query expr at time at through Prometheus'
// HTTP API.
func promQuery(t *testing.T, promURL, expr string, at time.Time) []promSample {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	q := neturl.Values{"query": {expr}, "time": {strconv.FormatFloat(float64(at.UnixNano())/1e9, 'f', 3, 64)}}
	req, _ := http.NewRequestWithContext(ctx, "GET", promURL+"/api/v1/query?"+q.Encode(), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("query %s: %v", expr, err)
	}
	defer resp.Body.Close()
	var answer struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&answer); err != nil || answer.Status != "success" {
		t.Fatalf("query %s: %v %s", expr, err, answer.Error)
	}
	var out []promSample
	for _, r := range answer.Data.Result {
		s, _ := r.Value[1].(string)
		v, _ := strconv.ParseFloat(s, 64)
		out = append(out, promSample{model: r.Metric["model"], version: r.Metric["version"], value: v})
	}
	return out
}

// TestAlertRules checks the alert rules with promtool and runs their unit
// tests.
func TestAlertRules(t *testing.T) {
	promtool := tool(t, "promtool")
	for _, args := range [][]string{
		{"check", "rules", "../configs/prometheus/alerts.yaml"},
		{"test", "rules", "../configs/prometheus/alerts_test.yaml"},
	} {
		if out, err := exec.Command(promtool, args...).CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// TestMetricHelpTexts checks the HELP tables: each text is one line of
// the exposition format (no backslash, no line break) and a sentence.
func TestMetricHelpTexts(t *testing.T) {
	for name, help := range metricHelp {
		if strings.ContainsAny(help, "\\\n") || !strings.HasSuffix(help, ".") || len(help) < 20 ||
			strings.ToUpper(help[:1]) != help[:1] {
			t.Errorf("HELP of %s is not a sentence on one line: %q", name, help)
		}
	}
}
