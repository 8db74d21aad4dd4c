package gateway

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/infergate/infergate/batcher"
	"github.com/infergate/infergate/drift"
	"github.com/infergate/infergate/retrain/engine"
	"github.com/infergate/infergate/retrain/trainer"
	"github.com/infergate/infergate/router"
)

// startReplica serves cfg as replica name of a fleet whose engine is the
// one kept in dir.
func startReplica(t *testing.T, cfg Config, name string, dir string) (*Server, string) {
	t.Helper()
	return startReplicaWith(t, Options{Config: cfg}, name, dir)
}

// startReplicaWith serves o as startReplica serves its config.
func startReplicaWith(t *testing.T, o Options, name string, dir string) (*Server, string) {
	t.Helper()
	o.Config.Cluster.Replica = name
	o.Config.Cluster.LeaseTTL = time.Second
	o.Config.Cluster.ReportInterval = 100 * time.Millisecond
	o.Engine = testEngine(t, dir).Conn
	return startServerWith(t, o)
}

// waitUntil polls cond every 5 ms until it holds or timeout passes, and
// returns how long that took.
func waitUntil(t *testing.T, what string, timeout time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("%s: not within %s", what, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}

// waitLeader waits until one of the two servers, by name, leads and
// returns its name and the other's.
func waitLeader(t *testing.T, servers map[string]*Server) (leader, follower string) {
	t.Helper()
	waitUntil(t, "one leader", 5*time.Second, func() bool {
		for name, s := range servers {
			s.cp.mu.Lock()
			if s.cp.leading {
				leader = name
			}
			s.cp.mu.Unlock()
		}
		return leader != ""
	})
	for name := range servers {
		if name != leader {
			follower = name
		}
	}
	return leader, follower
}

// TestReplicasShareRoutingAndLeadership: two replicas on one engine agree
// on one leader, an admin change made on either is what both serve, and a
// replica that leaves hands the leadership over.
func TestReplicasShareRoutingAndLeadership(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t)
	cfg.StateDir = dir
	cfg.Admin.TokenEnv = testTokenEnv
	a, aURL := startReplica(t, cfg, "a", dir)
	b, bURL := startReplica(t, cfg, "b", dir)

	leaders := func() (n int, name string) {
		for _, s := range []*Server{a, b} {
			s.cp.mu.Lock()
			if s.cp.leading {
				n++
				name = s.cp.cluster.Replica
			}
			s.cp.mu.Unlock()
		}
		return n, name
	}
	waitUntil(t, "one leader", 5*time.Second, func() bool { n, _ := leaders(); return n == 1 })

	put := func(base, body string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPut, base+"/admin/models/versioned/routing", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+testToken)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("PUT routing on %s: %s", base, resp.Status)
		}
	}
	split := func(s *Server) map[string]int {
		s.cp.mu.Lock()
		defer s.cp.mu.Unlock()
		return s.cp.routes["versioned"].report().Effective
	}
	for i, tc := range []struct {
		on   string
		body string
		want string
	}{
		{aURL, `{"split":{"1":1,"2":1}}`, `{"1":1,"2":1}`},
		{bURL, `{"split":{"3":1}}`, `{"3":1}`},
	} {
		put(tc.on, tc.body)
		took := waitUntil(t, "the change reaching both replicas", 2*time.Second, func() bool {
			for _, s := range []*Server{a, b} {
				got, _ := json.Marshal(split(s))
				if string(got) != tc.want {
					return false
				}
			}
			return true
		})
		t.Logf("change %d reached both replicas in %s", i, took)
	}

	// The leader leaves: the other takes over within the lease.
	_, first := leaders()
	leaver, stayer := a, b
	if first == "b" {
		leaver, stayer = b, a
	}
	leaver.Shutdown(t.Context())
	took := waitUntil(t, "the other replica leading", 5*time.Second, func() bool {
		stayer.cp.mu.Lock()
		defer stayer.cp.mu.Unlock()
		return stayer.cp.leading
	})
	t.Logf("failover after a clean shutdown took %s (lease 1s)", took)
}

// TestLeaderJudgesTheFollowersTraffic: all traffic goes to the follower,
// and the canary that disagrees on it is rolled back by the leader, which
// served none of it: the follower's counters reached the analysis.
func TestLeaderJudgesTheFollowersTraffic(t *testing.T) {
	cfg := abConfig(t, router.Config{Split: map[string]int{"1": 1}, Canary: canaryConfig("2")})
	dir := cfg.StateDir
	events := map[string]chan Event{"a": make(chan Event, 64), "b": make(chan Event, 64)}
	servers, urls := map[string]*Server{}, map[string]string{}
	for _, name := range []string{"a", "b"} {
		servers[name], urls[name] = startReplicaWith(t, Options{Config: cfg, Events: events[name]}, name, dir)
	}
	leader, follower := waitLeader(t, servers)
	stop := load(t, urls[follower])
	got := waitEvent(t, events[leader], "canary.rolledback", 20*time.Second)
	stop()
	step := got.Data.(canaryStep)
	if step.Leader != leader || step.Replica != leader {
		t.Errorf("rolled back by replica %q under leader %q, want %q for both", step.Replica, step.Leader, leader)
	}
	if len(step.Reporting) != 1 || step.Reporting[0] != follower {
		t.Errorf("the analysis merged the counts of %v, want [%s]", step.Reporting, follower)
	}
	if step.Checks == nil || step.Checks.AgreementSamples == 0 {
		t.Fatalf("the rollback judged no agreement samples: %+v", step.Checks)
	}
	t.Logf("rolled back on the follower's traffic: %s", step.Reason)
}

// TestLeaderJudgesTheFleetsDrift: rows spread over two replicas, shifted
// in half of the features, are judged drifted by the leader on the merged
// counts; the follower decides nothing.
func TestLeaderJudgesTheFleetsDrift(t *testing.T) {
	cfg := testConfig(t)
	cfg.Models["demo"] = ModelConfig{Batching: batcher.Config{MaxBatchSize: 128, Instances: 2}}
	dir := cfg.StateDir
	decisions := map[string]chan drift.Decision{"a": make(chan drift.Decision, 16), "b": make(chan drift.Decision, 16)}
	servers, urls := map[string]*Server{}, map[string]string{}
	for _, name := range []string{"a", "b"} {
		servers[name], urls[name] = startReplicaWith(t, Options{Config: cfg, DriftDecisions: decisions[name]}, name, dir)
	}
	leader, follower := waitLeader(t, servers)
	rows := trainer.Synthetic(1, 20000).X[4000:]
	shift := demoShift(t, 0, 1, 2, 3)
	// Alternate blocks of 500 rows between the replicas, as a load balancer
	// would: 6000 rows from the training distribution, then 4000 shifted.
	client := &fasthttp.Client{}
	send := func(rows [][]float32, shift []float64) {
		for i := 0; i < len(rows); i += 500 {
			name := []string{"a", "b"}[(i/500)%2]
			sendRows(t, client, urls[name], rows[i:min(i+500, len(rows))], shift)
		}
	}
	send(rows[:6000], make([]float64, 8))
	// Merged counts may make a window of more than its 1000 rows, so wait
	// for what the follower counted to have gone to the leader, and for a
	// judged window, rather than for a number of them.
	waitUntil(t, "the follower's counts shipped", raceScaled(10*time.Second), func() bool {
		return waitDriftReport(t, urls[follower], 0).Current.Rows == 0
	})
	judged := waitDriftReport(t, urls[leader], 1).WindowsJudged
	if len(decisions[leader]) != 0 {
		t.Fatalf("traffic from the training distribution raised %+v", <-decisions[leader])
	}
	send(rows[6000:10000], shift)
	select {
	case d := <-decisions[leader]:
		if d.Type != drift.DriftDetected {
			t.Fatalf("the leader decided %s, want drift.detected", d.Type)
		}
		t.Logf("the leader detected drift at window %d on the merged counts (%d judged before the shift)", d.Window.Seq, judged)
	case <-time.After(30 * time.Second):
		rep := waitDriftReport(t, urls[leader], 0)
		t.Fatalf("no decision on the leader: %d windows judged, last share %.2f", rep.WindowsJudged, rep.Last.Share)
	}
	if len(decisions[follower]) != 0 {
		t.Fatalf("the follower decided: %+v", <-decisions[follower])
	}
}

// TestEngineLossKeepsServing stops the engine under a serving gateway:
// requests are answered on the last routing, an admin change is refused
// at once (503, naming the engine), and once the engine is back the
// gateway reconnects and takes changes again.
func TestEngineLossKeepsServing(t *testing.T) {
	cfg := abConfig(t, router.Config{Split: map[string]int{"1": 1}})
	e := testEngine(t, cfg.StateDir)
	_, url := startServerWith(t, Options{Config: cfg, Engine: e.Conn})
	e.Embedded.Shutdown()
	waitUntil(t, "the connection lost", 10*time.Second, func() bool { return !e.NC.IsConnected() })

	client := &fasthttp.Client{}
	for range 50 {
		if v := inferAB(t, client, url); v != "1" {
			t.Fatalf("version %s answered without the engine, want 1", v)
		}
	}
	start := time.Now()
	code, body := admin(t, "PUT", url, "models/ab/routing", `{"split":{"3":1}}`)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "engine is unreachable") {
		t.Fatalf("an admin change without the engine: %d %s, want 503 naming the engine", code, body)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("the refusal took %s, want it at once", took)
	}

	emb, err := engine.StartEmbedded(cfg.StateDir, quiet)
	if err != nil {
		t.Fatal(err)
	}
	e.Embedded = emb // the test's cleanup stops this one
	took := waitUntil(t, "an admin change after the engine is back", 30*time.Second, func() bool {
		code, _ := admin(t, "PUT", url, "models/ab/routing", `{"split":{"3":1}}`)
		return code == http.StatusOK
	})
	t.Logf("changes taken again %s after the engine restarted", took)
	for range 20 {
		if v := inferAB(t, client, url); v != "3" {
			t.Fatalf("after the change version %s answered, want 3", v)
		}
	}
}
