package batcher

import (
	"context"
	"math"
	"slices"
	"testing"
	"testing/synctest"
	"time"
)

func TestFitLineRecoversKnownLines(t *testing.T) {
	f := func(intercept, slope float64, rows ...int) {
		t.Helper()
		var samples []computeSample
		for _, n := range rows {
			samples = append(samples, computeSample{rows: n, requests: 1, seconds: intercept + slope*float64(n)})
		}
		got, ok := fitLine(samples)
		if !ok || math.Abs(got.intercept-intercept) > 1e-12 || math.Abs(got.slope-slope) > 1e-12 {
			t.Fatalf("fit of %v + %v·rows: got %+v, %v", intercept, slope, got, ok)
		}
	}
	f(0.002, 0.0005, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
	f(0, 0.001, 1, 2, 4, 8, 16, 32, 64, 128)
	f(0.01, 0, 1, 2, 3, 4, 5, 6, 7, 8)
	f(0.0003, 0.00002, 1, 1, 1, 1, 1, 1, 1, 32)
}

func TestFitLineAveragesNoise(t *testing.T) {
	// Noise of ±1ms around 2ms + 0.5ms·rows, balanced at each row count,
	// leaves the least-squares line on the true one.
	var samples []computeSample
	for n := 1; n <= 8; n++ {
		for _, noise := range []float64{-0.001, 0.001} {
			samples = append(samples, computeSample{rows: n, requests: 1, seconds: 0.002 + 0.0005*float64(n) + noise})
		}
	}
	got, ok := fitLine(samples)
	if !ok || math.Abs(got.intercept-0.002) > 1e-12 || math.Abs(got.slope-0.0005) > 1e-12 {
		t.Fatalf("got %+v, %v; want 0.002 + 0.0005·rows", got, ok)
	}
}

func TestFitLineRefusesTooLittleData(t *testing.T) {
	f := func(rows ...int) {
		t.Helper()
		var samples []computeSample
		for _, n := range rows {
			samples = append(samples, computeSample{rows: n, requests: 1, seconds: 0.001 * float64(n)})
		}
		if got, ok := fitLine(samples); ok {
			t.Fatalf("rows %v: got fit %+v, want none", rows, got)
		}
	}
	f()
	f(1, 2, 3, 4, 5, 6, 7)
	f(4, 4, 4, 4, 4, 4, 4, 4, 4, 4)
}

func TestFitLineFlattensNegativeSlope(t *testing.T) {
	var samples []computeSample
	for n := 1; n <= 8; n++ {
		samples = append(samples, computeSample{rows: n, requests: 1, seconds: 0.010 - 0.001*float64(n)})
	}
	got, ok := fitLine(samples)
	if !ok || got.slope != 0 || math.Abs(got.intercept-0.0055) > 1e-12 {
		t.Fatalf("got %+v, %v; want the flat mean 5.5ms", got, ok)
	}
}

func TestComputeModelFollowsRecentBatches(t *testing.T) {
	var m computeModel
	observeLine := func(intercept, slope time.Duration, batches int) {
		for i := range batches {
			rows := 1 + i%16
			m.observe(rows, 2, intercept+slope*time.Duration(rows))
		}
	}
	observeLine(time.Millisecond, 100*time.Microsecond, computeSamples)
	if d := m.fit.at(10).Round(time.Microsecond); d != 2*time.Millisecond {
		t.Fatalf("predicted %s for 10 rows, want 2ms", d)
	}
	// A full ring of a slower line replaces the old one entirely.
	observeLine(3*time.Millisecond, time.Millisecond, computeSamples)
	if d := m.fit.at(10).Round(time.Microsecond); d != 13*time.Millisecond {
		t.Fatalf("predicted %s for 10 rows after the change, want 13ms", d)
	}
}

func TestComputeModelBudget(t *testing.T) {
	var m computeModel
	if got := m.budget(time.Now(), 4, 32, 20*time.Millisecond); got != 0 {
		t.Fatalf("budget without a fit: got %s, want 0 (send now)", got)
	}
	// Batches of 3..10 rows, each of two requests: a typical request has
	// ceil(52/16) = 4 rows.
	for rows := 3; rows <= 10; rows++ {
		m.observe(rows, 2, time.Millisecond+time.Duration(rows)*100*time.Microsecond)
	}
	f := func(rows int, want time.Duration) {
		t.Helper()
		if got := m.budget(time.Now(), rows, 32, 20*time.Millisecond); got.Round(time.Microsecond) != want {
			t.Fatalf("budget for %d rows: got %s, want %s", rows, got, want)
		}
	}
	f(1, 20*time.Millisecond-1500*time.Microsecond)
	f(20, 20*time.Millisecond-3400*time.Microsecond)
	f(28, 20*time.Millisecond-4200*time.Microsecond)
	f(29, 0) // a typical request would not fit
}

// adaptiveCompute is the fake runner's compute time in the adaptive tests:
// 1ms plus 100µs a row.
func adaptiveCompute(rows int) time.Duration {
	return time.Millisecond + time.Duration(rows)*100*time.Microsecond
}

// warmUp runs batches of 1..8 rows one after another. Without enough
// samples to fit, each goes at once; after them the model knows the line
// and a typical request of ceil(36/8) = 5 rows.
func warmUp(t *testing.T, b *Batcher) {
	t.Helper()
	for rows := 1; rows <= 8; rows++ {
		start := time.Now()
		r := newRequest(uint32(1000+rows), rows, 0)
		if err := b.Do(context.Background(), r); err != nil {
			t.Fatal(err)
		}
		ReleaseRequest(r)
		if d := time.Since(start); d != adaptiveCompute(rows) {
			t.Fatalf("warm-up batch of %d rows took %s, want no wait before its %s of compute", rows, d, adaptiveCompute(rows))
		}
	}
}

func TestAdaptiveWaitsWhileTheTargetHolds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &recorder{compute: adaptiveCompute}
		cfg := Config{MaxBatchSize: 32, MaxQueueDelay: Delay{Auto: true}, LatencyTarget: 20 * time.Millisecond}
		b := newTestBatcher(t, cfg, 1, rec)
		defer b.Close()
		b.model.minBusy = 0 // as if the instance were busy throughout
		warmUp(t, b)
		ctx := context.Background()
		batches := func() int { return len(rec.seen()) }

		// One row waits until 20ms minus the compute of 1+5 rows (1.6ms).
		p1 := startDo(ctx, b, 1, 1, 0)
		time.Sleep(18400*time.Microsecond - time.Microsecond)
		synctest.Wait()
		if n := batches(); n != 8 {
			t.Fatalf("%d batches after 18.399ms, want the request still waiting", n)
		}
		time.Sleep(2 * time.Microsecond)
		synctest.Wait()
		if n := batches(); n != 9 {
			t.Fatalf("%d batches after 18.401ms, want the request sent", n)
		}
		time.Sleep(adaptiveCompute(1))
		synctest.Wait()
		p1.wantOK(t)

		// More rows make the predicted compute longer, so the wait shorter:
		// 1+20 rows plus a typical 5 take 3.6ms, leaving 16.4ms.
		p2 := startDo(ctx, b, 2, 1, 0)
		time.Sleep(5 * time.Millisecond)
		p3 := startDo(ctx, b, 3, 20, 0)
		time.Sleep(11400*time.Microsecond - time.Microsecond)
		synctest.Wait()
		if n := batches(); n != 9 {
			t.Fatalf("%d batches after 16.399ms, want the requests still waiting", n)
		}
		time.Sleep(2 * time.Microsecond)
		synctest.Wait()
		wantLast(t, rec, []uint32{2, 3})
		time.Sleep(adaptiveCompute(21))
		synctest.Wait()
		p2.wantOK(t)
		p3.wantOK(t)

		// A typical request would not fit beside 28 rows: they go at once.
		p4 := startDo(ctx, b, 4, 28, 0)
		synctest.Wait()
		wantLast(t, rec, []uint32{4})
		time.Sleep(adaptiveCompute(28))
		synctest.Wait()
		p4.wantOK(t)
	})
}

func TestAdaptiveSendsAtOnceWhenTheTargetIsTight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &recorder{compute: adaptiveCompute}
		cfg := Config{MaxBatchSize: 32, MaxQueueDelay: Delay{Auto: true}, LatencyTarget: time.Millisecond}
		b := newTestBatcher(t, cfg, 1, rec)
		defer b.Close()
		warmUp(t, b)
		p := startDo(context.Background(), b, 1, 1, 0)
		synctest.Wait()
		wantLast(t, rec, []uint32{1})
		time.Sleep(adaptiveCompute(1))
		synctest.Wait()
		p.wantOK(t)
	})
}

// wantLast fails unless the last batch the runners saw holds these ids.
func wantLast(t *testing.T, rec *recorder, want []uint32) {
	t.Helper()
	seen := rec.seen()
	if len(seen) == 0 || !slices.Equal(seen[len(seen)-1], want) {
		t.Fatalf("batches %v, want the last to be %v", seen, want)
	}
}

// TestAdaptiveSendsAtOnceWhenIdle: with the instance mostly idle, waiting
// buys no throughput, so a lone request goes at once whatever the target.
func TestAdaptiveSendsAtOnceWhenIdle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &recorder{compute: adaptiveCompute}
		cfg := Config{MaxBatchSize: 32, MaxQueueDelay: Delay{Auto: true}, LatencyTarget: 20 * time.Millisecond}
		b := newTestBatcher(t, cfg, 1, rec)
		defer b.Close()
		warmUp(t, b)
		time.Sleep(time.Second) // the instance idles
		p := startDo(context.Background(), b, 1, 1, 0)
		synctest.Wait()
		wantLast(t, rec, []uint32{1})
		time.Sleep(adaptiveCompute(1))
		synctest.Wait()
		p.wantOK(t)
	})
}
