package bench

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/infergate/infergate/runtime"
)

// ComputeOptions configure MeasureCompute.
type ComputeOptions struct {
	// BatchSizes are measured in order (default 1, 2, 4, ..., 256), each
	// at most MaxComputeBatch.
	BatchSizes []int
	// Duration is how long each batch size runs (default 1s), after one
	// warm-up run.
	Duration time.Duration
	// Concurrency is the number of goroutines calling Run at once
	// (default the version's instances).
	Concurrency int
	// Seed draws the input values.
	Seed uint64
	// Progress, when set, shows a progress bar there.
	Progress io.Writer
}

// DefaultBatchSizes are the batch sizes MeasureCompute tries by default.
var DefaultBatchSizes = []int{1, 2, 4, 8, 16, 32, 64, 128, 256}

// MaxComputeBatch is the largest batch size MeasureCompute accepts: enough
// to fill a large GPU, small enough that a batch of a wide model's random
// inputs stays a few hundred MiB.
const MaxComputeBatch = 1024

// ComputePoint is what one batch size achieved.
type ComputePoint struct {
	Batch      int     `json:"batch"`
	Runs       int64   `json:"runs"`
	RowsPerSec float64 `json:"rows_per_s"`
	// Run is the latency of one ModelVersion.Run call.
	Run Latency `json:"run_latency"`
}

// ComputeResult is the compute ceiling: the model run in-process, without
// HTTP or batching, at each batch size.
type ComputeResult struct {
	Model   string `json:"model"`
	Version string `json:"version"`
	// Provider is the execution provider the model ran on, cpu or cuda,
	// when the caller knows it.
	Provider    string         `json:"provider,omitempty"`
	Concurrency int            `json:"concurrency"`
	Points      []ComputePoint `json:"points"`
	// Best is the point with the most rows per second.
	Best ComputePoint `json:"best"`
}

// Point returns the point of batch size batch, if it was measured.
func (r *ComputeResult) Point(batch int) (ComputePoint, bool) {
	for _, p := range r.Points {
		if p.Batch == batch {
			return p, true
		}
	}
	return ComputePoint{}, false
}

// MeasureCompute runs mv on random inputs at each batch size for
// o.Duration and reports rows per second. A model whose first input has a
// fixed first dimension is measured at that size only.
func MeasureCompute(ctx context.Context, mv *runtime.ModelVersion, o ComputeOptions) (*ComputeResult, error) {
	inputs := mv.Inputs()
	if len(inputs) == 0 {
		return nil, fmt.Errorf("bench: model %q has no inputs", mv.Model)
	}
	sizes := o.BatchSizes
	if len(sizes) == 0 {
		sizes = DefaultBatchSizes
	}
	for _, b := range sizes {
		if b < 1 || b > MaxComputeBatch {
			return nil, fmt.Errorf("bench: cannot measure model %q at batch size %d: batch sizes go from 1 to %d", mv.Model, b, MaxComputeBatch)
		}
	}
	if s := inputs[0].Shape; len(s) == 0 || s[0] != runtime.Dynamic {
		sizes = []int{1}
		if len(s) > 0 {
			sizes = []int{int(s[0])}
		}
	}
	if o.Duration <= 0 {
		o.Duration = time.Second
	}
	if o.Concurrency <= 0 {
		o.Concurrency = mv.Instances()
	}
	res := &ComputeResult{Model: mv.Model, Version: mv.VersionName, Concurrency: o.Concurrency}
	var bar *progressbar.ProgressBar
	if o.Progress != nil {
		bar = progressbar.NewOptions(len(sizes), progressbar.OptionSetWriter(o.Progress),
			progressbar.OptionSetWidth(30), progressbar.OptionClearOnFinish(), progressbar.OptionShowCount())
		defer bar.Finish()
	}
	for _, batch := range sizes {
		if bar != nil {
			bar.Describe(fmt.Sprintf("compute %-20s batch %4d", mv.Model, batch))
		}
		p, err := measureBatch(ctx, mv, batch, &o)
		if err != nil {
			return nil, err
		}
		res.Points = append(res.Points, p)
		if p.RowsPerSec > res.Best.RowsPerSec {
			res.Best = p
		}
		if bar != nil {
			bar.Add(1)
		}
		if ctx.Err() != nil {
			break
		}
	}
	return res, nil
}

// measureBatch runs batches of one size from o.Concurrency goroutines.
func measureBatch(ctx context.Context, mv *runtime.ModelVersion, batch int, o *ComputeOptions) (ComputePoint, error) {
	var (
		hist    Histogram
		runs    atomic.Int64
		wg      sync.WaitGroup
		errOnce sync.Once
		runErr  error
	)
	type scratch struct{ ins, outs []runtime.Tensor }
	work := make([]scratch, o.Concurrency)
	for g := range work {
		ins := make([]runtime.Tensor, len(mv.Inputs()))
		for i, info := range mv.Inputs() {
			ins[i] = RandomTensor(info, batch, o.Seed+uint64(i)+uint64(g)<<32)
		}
		work[g] = scratch{ins, make([]runtime.Tensor, len(mv.Outputs()))}
		// One warm-up run sizes the output buffers and ORT's for this batch.
		if err := mv.Run(ctx, work[g].ins, work[g].outs); err != nil {
			return ComputePoint{}, fmt.Errorf("cannot run model %q at batch size %d: %w", mv.Model, batch, err)
		}
	}
	start := time.Now()
	deadline := start.Add(o.Duration)
	for _, w := range work {
		wg.Go(func() {
			for ctx.Err() == nil {
				t0 := time.Now()
				if !t0.Before(deadline) {
					return
				}
				if err := mv.Run(ctx, w.ins, w.outs); err != nil {
					errOnce.Do(func() { runErr = err })
					return
				}
				hist.Record(time.Since(t0))
				runs.Add(1)
			}
		})
	}
	wg.Wait()
	if runErr != nil && ctx.Err() == nil {
		return ComputePoint{}, fmt.Errorf("cannot run model %q at batch size %d: %w", mv.Model, batch, runErr)
	}
	elapsed := time.Since(start).Seconds()
	p := ComputePoint{Batch: batch, Runs: runs.Load(), Run: hist.Summary()}
	if elapsed > 0 {
		p.RowsPerSec = float64(p.Runs) * float64(batch) / elapsed
	}
	return p, nil
}
