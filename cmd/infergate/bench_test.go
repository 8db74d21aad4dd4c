package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/infergate/infergate/bench"
	"github.com/infergate/infergate/gateway"
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
