package drift

import (
	"errors"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

// TestMonitorRetriesDecisionUntilStored checks that a decision whose
// commit fails (a full disk) is neither lost nor taken for done: the
// version stays undrifted, the same decision is committed again with a
// backoff that doubles up to commitRetryMax, nothing else is decided
// meanwhile, and once it is stored the version is drifted.
func TestMonitorRetriesDecisionUntilStored(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const failures = 11
		var mu sync.Mutex // guards attempts, stored and storedState
		var attempts []time.Time
		var stored []Decision
		var storedState State
		set := metrics.NewSet()
		mon := startMonitor(t, Options{
			Config:    Config{Window: WindowConfig{Rows: 200}, Consecutive: 1},
			Reference: normalReference(t, 1, 4, 2000), Metrics: set, Labels: `model="m",version="1"`,
			Commit: func(st State, d *Decision) error {
				if d == nil {
					return nil
				}
				mu.Lock()
				defer mu.Unlock()
				if attempts = append(attempts, time.Now()); len(attempts) <= failures {
					return errors.New("no space left on device")
				}
				stored, storedState = append(stored, *d), st
				return nil
			},
		})
		r := rand.New(rand.NewPCG(6, 6))
		feed(mon, r, 200, shifted(4, 3))
		synctest.Wait()
		mu.Lock()
		defer mu.Unlock()
		if rep := mon.Report(); rep.Drifted || len(attempts) != 1 {
			t.Fatalf("after a failed commit: drifted %v, %d attempts; want false, 1", rep.Drifted, len(attempts))
		}
		// More drifted windows while the decision waits decide nothing new.
		mu.Unlock()
		feed(mon, r, 400, shifted(4, 3))
		synctest.Wait()
		mu.Lock()
		if len(attempts) != 1 {
			t.Fatalf("%d commit attempts after two more drifted windows, want still 1", len(attempts))
		}
		mu.Unlock()
		time.Sleep(5 * time.Minute)
		synctest.Wait()
		mu.Lock()
		var waits []time.Duration
		for i := 1; i < len(attempts); i++ {
			waits = append(waits, attempts[i].Sub(attempts[i-1]))
		}
		want := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond,
			1600 * time.Millisecond, 3200 * time.Millisecond, 6400 * time.Millisecond, 12800 * time.Millisecond,
			25600 * time.Millisecond, commitRetryMax, commitRetryMax}
		if !slices.Equal(waits, want) {
			t.Fatalf("waits between attempts %v, want %v", waits, want)
		}
		if len(stored) != 1 || stored[0].Type != DriftDetected || stored[0].Window.Seq != 0 || !storedState.Drifted || storedState.Reason != "features" {
			t.Fatalf("stored %+v with state %+v; want the first window's drift.detected, with the state drifted", stored, storedState)
		}
		if !mon.Report().Drifted {
			t.Fatal("the version is not drifted once its decision is stored")
		}
		text := prometheus(set)
		if got := metricValue(t, text, `infergate_drift_commit_errors_total{model="m",version="1"}`); got != failures {
			t.Fatalf("commit_errors_total %v, want %d", got, failures)
		}
		if got := metricValue(t, text, `infergate_drift_decisions_total{model="m",version="1",type="detected"}`); got != 1 {
			t.Fatalf("decisions_total detected %v, want 1", got)
		}
	})
}

// TestMonitorRestartKeepsConceptDetector restarts a monitor every 2000
// labels of a steady 10% error rate, forty times. Started from the state
// its predecessor stored, its error-rate detector ends exactly where one
// that never restarted does, and raises no alarm; started afresh each
// time (what a restart did before State), it would take its minimum from
// the noisy first rows of each run.
func TestMonitorRestartKeepsConceptDetector(t *testing.T) {
	ref := normalReference(t, 1, 2, 2000)
	labels := make([]int, 40*2000)
	r := rand.New(rand.NewPCG(1, 2))
	var never DDM // the detector of a monitor that never restarted
	for i := range labels {
		if labels[i] = 1; r.Float64() < 0.1 {
			labels[i] = 0
		}
		never.add(1, 1-labels[i])
	}
	var st *State
	var checkpoint State
	alarms := 0
	for run := range 40 {
		decisions := make(chan Decision, 10)
		mon := startMonitor(t, Options{Reference: ref, State: st, Commit: func(s State, d *Decision) error {
			if d != nil {
				decisions <- *d
			}
			checkpoint = s
			return nil
		}})
		for _, correct := range labels[run*2000 : (run+1)*2000] {
			mon.ObserveLabels(1, correct)
		}
		mon.Close()
		alarms += len(decisions)
		st = &checkpoint
	}
	if alarms != 0 {
		t.Fatalf("%d concept drift alarms on steady data across restarts with the state carried over, want 0", alarms)
	}
	if checkpoint.Concept != never || checkpoint.Drifted {
		t.Fatalf("the last checkpoint %+v, want the detector of a monitor that never restarted, %+v, and no drift", checkpoint, never)
	}
}
