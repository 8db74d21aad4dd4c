package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/infergate/infergate/bench"
	"github.com/infergate/infergate/retrain/engine/natscluster"
	"github.com/infergate/infergate/retrain/trainer"
)

// scoreFleetConfig is a replica of TestScoreOnTheFleet: the demo model,
// batched as configs/demo.yaml batches it, and batch jobs on.
const scoreFleetConfig = `listen: %s
repository: %s
cluster: {nats_url: %q, token_env: %s, stream_replicas: %d, replica: %s, batch_jobs: true}
models:
  demo:
    batching: {instances: 2, max_batch_size: %d}
    cache: {entries: 0}
`

// TestScoreOnTheFleet scores a file with `score --fleet` on three replicas
// of a NATS cluster on loopback while an online load at half the rate the
// two replicas it goes to answer runs; the third replica is killed with
// SIGKILL while it scores a chunk (it scores a row at a time, so slowly
// that it holds one most of the time). The output must hold every row once,
// with the outputs a local `score` writes; the online requests must all
// succeed, and none may wait in a batcher's queue behind the job's rows.
func TestScoreOnTheFleet(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "customers.parquet")
	const rows = 250_000
	if err := trainer.WriteSyntheticTable(in, rows, 17, false); err != nil {
		t.Fatal(err)
	}
	local := filepath.Join(dir, "local.parquet")
	if out, err := infergateCommand(scoreArgs(in, local)...).CombinedOutput(); err != nil {
		t.Fatalf("local score: %v\n%s", err, out)
	}

	nats := natscluster.Start(t, 3)
	engineCfg := nats.EngineConfig(t)
	repo, _ := filepath.Abs("../../configs/models")
	var replicas []*scoreReplica
	for i := range 3 {
		r := &scoreReplica{name: fmt.Sprintf("r%d", i+1), addr: freeAddr(t), logs: new(syncBuffer)}
		config := filepath.Join(dir, r.name+".yaml")
		// The replica to kill scores a row at a time, so that a chunk
		// takes it long enough for the kill to land while it holds one.
		maxBatch := 32
		if i == 2 {
			maxBatch = 1
		}
		os.WriteFile(config, fmt.Appendf(nil, scoreFleetConfig, r.addr, repo, engineCfg.NATSURL, natscluster.TokenEnv, engineCfg.StreamReplicas, r.name, maxBatch), 0o644)
		r.cmd = infergateCommand("serve", "--config", config)
		r.cmd.Stderr = r.logs
		if err := r.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			r.cmd.Process.Kill()
			r.cmd.Wait()
			if t.Failed() {
				t.Logf("log of %s:\n%s", r.name, lastLines(r.logs.String(), 30))
			}
		})
		replicas = append(replicas, r)
	}
	for _, r := range replicas {
		waitReady(t, "http://"+r.addr, r.logs)
	}
	online, victim := replicas[:2], replicas[2]

	// The online load: the rate the two replicas answer to 8 connections
	// each, closed loop, then half of it, open loop, before and during
	// the job.
	var maxRate float64
	for _, r := range onlineLoad(context.Background(), t, online, 0, 2*time.Second) {
		maxRate += r.OKPerSec
	}
	rate := maxRate / 2
	waits0 := onlineQueueWaits(t, online)
	before := onlineLoad(context.Background(), t, online, rate, 3*time.Second)
	t.Logf("online load: %.0f requests/s at most, %.0f sent; without the job: %s", maxRate, rate, describeLoad(before))
	waits1 := onlineQueueWaits(t, online)

	// The job, with the load running; the victim is killed while it
	// holds a chunk, after it scored one.
	out, report := filepath.Join(dir, "fleet.parquet"), filepath.Join(dir, "fleet.json")
	job := infergateCommand("score", "--config", filepath.Join(dir, "r1.yaml"), "--model", "demo", "--in", in, "--out", out,
		"--carry", "id", "--fleet", "--quiet", "--report", report)
	jobLogs := new(syncBuffer)
	job.Stdout, job.Stderr = jobLogs, jobLogs
	loadCtx, stopLoad := context.WithCancel(context.Background())
	t.Cleanup(stopLoad)
	loadDone := make(chan []*bench.Result, 1)
	go func() { loadDone <- onlineLoad(loadCtx, t, online, rate, 5*time.Minute) }()
	start := time.Now()
	if err := job.Start(); err != nil {
		t.Fatal(err)
	}
	jobDone := make(chan error, 1)
	go func() { jobDone <- job.Wait() }()
	t.Cleanup(func() { job.Process.Kill() })
	// The victim, slow, is killed while it holds a chunk.
	killedAt, scoredAtKill := time.Duration(-1), 0.0
	for killedAt < 0 {
		select {
		case err := <-jobDone:
			t.Fatalf("the job ended before %s held a chunk to kill it in: %v\n%s", victim.name, err, jobLogs.String())
		case <-time.After(5 * time.Millisecond):
		}
		m, err := scrape(victim)
		if err != nil {
			t.Fatalf("%v\njob so far:\n%s", err, jobLogs.String())
		}
		if time.Since(start) > time.Minute {
			var all []string
			for _, r := range replicas {
				m, _ := scrape(r)
				all = append(all, fmt.Sprintf("%s: scored %v, returned %v, in progress %v", r.name,
					m[`infergate_batch_chunks_total{outcome="scored"}`], m[`infergate_batch_chunks_total{outcome="returned"}`], m["infergate_batch_chunks_in_progress"]))
			}
			t.Fatalf("%s held no chunk after it scored one within 1m: %s\njob so far:\n%s", victim.name, strings.Join(all, "; "), jobLogs.String())
		}
		if scored := m[`infergate_batch_chunks_total{outcome="scored"}`]; m["infergate_batch_chunks_in_progress"] >= 1 {
			victim.cmd.Process.Kill()
			killedAt, scoredAtKill = time.Since(start), scored
		}
	}
	var err error
	select {
	case err = <-jobDone:
	case <-time.After(3 * time.Minute):
		job.Process.Kill()
		err = fmt.Errorf("not done after 3m")
	}
	took := time.Since(start)
	stopLoad()
	during := <-loadDone
	if err != nil {
		t.Fatalf("fleet score: %v\n%s", err, jobLogs.String())
	}
	t.Logf("job: %s, %s killed %s in; online during it: %s\n%s", took.Round(time.Millisecond), victim.name, killedAt.Round(time.Millisecond), describeLoad(during), jobLogs.String())

	// Every row once, as the local run scored it.
	_, want := readTable(t, local)
	sameScores(t, out, want)
	var rep struct {
		Fleet struct {
			Chunks      int            `json:"chunks"`
			ScoredBy    map[string]int `json:"scored_by"`
			Redelivered int            `json:"redelivered"`
		} `json:"fleet"`
	}
	if data, err := os.ReadFile(report); err != nil || json.Unmarshal(data, &rep) != nil {
		t.Fatalf("report %s: %v", report, err)
	}
	t.Logf("chunks scored by %v, %d of them delivered again", rep.Fleet.ScoredBy, rep.Fleet.Redelivered)
	// A coordinator whose repository is empty: it fetches the version
	// from the fleet's model store.
	coordinator := filepath.Join(dir, "coordinator.yaml")
	os.WriteFile(coordinator, fmt.Appendf(nil, scoreFleetConfig, freeAddr(t), t.TempDir(), engineCfg.NATSURL, natscluster.TokenEnv, engineCfg.StreamReplicas, "coordinator", 32), 0o644)
	defer testFleetJobResumes(t, coordinator, dir, in, want)
	if least := (rows + 16383) / 16384; rep.Fleet.Chunks < least {
		t.Errorf("the job read back %d chunks, want at least %d", rep.Fleet.Chunks, least)
	}
	// The chunk the victim held at the last scrape before the kill may
	// have been stored in between; if not, another replica scored it.
	switch heldOne := float64(rep.Fleet.ScoredBy[victim.name]) == scoredAtKill; {
	case heldOne && rep.Fleet.Redelivered < 1:
		t.Errorf("no chunk was delivered again: the one %s held when it was killed (it had scored %.0f, as the job says) was scored by none", victim.name, scoredAtKill)
	case !heldOne:
		t.Logf("%s stored the chunk it held between the last scrape and the kill", victim.name)
	}
	for _, r := range online {
		if rep.Fleet.ScoredBy[r.name] == 0 {
			t.Errorf("replica %s scored no chunk: %v", r.name, rep.Fleet.ScoredBy)
		}
	}

	// The online requests: all answered, and none queued behind the job's
	// rows: the online level's queue waits stay what they were without it.
	for _, r := range append(before, during...) {
		if n := r.ErrorCount(); n > 0 || r.OK == 0 {
			t.Errorf("online requests to %s: %d answered 2xx, %d failed (%v, first: %s)", r.Name, r.OK, n, r.Errors, r.FirstError)
		}
	}
	waits2 := onlineQueueWaits(t, online)
	onlineBefore, _ := waits1.minus(waits0)
	onlineWaits, batchWaits := waits2.minus(waits1)
	t.Logf("queue waits without the job: online %s; during it: online %s, batch rows %s", onlineBefore, onlineWaits, batchWaits)
	if batchWaits.count == 0 {
		t.Errorf("no batch rows went through the online replicas' batchers")
	}
	// On 2 cores the job's CPU delays some online requests' wake-ups by
	// milliseconds; rows queued ahead of them would hold them for tens.
	if during, without := onlineWaits.over(0.025), onlineBefore.over(0.025); during > max(0.02, 2*without) {
		t.Errorf("%.2f%% of the online requests during the job waited 25ms or more in the queue, %.2f%% without it: %s", 100*during, 100*without, onlineWaits)
	}
}

// scoreReplica is one `infergate serve` of TestScoreOnTheFleet.
type scoreReplica struct {
	name, addr string
	cmd        *exec.Cmd
	logs       *syncBuffer
}

// scrape returns r's metrics, by series.
func scrape(r *scoreReplica) (map[string]float64, error) {
	resp, err := http.Get("http://" + r.addr + "/metrics")
	if err != nil {
		return nil, fmt.Errorf("cannot scrape %s: %w", r.name, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	m := map[string]float64{}
	for line := range strings.Lines(string(body)) {
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(line[i+1:]), 64)
		if err == nil {
			m[line[:i]] = v
		}
	}
	return m, nil
}

// onlineRequest is a demo row as the online API takes it.
var onlineRequest = []byte(`{"inputs":[{"name":"input","shape":[1,8],"datatype":"FP32","data":[41,52000,0.3,24,2,1,680,9000]}]}`)

// onlineLoad sends the demo's online request to each of rs at once with
// bench's load generator, for d or until ctx ends: open loop at rate
// requests per second in all, or closed loop on 8 connections each when
// rate is 0. It returns each replica's result, named after it.
func onlineLoad(ctx context.Context, t *testing.T, rs []*scoreReplica, rate float64, d time.Duration) []*bench.Result {
	results := make([]*bench.Result, len(rs))
	var wg sync.WaitGroup
	for i, r := range rs {
		o := bench.Options{Name: r.name, Request: bench.Request{Addr: r.addr, Path: "/v2/models/demo/infer", Body: onlineRequest},
			Duration: d, Timeout: 5 * time.Second, Connections: 8}
		if rate > 0 {
			o.Rate, o.Connections = rate/float64(len(rs)), 64
		}
		wg.Go(func() {
			res, err := bench.Run(ctx, o)
			if err != nil {
				t.Error(err)
				res = &bench.Result{Name: r.name}
			}
			results[i] = res
		})
	}
	wg.Wait()
	return results
}

// describeLoad says what each replica's load saw.
func describeLoad(rs []*bench.Result) string {
	var parts []string
	for _, r := range rs {
		ms := func(m bench.Millis) time.Duration { return time.Duration(m).Round(10 * time.Microsecond) }
		parts = append(parts, fmt.Sprintf("%s %d ok, %d failed, p50 %s, p99 %s, max %s",
			r.Name, r.OK, r.ErrorCount(), ms(r.Latency.P50), ms(r.Latency.P99), ms(r.Latency.Max)))
	}
	return strings.Join(parts, "; ")
}

// queueWaits is the queue-wait histogram of the demo model's batchers,
// summed over replicas: per priority level, the count under each bound.
type queueWaits map[string]map[float64]float64

// onlineQueueWaits scrapes the queue-wait buckets of rs.
func onlineQueueWaits(t *testing.T, rs []*scoreReplica) queueWaits {
	w := queueWaits{}
	for _, r := range rs {
		m, err := scrape(r)
		if err != nil {
			t.Fatal(err)
		}
		for series, v := range m {
			rest, ok := strings.CutPrefix(series, `infergate_batcher_queue_wait_seconds_bucket{`)
			if !ok {
				continue
			}
			labels := map[string]string{}
			for kv := range strings.SplitSeq(strings.TrimSuffix(rest, "}"), ",") {
				k, v, _ := strings.Cut(kv, "=")
				labels[k] = strings.Trim(v, `"`)
			}
			le, err := strconv.ParseFloat(labels["le"], 64)
			if labels["le"] == "+Inf" {
				le, err = math.Inf(1), nil
			}
			if err != nil || labels["model"] != "demo" {
				continue
			}
			if w[labels["priority"]] == nil {
				w[labels["priority"]] = map[float64]float64{}
			}
			w[labels["priority"]][le] += v
		}
	}
	return w
}

// waitCounts is a queue-wait histogram of one level over an interval.
type waitCounts struct {
	count float64
	under map[float64]float64
}

// minus returns the online level's (1) and the batch level's (0) waits
// between before and w.
func (w queueWaits) minus(before queueWaits) (online, batch waitCounts) {
	diff := func(level string) waitCounts {
		c := waitCounts{under: map[float64]float64{}}
		for le, n := range w[level] {
			c.under[le] = n - before[level][le]
		}
		c.count = c.under[math.Inf(1)]
		return c
	}
	return diff("1"), diff("0")
}

// over returns the share of c's requests that waited more than d seconds.
func (c waitCounts) over(d float64) float64 {
	if c.count == 0 {
		return 0
	}
	under := 0.0
	for le, n := range c.under {
		if le <= d && n > under {
			under = n
		}
	}
	return 1 - under/c.count
}

func (c waitCounts) String() string {
	if c.count == 0 {
		return "none"
	}
	return fmt.Sprintf("%.0f requests, %.2f%% over 1ms, %.2f%% over 10ms", c.count, 100*c.over(0.001), 100*c.over(0.01))
}

// sameScores checks that the scores at path hold the rows of want, a
// local run's, in order, within 1e-6 relative.
func sameScores(t *testing.T, path string, want [][]string) {
	t.Helper()
	names, got := readTable(t, path)
	if len(got) != len(want) {
		t.Fatalf("%s holds %d rows, the local run's %d", filepath.Base(path), len(got), len(want))
	}
	if !slices.Equal(names, []string{"id", "output_0", "output_1", "version"}) {
		t.Fatalf("%s columns %v", filepath.Base(path), names)
	}
	for i := range got {
		if got[i][0] != want[i][0] || got[i][3] != want[i][3] {
			t.Fatalf("%s row %d: %v, the local run's %v", filepath.Base(path), i, got[i], want[i])
		}
		for j := 1; j <= 2; j++ {
			g, _ := strconv.ParseFloat(got[i][j], 64)
			w, _ := strconv.ParseFloat(want[i][j], 64)
			if math.Abs(g-w) > 1e-6*math.Abs(w)+1e-12 {
				t.Fatalf("%s row %d (%s) output %d: %v, the local run's %v", filepath.Base(path), i, got[i][0], j-1, g, w)
			}
		}
	}
}

// testFleetJobResumes kills `score --fleet` with SIGKILL while its chunks
// are out, starts it again at once with the same arguments, and compares
// the output with the local run's: the rerun keeps the job's id, removes
// what the killed run left and scores the rest under names of its own.
// Its config's repository is empty: it fetches the version from the
// fleet's model store.
func testFleetJobResumes(t *testing.T, config, dir, in string, want [][]string) {
	out := filepath.Join(dir, "resumed.parquet")
	args := []string{"score", "--config", config, "--model", "demo", "--in", in, "--out", out, "--carry", "id", "--fleet", "--quiet"}
	first := infergateCommand(args...)
	logs := new(syncBuffer)
	first.Stdout, first.Stderr = logs, logs
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(logs.String(), "fleet job ") {
		if time.Now().After(deadline) {
			first.Process.Kill()
			t.Fatalf("the job to kill published no chunk in 1m:\n%s", logs)
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	first.Process.Kill()
	first.Wait()
	firstLog := logs.String()
	again := infergateCommand(args...)
	b, err := again.CombinedOutput()
	if err != nil {
		t.Fatalf("the job started again: %v\n%s\nthe killed one:\n%s", err, b, firstLog)
	}
	id := func(log string) string {
		_, rest, _ := strings.Cut(log, "fleet job ")
		id, _, _ := strings.Cut(rest, ":")
		return id
	}
	if a, b := id(firstLog), id(string(b)); a == "" || a != b {
		t.Errorf("the killed job was fleet job %q, the one started again %q: want the same", a, b)
	}
	t.Logf("killed 200ms after its first chunk, then started again:\n%s", b)
	if !strings.Contains(string(b), "fetched from the fleet's model store") {
		t.Errorf("the coordinator, with an empty repository, did not say it fetched the version from the model store")
	}
	sameScores(t, out, want)
}
