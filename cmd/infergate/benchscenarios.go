package main

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/infergate/infergate/bench"
)

// run measures every scenario in turn, appending to the report.
func (s *suite) run(ctx context.Context) error {
	demo, err := s.request("demo", false)
	if err != nil {
		return err
	}
	// The heavy model's 256 floats per row go as binary tensor data, as
	// clients send large tensors; the JSON form is measured once beside it.
	heavy, err := s.request("heavy_fixed", true)
	if err != nil {
		return err
	}
	heavyJSON, err := s.request("heavy_fixed", false)
	if err != nil {
		return err
	}
	at := func(r bench.Request, model string) bench.Request {
		r.Path = "/v2/models/" + model + "/infer"
		return r
	}
	if s.opts.driftPairs > 0 {
		s.driftOverhead(ctx, demo, at(demo, "demo_drift"), s.opts.driftPairs)
		return ctx.Err()
	}
	if s.opts.scoreOnly {
		return s.scoring(ctx)
	}

	// ctx is checked between scenarios, so that an interrupted suite stops
	// instead of writing half-measured results.

	// 1. The demo model against the HTTP ceiling, in interleaved pairs.
	ceilingReq := demo
	echo, err := s.echo("demo: HTTP ceiling", &ceilingReq)
	if err != nil {
		return err
	}
	runs, ratios := s.pairs(ctx, ceilingPairs, demoConnections, "demo: HTTP ceiling", ceilingReq, "demo: gateway", demo)
	echo.Close()
	demoGateway := s.load(ctx, "demo: gateway", demo, demoConnections, 0, s.opts.duration)
	demoUnbatched := s.load(ctx, "demo: gateway, batching off", at(demo, "demo_unbatched"), demoConnections, 0, s.opts.duration)
	s.section("Demo model through the gateway vs the HTTP ceiling",
		fmt.Sprintf("Closed loop, %d connections, one row per request. The gateway serves the demo model as "+
			"configs/demo.yaml does (batching: %d instances, max_batch_size %d, max_queue_delay %s), but with the response "+
			"cache off. The HTTP ceiling is an in-process fasthttp server answering the bytes the gateway answered, without "+
			"any work. %d interleaved pairs of %s runs; the check takes the median of the pairs' ratios (gateway / ceiling): "+
			"%s. Then %s runs of the gateway with batching on and off (same instances).",
			demoConnections, s.demo.Batching.Instances, s.demo.Batching.MaxBatchSize, s.demo.Batching.MaxQueueDelay,
			ceilingPairs, s.opts.duration/4, formatRatios(ratios), s.opts.duration),
		append(runs, demoGateway, demoUnbatched)...)
	s.median("demo through the gateway vs HTTP ceiling (ok req/s, median of interleaved pairs)", ratios, 0.85)

	if err := ctx.Err(); err != nil {
		return err
	}

	// 1a. The demo model over gRPC against the gRPC ceiling.
	if err := s.grpcCeiling(ctx); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}

	// 1b. What drift monitoring of every row costs the demo model.
	s.driftOverhead(ctx, demo, at(demo, "demo_drift"), driftPairs)

	// 1c. What mirroring every request to a shadow version costs the primary.
	s.shadowOverhead(ctx, demo, at(demo, "demo_shadowed"), demoGateway.OKPerSec)

	if err := ctx.Err(); err != nil {
		return err
	}

	// 1d. A fleet's follower against the single gateway, a canary running.
	if err := s.fleetOverhead(ctx, at(demo, "demo_canary")); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}

	// 1e. What a state write costs, synced and not.
	if err := s.stateWrites(ctx); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}

	// 2. The heavy model's compute ceiling.
	compute, err := s.compute(ctx, filepath.Join(s.repo, "heavy_off", "1"))
	if err != nil {
		return err
	}
	fullBatch, ok := compute.Point(heavyMaxBatch)
	if !ok {
		return fmt.Errorf("BUG: the compute ceiling lacks batch size %d", heavyMaxBatch)
	}
	s.md.WriteString("## Compute ceiling of the heavy model\n\n")
	s.md.WriteString("MLP 256 -> 1024 -> 1024 -> 10 (Relu, Softmax), run in-process through `runtime` on one instance " +
		"with one intra-op thread, as the gateway runs it.\n\n")
	s.md.WriteString(bench.ComputeTable(compute) + "\n")

	// 3. Batching off and on, against the combined ceiling.
	heavyCeiling, err := s.ceiling(ctx, "heavy: HTTP ceiling", heavy, heavyConnections)
	if err != nil {
		return err
	}
	off := s.load(ctx, "heavy: batching off", at(heavy, "heavy_off"), heavyConnections, 0, s.opts.duration)
	on := s.load(ctx, "heavy: batching on (fixed delay)", heavy, heavyConnections, 0, s.opts.duration)
	// JSON bodies against binary ones in interleaved pairs: one run of the
	// heavy model against the next swings by a fifth on 2 cores.
	jsonRuns, jsonRatios := s.pairs(ctx, ceilingPairs, heavyConnections,
		"heavy: batching on, binary tensors", heavy, "heavy: batching on, JSON tensors", heavyJSON)
	var jsonRows []float64
	for i := 1; i < len(jsonRuns); i += 2 {
		jsonRows = append(jsonRows, jsonRuns[i].RowsPerSec)
	}
	slices.Sort(jsonRows)
	combined := 1 / (1/heavyCeiling.RowsPerSec + 1/compute.Best.RowsPerSec)
	s.section("Heavy model: batching off vs on",
		fmt.Sprintf("Closed loop, %d connections, one row per request, its 256 floats sent as binary tensor data after the "+
			"JSON header (%s). Batching on: max_batch_size %d, max_queue_delay %s, max_queue_size %d, one instance. "+
			"The combined ceiling 1/(1/http + 1/compute) = 1/(1/%.0f + 1/%.0f) = %.0f rows/s. Then %d interleaved pairs "+
			"of %s runs with batching on, binary bodies against the same 256 floats as JSON numbers; the JSON check takes "+
			"the median of the pairs' ratios (JSON / binary): %s, and the median JSON rows/s against the combined ceiling.",
			heavyConnections, bench.HeaderLengthHeader, heavyMaxBatch, heavyFixedDelay, heavyQueueSize, heavyCeiling.RowsPerSec,
			compute.Best.RowsPerSec, combined, ceilingPairs, s.opts.duration/4, formatRatios(jsonRatios)),
		append([]*bench.Result{heavyCeiling, off, on}, jsonRuns...)...)
	s.ratio("batching on vs the combined ceiling (rows/s)", on.RowsPerSec, combined, 0.8)
	s.ratio("batching on vs off (rows/s)", on.RowsPerSec, off.RowsPerSec, 1.8)
	s.median("batching on: JSON tensors vs binary tensors (rows/s, median of interleaved pairs)", jsonRatios, 0.85)
	s.ratio("batching on, JSON tensors vs the combined ceiling (median rows/s of the pairs' JSON runs; the HTTP ceiling of binary bodies)",
		jsonRows[len(jsonRows)/2], combined, 0.85)

	if err := ctx.Err(); err != nil {
		return err
	}

	// 4. Half of the max sustainable rate, open loop.
	maxRate := on.OKPerSec
	if maxRate <= 0 {
		return fmt.Errorf("the heavy model answered nothing with batching on: %v (%s)", on.Errors, on.FirstError)
	}
	half := s.load(ctx, "heavy: half the max rate", heavy, 0, maxRate/2, s.opts.duration)
	bound := heavyFixedDelay + 2*time.Duration(fullBatch.Run.P50)
	s.section("Heavy model at half the max sustainable rate",
		fmt.Sprintf("Open loop at %.0f req/s, half the %.0f req/s that batching on sustained above. "+
			"Bound: max_queue_delay + 2 x the full-batch (%d rows) compute p50 = %s + 2 x %s = %s.",
			maxRate/2, maxRate, heavyMaxBatch, heavyFixedDelay, fullBatch.Run.P50, bench.Millis(bound)),
		half)
	s.atMost("p99 at half the max rate", half.Latency.P99, bound)

	// 5. Adaptive vs fixed delay, at low and high load.
	fixedLow := s.load(ctx, "heavy: fixed delay, low load", heavy, 0, lowLoad*maxRate, s.opts.duration)
	autoLow := s.load(ctx, "heavy: adaptive, low load", at(heavy, "heavy_auto"), 0, lowLoad*maxRate, s.opts.duration)
	high, ratios := s.pairs(ctx, adaptivePairs, heavyConnections, "heavy: fixed delay, high load", heavy,
		"heavy: adaptive, high load", at(heavy, "heavy_auto"))
	s.section("Adaptive vs fixed delay",
		fmt.Sprintf("Adaptive: max_queue_delay auto, latency_target %s; fixed: max_queue_delay %s; otherwise as above. "+
			"Low load: open loop at %.0f req/s (%.0f%% of the max rate). High load: closed loop, %d connections, "+
			"in %d interleaved pairs of %s runs; the check takes the median of the pairs' ratios (adaptive / fixed): %s.",
			heavyTarget, heavyFixedDelay, lowLoad*maxRate, 100*lowLoad, heavyConnections, adaptivePairs,
			s.opts.duration/4, formatRatios(ratios)),
		append([]*bench.Result{fixedLow, autoLow}, high...)...)
	s.atMost("adaptive p99 at low load vs latency_target", autoLow.Latency.P99, heavyTarget)
	s.median("adaptive vs fixed delay throughput at high load (ok req/s, median of interleaved pairs)", ratios, 0.9)

	if err := ctx.Err(); err != nil {
		return err
	}

	// 6. Overload: twice the max rate, open loop.
	if err := s.overload(ctx, heavy, maxRate, fullBatch); err != nil {
		return err
	}

	if err := ctx.Err(); err != nil {
		return err
	}

	// 7. The latency-throughput curve.
	var sweep []*bench.Result
	for _, share := range sweepShares {
		sweep = append(sweep, s.load(ctx, fmt.Sprintf("heavy: sweep %.0f%%", 100*share), heavy, 0, share*maxRate, s.opts.duration/2))
	}
	s.section("Latency-throughput curve of the heavy model (fixed delay)",
		fmt.Sprintf("Open loop at %v of the max rate, %s each. The plot is [%s](%s).",
			sweepShares, s.opts.duration/2, s.svgName(), s.svgName()),
		sweep...)
	fmt.Fprintf(&s.md, "![latency vs throughput](%s)\n\n", s.svgName())
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.writeCurve(sweep); err != nil {
		return err
	}

	// 8. Batch scoring, a process of its own.
	return s.scoring(ctx)
}

// driftOverhead measures the demo model with and without drift monitoring
// of every row, in interleaved pairs of runs so that a drift of the
// machine's speed during the suite falls on both sides alike.
func (s *suite) driftOverhead(ctx context.Context, off, on bench.Request, pairs int) {
	runs, ratios := s.pairs(ctx, pairs, demoConnections, "demo: drift off", off, "demo: drift on, every row", on)
	s.section("Drift monitoring overhead on the demo model",
		fmt.Sprintf("Closed loop, %d connections, one row per request, the demo model served as above; drift on: its "+
			"reference.json beside the model, every row of every request observed (sample 1, windows of 1000 rows judged "+
			"by KS on 8 features and the prediction). %d interleaved pairs of %s runs; the check takes the median of the "+
			"pairs' ratios (on / off): %s.",
			demoConnections, pairs, s.opts.duration/4, formatRatios(ratios)),
		runs...)
	s.median("demo with drift on vs off (ok req/s, median of interleaved pairs)", ratios, 0.97)
}

func formatRatios(rs []float64) string {
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = fmt.Sprintf("%.3f", r)
	}
	return strings.Join(parts, ", ")
}

// shadowOverhead measures the demo model with and without a shadow version
// that gets a copy of every request: in open loop at shadowLoad of the max
// rate, where the machine has room for the copies, and in closed loop,
// where it has none and copies beyond shadow_max_in_flight are dropped.
func (s *suite) shadowOverhead(ctx context.Context, plain, shadowed bench.Request, maxRate float64) {
	rate := shadowLoad * maxRate
	openOff := s.load(ctx, "demo: open loop, no shadow", plain, 0, rate, s.opts.duration)
	openOn := s.load(ctx, "demo: open loop, 100% shadow", shadowed, 0, rate, s.opts.duration)
	closedOn := s.load(ctx, "demo: closed loop, 100% shadow", shadowed, demoConnections, 0, s.opts.duration)
	mirrored, dropped := s.metric(`infergate_shadow_requests_total{model="demo_shadowed",version="2",result="mirrored"}`),
		s.metric(`infergate_shadow_requests_total{model="demo_shadowed",version="2",result="dropped"}`)
	s.section("Shadow mirroring overhead on the demo model",
		fmt.Sprintf("The demo model served as above with version 1 primary and version 2 (the same model) a shadow of "+
			"100%% of the requests (shadow_max_in_flight %d). Open loop at %.0f req/s (%.0f%% of the closed-loop max above), "+
			"then closed loop with %d connections against the closed-loop run without shadow above. Over the whole suite "+
			"the shadow got %.0f copies and dropped %.0f.",
			shadowMaxInFlight, rate, 100*shadowLoad, demoConnections, mirrored, dropped),
		openOff, openOn, closedOn)
	s.ratio("100% shadow vs none, open loop: ok req/s", openOn.OKPerSec, openOff.OKPerSec, 0.9)
	s.atMost("100% shadow vs none, open loop: p99 within 10%", openOn.Latency.P99, time.Duration(float64(openOff.Latency.P99)*1.1))
}

// metric returns the value of one series of the suite's gateway, or -1.
func (s *suite) metric(series string) float64 {
	text, err := bench.FetchMetrics(s.addr, 10*time.Second)
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}

// overload runs the heavy model at twice the max rate and checks that the
// gateway keeps answering, rejects the excess fast and stays flat in memory.
func (s *suite) overload(ctx context.Context, heavy bench.Request, maxRate float64, fullBatch bench.ComputePoint) error {
	before, err := bench.ProcessRSS()
	if err != nil {
		return err
	}
	rss := startRSSSampler(time.Now().Add(s.opts.warmup))
	res := s.load(ctx, "heavy: overload at 2x max rate", heavy, overloadConnections, 2*maxRate, s.opts.duration)
	warmRSS, peak := rss.stop()
	after, err := bench.ProcessRSS()
	if err != nil {
		return err
	}
	if warmRSS == 0 {
		warmRSS = before
	}
	drain := time.Duration(float64(heavyQueueSize) / maxRate * float64(time.Second))
	acceptedBound := drain + heavyFixedDelay + 2*time.Duration(fullBatch.Run.P50)
	rejectBound := heavyFixedDelay + time.Duration(fullBatch.Run.P50)
	s.section("Overload: twice the max sustainable rate",
		fmt.Sprintf("Open loop at %.0f req/s with max_queue_size %d. Accepted p99 bound: a full queue drained at the max rate "+
			"(%d / %.0f req/s = %s) + max_queue_delay + 2 x full-batch compute = %s. Rejections count as fast when their p99 "+
			"is within one batch cycle (max_queue_delay + full-batch compute = %s). RSS of the whole process (gateway and "+
			"generator): %s before, %s at the end of the warm-up, %s at the peak, %s after.",
			2*maxRate, heavyQueueSize, heavyQueueSize, maxRate, bench.Millis(drain), bench.Millis(acceptedBound),
			bench.Millis(rejectBound), mib(before), mib(warmRSS), mib(peak), mib(after)),
		res)
	s.ratio("overload: accepted throughput vs the max rate (keeps answering)", res.OKPerSec, maxRate, 0.5)
	rejected := res.Errors["503"]
	others := res.ErrorCount() - rejected
	s.add(check{scenario: "overload: excess rejected with 503, nothing else fails",
		target: "503s > 0, other errors = 0", measured: fmt.Sprintf("%d 503s, %d other errors", rejected, others),
		met: rejected > 0 && others == 0})
	// A rejection's speed is the gateway's: it is timed from the actual send,
	// without the wait for a free connection that the generator's backlog adds.
	if res.ErrorSendLatency != nil {
		s.add(check{scenario: "overload: p99 of the 503 rejections, from the actual send",
			target:   "≤ " + bench.Millis(rejectBound).String(),
			measured: fmt.Sprintf("%s (from the scheduled time: %s)", res.ErrorSendLatency.P99, res.ErrorLatency.P99),
			met:      time.Duration(res.ErrorSendLatency.P99) <= rejectBound})
	}
	accepted := check{scenario: "overload: p99 of accepted requests", target: "≤ " + bench.Millis(acceptedBound).String(),
		measured: res.Latency.P99.String(), met: time.Duration(res.Latency.P99) <= acceptedBound}
	if res.SendLatency != nil {
		accepted.measured += " (from the actual send: " + res.SendLatency.P99.String() + ")"
	}
	s.add(accepted)
	s.add(check{scenario: "overload: RSS stays flat (after vs end of warm-up)",
		target: "≤ 1.10 x", measured: fmt.Sprintf("%s / %s = %.2f x", mib(after), mib(warmRSS), float64(after)/float64(warmRSS)),
		met: float64(after) <= 1.10*float64(warmRSS)})
	return nil
}

// rssSampler reads the process's RSS four times a second while a run
// lasts: the first reading after the warm-up and the peak.
type rssSampler struct {
	warmEnd time.Time
	quit    chan struct{}
	done    chan struct{}
	// atWarm and peak are written by the sampling goroutine until done is closed.
	atWarm, peak int64
}

func startRSSSampler(warmEnd time.Time) *rssSampler {
	r := &rssSampler{warmEnd: warmEnd, quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-r.quit:
				return
			case now := <-t.C:
				rss, err := bench.ProcessRSS()
				if err != nil {
					continue
				}
				r.peak = max(r.peak, rss)
				if r.atWarm == 0 && !now.Before(r.warmEnd) {
					r.atWarm = rss
				}
			}
		}
	}()
	return r
}

// stop ends the sampling and returns the RSS at the end of the warm-up (0
// if the run ended first) and the peak.
func (r *rssSampler) stop() (atWarm, peak int64) {
	close(r.quit)
	<-r.done
	return r.atWarm, r.peak
}
