package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/infergate/infergate/batcher"
	"github.com/infergate/infergate/drift"
	"github.com/infergate/infergate/retrain/outbox"
	"github.com/infergate/infergate/retrain/trainer"
)

// startDriftServer serves the test repository with its drift decisions
// going to the returned channel.
func startDriftServer(t *testing.T) (string, <-chan drift.Decision) {
	t.Helper()
	decisions := make(chan drift.Decision, 16)
	cfg := testConfig(t)
	cfg.Models["demo"] = ModelConfig{Batching: batcher.Config{MaxBatchSize: 128, Instances: 2}}
	_, url := startServerWith(t, Options{Config: cfg, DriftDecisions: decisions})
	return url, decisions
}

// sendRows posts rows to the demo model in requests of 100 rows, adding
// shift[j] to feature j.
func sendRows(t *testing.T, client *fasthttp.Client, url string, rows [][]float32, shift []float64) {
	t.Helper()
	var b strings.Builder
	for start := 0; start < len(rows); start += 100 {
		batch := rows[start:min(start+100, len(rows))]
		b.Reset()
		fmt.Fprintf(&b, `{"inputs":[{"name":"input","datatype":"FP32","shape":[%d,8],"data":[`, len(batch))
		for i, row := range batch {
			for j, x := range row {
				if i+j > 0 {
					b.WriteByte(',')
				}
				fmt.Fprintf(&b, "%g", float64(x)+shift[j])
			}
		}
		b.WriteString("]}]}")
		if code, body := post(client, url+"/v2/models/demo/infer", b.String()); code != 200 {
			t.Fatalf("infer answered %d: %s", code, body)
		}
	}
}

// sendWindows sends rows a window of 1000 at a time, waiting after each
// until it is judged (so that a window never overruns while the monitor
// judges the one before), judged windows having been judged before; it
// returns the report after the last.
func sendWindows(t *testing.T, client *fasthttp.Client, url string, rows [][]float32, shift []float64, judged int64) drift.Report {
	t.Helper()
	var rep drift.Report
	for start := 0; start < len(rows); start += 1000 {
		sendRows(t, client, url, rows[start:start+1000], shift)
		judged++
		rep = waitDriftReport(t, url, judged)
	}
	return rep
}

// driftReport fetches the pinned drift report of the demo's version 1 once
// it has judged n windows.
func waitDriftReport(t *testing.T, url string, n int64) drift.Report {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var rep drift.Report
		if err := json.Unmarshal([]byte(get(t, url+"/v2/models/demo/versions/1/drift")), &rep); err != nil {
			t.Fatal(err)
		}
		if rep.WindowsJudged >= n {
			return rep
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d windows judged after 60s", rep.WindowsJudged, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// demoShift returns a shift of half a standard deviation, by the demo
// model's reference, in each of features (indexes) and none in the rest.
func demoShift(t *testing.T, features ...int) []float64 {
	t.Helper()
	ref, err := drift.LoadReference("../configs/models/demo/1/reference.json")
	if err != nil {
		t.Fatal(err)
	}
	shift := make([]float64, len(ref.Features))
	for _, j := range features {
		shift[j] = 0.5 * ref.Features[j].Std
	}
	return shift
}

// TestDemoDrift runs the demo model's drift monitoring, at the defaults,
// over HTTP: traffic from the training distribution raises no alarm in 100
// windows; a shift of half a standard deviation in four of the eight
// features raises drift.detected by the end of the second window after it
// began; the same shift in one feature alone is drift too under the
// default family-wise rule (scipy's KS with Bonferroni says so as well),
// and decides nothing within the cooldown.
func TestDemoDrift(t *testing.T) {
	url, decisions := startDriftServer(t)
	client := &fasthttp.Client{}
	// Rows beyond the 4000 the demo model was trained on: fresh draws
	// from the training distribution.
	rows := trainer.Synthetic(1, 110000).X[4000:]
	none := make([]float64, 8)

	rep := sendWindows(t, client, url, rows[:100000], none, 0)
	if len(decisions) != 0 {
		t.Fatalf("traffic from the training distribution raised %d decisions: %+v", len(decisions), <-decisions)
	}
	if rep.Drifted || rep.WindowsSkipped != 0 {
		t.Fatalf("after 100 windows: drifted %v, %d skipped", rep.Drifted, rep.WindowsSkipped)
	}

	// Windows 100 and 101 are shifted in age, income, tenure_months, balance.
	shift := demoShift(t, 0, 1, 2, 3)
	rep = sendWindows(t, client, url, rows[100000:102000], shift, 100)
	select {
	case d := <-decisions:
		if d.Type != drift.DriftDetected || d.Window.Seq != 101 {
			t.Fatalf("got %s at window %d, want drift.detected at window 101", d.Type, d.Window.Seq)
		}
		for j, f := range d.Window.Features[:8] {
			if want := j < 4; f.Drifted != want {
				t.Errorf("feature %s: drifted %v (%s %.3g), want %v", f.Name, f.Drifted, f.Method, f.Value, want)
			}
		}
	case <-time.After(10 * time.Second):
		// The report counts a window as judged just before its decision
		// is committed, so the decision may follow by a moment.
		t.Fatalf("no decision after two shifted windows; last window: share %.2f", rep.Last.Share)
	}

	// Back to normal for two windows resolves it; then one shifted feature.
	sendWindows(t, client, url, rows[102000:104000], none, 102)
	if d := <-decisions; d.Type != drift.DriftResolved {
		t.Fatalf("got %s after two clean windows, want drift.resolved", d.Type)
	}
	one := demoShift(t, 1)
	rep = sendWindows(t, client, url, rows[104000:106000], one, 104)
	if f := rep.Last.Features[1]; f.Name != "income" || !f.Drifted || !rep.Last.Drifted || rep.Last.Rule.Name != drift.RuleFamilyWise {
		t.Fatalf("last window: %s drifted %v, window drifted %v by rule %+v; want income and the window drifted, by family_wise", f.Name, f.Drifted, rep.Last.Drifted, rep.Last.Rule)
	}
	if len(decisions) != 0 { // within the cooldown of the detection at window 101
		t.Fatalf("a shift within the cooldown raised %+v", <-decisions)
	}
}

func TestDriftEndpoint(t *testing.T) {
	url, _ := startDriftServer(t)
	code, _, _ := call(t, "POST", url+"/v2/models/demo/infer", []byte(demoRequest))
	if code != 200 {
		t.Fatalf("infer answered %d", code)
	}
	var all struct {
		Model    string         `json:"model_name"`
		Versions []drift.Report `json:"versions"`
	}
	if err := json.Unmarshal([]byte(get(t, url+"/v2/models/demo/drift")), &all); err != nil {
		t.Fatal(err)
	}
	if all.Model != "demo" || len(all.Versions) != 1 || all.Versions[0].Current.Rows != 2 {
		t.Fatalf("got %+v, want demo with one version that has seen 2 rows", all)
	}
	cur := all.Versions[0].Current
	if len(cur.Features) != 9 || cur.Features[0].Name != "age" || cur.Features[8].Name != "output[1]" || cur.Features[0].Count != 2 {
		t.Fatalf("open window features: %+v", cur.Features)
	}
	f := func(method, path string, wantCode int, wantBody string) {
		t.Helper()
		code, _, body := call(t, method, url+path, nil)
		if code != wantCode || !strings.Contains(string(body), wantBody) {
			t.Fatalf("%s %s: %d %s, want %d with %q", method, path, code, body, wantCode, wantBody)
		}
	}
	f("GET", "/v2/models/demo/versions/1/drift", 200, `"model_version":"1"`)
	// The open window is judged once it holds min_rows rows.
	f("GET", "/v2/models/demo/versions/1/drift", 200, `"min_rows":100`)
	f("GET", "/v2/models/versioned/versions/2/drift", 404, "has no drift monitoring")
	f("GET", "/v2/models/versioned/drift", 200, `"versions":[]`)
	f("POST", "/v2/models/demo/drift", 405, "use GET")
	f("GET", "/v2/models/nope/drift", 404, "unknown model")
	metrics := get(t, url+"/metrics")
	for _, series := range []string{
		`infergate_drift_bin_rows_total{model="demo",version="1",feature="output[1]",bin="0"}`,
		`infergate_drift_windows_total{model="demo",version="1",result="judged"}`,
	} {
		if !strings.Contains(metrics, series) {
			t.Errorf("/metrics lacks %s", series)
		}
	}
	// No window was judged yet: no statistic, rather than a 0 that reads
	// as a p-value of a drifted feature.
	if strings.Contains(metrics, `infergate_drift_statistic{`) {
		t.Errorf("/metrics has drift statistics before any window was judged")
	}
}

// TestDriftStateSurvivesRestart drifts the demo's version 1, restarts the
// gateway on the same state_dir, and drifts it on: the drift.detected
// event is stored (and delivered) once, with the version's drift state,
// and the restarted gateway knows the version drifted instead of
// detecting it anew. It counts decisions once the gateway that would
// repeat one has shut down, and deliveries once the outbox is empty.
func TestDriftStateSurvivesRestart(t *testing.T) {
	receiver := newEventReceiver(t)
	cfg := testConfig(t)
	cfg.Models["demo"] = ModelConfig{Batching: batcher.Config{MaxBatchSize: 128, Instances: 2}}
	cfg.Webhooks = receiver.targets()
	rows := trainer.Synthetic(1, 8000).X[4000:]
	shift := demoShift(t, 0, 1, 2, 3)
	client := &fasthttp.Client{}

	// drifted starts a gateway on cfg's state_dir, sends it two shifted
	// windows and shuts it down once both are judged. A monitor decides
	// right after it judged a window and stops only after committing that
	// decision, so every decision is stored, and in decisions, by then.
	decisions := make(chan drift.Decision, 4)
	drifted := func(rows [][]float32, wantDrifted bool) {
		t.Helper()
		srv, url := startServerWith(t, Options{Config: cfg, DriftDecisions: decisions})
		if rep := waitDriftReport(t, url, 0); rep.Drifted != wantDrifted {
			t.Fatalf("at start the version is drifted %v, want %v", rep.Drifted, wantDrifted)
		}
		sendRows(t, client, url, rows, shift)
		waitDriftReport(t, url, 2)
		srv.Shutdown(context.Background())
	}
	drifted(rows[:2000], false)
	if len(decisions) != 1 {
		t.Fatalf("two shifted windows raised %d decisions, want drift.detected", len(decisions))
	}
	if d := <-decisions; d.Type != drift.DriftDetected || d.Window.Seq != 1 {
		t.Fatalf("got %s at window %d, want drift.detected at window 1", d.Type, d.Window.Seq)
	}
	drifted(rows[2000:4000], true)
	if len(decisions) != 0 {
		d := <-decisions
		t.Fatalf("the restarted gateway decided %s (%s) at window %d about a drift it had decided before", d.Type, d.Reason, d.Window.Seq)
	}

	// Each shutdown may have left deliveries in the outbox: a last start
	// makes them all.
	srv, _ := startServerWith(t, Options{Config: cfg})
	limit := raceScaled(10 * time.Second)
	deadline := time.Now().Add(limit)
	for {
		n, err := srv.cp.outbox.Pending()
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d deliveries still pending after %s", n, limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
	srv.Shutdown(context.Background())
	// Delivery is at least once: a shutdown while the receiver answered
	// makes the next start deliver the same event again, under its id.
	events := receiver.events()
	var got []string
	ids := map[string]bool{}
	for _, e := range events {
		got = append(got, fmt.Sprintf("%s about %s (event %s)", e.Type, e.Subject, e.ID))
		ids[e.ID] = true
	}
	if len(ids) != 1 || events[0].Type != outbox.TypeDriftDetected || events[0].Subject != "demo/1" {
		t.Fatalf("the webhook got %d events in %d deliveries, want one drift.detected about demo/1: %v", len(ids), len(got), got)
	}
}

// raceScaled returns d, or ten times d under the race detector, which
// slows these tests down as much.
func raceScaled(d time.Duration) time.Duration {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "-race" && s.Value == "true" {
				return 10 * d
			}
		}
	}
	return d
}
