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
	"syscall"
	"time"

	"github.com/infergate/infergate/drift"
	"github.com/infergate/infergate/gateway"
	"github.com/infergate/infergate/retrain/capture"
	"github.com/infergate/infergate/retrain/outbox"
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
	if err := fs.Parse(args); err != nil {
		return err
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
	if err := prepareDemoRepository(o.model, o.work); err != nil {
		return demoResult{}, err
	}

	gwCfg, err := gateway.LoadConfig(o.gatewayConfig)
	if err != nil {
		return demoResult{}, err
	}
	env, err := runtime.NewEnvironment(gwCfg.Runtime, log)
	if err != nil {
		return demoResult{}, err
	}
	defer env.Close()

	gwLn, err := net.Listen("tcp", o.listen)
	if err != nil {
		return demoResult{}, fmt.Errorf("cannot listen on %s (another infergate running? use --listen): %w", o.listen, err)
	}
	defer gwLn.Close()
	rtLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return demoResult{}, fmt.Errorf("cannot listen for the retrain service: %w", err)
	}
	defer rtLn.Close()
	gwAddr, rtAddr := gwLn.Addr().String(), rtLn.Addr().String()

	events := make(chan gateway.Event, 64)
	decisions := make(chan drift.Decision, 64)
	demoCfg := demoGatewayConfig(gwCfg, o, rtAddr)
	eng, err := openEngine(demoCfg.Cluster.Config, demoCfg.StateDir, "infergate demo", log)
	if err != nil {
		return demoResult{}, err
	}
	defer eng.close()
	srv, err := gateway.New(gateway.Options{Config: demoCfg, Env: env, Log: log,
		Version: version(), Events: events, DriftDecisions: decisions, Engine: eng.connection()})
	if err != nil {
		return demoResult{}, err
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(gwLn) }()
	defer func() {
		srv.Shutdown(context.Background())
		<-served
	}()

	rtCfg, err := pipeline.LoadConfig(o.retrainConfig)
	if err != nil {
		return demoResult{}, err
	}
	svc, err := pipeline.Open(pipeline.Options{Config: demoRetrainConfig(rtCfg, o, gwAddr), Env: env, Log: log, Progress: o.progress, Engine: eng.connection()})
	if err != nil {
		return demoResult{}, err
	}
	rtSrv := &http.Server{Handler: svc.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go rtSrv.Serve(rtLn)
	defer func() {
		rtSrv.Close()
		svc.Shutdown(context.Background())
		svc.Close()
	}()

	n.say("demo", "gateway on http://%s (demo model v1), retrain service on http://%s; %.0f requests/s, labels %s later",
		gwAddr, rtAddr, o.rate, o.labelDelay)
	n.say("demo", "the world shifts after %s: older customers, lower credit scores, higher utilization, and a new default rule", o.shiftAfter)

	traffic := startTraffic(gwAddr, o)
	defer traffic.stop()
	res, err := followLoop(ctx, o, n, traffic, events, decisions)
	if err != nil {
		return res, err
	}
	n.say("demo", "loop closed: accuracy %.3f before the shift, %.3f after it on version 1, %.3f on version %s after its promotion",
		res.before, res.shifted, res.after, res.promoted)
	n.say("demo", "shift at %s, drift detected %s later, canary started %s later, promoted %s later",
		res.shiftAt.Round(time.Second), (res.detectedAt - res.shiftAt).Round(100*time.Millisecond),
		(res.startedAt - res.detectedAt).Round(100*time.Millisecond), (res.promotedAt - res.startedAt).Round(100*time.Millisecond))
	printWhereToLook(out, gwAddr, rtAddr, o)
	if o.forever {
		n.say("demo", "serving on (--forever); Ctrl-C stops")
		<-ctx.Done()
	}
	return res, nil
}

// followLoop narrates traffic until the loop closes, the context ends or
// the timeout passes.
func followLoop(ctx context.Context, o demoOptions, n *narrator, traffic *traffic, events <-chan gateway.Event, decisions <-chan drift.Decision) (demoResult, error) {
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
			case e.Type == "canary.promoted" && res.startedAt > 0:
				res.promotedAt, res.promoted = time.Since(start), e.Version
				traffic.setPhase(phasePromoted)
				recovered = time.After(o.recovery)
			case e.Type == "canary.rolledback":
				return res, fmt.Errorf("the canary of version %s was rolled back", e.Version)
			}
		case <-status.C:
			n.say("traffic", "%s", traffic.status())
		case <-recovered:
			res.after = traffic.accuracy(phasePromoted)
			return res, nil
		}
	}
}

// prepareDemoRepository empties work and copies version 1 of the demo
// model in folder model into work/models, so the demo never touches it.
func prepareDemoRepository(model, work string) error {
	if err := os.RemoveAll(work); err != nil {
		return fmt.Errorf("cannot empty the demo's folder: %w", err)
	}
	dst := filepath.Join(work, "models", "demo", "1")
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

// demoGatewayConfig is the demo config, serving the demo's repository with
// what the loop needs: capture of every request, the admin API, a webhook
// to the retrain service, and room for two versions during the canary.
func demoGatewayConfig(cfg gateway.Config, o demoOptions, retrainAddr string) gateway.Config {
	cfg.Listen = o.listen
	cfg.Repository = filepath.Join(o.work, "models")
	cfg.StateDir = filepath.Join(o.work, "state")
	cfg.Watch = true
	cfg.Admin.TokenEnv = demoTokenEnv
	cfg.Webhooks = []outbox.Target{{Name: "retrain", URL: "http://" + retrainAddr + "/webhook",
		Events: []string{"drift.detected"}, SecretEnv: demoSecretEnv, BackoffBase: 200 * time.Millisecond}}
	mc := cfg.Models["demo"]
	mc.VersionPolicy = runtime.VersionPolicy{Latest: 2}
	mc.Capture = capture.Config{Sample: 1}
	mc.Cache.Entries = 0 // the demo's rows never repeat
	// Labels decide what retraining learns: only the traffic generator,
	// which holds the key, may post them.
	cfg.Auth.Keys = map[string]gateway.KeySource{"labeler": {Env: demoFeedbackEnv}}
	mc.Auth = gateway.ModelAuth{Feedback: []string{"labeler"}}
	cfg.Models = map[string]gateway.ModelConfig{"demo": mc}
	return cfg
}

// demoRetrainConfig is configs/retrain.yaml pointed at the demo's folder and
// gateway, with the canary's analysis at the demo's pace.
func demoRetrainConfig(cfg pipeline.Config, o demoOptions, gatewayAddr string) pipeline.Config {
	cfg.StateDir = filepath.Join(o.work, "state") // the engine the demo's gateway runs
	cfg.Repository = filepath.Join(o.work, "models")
	cfg.Gateway.URL = "http://" + gatewayAddr
	cfg.Gateway.TokenEnv = demoTokenEnv
	cfg.SecretEnv = demoSecretEnv
	mc := cfg.Models["demo"]
	// Drift is decided at the end of the second drifted window of 1000
	// rows; read from the start of the first.
	mc.Lookback = time.Duration(1000 / o.rate * float64(time.Second))
	canary := map[string]any{}
	for k, v := range mc.Canary {
		canary[k] = v
	}
	canary["interval"] = o.canaryEvery.String()
	mc.Canary = canary
	cfg.Models = map[string]pipeline.ModelConfig{"demo": mc}
	return cfg
}

func printWhereToLook(out io.Writer, gwAddr, rtAddr string, o demoOptions) {
	fmt.Fprintf(out, `
Where to look (live with --forever):
  metrics        curl -s http://%[1]s/metrics | grep -E 'infergate_(drift|canary|webhook|shadow)_'
  drift report   curl -s http://%[1]s/v2/models/demo/drift
  routing        curl -s -H "Authorization: Bearer %[3]s" http://%[1]s/admin/models/demo/routing
  a label        curl -s -H "Authorization: Bearer %[4]s" -H 'Content-Type: application/json' http://%[1]s/v2/models/demo/feedback -d '{"id":"42","label":1}'
  retrain runs   curl -s http://%[2]s/runs   (or: ./bin/infergate retrain runs --url http://%[2]s)
  files          %[5]s/models (the versions), %[5]s/state (capture, labels, and the embedded engine: routing, drift state, outboxes, retrain runs)
The admin token and the feedback key were made for this run (set %[6]s and %[7]s to choose them).
`, gwAddr, rtAddr, os.Getenv(demoTokenEnv), os.Getenv(demoFeedbackEnv), o.work, demoTokenEnv, demoFeedbackEnv)
}

func randomHex() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
