package bench

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/infergate/infergate/runtime"
)

// TestMeasureCompute runs the demo model in-process. It is the only test of
// the package that opens ONNX Runtime, of which a process has one.
func TestMeasureCompute(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	env, err := runtime.NewEnvironment(runtime.Config{Providers: []string{runtime.ProviderCPU}, IntraOpThreads: 1}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer env.Close()
	mv, err := env.LoadModelVersion("../configs/models/demo/1", "demo", 1, runtime.ModelConfig{Instances: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer mv.Close()

	res, err := MeasureCompute(context.Background(), mv, ComputeOptions{BatchSizes: []int{1, 8}, Duration: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.Model != "demo" || res.Version != "1" || res.Concurrency != 2 || len(res.Points) != 2 {
		t.Fatalf("got %+v, want demo version 1, 2 at once, 2 points", res)
	}
	for _, p := range res.Points {
		if p.Runs < 1 || p.RowsPerSec <= 0 || p.Run.Count != uint64(p.Runs) {
			t.Errorf("batch %d: %d runs, %g rows/s, %d latencies; want some of each", p.Batch, p.Runs, p.RowsPerSec, p.Run.Count)
		}
	}
	if best, ok := res.Point(res.Best.Batch); !ok || best.RowsPerSec != res.Best.RowsPerSec {
		t.Errorf("best point %+v is not among the points", res.Best)
	}
	if ComputeTable(res) == "" {
		t.Error("empty compute table")
	}

	res, err = MeasureCompute(context.Background(), mv, ComputeOptions{BatchSizes: []int{MaxComputeBatch}, Duration: 50 * time.Millisecond})
	if err != nil || len(res.Points) != 1 || res.Points[0].Runs < 1 {
		t.Fatalf("batch size %d: got %+v, %v; want one point with runs", MaxComputeBatch, res, err)
	}
	_, err = MeasureCompute(context.Background(), mv, ComputeOptions{BatchSizes: []int{8, MaxComputeBatch + 1}})
	if err == nil || !strings.Contains(err.Error(), "batch size 1025") {
		t.Fatalf("batch size %d: got %v, want an error naming it", MaxComputeBatch+1, err)
	}
}
