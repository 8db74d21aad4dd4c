package batcher

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// busyRunner spins for a fixed time per batch plus a little per row, like a
// model whose batches cost less per row than single requests.
type busyRunner struct{ perBatch, perRow time.Duration }

func (r busyRunner) Run(rows int, in, out [][]byte) error {
	end := time.Now().Add(r.perBatch + time.Duration(rows)*r.perRow)
	for time.Now().Before(end) {
	}
	return nil
}

func BenchmarkDo(b *testing.B) {
	for _, cfg := range []Config{
		{},
		{MaxBatchSize: 32},
		{MaxBatchSize: 32, MaxQueueDelay: Delay{Duration: 100 * time.Microsecond}},
	} {
		for _, compute := range []busyRunner{{}, {perBatch: 20 * time.Microsecond, perRow: time.Microsecond}} {
			name := fmt.Sprintf("max_batch_size=%d/max_queue_delay=%s/compute=%s+%s·rows", cfg.MaxBatchSize, cfg.MaxQueueDelay, compute.perBatch, compute.perRow)
			b.Run(name, func(b *testing.B) {
				benchmarkDo(b, cfg, compute)
			})
		}
	}
}

func benchmarkDo(b *testing.B, cfg Config, runner Runner) {
	cfg.MaxQueueSize = 1 << 16
	layout := Layout{InputRowBytes: []int{64}, OutputRowBytes: []int{16}}
	batcher, err := New(cfg, layout, []Runner{runner, runner}, fmt.Sprintf("bench=%q", b.Name()))
	if err != nil {
		b.Fatal(err)
	}
	defer batcher.Close()
	b.ReportAllocs()
	b.ResetTimer()
	// Many requests in flight, as behind an HTTP front end, so that
	// batches can form even on a machine with few CPUs.
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		in := make([]byte, 64)
		ctx := context.Background()
		for pb.Next() {
			r := AcquireRequest()
			r.Rows = 1
			r.Inputs = append(r.Inputs, in)
			if err := batcher.Do(ctx, r); err != nil {
				b.Error(err)
			}
			ReleaseRequest(r)
		}
	})
	executions := batcher.metrics.executions.Get()
	if executions > 0 {
		b.ReportMetric(float64(batcher.metrics.rows.Get())/float64(executions), "rows/batch")
	}
}
