package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/infergate/infergate/batcher"
	"github.com/infergate/infergate/runtime"
)

// TestBatchedRequestsGetTheirOwnRows sends many concurrent requests of 1 to
// 8 rows, each row marked with its request, through the echo model with
// batching on: every answer holds exactly its own rows, and batches formed.
// The echo model computes so fast that with max_queue_delay 0 most requests
// would find an instance idle and run alone, so requests wait up to 1ms.
func TestBatchedRequestsGetTheirOwnRows(t *testing.T) {
	cfg := testConfig(t)
	cfg.Models["echo_fp32"] = ModelConfig{Batching: batcher.Config{MaxBatchSize: 32, Instances: 2, MaxQueueSize: 4096,
		MaxQueueDelay: batcher.Delay{Duration: time.Millisecond}}}
	_, url := startServer(t, cfg)
	client := &fasthttp.Client{MaxConnsPerHost: 64}
	const requests = 2000
	var wg sync.WaitGroup
	for g := range 32 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			for i := g; i < requests; i += 32 {
				rows := 1 + rng.IntN(8)
				data := make([]float32, rows*4)
				for j := range data {
					data[j] = float32(i*100 + j)
				}
				body := fmt.Sprintf(`{"inputs":[{"name":"input","shape":[%d,4],"datatype":"FP32","data":%s}]}`, rows, mustJSON(data))
				code, resp := post(client, url+"/v2/models/echo_fp32/infer", body)
				var out struct{ Outputs []struct{ Data []float32 } }
				if code != 200 || json.Unmarshal(resp, &out) != nil || fmt.Sprint(out.Outputs[0].Data) != fmt.Sprint(data) {
					t.Errorf("request %d: status %d, sent %v, got %s", i, code, data, resp)
					return
				}
			}
		})
	}
	wg.Wait()
	metricsText := get(t, url+"/metrics")
	executions := metricValue(t, metricsText, `infergate_batcher_executions_total{model="echo_fp32",version="1"}`)
	if executions >= requests {
		t.Fatalf("%v executions for %d concurrent requests: no batch formed", executions, requests)
	}
	t.Logf("%d requests in %v batches", requests, executions)
}

// TestDisconnectedClientIsNotComputed: a client that sends a request and
// closes its connection while the request waits for a fuller batch leaves
// the batch once it has waited batcher.GoneCheckAfter: only the request of
// the client still there is computed. The queue delay is long (2 s, not a
// few GoneCheckAfter) so that on a loaded machine the test sees the request
// queued and closes its connection before the batch is taken: with 100 ms,
// the batch often ran first and both requests were computed.
func TestDisconnectedClientIsNotComputed(t *testing.T) {
	cfg := testConfig(t)
	cfg.Models["echo_fp32"] = ModelConfig{Batching: batcher.Config{MaxBatchSize: 8,
		MaxQueueDelay: batcher.Delay{Duration: 2 * time.Second}}}
	_, url := startServer(t, cfg)
	body := `{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}`
	conn, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "POST /v2/models/echo_fp32/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		queued := metricValue(t, get(t, url+"/metrics"), `infergate_batcher_queue_length{model="echo_fp32",version="1"}`)
		if queued == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the request never reached the queue")
		}
	}
	conn.Close()
	if code, resp := post(&fasthttp.Client{}, url+"/v2/models/echo_fp32/infer", body); code != 200 {
		t.Fatalf("the client still there got %d: %s", code, resp)
	}
	metricsText := get(t, url+"/metrics")
	series := func(name string) float64 {
		return metricValue(t, metricsText, name+`{model="echo_fp32",version="1"}`)
	}
	if rows, canceled := series("infergate_batcher_rows_total"), metricValue(t, metricsText,
		`infergate_batcher_rejected_total{model="echo_fp32",version="1",reason="canceled"}`); rows != 1 || canceled != 1 {
		t.Fatalf("%v rows computed and %v requests canceled; want 1 and 1", rows, canceled)
	}
}

func TestBatchingErrors(t *testing.T) {
	cfg := testConfig(t)
	cfg.Models["echo_fp32"] = ModelConfig{Batching: batcher.Config{MaxBatchSize: 4, PriorityLevels: 2}}
	_, url := startServer(t, cfg)
	f := func(body string, wantCode int, wantMsg string) {
		t.Helper()
		code, _, resp := call(t, "POST", url+"/v2/models/echo_fp32/infer", []byte(body))
		if code != wantCode || !strings.Contains(string(resp), wantMsg) {
			t.Fatalf("got %d %s, want %d with %q", code, resp, wantCode, wantMsg)
		}
	}
	row := "[1,2,3,4]"
	f(`{"inputs":[{"name":"input","shape":[5,4],"datatype":"FP32","data":[`+strings.Repeat(row+",", 4)+row+`]}]}`, 400, "batcher")
	f(`{"parameters":{"priority":2},"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":`+row+`}]}`, 400, "priority")
	f(`{"parameters":{"priority":1},"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":`+row+`}]}`, 200, `"data":[1,2,3,4]`)

	for _, c := range []struct {
		err  error
		code int
	}{{batcher.ErrQueueFull, 503}, {batcher.ErrStopped, 503}, {batcher.ErrDeadline, 504}, {batcher.ErrTooLarge, 400}, {batcher.ErrBadPriority, 400}, {fmt.Errorf("cannot run batch: %w", bytes.ErrTooLarge), 500}} {
		if got := batchStatus(fmt.Errorf("wrapped: %w", c.err)); got != c.code {
			t.Errorf("%v answers %d, want %d", c.err, got, c.code)
		}
	}
}

// TestOnlinePriorities serves a model with priority_levels: 2: online
// priorities 0 and 1 run on batcher levels 1 and 2, above the level of
// batch-scoring chunks, and priority 2 is refused with the users' range.
func TestOnlinePriorities(t *testing.T) {
	cfg := testConfig(t)
	cfg.Models["echo_fp32"] = ModelConfig{Batching: batcher.Config{MaxBatchSize: 4, PriorityLevels: 2}}
	_, url := startServer(t, cfg)
	f := func(priority string, wantCode int, wantMsg string) {
		t.Helper()
		body := `{"parameters":{"priority":` + priority + `},"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}`
		code, _, resp := call(t, "POST", url+"/v2/models/echo_fp32/infer", []byte(body))
		if code != wantCode || !strings.Contains(string(resp), wantMsg) {
			t.Fatalf("priority %s: got %d %s, want %d with %q", priority, code, resp, wantCode, wantMsg)
		}
	}
	f("0", 200, `"data":[1,2,3,4]`)
	f("1", 200, `"data":[1,2,3,4]`)
	f("1", 200, `"data":[1,2,3,4]`)
	f("2", 400, "priority out of range: 2, want 0..1")
	f("-1", 400, "parameters.priority")

	m := get(t, url+"/metrics")
	for level, want := range []float64{0, 1, 2} {
		series := fmt.Sprintf(`infergate_batcher_queue_wait_seconds_count{model="echo_fp32",version="1",priority="%d"}`, level)
		if got := metricValue(t, m, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
}

// TestOnlineLevel maps online priorities to batcher levels: never onto
// batchJobPriority, and out of range with the users' own range.
func TestOnlineLevel(t *testing.T) {
	f := func(p, levels, want int, wantErr string) {
		t.Helper()
		got, err := onlineLevel(p, levels)
		switch {
		case wantErr != "" && (err == nil || !errors.Is(err, batcher.ErrBadPriority) || err.Error() != wantErr):
			t.Fatalf("onlineLevel(%d, %d) = %d, %v; want the error %q", p, levels, got, err, wantErr)
		case wantErr == "" && (err != nil || got != want):
			t.Fatalf("onlineLevel(%d, %d) = %d, %v; want %d", p, levels, got, err, want)
		}
	}
	f(0, 1, 1, "")
	f(0, 3, 1, "")
	f(2, 3, 3, "")
	f(1, 1, 0, "batcher: priority out of range: 1, want 0..0")
	f(3, 3, 0, "batcher: priority out of range: 3, want 0..2")
	f(-1, 3, 0, "batcher: priority out of range: -1, want 0..2")
}

// TestUnbatchableModelRunsDirectly fixes the echo model's batch dimension
// in the config: the version cannot be batched and runs requests directly.
func TestUnbatchableModelRunsDirectly(t *testing.T) {
	cfg := testConfig(t)
	cfg.Models["echo_fp32"] = ModelConfig{
		ModelConfig: runtime.ModelConfig{Inputs: []runtime.InputConfig{{Name: "input", Shape: []int64{2, 4}}}},
		Batching:    batcher.Config{MaxBatchSize: 8},
	}
	srv, url := startServer(t, cfg)
	if v := srv.serving.Load().models["echo_fp32"].latest(); v.batcher != nil {
		t.Fatal("a version with a fixed batch dimension got a batcher")
	}
	code, _, body := call(t, "POST", url+"/v2/models/echo_fp32/infer", []byte(`{"inputs":[{"name":"input","shape":[2,4],"datatype":"FP32","data":[1,2,3,4,5,6,7,8]}]}`))
	if code != 200 || !strings.Contains(string(body), `"shape":[2,4],"data":[1,2,3,4,5,6,7,8]`) {
		t.Fatalf("%d %s", code, body)
	}
	if !strings.Contains(get(t, url+"/metrics"), `infergate_inference_duration_seconds_count{model="echo_fp32",version="1"} 1`) {
		t.Fatal("the direct path does not count its compute")
	}
}

func TestResponseCache(t *testing.T) {
	cfg := testConfig(t)
	cfg.Models["demo"] = ModelConfig{Batching: batcher.Config{MaxBatchSize: 8}, Cache: CacheConfig{Entries: 16}}
	_, url := startServer(t, cfg)
	_, _, first := call(t, "POST", url+"/v2/models/demo/infer", []byte(demoRequest))
	_, _, second := call(t, "POST", url+"/v2/models/demo/infer", []byte(demoRequest))
	if !bytes.Equal(first, second) {
		t.Fatalf("a cache hit answered\n%s\nthe miss answered\n%s", second, first)
	}
	_, _, third := call(t, "POST", url+"/v2/models/demo/infer", []byte(strings.Replace(demoRequest, `"req-1"`, `"req-2"`, 1)))
	if !bytes.Equal(third, bytes.Replace(first, []byte(`"req-1"`), []byte(`"req-2"`), 1)) {
		t.Fatalf("a hit must echo its own id: %s", third)
	}
	other := strings.Replace(demoRequest, "0.95", "0.96", 1)
	_, _, fourth := call(t, "POST", url+"/v2/models/demo/infer", []byte(other))
	if bytes.Equal(fourth, first) {
		t.Fatal("different inputs were answered from the cache")
	}
	m := get(t, url+"/metrics")
	labels := `{model="demo",version="1"}`
	if hits, misses := metricValue(t, m, "infergate_cache_hits_total"+labels), metricValue(t, m, "infergate_cache_misses_total"+labels); hits != 2 || misses != 2 {
		t.Fatalf("hits %v misses %v, want 2 and 2", hits, misses)
	}
	if executions := metricValue(t, m, "infergate_batcher_executions_total"+labels); executions != 2 {
		t.Fatalf("%v batches ran; hits must skip the batcher", executions)
	}
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func post(client *fasthttp.Client, url, body string) (int, []byte) {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(url)
	req.Header.SetMethod("POST")
	req.SetBodyString(body)
	if err := client.Do(req, resp); err != nil {
		return 0, []byte(err.Error())
	}
	return resp.StatusCode(), bytes.Clone(resp.Body())
}

func get(t *testing.T, url string) string {
	t.Helper()
	code, _, body := call(t, "GET", url, nil)
	if code != 200 {
		t.Fatalf("GET %s: %d", url, code)
	}
	return string(body)
}

// metricValue returns the value of the series named exactly series.
func metricValue(t *testing.T, text, series string) float64 {
	t.Helper()
	for line := range strings.Lines(text) {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			var v float64
			fmt.Sscan(rest, &v)
			return v
		}
	}
	t.Fatalf("no series %s in:\n%s", series, text)
	return 0
}

// TestPooledCallsHoldNoBatchViews serves a batched request and checks the
// call buffers it pooled: they must not keep views of the batcher's output
// buffers, or an unbatched model reusing them would have ONNX Runtime write
// its outputs into memory a batch owns.
func TestPooledCallsHoldNoBatchViews(t *testing.T) {
	cfg := testConfig(t)
	cfg.Models["echo_fp32"] = ModelConfig{Batching: batcher.Config{MaxBatchSize: 16}}
	srv, _ := startServer(t, cfg)
	var ctx fasthttp.RequestCtx
	ctx.Request.Header.SetMethod("POST")
	ctx.Request.SetRequestURI("/v2/models/echo_fp32/infer")
	ctx.Request.SetBodyString(`{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}`)
	srv.handle(&ctx)
	if ctx.Response.StatusCode() != 200 {
		t.Fatalf("status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
	}
	call := inferCalls.Get().(*inferCall) // the same P's pool hands back the call just put
	defer inferCalls.Put(call)
	for j, r := range call.results {
		if r.Data != nil {
			t.Fatalf("pooled call keeps result %d as a view of %d batch bytes", j, len(r.Data))
		}
	}
}
