package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	cdpruntime "github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/valyala/fasthttp"

	"github.com/infergate/infergate/batcher"
	"github.com/infergate/infergate/drift"
	"github.com/infergate/infergate/retrain/engine"
	"github.com/infergate/infergate/retrain/outbox"
	"github.com/infergate/infergate/retrain/pipeline"
	"github.com/infergate/infergate/retrain/trainer"
	"github.com/infergate/infergate/router"
)

// chromiumPath returns the headless browser the console test drives, or
// fails the test saying how to install one.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no chromium on PATH: the console test drives a headless Chromium; `make chromium` installs it")
	return ""
}

// screenshotDir is where the console test saves its screenshots:
// $INFERGATE_SCREENSHOTS, or a temporary folder.
func screenshotDir(t *testing.T) string {
	if dir := os.Getenv("INFERGATE_SCREENSHOTS"); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	return t.TempDir()
}

// consoleGateway serves model ab (whose canary to version 3 runs on a
// test clock) and the demo model (monitored for drift, windows of 500
// rows) on a real engine, with two webhook targets: ci, which takes every
// event, and broken, which takes drift.detected and answers 500, so that
// its delivery is dead-lettered.
func consoleGateway(t *testing.T) (*Server, string, *testClock, Config) {
	t.Helper()
	receiver := newEventReceiver(t)
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "the receiver is down", http.StatusInternalServerError)
	}))
	t.Cleanup(broken.Close)
	cfg := abConfig(t, router.Config{Split: map[string]int{"1": 1}, Canary: canaryConfig("3")})
	for _, f := range []string{"model.onnx", "reference.json"} {
		copyFile(t, "../configs/models/demo/1/"+f, filepath.Join(cfg.Repository, "demo", "1", f))
	}
	cfg.Models["demo"] = ModelConfig{Batching: batcher.Config{MaxBatchSize: 128, Instances: 1},
		Drift: drift.Config{Window: drift.WindowConfig{Rows: 500}}}
	cfg.Webhooks = append(receiver.targets(), outbox.Target{Name: "broken", URL: broken.URL, Events: []string{"drift.detected"},
		MaxAttempts: 2, BackoffBase: time.Millisecond, BackoffMax: 5 * time.Millisecond})
	clock := newTestClock()
	srv, url := startServerWith(t, Options{Config: cfg, Now: clock.Now})
	return srv, url, clock, cfg
}

// TestConsoleShowsTheSourceOfTruth opens the console of a real gateway
// that served traffic, ran a canary to promotion, detected drift and
// dead-lettered a webhook delivery, in a headless Chromium, and checks
// what a person sees against the endpoints and /metrics: the traffic
// shares, the canary's steps, every drift histogram bar, the dead letter,
// the events' deliveries and the retrain run. Without a token the page
// shows no admin data and says so; with a wrong one it says 401; the
// redrive button works with the right one. Nothing is loaded from
// elsewhere and no script fails.
func TestConsoleShowsTheSourceOfTruth(t *testing.T) {
	browser := chromiumPath(t)
	shots := screenshotDir(t)
	srv, url, clock, cfg := consoleGateway(t)

	// The canary, on the test clock, to promotion.
	stop := load(t, url)
	driveCanary(t, srv, clock, 300*time.Millisecond, func() bool { return canaryEnded(srv) })
	if _, failed, first := stop(); failed != 0 {
		t.Fatalf("%d requests failed during the canary, the first: %s", failed, first)
	}
	// Drift: two clean windows, then two shifted by half a standard
	// deviation in four features.
	client := &fasthttp.Client{}
	rows := trainer.Synthetic(1, 6000).X[4000:]
	none := make([]float64, 8)
	for i := range 2 {
		sendRows(t, client, url, rows[i*500:(i+1)*500], none)
		waitDriftReport(t, url, int64(i+1))
	}
	shift := demoShift(t, 0, 1, 2, 3)
	for i := 2; i < 4; i++ {
		sendRows(t, client, url, rows[i*500:(i+1)*500], shift)
		waitDriftReport(t, url, int64(i+1))
	}
	waitUntil(t, "the drift.detected delivery to broken is dead-lettered", 30*time.Second, func() bool {
		_, dead := webhooksOf(t, url)
		return len(dead) == 1
	})
	// A retrain run, as the retrain service stores it.
	putRun(t, srv, pipeline.Run{ID: "1", Model: "demo", Trigger: "e1", DriftVersion: "1", Outcome: "Succeeded", Candidate: "2",
		QueuedAt: time.Now().Add(-time.Minute), Started: time.Now().Add(-50 * time.Second), Finished: time.Now(),
		Metrics: &pipeline.Metrics{BaseVersion: "1", RecentRows: 800, TrainRows: 4000, RecentAccuracy: 0.9, BaseRecentAccuracy: 0.7},
		Steps: []pipeline.Step{{Name: "data", Start: time.Now().Add(-50 * time.Second), Duration: pipeline.Duration(time.Second), Log: []string{"read 800 rows"}},
			{Name: "train", Start: time.Now().Add(-49 * time.Second), Duration: pipeline.Duration(20 * time.Second), Log: []string{"trained"}}}})
	// Every event in the history (the writer is behind the event loop).
	waitUntil(t, "the drift.detected event in the event history", 10*time.Second, func() bool {
		var p page[eventWithDeliveries]
		adminJSON(t, url, "webhooks/events?limit=1000", &p)
		return slices.ContainsFunc(p.Items, func(e eventWithDeliveries) bool { return strings.Contains(string(e.Data), outbox.TypeDriftDetected) })
	})

	ctx, cancel := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browser), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.WindowSize(1440, 900))...)
	defer cancel()
	ctx, cancelBrowser := chromedp.NewContext(ctx)
	defer cancelBrowser()
	ctx, cancelTimeout := context.WithTimeout(ctx, 2*time.Minute)
	defer cancelTimeout()

	var mu sync.Mutex
	var problems []string
	err := chromedp.Listen(ctx, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch ev := ev.(type) {
		case *cdpruntime.EventExceptionThrown:
			problems = append(problems, fmt.Sprintf("script exception: %s %+v", ev.ExceptionDetails.Text, ev.ExceptionDetails.Exception))
		case *cdpruntime.EventConsoleAPICalled:
			if ev.Type == cdpruntime.ConsoleAPICalledTypeError {
				problems = append(problems, fmt.Sprintf("console error: %v", ev.Args))
			}
		case *network.EventRequestWillBeSent:
			if !strings.HasPrefix(ev.Request.URL, url+"/") && !strings.HasPrefix(ev.Request.URL, "data:") {
				problems = append(problems, "request to elsewhere: "+ev.Request.URL)
			}
		}
	})
	if err != nil {
		t.Fatalf("cannot start %s: %v", browser, err)
	}
	save := func(name string, png []byte, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(shots, name), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	shot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		save(name, png, err)
	}
	do := func(steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			t.Fatal(err)
		}
	}
	eval := func(js string, out any) {
		t.Helper()
		raw, err := chromedp.Run(ctx, chromedp.Evaluate[json.RawMessage](js))
		if err != nil {
			t.Fatalf("%s: %v", js, err)
		}
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s: %v", js, err)
		}
	}
	refreshes := func() int {
		var n int
		eval(`Number(document.body.dataset.refreshes || 0)`, &n)
		return n
	}
	// refreshed waits for the page's next refresh after the one it shows.
	refreshed := func() {
		t.Helper()
		after := refreshes()
		waitUntil(t, "the console's refresh", 30*time.Second, func() bool { return refreshes() > after })
	}
	useToken := func(token string) {
		t.Helper()
		do(chromedp.SetValue(chromedp.CSS("#token"), token), chromedp.Click(chromedp.CSS(`#token-form button[type=submit]`)))
		refreshed()
	}

	// No token: public data only, and the page says why.
	do(chromedp.Navigate(url+"/console/"), chromedp.WaitVisible(chromedp.CSS(`body[data-refreshes]`)))
	var state, routing string
	eval(`document.querySelector("#banner [data-admin]")?.dataset.admin || ""`, &state)
	eval(`document.getElementById("routing-body").textContent`, &routing)
	if state != "none" || !strings.Contains(routing, "Enter the admin token") {
		t.Fatalf("without a token the banner says %q and routing %q", state, routing)
	}
	var redriveButtons int
	eval(`document.querySelectorAll("button.redrive").length`, &redriveButtons)
	if redriveButtons != 0 {
		t.Fatal("the console offers a redrive without a token")
	}
	shot("console-no-token.png")

	// A wrong token: 401, said so.
	useToken("wrong-token")
	eval(`document.querySelector("#banner [data-admin]")?.dataset.admin || ""`, &state)
	if state != "refused" {
		t.Fatalf("with a wrong token the banner says %q, want refused", state)
	}

	useToken(testToken)
	eval(`document.querySelector("#banner [data-admin]")?.dataset.admin || ""`, &state)
	if state != "" {
		t.Fatalf("with the token the banner says %q, want none", state)
	}

	// Traffic shares: those of the requests_total counters.
	var shown []struct {
		Model, Version string
		Share          float64
	}
	eval(`[...document.querySelectorAll("tr.version-row")].map(r => ({model: r.dataset.model, version: r.dataset.version, share: Number(r.querySelector(".share").dataset.share)}))`, &shown)
	want := sharesOf(t, get(t, url+"/metrics"))
	if len(shown) != len(want) {
		t.Fatalf("the console shows %d versions (%+v), /metrics counts %d (%v)", len(shown), shown, len(want), want)
	}
	for _, v := range shown {
		if w, ok := want[v.Model+"/"+v.Version]; !ok || math.Abs(w-v.Share) > 1e-9 {
			t.Fatalf("the console shows %s/%s at a share of %v, /metrics says %v", v.Model, v.Version, v.Share, w)
		}
	}
	if want["ab/3"] == 0 || want["demo/1"] != 1 {
		t.Fatalf("shares %v: want traffic to ab's canary and all of demo's to version 1", want)
	}

	// The canary's steps: those of the step endpoint, in its order.
	var steps []struct {
		Seq, Before, After int
		Step               string
	}
	eval(`[...document.querySelectorAll("tr.canary-step")].map(r => ({seq: Number(r.dataset.seq), step: r.dataset.step, before: Number(r.dataset.weightBefore), after: Number(r.dataset.weightAfter)}))`, &steps)
	var stepPage page[struct {
		Seq  int               `json:"seq"`
		Data consoleCanaryStep `json:"data"`
	}]
	adminJSON(t, url, "models/ab/canary/steps", &stepPage)
	if len(steps) != len(stepPage.Items) || len(steps) < 3 {
		t.Fatalf("the console shows %d canary steps, the endpoint has %d (want started, advanced..., promoted)", len(steps), len(stepPage.Items))
	}
	for i, it := range stepPage.Items {
		if s := steps[i]; s.Seq != it.Seq || s.Step != string(it.Data.Step) || s.Before != it.Data.WeightBefore || s.After != it.Data.WeightAfter {
			t.Fatalf("canary step %d shown as %+v, the endpoint says %+v", i, s, it)
		}
	}
	if first, last := stepPage.Items[len(stepPage.Items)-1].Data, stepPage.Items[0].Data; first.Step != router.KindStarted || last.Step != router.KindPromoted {
		t.Fatalf("canary steps from %s to %s, want started to promoted", first.Step, last.Step)
	}

	// Every drift histogram bar: its bin's count in the newest judged
	// window (and the reference), its height the count's share on the
	// chart's scale.
	var bars []struct {
		Feature, Kind  string
		Seq, Bin       int
		Count          int64
		Height, Scale  float64
		ChartH, Totals float64
	}
	eval(`[...document.querySelectorAll(".feature[data-model=demo]")].flatMap(f => { const svg = f.querySelector("svg.histogram");
		return [...svg.querySelectorAll("rect")].map(r => ({feature: f.dataset.feature, seq: Number(f.dataset.seq), kind: r.classList.contains("cur") ? "cur" : "ref",
			bin: Number(r.dataset.bin), count: Number(r.dataset.count), height: Number(r.getAttribute("height")),
			scale: Number(svg.dataset.maxShare), chartH: Number(svg.dataset.chartHeight),
			totals: Number(r.classList.contains("cur") ? svg.dataset.windowTotal : svg.dataset.referenceTotal)})) })`, &bars)
	var windows page[struct {
		Seq  int                `json:"seq"`
		Data drift.WindowResult `json:"data"`
	}]
	if err := json.Unmarshal([]byte(get(t, url+"/v2/models/demo/versions/1/drift/windows")), &windows); err != nil {
		t.Fatal(err)
	}
	if len(windows.Items) != 4 || !windows.Items[0].Data.Drifted || windows.Items[3].Data.Drifted {
		t.Fatalf("drift windows: %d, want 4, the newest drifted and the oldest not", len(windows.Items))
	}
	newest := windows.Items[0]
	checked := 0
	for _, b := range bars {
		if b.Seq != newest.Seq {
			t.Fatalf("the console draws window %d, the newest judged is %d", b.Seq, newest.Seq)
		}
		i := slices.IndexFunc(newest.Data.Features, func(f drift.FeatureResult) bool { return f.Name == b.Feature })
		if i < 0 {
			t.Fatalf("the console draws feature %q, which window %d lacks", b.Feature, newest.Seq)
		}
		f := newest.Data.Features[i]
		counts := f.Counts
		if b.Kind == "ref" {
			counts = f.ReferenceCounts
		}
		var total int64
		for _, c := range counts {
			total += c
		}
		if b.Bin >= len(counts) || b.Count != counts[b.Bin] || float64(total) != b.Totals {
			t.Fatalf("feature %s %s bar %d shows %d of %v, the endpoint has %v", b.Feature, b.Kind, b.Bin, b.Count, b.Totals, counts)
		}
		if wantH := float64(counts[b.Bin]) / float64(total) / b.Scale * b.ChartH; math.Abs(b.Height-wantH) > 0.01 {
			t.Fatalf("feature %s %s bar %d is %.3f high, want %.3f for %d of %d", b.Feature, b.Kind, b.Bin, b.Height, wantH, counts[b.Bin], total)
		}
		checked++
	}
	wantBars := 0
	for _, f := range newest.Data.Features {
		wantBars += len(f.Counts) + len(f.ReferenceCounts)
	}
	if checked != wantBars || checked == 0 {
		t.Fatalf("the console draws %d bars, the newest window has %d bins (window and reference)", checked, wantBars)
	}

	// The dead letter shown is the one the outbox holds, and the events
	// show their deliveries as the endpoint does.
	var deadShown []struct{ EventID, Target string }
	eval(`[...document.querySelectorAll("tr.dead-letter")].map(r => ({eventID: r.dataset.eventId, target: r.dataset.target}))`, &deadShown)
	_, dead := webhooksOf(t, url)
	if len(deadShown) != 1 || deadShown[0].EventID != dead[0].EventID || deadShown[0].Target != dead[0].Target || dead[0].Target != "broken" {
		t.Fatalf("the console shows dead letters %+v, the outbox holds %+v", deadShown, dead)
	}
	var deliveries []struct{ EventID, Target, Status string }
	eval(`[...document.querySelectorAll("tr.event")].flatMap(r => [...r.querySelectorAll(".delivery")].map(d => ({eventID: r.dataset.eventId, target: d.dataset.target, status: d.dataset.status})))`, &deliveries)
	var events page[eventWithDeliveries]
	adminJSON(t, url, "webhooks/events?limit=50", &events)
	var wantDeliveries []struct{ EventID, Target, Status string }
	for _, e := range events.Items {
		var head struct{ ID string }
		json.Unmarshal(e.Data, &head)
		for _, d := range e.Deliveries {
			wantDeliveries = append(wantDeliveries, struct{ EventID, Target, Status string }{head.ID, d.Target, d.Status})
		}
	}
	if !slices.Equal(deliveries, wantDeliveries) || !slices.Contains(deliveries, struct{ EventID, Target, Status string }{dead[0].EventID, "broken", outbox.StatusDeadLettered}) {
		t.Fatalf("the console shows deliveries %+v, the endpoint %+v", deliveries, wantDeliveries)
	}

	// The retrain run.
	var runs []string
	eval(`[...document.querySelectorAll(".run")].map(r => r.dataset.run)`, &runs)
	if !slices.Equal(runs, []string{"1"}) {
		t.Fatalf("the console shows runs %v, want [1]", runs)
	}
	for _, section := range []string{"overview", "routing", "drift", "outbox", "runs"} {
		do(chromedp.ScrollIntoView(chromedp.CSS("#" + section)))
		png, err := chromedp.Run(ctx, chromedp.Screenshot(chromedp.CSS("#"+section)))
		save("console-"+section+".png", png, err)
	}
	shot("console.png")

	// Redrive: the button sends the dead letter again (to a receiver that
	// is still down, so it comes back with its attempts made again).
	before := dead[0]
	do(chromedp.Click(chromedp.CSS(`tr.dead-letter button.redrive`)))
	waitUntil(t, "the redriven delivery dead-lettered again", 30*time.Second, func() bool {
		_, dead := webhooksOf(t, url)
		return len(dead) == 1 && dead[0].EventID == before.EventID && dead[0].DeadAt.After(before.DeadAt)
	})
	mu.Lock()
	defer mu.Unlock()
	if len(problems) > 0 {
		t.Fatalf("the console page: %s", strings.Join(problems, "; "))
	}
	_ = cfg
}

// adminJSON decodes the answer of GET /admin/<path> into v.
func adminJSON(t *testing.T, url, path string, v any) {
	t.Helper()
	code, body := admin(t, "GET", url, path, "")
	if code != 200 {
		t.Fatalf("GET /admin/%s: %d %s", path, code, body)
	}
	if err := json.Unmarshal([]byte(body), v); err != nil {
		t.Fatalf("GET /admin/%s: %v", path, err)
	}
}

// requestsSeries matches a series of infergate_requests_total (with or
// without the suffix) and captures its model, version and value.
var requestsSeries = regexp.MustCompile(`(?m)^infergate_requests(?:_total)?\{model="([^"]*)",version="([^"]*)"[^}]*\} (\S+)$`)

// sharesOf returns each model version's share of its model's requests,
// by "model/version", from the Prometheus text of /metrics.
func sharesOf(t *testing.T, text string) map[string]float64 {
	t.Helper()
	counts, totals := map[string]float64{}, map[string]float64{}
	for _, m := range requestsSeries.FindAllStringSubmatch(text, -1) {
		v, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			t.Fatal(err)
		}
		counts[m[1]+"/"+m[2]] += v
		totals[m[1]] += v
	}
	shares := map[string]float64{}
	for k, n := range counts {
		model, _, _ := strings.Cut(k, "/")
		if totals[model] > 0 {
			shares[k] = n / totals[model]
		} else {
			shares[k] = 0
		}
	}
	return shares
}

// putRun stores run r in the retrain service's run bucket, as the
// service would.
func putRun(t *testing.T, srv *Server, r pipeline.Run) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := engine.KeyValue(ctx, srv.o.Engine.JS, jetstream.KeyValueConfig{Bucket: pipeline.RunsBucket, History: 1, Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatal(err)
	}
	data, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, r.ID, data); err != nil {
		t.Fatal(err)
	}
}
