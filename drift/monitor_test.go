package drift

import (
	"math/rand/v2"
	"testing"
	"time"
)

// normalReference profiles nf standard normal features of rows rows.
func normalReference(t *testing.T, seed uint64, nf, rows int) *Reference {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 1))
	ref := &Reference{Rows: rows}
	for i := range nf {
		values := make([]float64, rows)
		for k := range values {
			values[k] = r.NormFloat64()
		}
		ref.Features = append(ref.Features, BuildProfile(string(rune('a'+i)), Numeric, values, ProfileOptions{Seed: uint64(i)}))
	}
	if err := ref.Validate(); err != nil {
		t.Fatal(err)
	}
	return ref
}

func identityColumns(n int) []int {
	cols := make([]int, n)
	for i := range cols {
		cols[i] = i
	}
	return cols
}

func newTestMonitor(t *testing.T, ref *Reference, cfg Config, decisions chan Decision) *Monitor {
	t.Helper()
	cfg = cfg.WithDefaults()
	if err := cfg.Validate("drift"); err != nil {
		t.Fatal(err)
	}
	mon, err := New(Options{
		Config: cfg, Reference: ref, Model: "m", Version: "1",
		Columns: identityColumns(len(ref.Features)), Decisions: decisions,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mon.Close)
	return mon
}

// feed observes rows rows of len(shift) normal features, feature i shifted
// by shift[i], in requests of 10 rows.
func feed(mon *Monitor, r *rand.Rand, rows int, shift []float64) {
	nf := len(shift)
	buf := make([]float64, 10*nf)
	for done := 0; done < rows; done += 10 {
		for k := range buf {
			buf[k] = r.NormFloat64() + shift[k%nf]
		}
		mon.Observe(Rows{Values: buf, Width: nf}, Rows{})
	}
}

// waitJudged waits until mon has judged n windows.
func waitJudged(t *testing.T, mon *Monitor, n int64) Report {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		rep := mon.Report()
		if rep.WindowsJudged+rep.WindowsSkipped >= n {
			return rep
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d windows judged after 30s", rep.WindowsJudged, n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestMonitorNullRaisesNoAlarm(t *testing.T) {
	ref := normalReference(t, 1, 8, 4000)
	decisions := make(chan Decision, 10)
	mon := newTestMonitor(t, ref, Config{}, decisions)
	r := rand.New(rand.NewPCG(2, 2))
	var featureAlarms int
	for w := int64(1); w <= 100; w++ {
		feed(mon, r, 1000, make([]float64, 8))
		rep := waitJudged(t, mon, w)
		for _, f := range rep.Last.Features {
			if f.Drifted {
				featureAlarms++
			}
		}
	}
	if len(decisions) != 0 {
		t.Fatalf("got %d decisions on traffic from the reference distribution: %+v", len(decisions), <-decisions)
	}
	t.Logf("feature alarms in 100 windows x 8 features: %d", featureAlarms)
}

func TestMonitorDetectsShiftAndResolves(t *testing.T) {
	ref := normalReference(t, 1, 8, 4000)
	decisions := make(chan Decision, 10)
	mon := newTestMonitor(t, ref, Config{}, decisions)
	r := rand.New(rand.NewPCG(3, 3))
	shift := []float64{0.5, 0.5, 0.5, 0.5, 0, 0, 0, 0}
	feed(mon, r, 1000, shift)
	if rep := waitJudged(t, mon, 1); rep.Drifted || !rep.Last.Drifted || rep.Last.Share != 0.5 {
		t.Fatalf("after one shifted window: drifted %v, window drifted %v, share %v; want false, true, 0.5", rep.Drifted, rep.Last.Drifted, rep.Last.Share)
	}
	feed(mon, r, 1000, shift)
	waitJudged(t, mon, 2)
	d := <-decisions
	if d.Type != DriftDetected || d.Window.Seq != 1 {
		t.Fatalf("got %s at window %d, want drift.detected at window 1", d.Type, d.Window.Seq)
	}
	for i, f := range d.Window.Features {
		if f.Drifted != (shift[i] != 0) || f.Method != MethodKS {
			t.Errorf("feature %s: drifted %v by %s (p %.3g), want drifted %v by ks", f.Name, f.Drifted, f.Method, f.Value, shift[i] != 0)
		}
	}
	feed(mon, r, 2000, make([]float64, 8))
	waitJudged(t, mon, 4)
	if d := <-decisions; d.Type != DriftResolved || d.Window.Seq != 3 {
		t.Fatalf("got %s at window %d, want drift.resolved at window 3", d.Type, d.Window.Seq)
	}
}
