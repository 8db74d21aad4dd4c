//go:build !race

package gateway

import (
	"strings"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/infergate/infergate/batcher"
)

// TestInferAllocationsCacheHits: answers from the response cache, counted
// in the version's statistics, allocate nothing either
// (TestInferAllocations covers computed requests).
func TestInferAllocationsCacheHits(t *testing.T) {
	cfg := testConfig(t)
	cfg.Models["demo"] = ModelConfig{Batching: batcher.Config{MaxBatchSize: 16, Instances: 2}, Cache: CacheConfig{Entries: 16}}
	srv, _ := startServer(t, cfg)
	var ctx fasthttp.RequestCtx
	var body strings.Reader
	serve := func() { serveDemoRequest(t, srv, &ctx, &body) }
	for range 100 {
		serve()
	}
	if n := testing.AllocsPerRun(200, serve); n != 0 {
		t.Fatalf("an infer request answered from the cache allocates %v times, want 0", n)
	}
	st := srv.acquireState()
	defer st.release()
	if hits := st.models["demo"].versions[0].metrics.stats.cacheHit.count.Load(); hits < 300 {
		t.Fatalf("%d cache hits counted, want every request after the first", hits)
	}
}
