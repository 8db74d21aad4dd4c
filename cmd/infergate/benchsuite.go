package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/infergate/infergate/batcher"
	"github.com/infergate/infergate/bench"
	"github.com/infergate/infergate/drift"
	"github.com/infergate/infergate/gateway"
	"github.com/infergate/infergate/router"
	"github.com/infergate/infergate/runtime"
)

// The suite's setup. The heavy model is served three times under three
// names, so that one gateway (and one ONNX Runtime environment) holds every
// batching mode at once.
const (
	heavySeed       = 20250101
	heavyMaxBatch   = 64
	heavyFixedDelay = 2 * time.Millisecond
	heavyTarget     = 5 * time.Millisecond
	heavyQueueSize  = 512
	// heavyConnections keeps several full batches waiting in closed loop,
	// so that a batch never waits for stragglers to fill.
	heavyConnections = 4 * heavyMaxBatch
	// overloadConnections is well beyond what the queue and a running batch
	// hold, so that the gateway, not the generator's connection limit,
	// decides what is turned away.
	overloadConnections = 2 * heavyQueueSize
	demoConnections     = 32
	// driftPairs is the number of drift off / on run pairs, each run a
	// quarter of the suite's duration: the machine's speed drifts by more
	// than the cost of drift monitoring over a few seconds, so many short
	// pairs tell it better than a few long ones.
	driftPairs = 9
	// ceilingPairs is the number of HTTP ceiling / demo gateway run pairs,
	// adaptivePairs of fixed delay / adaptive run pairs at high load.
	ceilingPairs  = 5
	adaptivePairs = 3
	// shadowLoad is the share of the demo's max rate the shadow's cost is
	// measured at with room to spare; shadowMaxInFlight bounds its copies.
	shadowLoad        = 0.4
	shadowMaxInFlight = 64
	// lowLoad is the share of the max sustainable rate the adaptive mode is
	// compared at when the load is light.
	lowLoad = 0.1
)

// sweepShares are the shares of the max sustainable rate the
// latency-throughput curve is drawn at.
var sweepShares = []float64{0.2, 0.4, 0.6, 0.8, 1.0, 1.2}

// suiteOptions are the flags of `infergate bench --suite`.
type suiteOptions struct {
	out              string
	duration, warmup time.Duration
	progress         io.Writer
	command          string
	// driftPairs, when set, measures only the drift overhead, in that
	// many pairs; scoreOnly only batch scoring.
	driftPairs int
	scoreOnly  bool
}

// suite runs the standard benchmark: an in-process gateway over a
// temporary repository, the ceilings, the scenarios, and the report.
type suite struct {
	opts   suiteOptions
	log    *slog.Logger
	repo   string
	env    *runtime.Environment
	srv    *gateway.Server
	served chan error
	addr   string
	// grpcServed and grpcAddr are the same for the gateway's gRPC listener.
	grpcServed chan error
	grpcAddr   string
	// cfg is the gateway's config; demo is the demo model's section in it.
	cfg  gateway.Config
	demo gateway.ModelConfig
	rep  bench.Report
	md   strings.Builder
	// checks are the targets and whether they were met, in order.
	checks []check
}

// runSuite runs the standard suite and writes o.out, with the JSON report
// and the latency-throughput plot beside it.
func runSuite(ctx context.Context, o suiteOptions) error {
	if err := os.MkdirAll(filepath.Dir(o.out), 0o755); err != nil {
		return fmt.Errorf("cannot create the results folder: %w", err)
	}
	s, err := startSuite(o)
	if err != nil {
		return err
	}
	err = s.run(ctx)
	if serr := s.stop(); err == nil {
		err = serr
	}
	if err != nil {
		return err
	}
	return s.write()
}

// startSuite writes the model repository, opens the process's one ONNX
// Runtime environment and serves the repository with an in-process gateway
// on a loopback port.
func startSuite(o suiteOptions) (_ *suite, err error) {
	s := &suite{
		opts: o,
		log:  slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		rep:  bench.Report{Command: o.command, Date: time.Now(), Machine: bench.ThisMachine()},
	}
	defer func() {
		if err != nil {
			s.stop() // s, not the nil result
		}
	}()
	if s.repo, err = os.MkdirTemp("", "infergate-bench-"); err != nil {
		return nil, fmt.Errorf("cannot create the suite's model repository: %w", err)
	}
	if err := writeSuiteRepository(s.repo); err != nil {
		return nil, err
	}
	rtCfg := runtime.DefaultConfig()
	rtCfg.IntraOpThreads = 1 // the generator needs the other cores
	if s.env, err = runtime.NewEnvironment(rtCfg, s.log); err != nil {
		return nil, err
	}
	demoCfg, err := gateway.LoadConfig(filepath.Join("configs", "demo.yaml"))
	if err != nil {
		return nil, err
	}
	cfg := suiteConfig(s.repo, rtCfg, demoCfg.Models["demo"])
	s.cfg, s.demo = cfg, cfg.Models["demo"]
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("BUG: the suite's gateway config is invalid: %w", err)
	}
	if s.srv, err = gateway.New(gateway.Options{Config: cfg, Env: s.env, Log: s.log, Version: version()}); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("cannot listen for the suite's gateway: %w", err)
	}
	s.addr = ln.Addr().String()
	s.served = make(chan error, 1)
	go func() { s.served <- s.srv.Serve(ln) }()
	gln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("cannot listen for the suite's gateway's gRPC: %w", err)
	}
	s.grpcAddr = gln.Addr().String()
	s.grpcServed = make(chan error, 1)
	go func() { s.grpcServed <- s.srv.ServeGRPC(gln) }()
	return s, nil
}

// stop shuts the gateway down, closes the environment and removes the
// repository, in the reverse order of startSuite.
func (s *suite) stop() error {
	var err error
	if s.srv != nil {
		err = s.srv.Shutdown(context.Background())
		if s.served != nil {
			if serr := <-s.served; err == nil {
				err = serr
			}
		}
		if s.grpcServed != nil {
			if serr := <-s.grpcServed; err == nil {
				err = serr
			}
		}
	}
	if s.env != nil {
		s.env.Close()
	}
	if s.repo != "" {
		os.RemoveAll(s.repo)
	}
	return err
}

// writeSuiteRepository writes the demo model, also as demo_unbatched, as
// demo_drift (with its reference profile, so drift monitoring is on), and
// as versions 1 and 2 of demo_shadowed and demo_canary, and the heavy model
// under the three names its batching modes are served as.
func writeSuiteRepository(repo string) error {
	demo, err := os.ReadFile(filepath.Join("configs", "models", "demo", "1", "model.onnx"))
	if err != nil {
		return fmt.Errorf("cannot read the demo model (run the suite from the project root): %w", err)
	}
	heavy, err := heavyModel(heavySeed)
	if err != nil {
		return err
	}
	reference, err := os.ReadFile(filepath.Join("configs", "models", "demo", "1", drift.ReferenceFile))
	if err != nil {
		return fmt.Errorf("cannot read the demo model's reference profile: %w", err)
	}
	files := map[string][]byte{
		"demo/1/model.onnx": demo, "demo_unbatched/1/model.onnx": demo,
		"demo_drift/1/model.onnx": demo, "demo_drift/1/" + drift.ReferenceFile: reference,
		"demo_shadowed/1/model.onnx": demo, "demo_shadowed/2/model.onnx": demo,
		"demo_canary/1/model.onnx": demo, "demo_canary/2/model.onnx": demo,
		"heavy_off/1/model.onnx": heavy, "heavy_fixed/1/model.onnx": heavy, "heavy_auto/1/model.onnx": heavy,
	}
	for name, data := range files {
		path := filepath.Join(repo, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return fmt.Errorf("cannot write the suite's model repository: %w", err)
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			return fmt.Errorf("cannot write the suite's model repository: %w", err)
		}
	}
	return nil
}

// heavyModel is an MLP 256 -> 1024 -> 1024 -> 10 with Relu and Softmax and
// seeded random (Glorot-uniform) weights.
func heavyModel(seed uint64) ([]byte, error) {
	return mlpModel(seed, []int{256, 1024, 1024, 10})
}

// suiteConfig serves repo with the demo model as the demo config serves it,
// but for its response cache (the benchmark repeats one request, which a
// cache would answer without compute), also with a shadow and with a
// canary, and the heavy model with batching off, with a fixed delay, and
// adaptive.
func suiteConfig(repo string, rt runtime.Config, demo gateway.ModelConfig) gateway.Config {
	cfg := gateway.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	// grpc_listen turns the gRPC server on; the suite serves it on a
	// loopback listener of its own (startSuite), not on this address.
	cfg.GRPCListen = "localhost:0"
	cfg.Repository = repo
	cfg.StateDir = "" // the suite keeps nothing
	cfg.Runtime = rt
	model := func(b batcher.Config) gateway.ModelConfig {
		b = b.WithDefaults()
		return gateway.ModelConfig{ModelConfig: runtime.ModelConfig{Instances: b.Instances}, Batching: b}
	}
	demo.Cache = gateway.CacheConfig{}
	demo.Batching = demo.Batching.WithDefaults()
	demo.Instances = demo.Batching.Instances
	cfg.Models = map[string]gateway.ModelConfig{
		"demo":           demo,
		"demo_drift":     demo,
		"demo_shadowed":  shadowedDemo(demo),
		"demo_canary":    canaryDemo(demo),
		"demo_unbatched": model(batcher.Config{Instances: demo.Batching.Instances}),
		"heavy_off":      model(batcher.Config{MaxQueueSize: heavyQueueSize}),
		"heavy_fixed": model(batcher.Config{MaxBatchSize: heavyMaxBatch, MaxQueueSize: heavyQueueSize,
			MaxQueueDelay: batcher.Delay{Duration: heavyFixedDelay}}),
		"heavy_auto": model(batcher.Config{MaxBatchSize: heavyMaxBatch, MaxQueueSize: heavyQueueSize,
			MaxQueueDelay: batcher.Delay{Auto: true}, LatencyTarget: heavyTarget}),
	}
	return cfg
}

// shadowedDemo is the demo section serving both versions, 1 as the
// primary and 2 as a shadow of every request.
func shadowedDemo(demo gateway.ModelConfig) gateway.ModelConfig {
	demo.VersionPolicy = runtime.VersionPolicy{All: true}
	demo.Routing = router.Config{Split: map[string]int{"1": 1}, Shadow: []router.Shadow{{Version: "2", Percent: 100}},
		ShadowMaxInFlight: shadowMaxInFlight}
	return demo
}

// request builds a one-row request for model from its metadata, its
// tensors as JSON numbers or as binary data.
func (s *suite) request(model string, binary bool) (bench.Request, error) {
	doc, err := bench.FetchMetadata(s.addr, model, "", 10*time.Second)
	if err != nil {
		return bench.Request{}, err
	}
	inputs, err := bench.ParseMetadata(doc)
	if err != nil {
		return bench.Request{}, err
	}
	p, err := bench.GenerateRequest(inputs, 1, 1, binary)
	if err != nil {
		return bench.Request{}, err
	}
	r := bench.Request{Addr: s.addr, Path: "/v2/models/" + model + "/infer"}
	p.Into(&r)
	return r, nil
}

// ceiling runs the closed-loop load of r against an echo server answering
// what the gateway answers r.
func (s *suite) ceiling(ctx context.Context, name string, r bench.Request, conns int) (*bench.Result, error) {
	echo, err := s.echo(name, &r)
	if err != nil {
		return nil, err
	}
	defer echo.Close()
	return s.load(ctx, name, r, conns, 0, s.opts.duration), nil
}

// echo starts an echo server answering what the gateway answers r, and
// points r at it. The caller closes the server.
func (s *suite) echo(name string, r *bench.Request) (*bench.EchoServer, error) {
	answer, err := bench.Capture(*r, 10*time.Second)
	if err != nil {
		return nil, err
	}
	if answer.StatusCode != 200 {
		return nil, fmt.Errorf("the gateway answered the %s request with %d: %s", name, answer.StatusCode, answer.Body)
	}
	echo, err := bench.StartEchoServer(answer)
	if err != nil {
		return nil, err
	}
	r.Addr = echo.Addr
	return echo, nil
}

// pairs measures base and other in n interleaved pairs of closed-loop runs
// over conns connections, each a quarter of the suite's duration, so that a
// drift of the machine's speed during the suite falls on both sides alike,
// and returns the runs and the pairs' ratios of ok req/s other / base, sorted.
func (s *suite) pairs(ctx context.Context, n, conns int, baseName string, base bench.Request, otherName string, other bench.Request) (
	runs []*bench.Result, ratios []float64) {
	for i := range n {
		a := s.load(ctx, fmt.Sprintf("%s (%d)", baseName, i+1), base, conns, 0, s.opts.duration/4)
		b := s.load(ctx, fmt.Sprintf("%s (%d)", otherName, i+1), other, conns, 0, s.opts.duration/4)
		runs = append(runs, a, b)
		r := 0.0 // a base that answered nothing is a failed pair, not a win
		if a.OKPerSec > 0 {
			r = b.OKPerSec / a.OKPerSec
		}
		ratios = append(ratios, r)
	}
	slices.Sort(ratios)
	return runs, ratios
}

// load runs one measurement, records it and says how it went on stderr.
// A run that fails to start is a bug in the suite.
func (s *suite) load(ctx context.Context, name string, r bench.Request, conns int, rate float64, d time.Duration) *bench.Result {
	res, err := bench.Run(ctx, bench.Options{Name: name, Request: r, Connections: conns, Rate: rate,
		Duration: d, Warmup: s.opts.warmup, Progress: s.opts.progress})
	if err != nil {
		panic("BUG: the suite built an invalid run: " + err.Error())
	}
	s.rep.Runs = append(s.rep.Runs, res)
	fmt.Fprintf(os.Stderr, "%-44s %8.0f ok req/s  %8.0f rows/s  p50 %-9s p99 %-9s errors %d\n",
		name, res.OKPerSec, res.RowsPerSec, res.Latency.P50, res.Latency.P99, res.ErrorCount())
	return res
}

// compute measures the compute ceiling of the model in dir.
func (s *suite) compute(ctx context.Context, dir string) (*bench.ComputeResult, error) {
	mv, err := s.env.LoadModelVersion(dir, "heavy", 1, runtime.ModelConfig{})
	if err != nil {
		return nil, err
	}
	defer mv.Close()
	res, err := bench.MeasureCompute(ctx, mv, bench.ComputeOptions{
		Duration: max(s.opts.duration/5, 500*time.Millisecond), Seed: 1, Progress: s.opts.progress})
	if err != nil {
		return nil, err
	}
	s.rep.Compute = res
	fmt.Fprintf(os.Stderr, "%-44s %8.0f rows/s at batch %d\n", "heavy: compute ceiling", res.Best.RowsPerSec, res.Best.Batch)
	return res, nil
}
