package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/infergate/infergate/bench"
	"github.com/infergate/infergate/gateway"
	"github.com/infergate/infergate/gateway/v2codec/inferencepb"
	"github.com/infergate/infergate/router"
	"github.com/infergate/infergate/runtime"
)

func TestBenchFlagParsing(t *testing.T) {
	hp := func(in, want, wantErr string) {
		t.Helper()
		got, err := hostPort(in)
		if got != want || (err == nil) != (wantErr == "") || (err != nil && !strings.Contains(err.Error(), wantErr)) {
			t.Errorf("hostPort(%q) = %q, %v; want %q, error %q", in, got, err, want, wantErr)
		}
	}
	hp("http://127.0.0.1:8080", "127.0.0.1:8080", "")
	hp("http://localhost", "localhost:80", "")
	hp("https://example.com", "", "want http://host:port")
	hp("127.0.0.1:8080", "", "want http://host:port")
	ba := func(in string, grpcCalls bool, want string) {
		t.Helper()
		got, err := benchAddr(in, grpcCalls)
		if got != want || (err == nil) != (want != "") {
			t.Errorf("benchAddr(%q, %v) = %q, %v; want %q", in, grpcCalls, got, err, want)
		}
	}
	ba("", false, "127.0.0.1:8080")
	ba("", true, "127.0.0.1:8081")
	ba("grpc://10.0.0.1:9000", true, "10.0.0.1:9000")
	ba("10.0.0.1:9000", true, "10.0.0.1:9000")
	ba("http://10.0.0.1:9000", true, "")
	ba("grpc://10.0.0.1", true, "")
	if err := benchCmd([]string{"--protocol", "grpc", "--ceiling", "http"}); err == nil || !strings.Contains(err.Error(), "--ceiling http") {
		t.Errorf("--protocol grpc --ceiling http: %v", err)
	}
	if err := benchCmd([]string{"--protocol", "soap"}); err == nil {
		t.Error("--protocol soap accepted")
	}

	if r, err := parseRates("1000, 2500.5,3000"); err != nil || len(r) != 3 || r[1] != 2500.5 {
		t.Errorf("parseRates: got %v, %v", r, err)
	}
	for _, bad := range []string{"1000,", "x", "-5", "0"} {
		if _, err := parseRates(bad); err == nil {
			t.Errorf("parseRates(%q) accepted", bad)
		}
	}
	if n, err := parseInts("1,2,64"); err != nil || len(n) != 3 || n[2] != 64 {
		t.Errorf("parseInts: got %v, %v", n, err)
	}

	var h headerFlag
	if err := h.Set("Accept-Encoding: zstd"); err != nil || h["Accept-Encoding"] != "zstd" {
		t.Errorf("header flag: got %v, %v", h, err)
	}
	if err := h.Set("no colon"); err == nil {
		t.Error("header flag accepted a header without a colon")
	}
}

func TestSuiteSetup(t *testing.T) {
	onnx, err := heavyModel(heavySeed)
	if err != nil || len(onnx) < 256*1024*4 {
		t.Fatalf("heavy model: %d bytes, %v; want its weights inside", len(onnx), err)
	}
	again, _ := heavyModel(heavySeed)
	if string(again) != string(onnx) {
		t.Error("the heavy model is not reproducible from its seed")
	}
	demo := gateway.ModelConfig{}
	demo.Cache.Entries = 1024
	cfg := suiteConfig(t.TempDir(), runtime.DefaultConfig(), demo)
	if err := cfg.Validate(); err != nil {
		t.Fatalf("the suite's config is invalid: %v", err)
	}
	if cfg.Models["demo"].Cache.Entries != 0 {
		t.Error("the suite must serve the demo model without its response cache")
	}
	if b := cfg.Models["heavy_auto"].Batching; !b.MaxQueueDelay.Auto || b.LatencyTarget != heavyTarget {
		t.Errorf("heavy_auto batching: %+v", b)
	}
	if c := cfg.Models["demo_canary"].Routing.Canary; c == nil || c.Version != "2" || c.Interval < time.Hour {
		t.Errorf("demo_canary must run a canary of version 2 that stays at its first step: %+v", c)
	}
	if heavyConnections > heavyQueueSize || overloadConnections <= heavyQueueSize+heavyMaxBatch {
		t.Error("closed-loop runs must fit in the queue, and the overload run must overflow it")
	}
}

// TestSuiteFleet starts the suite's fleet, finds its follower, sends it a
// request and sees the request's count in the follower's next report;
// then stops the fleet, which leaves no state_dir (and, by TestMain, no
// goroutine) behind.
func TestSuiteFleet(t *testing.T) {
	t.Chdir("../..") // the suite runs from the project root
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	repo := t.TempDir()
	if err := writeSuiteRepository(repo); err != nil {
		t.Fatal(err)
	}
	rtCfg := runtime.DefaultConfig()
	rtCfg.Providers = []string{runtime.ProviderCPU}
	env, err := runtime.NewEnvironment(rtCfg, log)
	if err != nil {
		t.Fatal(err)
	}
	defer env.Close()
	demo := gateway.ModelConfig{}
	cfg := suiteConfig(repo, rtCfg, demo)
	f, err := startSuiteFleet(cfg, env, log)
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			f.stop()
		}
	}()
	if f.leader == nil || f.follower == nil || f.leader == f.follower {
		t.Fatalf("leader %v, follower %v", f.leader, f.follower)
	}
	var routing struct {
		Canary *router.Canary `json:"canary"`
	}
	if err := f.admin(f.leader, "/admin/models/demo_canary/routing", &routing); err != nil || routing.Canary == nil ||
		routing.Canary.Phase != router.PhaseProgressing {
		t.Fatalf("the leader's canary: %+v, %v", routing.Canary, err)
	}
	doc, err := bench.FetchMetadata(f.follower.addr, "demo_canary", "", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	inputs, err := bench.ParseMetadata(doc)
	if err != nil {
		t.Fatal(err)
	}
	p, err := bench.GenerateRequest(inputs, 1, 1, false)
	if err != nil {
		t.Fatal(err)
	}
	req := bench.Request{Addr: f.follower.addr, Path: "/v2/models/demo_canary/infer"}
	p.Into(&req)
	const sent = 20
	for range sent {
		if a, err := bench.Capture(req, 10*time.Second); err != nil || a.StatusCode != 200 {
			t.Fatalf("the follower answered %+v, %v", a, err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for f.reported[0].Load()+f.reported[1].Load() < sent {
		if time.Now().After(deadline) {
			t.Fatalf("the follower's reports carried %d and %d requests' counts, want %d in all",
				f.reported[0].Load(), f.reported[1].Load(), sent)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := f.reported[0].Load() + f.reported[1].Load(); got != sent {
		t.Errorf("the follower reported %d requests, sent %d", got, sent)
	}
	dir := f.dir
	stopped = true
	if err := f.stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the fleet's state_dir is still there: %v", err)
	}
}

// TestSuiteStateWrites runs the state writes in short runs: every run
// writes, none fails, and the table names each.
func TestSuiteStateWrites(t *testing.T) {
	out := filepath.Join(t.TempDir(), "RESULTS.md")
	s := &suite{opts: suiteOptions{out: out, duration: 400 * time.Millisecond, warmup: 200 * time.Millisecond},
		log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if err := s.stateWrites(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(s.rep.Runs) != 2*len(stateSyncs) {
		t.Fatalf("%d runs, want %d", len(s.rep.Runs), 2*len(stateSyncs))
	}
	for _, r := range s.rep.Runs {
		if r.OK == 0 || r.ErrorCount() != 0 || r.Latency.P50 <= 0 {
			t.Errorf("%s: %d writes, errors %v (%s), p50 %s", r.Name, r.OK, r.Errors, r.FirstError, r.Latency.P50)
		}
		if !strings.Contains(s.md.String(), "| "+r.Name+" |") {
			t.Errorf("the table lacks %s", r.Name)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(out), ".state-writes-*")); len(left) > 0 {
		t.Errorf("stores left behind: %v", left)
	}
	t.Logf("\n%s", s.md.String())
}

// TestSuiteGRPCCeiling runs the suite's gRPC rows in short runs against
// the suite's gateway: every run answers and none fails; then the gRPC load
// generator counts the NotFound answers to calls for a model not served.
func TestSuiteGRPCCeiling(t *testing.T) {
	t.Chdir("../..") // the suite runs from the project root
	s, err := startSuite(suiteOptions{out: filepath.Join(t.TempDir(), "RESULTS.md"),
		duration: 400 * time.Millisecond, warmup: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := s.stop(); err != nil {
			t.Error(err)
		}
	}()
	if err := s.grpcCeiling(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(s.rep.Runs) != 2*ceilingPairs {
		t.Fatalf("%d runs, want %d", len(s.rep.Runs), 2*ceilingPairs)
	}
	for _, r := range s.rep.Runs {
		if r.OK == 0 || r.ErrorCount() != 0 || r.Latency.P50 <= 0 {
			t.Errorf("%s: %d ok, errors %v (%s), p50 %s", r.Name, r.OK, r.Errors, r.FirstError, r.Latency.P50)
		}
	}
	if len(s.checks) != 1 || !strings.Contains(s.md.String(), "| demo: gRPC ceiling (1) |") {
		t.Errorf("checks %+v; table:\n%s", s.checks, s.md.String())
	}
	t.Logf("\n%s\n%+v", s.md.String(), s.checks)

	req, err := benchGRPCRequest(s.grpcAddr, "demo", "", 2, 1, true, 10*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	var msg inferencepb.ModelInferRequest
	if err := proto.Unmarshal(req.Body, &msg); err != nil || len(msg.RawInputContents) != len(msg.Inputs) || msg.Inputs[0].Shape[0] != 2 {
		t.Fatalf("the --binary request %v carries no raw contents of 2 rows: %v", &msg, err)
	}
	msg.ModelName = "missing"
	if req.Body, err = proto.Marshal(&msg); err != nil {
		t.Fatal(err)
	}
	res, err := bench.Run(context.Background(), bench.Options{Request: req, Connections: 4, Duration: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.OK != 0 || res.Errors["NotFound"] == 0 || res.Requests != res.Errors["NotFound"] {
		t.Fatalf("calls for a missing model: %d answers, %d ok, errors %v (%s); want only NotFound", res.Requests, res.OK, res.Errors, res.FirstError)
	}

	// The command line: the gateway and the gRPC ceiling, open loop.
	out := filepath.Join(t.TempDir(), "report.json")
	if err := benchCmd([]string{"--protocol", "grpc", "--url", "grpc://" + s.grpcAddr, "--model", "demo", "--rate", "300",
		"--duration", "200ms", "--warmup", "0s", "--ceiling", "grpc", "--quiet", "--json", out}); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var rep bench.Report
	if err := json.Unmarshal(data, &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Runs) != 2 || rep.Runs[0].Name != "grpc ceiling @ 300/s" || rep.Runs[1].Name != "demo @ 300/s" {
		t.Fatalf("runs %+v, want the gRPC ceiling's and the gateway's", rep.Runs)
	}
	for _, r := range rep.Runs {
		if r.OK < 20 || r.ErrorCount() != 0 {
			t.Errorf("%s: %d ok, errors %v (%s)", r.Name, r.OK, r.Errors, r.FirstError)
		}
	}
}
