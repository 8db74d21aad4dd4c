//go:build !race

package drift

import (
	"math/rand/v2"
	"testing"
	"testing/synctest"
	"time"
)

// allocRequest returns a request of 10 rows of 8 features (in a 9-column
// input) and their predictions (in a 2-column output).
func allocRequest() (in, out Rows) {
	r := rand.New(rand.NewPCG(1, 1))
	in, out = Rows{Values: make([]float64, 10*9), Width: 9}, Rows{Values: make([]float64, 10*2), Width: 2}
	for k := range in.Values {
		in.Values[k] = r.NormFloat64()
	}
	for k := range out.Values {
		out.Values[k] = r.Float64()
	}
	return in, out
}

// The issue: updating the state for a batch of rows is allocation-free.
func TestObserveAllocs(t *testing.T) {
	in, out := allocRequest()
	f := func(cfg Config, follower bool) {
		t.Helper()
		// Window rows beyond the 1010 observed keep the judge goroutine,
		// which allocates, idle during the measurement; a follower's
		// window never closes.
		mon := startMonitor(t, Options{Config: cfg, Reference: predictionReference(t, 8), Follower: follower})
		if n := testing.AllocsPerRun(100, func() { mon.Observe(in, out) }); n != 0 {
			t.Fatalf("%+v, follower %v: expected 0 allocations per Observe, got %f", cfg, follower, n)
		}
		if rows := mon.Report().Current.Rows; rows == 0 || rows > 1010 {
			t.Fatalf("%+v, follower %v: %d rows observed, want 1..1010", cfg, follower, rows)
		}
	}
	f(Config{Window: WindowConfig{Rows: 1e9}}, false)
	f(Config{Window: WindowConfig{Rows: 1e9}, Sample: 0.5}, false)
	f(Config{Window: WindowConfig{Rows: 100}}, true)
	f(Config{Window: WindowConfig{Every: time.Minute}}, true)
}

// ObserveLabels allocates nothing either, in a leader or a follower.
func TestObserveLabelsAllocs(t *testing.T) {
	for _, follower := range []bool{false, true} {
		mon := startMonitor(t, Options{Reference: predictionReference(t, 8), Follower: follower})
		if n := testing.AllocsPerRun(100, func() { mon.ObserveLabels(10, 9) }); n != 0 {
			t.Fatalf("follower %v: expected 0 allocations per ObserveLabels, got %f", follower, n)
		}
	}
}

// A window that closes on the request path is handed to the judge without
// allocating. The judge itself allocates (its report), so it is stopped,
// and the measured function gives the closed windows back as it would.
func TestObserveAllocsRotating(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		in, out := allocRequest()
		mon := newMonitor(t, predictionReference(t, 8), Config{Window: WindowConfig{Rows: 100}})
		synctest.Wait()
		mon.Close()
		recycle := func() {
			for {
				select {
				case w := <-mon.closed:
					mon.free <- w
				default:
					return
				}
			}
		}
		if n := testing.AllocsPerRun(100, func() { mon.Observe(in, out); recycle() }); n != 0 {
			t.Fatalf("expected 0 allocations per Observe with windows closing, got %f", n)
		}
		// 101 calls of 10 rows close a window of 100 rows every 10 calls.
		if rep := mon.Report(); rep.Current.Seq != 10 || rep.Current.Rows != 10 || mon.m.overruns.Get() != 0 {
			t.Fatalf("open window %d with %d rows, %d overruns; want 10, 10, 0", rep.Current.Seq, rep.Current.Rows, mon.m.overruns.Get())
		}
		// With nobody judging, the pool runs out and the window grows,
		// still without allocating.
		if n := testing.AllocsPerRun(100, func() { mon.Observe(in, out) }); n != 0 {
			t.Fatalf("expected 0 allocations per Observe on overrun, got %f", n)
		}
		if mon.m.overruns.Get() == 0 {
			t.Fatal("no overrun counted")
		}
	})
}
