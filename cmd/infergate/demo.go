package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/infergate/infergate/drift"
	"github.com/infergate/infergate/gateway"
	"github.com/infergate/infergate/retrain/pipeline"
	"github.com/infergate/infergate/runtime"
)

// The environment variables the demo's gateway and retrain service share
// their secrets through; the demo makes them up when they are unset.
const (
	demoTokenEnv    = "INFERGATE_ADMIN_TOKEN"
	demoSecretEnv   = "INFERGATE_WEBHOOK_SECRET"
	demoFeedbackEnv = "INFERGATE_FEEDBACK_KEY"
)

// demoOptions say how the demo loop runs.
type demoOptions struct {
	work          string        // a folder the demo owns and empties first
	listen        string        // the gateway's address
	rate          float64       // requests per second, one row each
	shiftAfter    time.Duration // traffic time before the world shifts
	recovery      time.Duration // traffic time measured after the promotion
	labelDelay    time.Duration // how long after its answer a request's label arrives
	canaryEvery   time.Duration // the canary's analysis interval
	timeout       time.Duration // the whole loop's bound
	forever       bool          // keep serving after the loop closed
	progress      io.Writer     // the training progress bar; nil for none
	statusEvery   time.Duration // how often traffic and accuracy are printed
	gatewayConfig string
	retrainConfig string
	model         string // the demo model's folder, whose version 1 is copied
	replicas      int    // gateway replicas: 1 runs in this process, more as processes
	// labeled, when set, gets the ids of the labels a gateway answered 200.
	labeled func(ids []string)
}

// demoResult is what a closed loop measured.
type demoResult struct {
	promoted                       string  // the version promoted
	before, shifted, after         float64 // accuracy before the shift, after it, after the promotion
	shiftAt, detectedAt, startedAt time.Duration
	promotedAt                     time.Duration
}

// demo runs the whole loop on this machine: the gateway on the demo model,
// the retrain service, and traffic whose inputs and concept shift partway.
func demo(args []string) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	o := demoOptions{gatewayConfig: "configs/demo.yaml", retrainConfig: "configs/retrain.yaml", model: "configs/models/demo",
		statusEvery: 2 * time.Second}
	fs.StringVar(&o.work, "work", ".cache/demo", "folder for the demo's repository and state (emptied first)")
	fs.StringVar(&o.listen, "listen", "127.0.0.1:8080", "the gateway's address")
	fs.Float64Var(&o.rate, "rate", 400, "requests per second")
	fs.DurationVar(&o.shiftAfter, "shift-after", 15*time.Second, "traffic time before the inputs and the concept shift")
	fs.DurationVar(&o.recovery, "recovery", 10*time.Second, "traffic time measured after the promotion")
	fs.DurationVar(&o.canaryEvery, "canary-interval", 3*time.Second, "the canary's analysis interval")
	fs.DurationVar(&o.timeout, "timeout", 5*time.Minute, "give up when the loop has not closed by then")
	fs.BoolVar(&o.forever, "forever", false, "keep the gateway and the retrain service running after the loop closed")
	fs.IntVar(&o.replicas, "replicas", 1, "gateway replicas sharing the demo's engine, on consecutive ports from --listen's; with more than one, the leader is killed with SIGKILL in the middle of the canary")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.replicas < 1 {
		return fmt.Errorf("invalid --replicas %d: want at least 1", o.replicas)
	}
	o.labelDelay = time.Second
	if st, err := os.Stdout.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
		o.progress = os.Stdout
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	_, err := runDemo(ctx, o, os.Stdout)
	return err
}

// runDemo runs the loop until a retrained version is promoted and has
// served o.recovery of shifted traffic, and returns what it measured.
func runDemo(ctx context.Context, o demoOptions, out io.Writer) (demoResult, error) {
	n := newNarrator(out)
	log := slog.New(n)
	for _, env := range []string{demoTokenEnv, demoSecretEnv, demoFeedbackEnv} {
		if os.Getenv(env) == "" {
			os.Setenv(env, randomHex())
		}
	}
	if err := os.RemoveAll(o.work); err != nil {
		return demoResult{}, fmt.Errorf("cannot empty the demo's folder: %w", err)
	}
	rtLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return demoResult{}, fmt.Errorf("cannot listen for the retrain service: %w", err)
	}
	defer rtLn.Close()
	rtAddr := rtLn.Addr().String()
	data, err := demoGatewayYAML(o, o.listen, "", rtAddr, "")
	if err != nil {
		return demoResult{}, err
	}
	gwCfg, err := gateway.ParseConfig(data, o.work)
	if err != nil {
		return demoResult{}, fmt.Errorf("cannot load the demo's gateway config: %w", err)
	}
	// Written for the commands that join the demo's engine, such as
	// `capture export --config`.
	if err := os.MkdirAll(o.work, 0o755); err != nil {
		return demoResult{}, fmt.Errorf("cannot create the demo's folder: %w", err)
	}
	if err := os.WriteFile(filepath.Join(o.work, "infergate.yaml"), data, 0o644); err != nil {
		return demoResult{}, fmt.Errorf("cannot write the demo's gateway config: %w", err)
	}
	env, err := runtime.NewEnvironment(gwCfg.Runtime, log)
	if err != nil {
		return demoResult{}, err
	}
	defer env.Close()
	eng, err := openEngine(gwCfg.Cluster.Config, gwCfg.StateDir, "infergate demo", log)
	if err != nil {
		return demoResult{}, err
	}
	defer eng.close()

	events := make(chan gateway.Event, 64)
	decisions := make(chan drift.Decision, 64)
	var addrs []string
	var fleet *demoFleet
	if o.replicas > 1 {
		if fleet, err = startDemoGateways(o, n, rtAddr, events, decisions); err != nil {
			return demoResult{}, err
		}
		defer fleet.stop()
		addrs = fleet.addrs()
	} else {
		stop, addr, err := startDemoGateway(o, gwCfg, env, log, eng, events, decisions)
		if err != nil {
			return demoResult{}, err
		}
		defer stop()
		addrs = []string{addr}
	}

	rtCfg, err := pipeline.LoadConfig(o.retrainConfig)
	if err != nil {
		return demoResult{}, err
	}
	svc, err := pipeline.Open(pipeline.Options{Config: demoRetrainConfig(rtCfg, o, addrs[0]), Env: env, Log: log, Progress: o.progress, Engine: eng.connection()})
	if err != nil {
		return demoResult{}, err
	}
	rtSrv := &http.Server{Handler: svc.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go rtSrv.Serve(rtLn)
	defer func() {
		rtSrv.Close()
		// A run still going (a later detection's, waiting for labels that
		// stopped with the traffic) is interrupted after a short grace.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		svc.Shutdown(ctx)
		svc.Close()
	}()

	if fleet != nil {
		n.say("demo", "%d gateway replicas on %s share one engine (demo model v1), %s leads; retrain service on http://%s; %.0f requests/s spread over them, labels %s later",
			len(addrs), strings.Join(addrs, ", "), fleet.leader(), rtAddr, o.rate, o.labelDelay)
	} else {
		n.say("demo", "gateway on http://%s (demo model v1), retrain service on http://%s; %.0f requests/s, labels %s later",
			addrs[0], rtAddr, o.rate, o.labelDelay)
	}
	n.say("demo", "the world shifts after %s: older customers, lower credit scores, higher utilization, and a new default rule", o.shiftAfter)

	traffic := startTraffic(addrs, o)
	defer traffic.stop()
	res, err := followLoop(ctx, o, n, traffic, fleet, events, decisions)
	if err != nil {
		return res, err
	}
	n.say("demo", "loop closed: accuracy %.3f before the shift, %.3f after it on version 1, %.3f on version %s after its promotion",
		res.before, res.shifted, res.after, res.promoted)
	n.say("demo", "shift at %s, drift detected %s later, canary started %s later, promoted %s later",
		res.shiftAt.Round(time.Second), (res.detectedAt - res.shiftAt).Round(100*time.Millisecond),
		(res.startedAt - res.detectedAt).Round(100*time.Millisecond), (res.promotedAt - res.startedAt).Round(100*time.Millisecond))
	repo := filepath.Join(o.work, "models")
	if fleet != nil {
		repo = filepath.Join(o.work, fleet.replicas[0].name, "models")
	}
	printWhereToLook(out, addrs[0], rtAddr, repo, o)
	if o.forever {
		n.say("demo", "serving on (--forever); Ctrl-C stops")
		<-ctx.Done()
	}
	return res, nil
}

// followLoop narrates traffic until the loop closes, the context ends or
// the timeout passes. With a fleet it kills the leader in the middle of the
// canary, and says which replica leads in each status line.
func followLoop(ctx context.Context, o demoOptions, n *narrator, traffic *traffic, fleet *demoFleet, events <-chan gateway.Event, decisions <-chan drift.Decision) (demoResult, error) {
	var res demoResult
	start := time.Now()
	deadline := time.After(o.timeout)
	status := time.NewTicker(o.statusEvery)
	defer status.Stop()
	shift := time.After(o.shiftAfter)
	var recovered <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-deadline:
			return res, fmt.Errorf("the loop did not close within %s (--timeout)", o.timeout)
		case <-shift:
			res.before = traffic.accuracy(phaseBefore)
			res.shiftAt = time.Since(start)
			traffic.setPhase(phaseShifted)
			n.say("traffic", "the world shifts now")
		case d := <-decisions:
			if d.Type == drift.DriftDetected && res.detectedAt == 0 && res.shiftAt > 0 {
				res.detectedAt = time.Since(start)
			}
		case e := <-events:
			switch {
			case e.Type == "canary.started" && res.startedAt == 0 && res.detectedAt > 0:
				res.startedAt = time.Since(start)
				res.shifted = traffic.accuracy(phaseShifted)
				if fleet != nil {
					fleet.killLeaderLater(o.canaryEvery * 3 / 2)
				}
			case e.Type == "canary.promoted" && res.startedAt > 0:
				res.promotedAt, res.promoted = time.Since(start), e.Version
				traffic.setPhase(phasePromoted)
				recovered = time.After(o.recovery)
			case e.Type == "canary.rolledback":
				return res, fmt.Errorf("the canary of version %s was rolled back", e.Version)
			}
		case <-status.C:
			if fleet != nil {
				n.say("traffic", "%s  leader %s", traffic.status(), fleet.leader())
			} else {
				n.say("traffic", "%s", traffic.status())
			}
		case <-recovered:
			res.after = traffic.accuracy(phasePromoted)
			return res, nil
		}
	}
}

// startDemoGateway serves the demo's gateway in this process on o.listen
// and returns how to stop it and its address.
func startDemoGateway(o demoOptions, cfg gateway.Config, env *runtime.Environment, log *slog.Logger, eng *stateEngine,
	events chan<- gateway.Event, decisions chan<- drift.Decision) (stop func(), addr string, err error) {
	if err := copyDemoModel(o.model, cfg.Repository); err != nil {
		return nil, "", err
	}
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return nil, "", fmt.Errorf("cannot listen on %s (another infergate running? use --listen): %w", o.listen, err)
	}
	srv, err := gateway.New(gateway.Options{Config: cfg, Env: env, Log: log,
		Version: version(), Events: events, DriftDecisions: decisions, Engine: eng.connection()})
	if err != nil {
		ln.Close()
		return nil, "", err
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	return func() {
		srv.Shutdown(context.Background())
		<-served
	}, ln.Addr().String(), nil
}

// startDemoGateways starts o.replicas gateway processes and the receiver
// of their events, and returns them as a fleet whose stop stops both.
func startDemoGateways(o demoOptions, n *narrator, rtAddr string, events chan<- gateway.Event, decisions chan<- drift.Decision) (*demoFleet, error) {
	hookLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("cannot listen for the fleet's events: %w", err)
	}
	hook := &http.Server{Handler: &demoHook{events: events, decisions: decisions, seen: map[string]bool{}}, ReadHeaderTimeout: 10 * time.Second}
	go hook.Serve(hookLn)
	fleet, err := startDemoFleet(o, n, o.replicas, rtAddr, hookLn.Addr().String())
	if err != nil {
		hook.Close()
		return nil, err
	}
	fleet.hook = hook
	return fleet, nil
}

// copyDemoModel copies version 1 of the demo model in folder model into
// the repository repo, so the demo never touches the original.
func copyDemoModel(model, repo string) error {
	dst := filepath.Join(repo, "demo", "1")
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return fmt.Errorf("cannot create the demo's repository: %w", err)
	}
	for _, name := range []string{"model.onnx", drift.ReferenceFile} {
		data, err := os.ReadFile(filepath.Join(model, "1", name))
		if err != nil {
			return fmt.Errorf("cannot read the demo model (run the demo from the project root): %w", err)
		}
		if err := os.WriteFile(filepath.Join(dst, name), data, 0o644); err != nil {
			return fmt.Errorf("cannot write the demo's repository: %w", err)
		}
	}
	return nil
}

// demoRetrainConfig is configs/retrain.yaml pointed at the demo's folder and
// gateway, with the canary's analysis at the demo's pace.
func demoRetrainConfig(cfg pipeline.Config, o demoOptions, gatewayAddr string) pipeline.Config {
	cfg.StateDir = filepath.Join(o.work, "state") // the engine the demo's gateway runs, and its model store
	cfg.Gateway.URL = "http://" + gatewayAddr
	cfg.Gateway.TokenEnv = demoTokenEnv
	cfg.SecretEnv = demoSecretEnv
	mc := cfg.Models["demo"]
	// Drift is decided at the end of the first drifted window, which may
	// start a little before the shift: read from its start, no earlier, so
	// that the candidate learns the shifted world, not the old one.
	mc.Lookback = 0
	canary := map[string]any{}
	for k, v := range mc.Canary {
		canary[k] = v
	}
	canary["interval"] = o.canaryEvery.String()
	mc.Canary = canary
	cfg.Models = map[string]pipeline.ModelConfig{"demo": mc}
	return cfg
}

func printWhereToLook(out io.Writer, gwAddr, rtAddr, repo string, o demoOptions) {
	fmt.Fprintf(out, `
Where to look (live with --forever):
  metrics        curl -s http://%[1]s/metrics | grep -E 'infergate_(drift|canary|webhook|shadow)_'
  drift report   curl -s http://%[1]s/v2/models/demo/drift
  routing        curl -s -H "Authorization: Bearer %[3]s" http://%[1]s/admin/models/demo/routing
  a label        curl -s -H "Authorization: Bearer %[4]s" -H 'Content-Type: application/json' http://%[1]s/v2/models/demo/feedback -d '{"id":"42","label":1}'
  retrain runs   curl -s http://%[2]s/runs   (or: ./bin/infergate retrain runs --url http://%[2]s)
  export         ./bin/infergate capture export --config %[8]s --model demo --out demo.parquet
  files          %[9]s (a gateway's copy of the versions), %[5]s/state (the embedded engine: routing, drift state, captured traffic, labels, model versions, outboxes, retrain runs)
The admin token and the feedback key were made for this run (set %[6]s and %[7]s to choose them).
`, gwAddr, rtAddr, os.Getenv(demoTokenEnv), os.Getenv(demoFeedbackEnv), o.work, demoTokenEnv, demoFeedbackEnv, filepath.Join(o.work, "infergate.yaml"), repo)
}

func randomHex() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
