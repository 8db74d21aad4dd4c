package main

import (
	"strings"
	"testing"

	"github.com/infergate/infergate/gateway"
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
	if heavyConnections > heavyQueueSize || overloadConnections <= heavyQueueSize+heavyMaxBatch {
		t.Error("closed-loop runs must fit in the queue, and the overload run must overflow it")
	}
}
