package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/infergate/infergate/bench"
	"github.com/infergate/infergate/runtime"
)

// benchUsage is the usage text of `infergate bench`.
const benchUsage = `Usage:
  infergate bench [--protocol rest|grpc] [--url U] [--model M] [--payload F | --rows N [--binary]] [--rate R | --rates R,R,...]
                  [--connections N] [--duration D] [--warmup D] [--ceiling http|grpc|compute]
                  [--providers cuda,cpu] [--cuda-tf32] [--batch-sizes 1,2,...,1024]
                  [--json F] [--markdown F] [--svg F] [--quiet]
  infergate bench --suite [--out bench/RESULTS.md] [--drift-pairs N | --score] [--duration D] [--warmup D] [--quiet]
  infergate bench --drift-detection [--out bench/DRIFT-DETECTION.md] [--quick] [--quiet]

Without --rate it runs closed loop (--connections each send the next request
once the last is answered); with --rate it runs open loop at that many
requests per second, and a request that has to wait for a free connection
counts that wait in its latency, so queueing is not hidden. --rates sweeps
several rates and draws the latency-throughput curve (--svg).

--protocol grpc sends ModelInfer calls to the gRPC address --url
(grpc://host:port), typed contents or, with --binary, raw_input_contents,
over at most 8 connections shared by the --connections workers;
--ceiling grpc measures the same load against an in-process gRPC server
answering the captured message.

--ceiling compute runs the model in-process at each of --batch-sizes (at
most 1024) on the first usable provider of --providers; --providers cuda
alone refuses to fall back to the CPU.

--drift-detection measures how often the drift decision catches shifted
windows and flags clean ones, against scipy's KS with Bonferroni (run by
/usr/bin/python3, which needs python3-scipy and python3-sklearn).

Flags:
`

func benchCmd(args []string) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), benchUsage)
		fs.PrintDefaults()
	}
	suite := fs.Bool("suite", false, "run the standard suite against an in-process gateway and write --out")
	driftPairs := fs.Int("drift-pairs", 0, "--suite: measure only the drift overhead, in this many interleaved off/on pairs")
	scoreOnly := fs.Bool("score", false, "--suite: measure only batch scoring (infergate score on files of 1M and 5M rows)")
	out := fs.String("out", "", "--suite: Markdown results file, default bench/RESULTS.md (a JSON file and an SVG plot are written beside it); --drift-detection: default bench/DRIFT-DETECTION.md (a JSON file beside it)")
	driftDetection := fs.Bool("drift-detection", false, "measure drift detection (shifted windows caught, clean ones flagged) against a scipy baseline and write --out")
	quick := fs.Bool("quick", false, "--drift-detection: a smoke run with few windows")
	protocol := fs.String("protocol", "rest", "rest (HTTP/JSON) or grpc (ModelInfer calls)")
	target := fs.String("url", "", "base URL of the Open Inference Protocol server (default http://127.0.0.1:8080, with --protocol grpc grpc://127.0.0.1:8081)")
	model := fs.String("model", "demo", "model to load")
	version := fs.String("version", "", "model version to pin (default: the server's choice)")
	payload := fs.String("payload", "", "file holding the request body (default: generated from the model's metadata)")
	rows := fs.Int("rows", 1, "rows per generated request")
	seed := fs.Uint64("seed", 1, "seed of the generated request's values")
	binaryData := fs.Bool("binary", false, "send the generated tensors as binary data after a JSON header (the binary tensor data extension), not as JSON numbers")
	var headers headerFlag
	fs.Var(&headers, "header", "extra request header as 'Name: value' (repeatable)")
	conns := fs.Int("connections", 0, fmt.Sprintf("closed loop: connections (default %d); open loop: most connections (default %d)",
		bench.DefaultClosedConnections, bench.DefaultOpenConnections))
	rate := fs.Float64("rate", 0, "open loop arrival rate in requests per second (0: closed loop)")
	rates := fs.String("rates", "", "comma-separated arrival rates for an open-loop sweep")
	duration := fs.Duration("duration", bench.DefaultDuration, "measurement time per run")
	warmup := fs.Duration("warmup", 2*time.Second, "load time before each measurement, not counted")
	timeout := fs.Duration("timeout", bench.DefaultTimeout, "time limit of one request")
	ceiling := fs.String("ceiling", "", "also measure a ceiling: http or grpc (same load against a server answering the captured bytes; grpc goes with --protocol grpc) or compute (the model in-process)")
	modelDir := fs.String("model-dir", "", "--ceiling compute: version folder holding model.onnx (default configs/models/<model>/1)")
	batchSizes := fs.String("batch-sizes", "1,2,4,8,16,32,64,128,256", fmt.Sprintf("--ceiling compute: batch sizes to try (at most %d)", bench.MaxComputeBatch))
	providers := fs.String("providers", runtime.ProviderCPU, "--ceiling compute: execution providers in order of preference (cuda, cpu); cuda alone requires the GPU")
	cudaTF32 := fs.Bool("cuda-tf32", false, "--ceiling compute: let the CUDA provider use TF32 math (runtime.cuda_tf32)")
	computeTime := fs.Duration("compute-duration", time.Second, "--ceiling compute: time per batch size")
	instances := fs.Int("instances", 1, "--ceiling compute: sessions run at once")
	threads := fs.Int("intra-op-threads", 0, "--ceiling compute: ONNX Runtime threads per session (0: its choice)")
	jsonOut := fs.String("json", "", "write the report as JSON to this file")
	mdOut := fs.String("markdown", "", "write the report as Markdown to this file")
	svgOut := fs.String("svg", "", "write the latency-throughput curve of the runs as SVG to this file")
	quiet := fs.Bool("quiet", false, "show no progress bar")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var progress io.Writer = os.Stderr
	if *quiet {
		progress = nil
	}
	command := "infergate " + strings.Join(os.Args[1:], " ")
	if *driftDetection {
		return runDetection(ctx, detectionOptions{out: cmp.Or(*out, "bench/DRIFT-DETECTION.md"), quick: *quick, progress: progress, command: command})
	}
	if *suite {
		return runSuite(ctx, suiteOptions{out: cmp.Or(*out, "bench/RESULTS.md"), duration: *duration, warmup: *warmup, progress: progress, command: command,
			driftPairs: *driftPairs, scoreOnly: *scoreOnly})
	}

	grpcCalls := false
	switch *protocol {
	case "rest":
	case "grpc":
		grpcCalls = true
	default:
		return fmt.Errorf("invalid --protocol %q: want rest or grpc", *protocol)
	}
	if (*ceiling == "http" && grpcCalls) || (*ceiling == "grpc" && !grpcCalls) {
		return fmt.Errorf("--ceiling %s does not go with --protocol %s: the http ceiling is REST's, the grpc one gRPC's", *ceiling, *protocol)
	}
	addr, err := benchAddr(*target, grpcCalls)
	if err != nil {
		return err
	}
	sweep, err := parseRates(*rates)
	if err != nil {
		return err
	}
	if len(sweep) == 0 {
		sweep = []float64{*rate}
	}
	var req bench.Request
	switch {
	case grpcCalls && *payload != "":
		return errors.New("--payload is a REST body; --protocol grpc generates its message")
	case grpcCalls:
		req, err = benchGRPCRequest(addr, *model, *version, *rows, *seed, *binaryData, *timeout, headers)
	default:
		req, err = benchRequest(addr, *model, *version, *payload, *rows, *seed, *binaryData, *timeout, headers)
	}
	if err != nil {
		return err
	}
	base := bench.Options{Request: req, Connections: *conns, Duration: *duration, Warmup: *warmup, Timeout: *timeout, Progress: progress}
	rep := &bench.Report{Command: command, Date: time.Now(), Machine: bench.ThisMachine()}

	var echo *bench.EchoServer
	switch *ceiling {
	case "":
	case "http", "grpc":
		answer, err := bench.Capture(req, *timeout)
		if err != nil {
			return err
		}
		if echo, err = bench.StartEchoServer(answer); err != nil {
			return err
		}
		defer echo.Close()
	case "compute":
		dir := *modelDir
		if dir == "" {
			dir = filepath.Join("configs", "models", *model, "1")
		}
		sizes, err := parseInts(*batchSizes)
		if err != nil {
			return fmt.Errorf("invalid --batch-sizes: %w", err)
		}
		cc := computeOptions{dir: dir, model: *model, instances: *instances, threads: *threads,
			providers: strings.Split(*providers, ","), cudaTF32: *cudaTF32,
			bench: bench.ComputeOptions{BatchSizes: sizes, Duration: *computeTime, Seed: *seed, Progress: progress}}
		if rep.Compute, err = computeCeiling(ctx, cc); err != nil {
			return err
		}
	default:
		return fmt.Errorf("invalid --ceiling %q: want http, grpc or compute", *ceiling)
	}

	for _, r := range sweep {
		o := base
		o.Rate = r
		if echo != nil {
			o.Name = runName(*ceiling+" ceiling", r)
			o.Request.Addr = echo.Addr
			res, err := bench.Run(ctx, o)
			if err != nil {
				return err
			}
			rep.Runs = append(rep.Runs, res)
			o.Request.Addr = addr
		}
		o.Name = runName(*model, r)
		res, err := bench.Run(ctx, o)
		if err != nil {
			return err
		}
		rep.Runs = append(rep.Runs, res)
		if ctx.Err() != nil {
			break
		}
	}
	return writeReport(rep, echo != nil, *jsonOut, *mdOut, *svgOut, *model)
}

// benchAddr returns the host:port of --url: an http:// base URL for REST,
// grpc://host:port or host:port for gRPC, each with its default.
func benchAddr(target string, grpcCalls bool) (string, error) {
	if !grpcCalls {
		return hostPort(cmp.Or(target, "http://127.0.0.1:8080"))
	}
	hp := strings.TrimPrefix(cmp.Or(target, "grpc://127.0.0.1:8081"), "grpc://")
	if _, _, err := net.SplitHostPort(hp); err != nil || strings.Contains(hp, "/") {
		return "", fmt.Errorf("invalid --url %q: want grpc://host:port with --protocol grpc", target)
	}
	return hp, nil
}

// runName labels a run by what it loads and how.
func runName(what string, rate float64) string {
	if rate > 0 {
		return fmt.Sprintf("%s @ %s/s", what, strconv.FormatFloat(rate, 'f', -1, 64))
	}
	return what + " closed loop"
}

// benchRequest builds the infer request: the payload file's bytes, or a
// request generated from the model's metadata, sent with headers.
func benchRequest(addr, model, version, payload string, rows int, seed uint64, binary bool, timeout time.Duration,
	headers map[string]string) (bench.Request, error) {
	path := "/v2/models/" + url.PathEscape(model)
	if version != "" {
		path += "/versions/" + url.PathEscape(version)
	}
	req := bench.Request{Addr: addr, Path: path + "/infer", Header: headers}
	if payload != "" {
		if binary {
			return req, fmt.Errorf("--binary applies to generated requests; a --payload file is sent as it is")
		}
		body, err := os.ReadFile(payload)
		if err != nil {
			return req, fmt.Errorf("cannot read the payload: %w", err)
		}
		req.Body, req.Rows = body, bench.RequestRows(body)
		return req, nil
	}
	doc, err := bench.FetchMetadata(addr, model, version, timeout)
	if err != nil {
		return req, err
	}
	inputs, err := bench.ParseMetadata(doc)
	if err != nil {
		return req, err
	}
	p, err := bench.GenerateRequest(inputs, rows, seed, binary)
	p.Into(&req)
	return req, err
}

// computeOptions say which model computeCeiling loads and how it runs it.
type computeOptions struct {
	dir, model         string
	instances, threads int
	// providers are the execution providers in order of preference; empty
	// means the CPU. Only "cuda" makes the GPU required.
	providers []string
	cudaTF32  bool
	bench     bench.ComputeOptions
}

// computeCeiling loads the model in o.dir in-process and measures it.
func computeCeiling(ctx context.Context, o computeOptions) (*bench.ComputeResult, error) {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	cfg := runtime.DefaultConfig()
	cfg.IntraOpThreads = o.threads
	if len(o.providers) > 0 {
		cfg.Providers = o.providers
	}
	cfg.RequireGPU = slices.Equal(cfg.Providers, []string{runtime.ProviderCUDA})
	cfg.CUDATF32 = o.cudaTF32
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid --providers %q: %w", strings.Join(o.providers, ","), err)
	}
	env, err := runtime.NewEnvironment(cfg, log)
	if err != nil {
		return nil, err
	}
	defer env.Close()
	mv, err := env.LoadModelVersion(o.dir, o.model, 1, runtime.ModelConfig{Instances: o.instances})
	if err != nil {
		return nil, err
	}
	defer mv.Close()
	res, err := bench.MeasureCompute(ctx, mv, o.bench)
	if res != nil {
		res.Provider = env.Provider()
	}
	return res, err
}

// writeReport prints the Markdown report, and the ratios to the HTTP (or
// gRPC) ceiling when there is one, and writes the files asked for.
func writeReport(rep *bench.Report, withCeiling bool, jsonOut, mdOut, svgOut, model string) error {
	if err := rep.WriteMarkdown(os.Stdout); err != nil {
		return err
	}
	if withCeiling {
		for i := 0; i+1 < len(rep.Runs); i += 2 {
			ceil, got := rep.Runs[i], rep.Runs[i+1]
			label := "HTTP ceiling"
			if strings.HasPrefix(ceil.Name, "grpc ceiling") {
				label = "gRPC ceiling"
			}
			if ceil.OKPerSec > 0 {
				fmt.Printf("%s: %.2f of the %s (%.0f / %.0f ok req/s)\n", got.Name, got.OKPerSec/ceil.OKPerSec, label, got.OKPerSec, ceil.OKPerSec)
			}
		}
	}
	write := func(path string, fn func(io.Writer) error) error {
		if path == "" {
			return nil
		}
		f, err := os.Create(path)
		if err != nil {
			return fmt.Errorf("cannot write the report: %w", err)
		}
		if err := fn(f); err != nil {
			f.Close()
			return fmt.Errorf("cannot write %q: %w", path, err)
		}
		return f.Close()
	}
	var gateway []*bench.Result
	for _, r := range rep.Runs {
		if !strings.HasPrefix(r.Name, "http ceiling") && !strings.HasPrefix(r.Name, "grpc ceiling") {
			gateway = append(gateway, r)
		}
	}
	return errors.Join(
		write(jsonOut, func(w io.Writer) error { return bench.WriteJSON(w, rep) }),
		write(mdOut, rep.WriteMarkdown),
		write(svgOut, func(w io.Writer) error {
			return bench.WriteLatencyCurve(w, "latency vs throughput: "+model, gateway)
		}),
	)
}

// hostPort returns the host:port of an http:// base URL.
func hostPort(base string) (string, error) {
	u, err := url.Parse(base)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		return "", fmt.Errorf("invalid --url %q: want http://host:port", base)
	}
	if u.Port() == "" {
		return u.Host + ":80", nil
	}
	return u.Host, nil
}

func parseRates(s string) ([]float64, error) {
	if s == "" {
		return nil, nil
	}
	var out []float64
	for _, part := range strings.Split(s, ",") {
		r, err := strconv.ParseFloat(strings.TrimSpace(part), 64)
		if err != nil || r <= 0 {
			return nil, fmt.Errorf("invalid --rates %q: want positive numbers separated by commas", s)
		}
		out = append(out, r)
	}
	return out, nil
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, part := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(part))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive integer", part)
		}
		out = append(out, n)
	}
	return out, nil
}

// headerFlag collects repeated --header 'Name: value' flags.
type headerFlag map[string]string

func (h *headerFlag) String() string { return fmt.Sprint(map[string]string(*h)) }

func (h *headerFlag) Set(s string) error {
	name, value, ok := strings.Cut(s, ":")
	if !ok || strings.TrimSpace(name) == "" {
		return fmt.Errorf("want 'Name: value', got %q", s)
	}
	if *h == nil {
		*h = make(headerFlag)
	}
	(*h)[strings.TrimSpace(name)] = strings.TrimSpace(value)
	return nil
}
