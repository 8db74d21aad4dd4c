package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/infergate/infergate/bench"
	"github.com/infergate/infergate/gateway"
	"github.com/infergate/infergate/retrain/engine"
	"github.com/infergate/infergate/router"
	"github.com/infergate/infergate/runtime"
)

// The fleet row: two replicas on one embedded engine serve demo_canary
// with a canary that runs all along, the load goes to the follower, and
// the suite's stateless gateway serving the same is the base.
const (
	suiteFleetPairs          = 9
	suiteFleetLeaseTTL       = 2 * time.Second
	suiteFleetReportInterval = 250 * time.Millisecond
	// suiteCanaryInterval keeps the canary at its first step for the whole
	// suite: no analysis runs, and the follower's counters flow to the
	// leader every report interval.
	suiteCanaryInterval = time.Hour
	// suiteAdminTokenEnv holds the replicas' admin token, set in-process,
	// so that the suite can ask each which leads.
	suiteAdminTokenEnv = "INFERGATE_BENCH_ADMIN_TOKEN"
	// suiteReportSubject is where a replica publishes its reports, under
	// .<replica> (gateway/fleet.go's reportSubject): the suite listens in
	// to count what the follower shipped.
	suiteReportSubject = "infergate.fleet.report"
	// suiteFleetReady bounds how long the fleet may take to elect its
	// leader and start the canary everywhere.
	suiteFleetReady = 30 * time.Second
)

// canaryDemo is the demo section serving both versions, split to 1 with a
// canary of 2 that stays at its first step weight.
func canaryDemo(demo gateway.ModelConfig) gateway.ModelConfig {
	demo.VersionPolicy = runtime.VersionPolicy{All: true}
	demo.Routing = router.Config{Split: map[string]int{"1": 1},
		Canary: &router.CanaryConfig{Version: "2", Interval: suiteCanaryInterval}}
	return demo
}

// suiteFleet is a fleet of in-process replicas sharing one embedded
// engine in a temporary state_dir, and a connection of the suite's own
// that counts the follower's reports.
type suiteFleet struct {
	dir      string
	embedded *engine.Embedded
	replicas []*suiteReplica
	// leader and follower are set once the fleet is ready.
	leader, follower *suiteReplica
	token            string
	watch            *engine.Conn
	sub              *nats.Subscription
	// listening is when the suite began to count the follower's reports.
	listening time.Time
	// reports and reported count the follower's reports and the requests
	// of demo_canary they carried counts of, by version.
	reports  atomic.Int64
	reported [2]atomic.Int64
}

// suiteReplica is one replica of a suiteFleet.
type suiteReplica struct {
	name   string
	addr   string
	conn   *engine.Conn
	srv    *gateway.Server
	served chan error
}

// startSuiteFleet serves cfg's demo_canary as replicas a and b of a fleet
// on a new embedded engine, and waits until one leads, the other follows
// it, and the canary runs on the follower.
func startSuiteFleet(cfg gateway.Config, env *runtime.Environment, log *slog.Logger) (f *suiteFleet, err error) {
	f = &suiteFleet{}
	defer func() {
		if err != nil {
			f.stop()
		}
	}()
	token := make([]byte, 16)
	rand.Read(token)
	f.token = hex.EncodeToString(token)
	if err := os.Setenv(suiteAdminTokenEnv, f.token); err != nil {
		return nil, fmt.Errorf("cannot set the fleet's admin token: %w", err)
	}
	if f.dir, err = os.MkdirTemp("", "infergate-bench-fleet-"); err != nil {
		return nil, fmt.Errorf("cannot create the fleet's state_dir: %w", err)
	}
	if f.embedded, err = engine.StartEmbedded(f.dir, log); err != nil {
		return nil, err
	}
	cfg.StateDir = f.dir
	cfg.GRPCListen = "" // the fleet is measured over REST
	cfg.Models = map[string]gateway.ModelConfig{"demo_canary": cfg.Models["demo_canary"]}
	cfg.Admin.TokenEnv = suiteAdminTokenEnv
	cfg.Cluster.LeaseTTL, cfg.Cluster.ReportInterval = suiteFleetLeaseTTL, suiteFleetReportInterval
	for _, name := range []string{"a", "b"} {
		r := &suiteReplica{name: name}
		f.replicas = append(f.replicas, r)
		if r.conn, err = engine.Connect(engine.Config{}, f.dir, "infergate bench replica "+name, log); err != nil {
			return nil, err
		}
		c := cfg
		c.Cluster.Replica = name
		if err := c.Validate(); err != nil {
			return nil, fmt.Errorf("BUG: the suite's replica config is invalid: %w", err)
		}
		if r.srv, err = gateway.New(gateway.Options{Config: c, Env: env, Log: log, Version: version(), Engine: r.conn}); err != nil {
			return nil, err
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("cannot listen for replica %s: %w", name, err)
		}
		r.addr = ln.Addr().String()
		r.served = make(chan error, 1)
		go func() { r.served <- r.srv.Serve(ln) }()
	}
	if f.watch, err = engine.Connect(engine.Config{}, f.dir, "infergate bench", log); err != nil {
		return nil, err
	}
	if err := f.waitReady(); err != nil {
		return nil, err
	}
	f.listening = time.Now()
	if f.sub, err = f.watch.NC.Subscribe(suiteReportSubject+"."+f.follower.name, f.countReport); err != nil {
		return nil, fmt.Errorf("cannot listen to the follower's reports: %w", err)
	}
	return f, nil
}

// waitReady waits until one replica leads, the other names it as its
// leader, and the follower runs the canary.
func (f *suiteFleet) waitReady() error {
	deadline := time.Now().Add(suiteFleetReady)
	var last string
	for time.Now().Before(deadline) {
		if err := f.findLeader(); err != nil {
			last = err.Error()
		} else {
			var routing struct {
				Canary *router.Canary `json:"canary"`
			}
			err := f.admin(f.follower, "/admin/models/demo_canary/routing", &routing)
			switch {
			case err != nil:
				last = err.Error()
			case routing.Canary == nil || routing.Canary.Phase != router.PhaseProgressing:
				last = fmt.Sprintf("the canary does not run on follower %s: %+v", f.follower.name, routing.Canary)
			default:
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("the suite's fleet was not ready within %s: %s", suiteFleetReady, last)
}

// findLeader asks each replica GET /admin/cluster and sets the leader and
// the follower once they agree.
func (f *suiteFleet) findLeader() error {
	f.leader, f.follower = nil, nil
	views := make([]struct {
		Replica string `json:"replica"`
		Leader  string `json:"leader"`
		Leading bool   `json:"leading"`
	}, len(f.replicas))
	for i, r := range f.replicas {
		if err := f.admin(r, "/admin/cluster", &views[i]); err != nil {
			return err
		}
	}
	a, b := f.replicas[0], f.replicas[1]
	switch {
	case views[0].Leading && !views[1].Leading && views[1].Leader == a.name:
		f.leader, f.follower = a, b
	case views[1].Leading && !views[0].Leading && views[0].Leader == b.name:
		f.leader, f.follower = b, a
	default:
		return fmt.Errorf("the replicas do not agree on one leader yet: %+v", views)
	}
	return nil
}

// admin decodes the answer of r's admin API at path into v.
func (f *suiteFleet) admin(r *suiteReplica, path string, v any) error {
	req, err := http.NewRequest(http.MethodGet, "http://"+r.addr+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+f.token)
	client := http.Client{Timeout: 5 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("cannot ask replica %s for %s: %w", r.name, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("status %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	if err == nil {
		err = json.Unmarshal(body, v)
	}
	if err != nil {
		return fmt.Errorf("cannot ask replica %s for %s: %w", r.name, path, err)
	}
	return nil
}

// countReport counts one of the follower's reports and the demo_canary
// requests it carries counts of.
func (f *suiteFleet) countReport(msg *nats.Msg) {
	var rep struct {
		Canary []struct {
			Model    string `json:"model"`
			Version  string `json:"version"`
			Requests int64  `json:"requests"`
		} `json:"canary"`
	}
	if json.Unmarshal(msg.Data, &rep) != nil {
		return
	}
	f.reports.Add(1)
	for _, c := range rep.Canary {
		if i := slices.Index([]string{"1", "2"}, c.Version); c.Model == "demo_canary" && i >= 0 {
			f.reported[i].Add(c.Requests)
		}
	}
}

// stop shuts the replicas down (the follower first, so that the
// leadership does not move), closes the connections, stops the engine
// and removes the state_dir, in the reverse order of startSuiteFleet.
func (f *suiteFleet) stop() error {
	var errs []error
	if f.sub != nil {
		errs = append(errs, f.sub.Unsubscribe())
	}
	f.watch.Close()
	replicas := slices.Clone(f.replicas)
	if f.leader != nil && f.leader == replicas[0] {
		slices.Reverse(replicas)
	}
	for _, r := range replicas {
		if r.srv != nil {
			errs = append(errs, r.srv.Shutdown(context.Background()))
			if r.served != nil {
				errs = append(errs, <-r.served)
			}
		}
		r.conn.Close()
	}
	if f.embedded != nil {
		f.embedded.Shutdown()
	}
	if f.dir != "" {
		errs = append(errs, os.RemoveAll(f.dir))
	}
	os.Unsetenv(suiteAdminTokenEnv)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cannot stop the suite's fleet cleanly: %w", err)
	}
	return nil
}

// fleetOverhead measures demo_canary through the fleet's follower against
// the suite's single stateless gateway, in interleaved pairs.
func (s *suite) fleetOverhead(ctx context.Context, single bench.Request) (err error) {
	f, err := startSuiteFleet(s.cfg, s.env, s.log)
	if err != nil {
		return err
	}
	defer func() {
		if serr := f.stop(); err == nil {
			err = serr
		}
	}()
	follower := single
	follower.Addr = f.follower.addr
	answer, err := bench.Capture(follower, 10*time.Second)
	if err != nil {
		return err
	}
	if answer.StatusCode != http.StatusOK {
		return fmt.Errorf("the fleet's follower answered demo_canary with %d: %s", answer.StatusCode, answer.Body)
	}
	var routing struct {
		Effective map[string]int `json:"effective_split"`
	}
	if err := f.admin(f.follower, "/admin/models/demo_canary/routing", &routing); err != nil {
		return err
	}
	runs, ratios := s.pairs(ctx, suiteFleetPairs, demoConnections, "demo_canary: single gateway", single,
		"demo_canary: fleet follower", follower)
	listened := time.Since(f.listening).Round(time.Second)
	var measured int64
	for i := 1; i < len(runs); i += 2 {
		measured += runs[i].OK
	}
	split, _ := json.Marshal(routing.Effective)
	s.section("Fleet of two replicas vs a single gateway",
		fmt.Sprintf("Closed loop, %d connections, one row per request, to model demo_canary: the demo model as versions 1 "+
			"and 2 (otherwise served as above), split {\"1\": 1} with a canary of version 2 at its first step "+
			"(interval %.0fh, so it never moves during the suite and every replica counts each version's answers for it): "+
			"effective split %s. The fleet: replicas a and b, two in-process gateways in this process, each with its own "+
			"connection to one embedded JetStream engine (sync always, state_dir in a temporary folder; lease_ttl %s, "+
			"report_interval %s). %s holds the lease in bucket infergate_control and leads; %s follows: it applied the "+
			"routing and the canary from its watch of that bucket, and every %s it publishes a report (heartbeat and, "+
			"while the canary runs, each version's counters) on %s.%s, which the leader merges for the canary's analysis. "+
			"All the load goes to the follower; the leader serves nothing. In the %s the suite listened in, the follower "+
			"sent %d reports, carrying the counts of %d requests to version 1 and %d to version 2 (its runs answered %d "+
			"after their warm-ups). The single gateway is the suite's own, stateless: it serves the same model "+
			"and canary alone, leads itself, and nothing leaves the process. %d interleaved pairs of %s runs; the check "+
			"takes the median of the pairs' ratios (fleet / single): %s.",
			demoConnections, suiteCanaryInterval.Hours(), split, suiteFleetLeaseTTL, suiteFleetReportInterval, f.leader.name,
			f.follower.name, suiteFleetReportInterval, suiteReportSubject, f.follower.name, listened, f.reports.Load(),
			f.reported[0].Load(), f.reported[1].Load(), measured, suiteFleetPairs, s.opts.duration/4, formatRatios(ratios)),
		runs...)
	s.median("fleet follower vs single gateway, demo with a canary (ok req/s, median of interleaved pairs)", ratios, 0.97)
	return nil
}
