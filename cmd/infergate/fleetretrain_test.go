package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
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

	"github.com/infergate/infergate/drift"
	"github.com/infergate/infergate/retrain/capture"
	"github.com/infergate/infergate/retrain/engine"
	"github.com/infergate/infergate/retrain/engine/natscluster"
	"github.com/infergate/infergate/retrain/modelstore"
	"github.com/infergate/infergate/retrain/pipeline"
)

// fleetRetrainGateway is a replica's config in TestFleetRetrain: the demo
// model captured, labeled by the traffic's key, judged for drift in
// windows aligned over the fleet, and drift events sent to the retrain
// service. The cooldown is short because the error-rate detector may
// raise a false alarm on the first labels, before the shift: its run
// trains on unshifted rows and validation rejects the candidate, and the
// default cooldown (10m) would then hold back the real detection.
const fleetRetrainGateway = `listen: %s
repository: models
admin: {token_env: ` + demoTokenEnv + `}
auth: {keys: {labeler: {env: ` + demoFeedbackEnv + `}}}
cluster: {nats_url: %q, token_env: %s, stream_replicas: 3, replica: %s, lease_ttl: 2s, report_interval: 250ms, connect_timeout: 2m}
webhooks:
  - {name: retrain, url: "http://%s/webhook", events: [drift.detected], secret_env: ` + demoSecretEnv + `, backoff_base: 100ms, backoff_max: 1s, max_attempts: 100000}
models:
  demo:
    version_policy: {latest: 2}
    capture: {sample: 1}
    cache: {entries: 0}
    auth: {feedback: [labeler]}
    drift: {window: {every: 2s}, cooldown: 5s}
`

// fleetRetrainService is the retrain service's config: on the fleet's
// engine, canarying through replica r1's admin API.
const fleetRetrainService = `listen: %s
cluster: {nats_url: %q, token_env: %s, stream_replicas: 3, connect_timeout: 2m}
secret_env: ` + demoSecretEnv + `
gateway: {url: "http://%s", token_env: ` + demoTokenEnv + `, ready_timeout: 3m}
models:
  demo:
    training_data: builtin:demo
    train: {builtin: {hidden: [16], epochs: 30}}
    training_share: 0.1
    seed: 1
    min_rows: 1500
    label_wait: 3m
    lookback: 10s
    validate: {min_improvement: 0.01, max_regression: 0.3, max_latency_p99: 100ms}
    canary: {interval: 2s, step_weights: [20, 50], max_accuracy_drop: 0.05, max_latency_ratio: 20}
`

// The stages of the loop at which TestFleetRetrain kills a process, in
// the order the loop reaches them.
var fleetRetrainStages = []string{"shifted", "data", "train", "publish", "canary"}

// The processes a kill point may hit: the replica that leads at the time,
// another replica, or the retrain service.
var fleetRetrainTargets = []string{"leader", "follower", "retrain"}

// fleetKill is one kill point: SIGKILL to target once the loop reaches
// stage; the process is started again at once, as a supervisor would.
type fleetKill struct{ stage, target string }

// fleetKillPlans returns the passes of the loop to run: by default one
// pass with kills at three stages whose targets a seed picks (the seed is
// logged; INFERGATE_TEST_KILL_SEED replays it), with
// INFERGATE_TEST_KILLS=all one pass per target, so that every process is
// killed at every stage.
func fleetKillPlans(t *testing.T) [][]fleetKill {
	if os.Getenv("INFERGATE_TEST_KILLS") == "all" {
		var plans [][]fleetKill
		for _, target := range fleetRetrainTargets {
			var plan []fleetKill
			for _, stage := range fleetRetrainStages {
				plan = append(plan, fleetKill{stage, target})
			}
			plans = append(plans, plan)
		}
		return plans
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("INFERGATE_TEST_KILL_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("INFERGATE_TEST_KILL_SEED: %v", err)
		}
	}
	t.Logf("kill points chosen by seed %d (INFERGATE_TEST_KILL_SEED=%d replays them; INFERGATE_TEST_KILLS=all runs every one)", seed, seed)
	// Three of the five stages, each with a target; the retrain service
	// at most once, since each of its kills waits out its lease.
	rng := rand.New(rand.NewPCG(seed, seed))
	stages := rng.Perm(len(fleetRetrainStages))[:3]
	slices.Sort(stages)
	var plan []fleetKill
	retrained := false
	for _, i := range stages {
		target := fleetRetrainTargets[rng.IntN(len(fleetRetrainTargets))]
		for target == "retrain" && retrained {
			target = fleetRetrainTargets[rng.IntN(len(fleetRetrainTargets))]
		}
		retrained = retrained || target == "retrain"
		plan = append(plan, fleetKill{fleetRetrainStages[i], target})
	}
	return [][]fleetKill{plan}
}

// TestFleetRetrain closes the loop on a fleet: three replicas on a
// three-server NATS cluster and one `infergate retrain`, traffic and labels
// spread over the replicas, a concept shift. The pipeline must train on
// rows of all three replicas, publish into the engine's object store, and
// every replica load the new version and serve its canary, while a
// process is killed with SIGKILL at each stage of the loop (and started
// again). No label answered 200 may be lost.
func TestFleetRetrain(t *testing.T) {
	for i, plan := range fleetKillPlans(t) {
		t.Run(fmt.Sprintf("pass_%d", i+1), func(t *testing.T) { testFleetRetrainPass(t, plan) })
	}
}

func testFleetRetrainPass(t *testing.T, plan []fleetKill) {
	began := time.Now()
	for _, env := range []string{demoTokenEnv, demoSecretEnv, demoFeedbackEnv} {
		t.Setenv(env, randomHex())
	}
	nats := natscluster.Start(t, 3)
	engineCfg := nats.EngineConfig(t)
	conn, err := engine.Connect(engineCfg, "", "fleet retrain test", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	model, _ := os.ReadFile("../../configs/models/demo/1/model.onnx")
	reference, _ := os.ReadFile("../../configs/models/demo/1/" + drift.ReferenceFile)
	retrainAddr := freeAddr(t)
	var replicas []*loopProcess
	for i := range 3 {
		name, addr, root := fmt.Sprintf("r%d", i+1), freeAddr(t), t.TempDir()
		dir := filepath.Join(root, "models", "demo", "1")
		os.MkdirAll(dir, 0o755)
		os.WriteFile(filepath.Join(dir, "model.onnx"), model, 0o644)
		os.WriteFile(filepath.Join(dir, drift.ReferenceFile), reference, 0o644)
		cfg := filepath.Join(root, "infergate.yaml")
		os.WriteFile(cfg, fmt.Appendf(nil, fleetRetrainGateway, addr, engineCfg.NATSURL, natscluster.TokenEnv, name, retrainAddr), 0o644)
		replicas = append(replicas, &loopProcess{name: name, addr: addr, args: []string{"serve", "--config", cfg}})
	}
	root := t.TempDir()
	rtCfg := filepath.Join(root, "retrain.yaml")
	os.WriteFile(rtCfg, fmt.Appendf(nil, fleetRetrainService, retrainAddr, engineCfg.NATSURL, natscluster.TokenEnv, replicas[0].addr), 0o644)
	retrain := &loopProcess{name: "retrain", args: []string{"retrain", "--config", rtCfg}}
	all := append(slices.Clone(replicas), retrain)
	// All at once on a cluster just formed, as a deployment starts them:
	// they create the same streams and buckets together (see
	// engine.Stream for what that once cost).
	for _, p := range all {
		p.start(t)
	}
	defer func() {
		if t.Failed() { // whole logs with -artifacts; their tails in any case
			dir := t.ArtifactDir()
			for _, p := range all {
				os.WriteFile(filepath.Join(dir, p.name+".log"), []byte(p.logs.String()), 0o644)
				t.Logf("log tail of %s (the whole log: %s):\n%s", p.name, filepath.Join(dir, p.name+".log"), lastLines(p.logs.String(), 40))
			}
		}
	}()
	for _, r := range replicas {
		r.waitUp(t)
	}

	var mu sync.Mutex
	var acked []string
	var addrs []string
	for _, r := range replicas {
		addrs = append(addrs, r.addr)
	}
	traffic := startTraffic(addrs, demoOptions{rate: 300, labelDelay: 300 * time.Millisecond, labeled: func(ids []string) {
		mu.Lock()
		acked = append(acked, ids...)
		mu.Unlock()
	}})
	defer traffic.stop()
	loop := &fleetLoop{t: t, conn: conn, replicas: replicas, retrain: retrain}

	time.Sleep(8 * time.Second) // windows of the world the model knows
	traffic.setPhase(phaseShifted)
	shiftedAt := time.Now()
	for _, k := range plan {
		at := loop.waitStage(k.stage, 4*time.Minute)
		victim := loop.target(k.target)
		t.Logf("%6.1fs  stage %s reached after %s: SIGKILL to %s (%s)", time.Since(began).Seconds(), k.stage, at.Sub(shiftedAt).Round(100*time.Millisecond), victim.name, k.target)
		victim.kill()
		victim.start(t)
		if victim.addr != "" { // a replica: back in service before the next stage
			victim.waitUp(t)
		}
	}

	// Every replica loads the candidate and serves its canary (or, the
	// canary over already, the promoted version).
	var run pipeline.Run
	fleetPoll(t, 4*time.Minute, "every replica to load the published version and route its canary", func() bool {
		var ok bool
		if run, ok = loop.published(); !ok {
			return false
		}
		for _, r := range replicas {
			if !r.serves(run.Candidate) {
				return false
			}
		}
		return true
	})
	t.Logf("%6.1fs  version %s published by run %s and routed on every replica, %s after the shift", time.Since(began).Seconds(), run.Candidate, run.ID, time.Since(shiftedAt).Round(100*time.Millisecond))
	// The version's metrics.json, published with it, says whose rows it
	// was trained on (the run that trained it may have been killed after
	// it published, its canary started by the next).
	trained := loop.metrics(run.Candidate)
	if len(trained.RecentRowsByReplica) != 3 {
		t.Fatalf("version %s was trained on rows of replicas %v, want r1, r2 and r3", run.Candidate, trained.RecentRowsByReplica)
	}
	t.Logf("version %s was trained on %d labeled rows: %v", run.Candidate, trained.RecentRows, trained.RecentRowsByReplica)

	traffic.stop()
	labels, err := capture.ReadLabels(context.Background(), conn, "demo", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	var lost []string
	for _, id := range acked {
		if _, ok := labels[id]; !ok {
			lost = append(lost, id)
		}
	}
	if len(lost) > 0 {
		t.Fatalf("%d of %d labels answered 200 are not in the label stream: %v", len(lost), len(acked), lost[:min(len(lost), 20)])
	}
	t.Logf("%d labels answered 200, every one in the stream; the pass took %s", len(acked), time.Since(began).Round(time.Second))
}

// loopProcess is a process of TestFleetRetrain: a gateway replica or the
// retrain service.
type loopProcess struct {
	name, addr string
	args       []string
	logs       *syncBuffer

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

func (p *loopProcess) start(t *testing.T) {
	t.Helper()
	cmd := exec.Command(os.Args[0], p.args...)
	cmd.Env = append(os.Environ(), "INFERGATE_TEST_MAIN=1")
	if p.logs == nil {
		p.logs = new(syncBuffer)
	}
	fmt.Fprintf(p.logs, "--- started at %s\n", time.Now().Format(time.StampMilli))
	cmd.Stderr = p.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	p.mu.Lock()
	p.cmd, p.done = cmd, done
	p.mu.Unlock()
	t.Cleanup(p.kill)
}

// waitUp waits until replica p is ready, starting it again, as a
// supervisor would, when it exits first (at most three times): a replica
// started on a cluster just formed may give up on it, as one did on "no
// suitable peers for placement" while the cluster elected its peers.
func (p *loopProcess) waitUp(t *testing.T) {
	t.Helper()
	client := &http.Client{Timeout: time.Second}
	for restarts, deadline := 0, time.Now().Add(fleetBound(60*time.Second)); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if resp, err := client.Get("http://" + p.addr + "/v2/health/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		p.mu.Lock()
		done := p.done
		p.mu.Unlock()
		select {
		case <-done:
			if restarts++; restarts > 3 {
				t.Fatalf("replica %s exited before it was ready, %d times:\n%s", p.name, restarts, p.logs)
			}
			t.Logf("replica %s exited before it was ready; started again, as a supervisor would", p.name)
			p.start(t)
		default:
		}
	}
	t.Fatalf("replica %s not ready after %s:\n%s", p.name, fleetBound(60*time.Second), p.logs)
}

// kill sends SIGKILL and waits for the process to exit.
func (p *loopProcess) kill() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	cmd.Process.Kill()
	<-done
}

// serves reports whether replica p has version loaded and ready, and
// routes to it.
func (p *loopProcess) serves(version string) bool {
	client := &http.Client{Timeout: time.Second}
	resp, err := client.Get("http://" + p.addr + "/v2/models/demo/versions/" + version + "/ready")
	if err != nil {
		return false
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false
	}
	req, _ := http.NewRequest(http.MethodGet, "http://"+p.addr+"/admin/models/demo/routing", nil)
	req.Header.Set("Authorization", "Bearer "+os.Getenv(demoTokenEnv))
	resp, err = client.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return err == nil && resp.StatusCode == http.StatusOK && strings.Contains(string(body), `"`+version+`"`)
}

// fleetLoop follows the loop of one pass from outside: the runs in the
// engine and the replicas' routing.
type fleetLoop struct {
	t        *testing.T
	conn     *engine.Conn
	replicas []*loopProcess
	retrain  *loopProcess
}

// waitStage waits until the loop has reached stage and returns when.
func (l *fleetLoop) waitStage(stage string, timeout time.Duration) time.Time {
	l.t.Helper()
	fleetPoll(l.t, timeout, "stage "+stage+" reached", func() bool { return l.reached(stage) })
	return time.Now()
}

// reached reports whether the newest run of model demo is at stage or
// past it; "shifted" is reached at once.
func (l *fleetLoop) reached(stage string) bool {
	if stage == "shifted" {
		return true
	}
	runs, err := pipeline.ListRuns(l.conn)
	if err != nil {
		return false
	}
	want := slices.Index(fleetRetrainStages, stage)
	for _, r := range runs {
		for _, s := range r.Steps {
			if i := slices.Index(fleetRetrainStages, s.Name); i >= want {
				return true
			}
		}
	}
	return false
}

// published returns the run that published a candidate and started its
// canary.
func (l *fleetLoop) published() (pipeline.Run, bool) {
	runs, err := pipeline.ListRuns(l.conn)
	if err != nil {
		return pipeline.Run{}, false
	}
	for _, r := range runs {
		if r.Candidate != "" && !r.CanaryStarted.IsZero() {
			return r, true
		}
	}
	return pipeline.Run{}, false
}

// metrics returns the metrics.json that version was published with.
func (l *fleetLoop) metrics(version string) pipeline.Metrics {
	l.t.Helper()
	ctx := context.Background()
	store, err := modelstore.Open(ctx, l.conn)
	if err != nil {
		l.t.Fatal(err)
	}
	v, err := strconv.ParseInt(version, 10, 64)
	if err != nil {
		l.t.Fatal(err)
	}
	dir := filepath.Join(l.t.TempDir(), version)
	if _, err := store.Fetch(ctx, "demo", v, dir); err != nil {
		l.t.Fatal(err)
	}
	var m pipeline.Metrics
	data, err := os.ReadFile(filepath.Join(dir, "metrics.json"))
	if err == nil {
		err = json.Unmarshal(data, &m)
	}
	if err != nil {
		l.t.Fatalf("metrics.json of version %s: %v", version, err)
	}
	return m
}

// target returns the process that target names now.
func (l *fleetLoop) target(target string) *loopProcess {
	if target == "retrain" {
		return l.retrain
	}
	leader := ""
	for _, r := range l.replicas {
		if leader = leaderSeenBy(r.addr); leader != "" {
			break
		}
	}
	for _, r := range l.replicas {
		if (target == "leader") == (r.name == leader) {
			return r
		}
	}
	return l.replicas[0]
}
