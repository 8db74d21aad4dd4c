package drift

import (
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

// request observes one request of rows rows of len(shift) standard normal
// features, feature i shifted by shift[i], in each of mons.
func request(r *rand.Rand, rows int, shift []float64, mons ...*Monitor) {
	nf := len(shift)
	buf := make([]float64, rows*nf)
	for k := range buf {
		buf[k] = r.NormFloat64() + shift[k%nf]
	}
	for _, mon := range mons {
		mon.Observe(Rows{Values: buf, Width: nf}, Rows{})
	}
}

// roundTrip returns c after encoding/json, as it crosses the network.
func roundTrip(t *testing.T, c Counts) Counts {
	t.Helper()
	data, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	var got Counts
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatalf("cannot decode %s: %s", data, err)
	}
	return got
}

// ship takes what follower counted, sends it through JSON and merges it
// into leader.
func ship(t *testing.T, follower, leader *Monitor) {
	t.Helper()
	c, ok := follower.TakeCounts()
	if !ok {
		return
	}
	if err := leader.MergeCounts(roundTrip(t, c)); err != nil {
		t.Fatal(err)
	}
}

// noCommit is the Commit of a monitor that must commit nothing.
func noCommit(t *testing.T) func(State, *Decision) error {
	return func(st State, d *Decision) error {
		t.Errorf("a follower committed state %+v with decision %+v", st, d)
		return nil
	}
}

// The merge requirement: a leader that merges its two followers'
// counts every second judges each window as one monitor that saw every
// row does, and detects a shift in the same window.
func TestFleetJudgesLikeOneMonitor(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// Start half a minute into a window, and observe half a second off
		// the windows' ends, where the monitors close them.
		time.Sleep(30*time.Second + 500*time.Millisecond)
		ref := normalReference(t, 1, 8, 4000)
		cfg := Config{Window: WindowConfig{Every: time.Minute}}
		fleetDecisions, oneDecisions := make(chan Decision, 10), make(chan Decision, 10)
		leader := startMonitor(t, Options{Config: cfg, Reference: ref, AlignWindows: true, Commit: commitTo(fleetDecisions)})
		followers := []*Monitor{
			startMonitor(t, Options{Config: cfg, Reference: ref, AlignWindows: true, Follower: true, Commit: noCommit(t)}),
			startMonitor(t, Options{Config: cfg, Reference: ref, AlignWindows: true, Follower: true, Commit: noCommit(t)}),
		}
		one := startMonitor(t, Options{Config: cfg, Reference: ref, AlignWindows: true, Commit: commitTo(oneDecisions)})
		replicas := []*Monitor{leader, followers[0], followers[1]}
		k0 := leader.Report().Current.Seq
		if one.Report().Current.Seq != k0 || followers[0].Report().Leading || !leader.Report().Leading {
			t.Fatal("the monitors do not start in the same window, or lead and follow as told")
		}

		// Windows k0 (its last 30 s) and k0+1 see the reference's
		// distribution; k0+2 and k0+3 half of the features shifted by half
		// a standard deviation.
		r := rand.New(rand.NewPCG(21, 21))
		shift := []float64{0.5, 0.5, 0.5, 0.5, 0, 0, 0, 0}
		var sawDrift bool
		for s := range 30 + 3*60 {
			sh := make([]float64, 8)
			if s >= 90 {
				sh = shift
			}
			for range 6 { // each request to one of the replicas, and to one
				request(r, 5, sh, replicas[r.IntN(3)], one)
			}
			for _, f := range followers {
				ship(t, f, leader)
			}
			time.Sleep(time.Second)
			if (s-29)%60 != 0 {
				continue
			}
			synctest.Wait()
			k := k0 + int64(s-29)/60
			fleet, all := leader.Report().Last, one.Report().Last
			if fleet == nil || fleet.Seq != k || !fleet.End.Equal(time.Unix(0, (k+1)*int64(time.Minute))) {
				t.Fatalf("after second %d: the leader's last window %+v, want window %d ending at its minute", s, fleet, k)
			}
			if fleet.Seq != all.Seq || !fleet.Start.Equal(all.Start) || fleet.Rows != all.Rows || fleet.Judged != all.Judged ||
				fleet.Drifted != all.Drifted || fleet.Drifted != (k >= k0+2) {
				t.Fatalf("window %d: the fleet's %d rows from %s, judged %v, drifted %v (share %v); one monitor's %d rows from %s, judged %v, drifted %v (share %v)",
					k, fleet.Rows, fleet.Start, fleet.Judged, fleet.Drifted, fleet.Share, all.Rows, all.Start, all.Judged, all.Drifted, all.Share)
			}
			// The counts, and the statistics of the bins, are the same; the
			// two-sample ones differ by the reservoirs' luck, so a shift,
			// but not each false alarm, must be found by both.
			for i, got := range fleet.Features {
				want := all.Features[i]
				if !slices.Equal(got.Counts, want.Counts) || got.Count != want.Count || got.Method != want.Method ||
					!near(got.Mean, want.Mean, 1e-9) || !near(got.Std, want.Std, 1e-9) {
					t.Fatalf("window %d, feature %s: the fleet's counts %v, mean %v, std %v, by %s; one monitor's %v, %v, %v, by %s",
						k, got.Name, got.Counts, got.Mean, got.Std, got.Method, want.Counts, want.Mean, want.Std, want.Method)
				}
				for _, stat := range []string{"psi", "jensen_shannon", "hellinger"} {
					if !near(got.Statistics[stat], want.Statistics[stat], 1e-12) {
						t.Fatalf("window %d, feature %s: the fleet's %s %v, one monitor's %v", k, got.Name, stat, got.Statistics[stat], want.Statistics[stat])
					}
				}
				if shifted := k >= k0+2 && shift[i] != 0; shifted && (!got.Drifted || !want.Drifted) {
					t.Fatalf("window %d, feature %s shifted: drifted %v in the fleet (%s %v), %v in one monitor (%v)", k, got.Name, got.Drifted, got.Method, got.Value, want.Drifted, want.Value)
				}
			}
			sawDrift = sawDrift || fleet.Drifted
			for _, f := range followers {
				if rep := f.Report(); rep.WindowsJudged+rep.WindowsSkipped != 0 || rep.Last != nil || rep.Current.Rows != 0 {
					t.Fatalf("a follower judged %d windows and holds %d rows", rep.WindowsJudged+rep.WindowsSkipped, rep.Current.Rows)
				}
			}
		}
		if !sawDrift || len(fleetDecisions) != 1 || len(oneDecisions) != 1 {
			t.Fatalf("%d decisions of the fleet, %d of one monitor; want one each", len(fleetDecisions), len(oneDecisions))
		}
		fd, od := <-fleetDecisions, <-oneDecisions
		if fd.Type != DriftDetected || fd.Window.Seq != k0+3 || od.Window.Seq != fd.Window.Seq || !od.Time.Equal(fd.Time) {
			t.Fatalf("the fleet decided %s at window %d (%s), one monitor %s at window %d (%s); want drift.detected at window %d for both",
				fd.Type, fd.Window.Seq, fd.Time, od.Type, od.Window.Seq, od.Time, k0+3)
		}
	})
}

// A follower fed a shift and a concept drift, for windows' worth of rows
// and past checkpoints, decides, commits and judges nothing; the same
// traffic makes a leader commit.
func TestFollowerNeverDecides(t *testing.T) {
	f := func(follower bool) (commits int, rep Report) {
		t.Helper()
		synctest.Test(t, func(t *testing.T) {
			var mu sync.Mutex
			mon := startMonitor(t, Options{
				Config:    Config{Window: WindowConfig{Rows: 200}, Consecutive: 1},
				Reference: normalReference(t, 1, 4, 2000), Follower: follower,
				Commit: func(State, *Decision) error {
					mu.Lock()
					defer mu.Unlock()
					commits++
					return nil
				},
			})
			r := rand.New(rand.NewPCG(22, 22))
			for range 10 {
				feed(mon, r, 200, shifted(4, 3))
				synctest.Wait()
			}
			for range 100 {
				mon.ObserveLabels(10, 9)
			}
			for range 100 {
				mon.ObserveLabels(10, 2)
			}
			time.Sleep(3 * checkpointEvery)
			synctest.Wait()
			rep = mon.Report()
			mon.Close() // a leader checkpoints here
		})
		return commits, rep
	}
	if commits, rep := f(false); commits == 0 || rep.WindowsJudged != 10 || !rep.Drifted {
		t.Fatalf("a leader: %d commits, %d windows judged, drifted %v; want some, 10, true", commits, rep.WindowsJudged, rep.Drifted)
	}
	commits, rep := f(true)
	if commits != 0 || rep.Leading || rep.Drifted || rep.WindowsJudged+rep.WindowsSkipped != 0 || rep.Last != nil || rep.Current.Rows != 2000 || rep.Concept != ConceptStable {
		t.Fatalf("a follower: %d commits, report %+v; want none, and 2000 rows in the open window", commits, rep)
	}
}

// store is a fleet's drift state store: what the leader committed last.
type store struct {
	mu        sync.Mutex
	state     State
	decisions []Decision
	by        []string // who committed each decision
}

func (s *store) commit(who string) func(State, *Decision) error {
	return func(st State, d *Decision) error {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.state = st
		if d != nil {
			s.decisions, s.by = append(s.decisions, *d), append(s.by, who)
		}
		return nil
	}
}

// last returns the last decision stored and who stored it, and the state.
func (s *store) last() (DecisionType, string, State) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.decisions) == 0 {
		return "", "", s.state
	}
	return s.decisions[len(s.decisions)-1].Type, s.by[len(s.by)-1], s.state
}

// A new leader takes the state the old one committed: the drift (so a
// clean window resolves it), its cooldown and the error-rate detector.
func TestSetLeadingCarriesState(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
		clock := newFakeClock(t0)
		var st store
		cfg := Config{Window: WindowConfig{Rows: 200}, Consecutive: 1, Cooldown: 10 * time.Minute}
		ref := normalReference(t, 1, 4, 2000)
		a := startMonitor(t, Options{Config: cfg, Reference: ref, Now: clock.Now, Commit: st.commit("a")})
		b := startMonitor(t, Options{Config: cfg, Reference: ref, Now: clock.Now, Commit: st.commit("b"), Follower: true})
		r := rand.New(rand.NewPCG(23, 23))
		// f feeds a window ending at t0+end to mon, shifted by shift, and
		// checks the decision stored since, if any, and who stored it.
		stored := 0
		f := func(mon *Monitor, end time.Duration, shift float64, want DecisionType, wantBy string) {
			t.Helper()
			clock.set(t0.Add(end))
			feed(mon, r, 200, shifted(4, shift))
			synctest.Wait()
			st.mu.Lock()
			n := len(st.decisions)
			st.mu.Unlock()
			var got DecisionType
			var by string
			if n > stored {
				got, by, _ = st.last()
				stored = n
			}
			if got != want || by != wantBy {
				t.Fatalf("window ending at +%s, shift %v: decision %q by %q, want %q by %q", end, shift, got, by, want, wantBy)
			}
		}
		for range 30 {
			a.ObserveLabels(10, 9) // 300 labeled rows for the detector
		}
		f(a, time.Minute, 3, DriftDetected, "a") // the cooldown runs to +11m
		_, _, committed := st.last()
		if !committed.Drifted || committed.Concept.Rows != 300 {
			t.Fatalf("committed %+v, want drifted with 300 labeled rows", committed)
		}

		a.SetLeading(false, nil)
		b.SetLeading(true, &committed)
		if ra, rb := a.Report(), b.Report(); ra.Leading || !rb.Leading || !rb.Drifted {
			t.Fatalf("after the hand-over: a leading %v, b leading %v, b drifted %v; want false, true, true", ra.Leading, rb.Leading, rb.Drifted)
		}
		b.SetLeading(true, &State{}) // already leading: changes nothing
		if !b.Report().Drifted {
			t.Fatal("SetLeading(true) on a leader changed its state")
		}
		f(a, 90*time.Second, 3, "", "") // a follows: it decides nothing
		f(b, 2*time.Minute, 0, DriftResolved, "b")
		if _, _, s := st.last(); s.Concept.Rows != 300 || s.Drifted {
			t.Fatalf("b committed %+v, want the 300 labeled rows of a and no drift", s)
		}
		f(b, 3*time.Minute, 3, "", "") // within a's cooldown: nothing
		f(b, 11*time.Minute, 3, DriftDetected, "b")
	})
}

// A decision that could not be stored before the monitor stopped leading
// is dropped: no commit follows SetLeading(false).
func TestSetLeadingDropsPendingDecision(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		attempts := 0
		mon := startMonitor(t, Options{
			Config: Config{Window: WindowConfig{Rows: 200}, Consecutive: 1}, Reference: normalReference(t, 1, 4, 2000),
			Commit: func(State, *Decision) error {
				mu.Lock()
				defer mu.Unlock()
				attempts++
				return errors.New("no leader lease")
			},
		})
		feed(mon, rand.New(rand.NewPCG(24, 24)), 200, shifted(4, 3))
		synctest.Wait()
		time.Sleep(time.Second) // a few retries
		synctest.Wait()
		mon.SetLeading(false, nil)
		mu.Lock()
		before := attempts
		mu.Unlock()
		time.Sleep(5 * time.Minute)
		synctest.Wait()
		mon.Close()
		mu.Lock()
		defer mu.Unlock()
		if before < 2 || attempts != before {
			t.Fatalf("%d commit attempts while leading, %d after; want some, and none after", before, attempts-before)
		}
	})
}

// countsReference is mixedReference with the monitor options of a test of
// counts: windows that never close by rows, a reservoir of 100.
func countsOptions(t *testing.T, follower bool, clock *fakeClock) Options {
	return Options{
		Config: Config{Window: WindowConfig{Rows: 1e9}, Reservoir: 100}, Reference: mixedReference(t, 1, 3000),
		Follower: follower, Now: clock.Now,
	}
}

// observeMixed observes rows rows of mixedReference's features and
// prediction, the numeric ones float32 when narrow.
func observeMixed(mon *Monitor, r *rand.Rand, rows int, narrow bool) {
	in, out := make([]float64, 2), make([]float64, 1)
	for range rows {
		in[0], in[1], out[0] = r.NormFloat64(), float64(r.IntN(4)), r.Float64()
		if narrow {
			in[0], out[0] = float64(float32(in[0])), float64(float32(out[0]))
		}
		mon.Observe(Rows{Values: in, Width: 2}, Rows{Values: out, Width: 1})
	}
}

func TestTakeCounts(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	clock := newFakeClock(t0)
	mon := startMonitor(t, countsOptions(t, true, clock))
	r := rand.New(rand.NewPCG(25, 25))
	if _, ok := mon.TakeCounts(); ok {
		t.Fatal("counts taken before anything was observed")
	}
	observeMixed(mon, r, 250, false)
	mon.ObserveLabels(10, 7)
	clock.set(t0.Add(time.Second))
	c, ok := mon.TakeCounts()
	if !ok || c.Rows != 250 || c.Labeled != 10 || c.Correct != 7 || !c.Start.Equal(t0) || !c.End.Equal(t0.Add(time.Second)) ||
		c.Model != "m" || c.Version != "1" || c.Reference != fingerprint(mon.o.Reference) || len(c.Features) != 3 {
		t.Fatalf("counts %+v", c)
	}
	x, cat, p := c.Features[0], c.Features[1], c.Features[2]
	if sum(x.Bins) != 250 || sum(cat.Bins) != 250 || sum(p.Bins) != 250 || len(x.Sample) != 100 || len(p.Sample) != 100 || cat.Sample != nil {
		t.Fatalf("bins of %d, %d and %d values, samples of %d, %d and %d; want 250 each, and 100, 100, none",
			sum(x.Bins), sum(cat.Bins), sum(p.Bins), len(x.Sample), len(p.Sample), len(cat.Sample))
	}
	if got := roundTrip(t, c); !reflect.DeepEqual(got, c) {
		t.Fatalf("float64 counts after JSON: %+v, want %+v", got, c)
	}
	if rep := mon.Report(); rep.Current.Rows != 0 || !rep.Current.Start.Equal(t0.Add(time.Second)) {
		t.Fatalf("after TakeCounts the open window holds %d rows from %s, want none from +1s", rep.Current.Rows, rep.Current.Start)
	}
	if _, ok := mon.TakeCounts(); ok {
		t.Fatal("counts taken twice")
	}

	// Only what came since: here float32 values, which travel in 4 bytes.
	observeMixed(mon, r, 30, true)
	clock.set(t0.Add(2 * time.Second))
	c, ok = mon.TakeCounts()
	if !ok || c.Rows != 30 || c.Labeled != 0 || !c.Start.Equal(t0.Add(time.Second)) || len(c.Features[0].Sample) != 30 {
		t.Fatalf("the second counts: %+v", c)
	}
	data, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), `"sample":"f4:`) {
		t.Fatalf("float32 values not packed as such: %s", data)
	}
	if got := roundTrip(t, c); !reflect.DeepEqual(got, c) {
		t.Fatalf("float32 counts after JSON: %+v, want %+v", got, c)
	}
	// Labels alone are counts too.
	mon.ObserveLabels(5, 5)
	if c, ok := mon.TakeCounts(); !ok || c.Rows != 0 || c.Labeled != 5 {
		t.Fatalf("labels only: %+v, %v", c, ok)
	}

	// A leader keeps its counts to judge.
	leader := startMonitor(t, countsOptions(t, false, clock))
	observeMixed(leader, r, 10, false)
	if _, ok := leader.TakeCounts(); ok || leader.Report().Current.Rows != 10 {
		t.Fatal("a leader's counts were taken")
	}
}

func sum(xs []int64) (s int64) {
	for _, x := range xs {
		s += x
	}
	return s
}

func TestMergeCountsRefuses(t *testing.T) {
	clock := newFakeClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	set := metrics.NewSet()
	o := countsOptions(t, false, clock)
	o.Metrics = set
	leader := startMonitor(t, o)
	follower := startMonitor(t, countsOptions(t, true, clock))
	observeMixed(follower, rand.New(rand.NewPCG(26, 26)), 200, false)
	follower.ObserveLabels(10, 8)
	counts, _ := follower.TakeCounts()
	f := func(change func(c *Counts), want string) {
		t.Helper()
		c := roundTrip(t, counts) // a deep copy
		change(&c)
		err := leader.MergeCounts(c)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("merge error %v, want one containing %q", err, want)
		}
		if rows := leader.Report().Current.Rows; rows != 0 {
			t.Fatalf("refused counts left %d rows in the open window", rows)
		}
	}
	f(func(c *Counts) { c.Reference = "0123456789abcdef" }, "counts of another reference profile")
	f(func(c *Counts) { c.Version = "2" }, `the counts are of model "m" version 2`)
	f(func(c *Counts) { c.Features = c.Features[:2] }, "counts of 2 features, want 3")
	f(func(c *Counts) { c.Rows = -1 }, "-1 rows")
	f(func(c *Counts) { c.Rows = 1 << 41 }, "2199023255552 rows, want 0 to 1099511627776")
	f(func(c *Counts) { c.Correct = 11 }, "10 labeled rows of which 11 correct")
	f(func(c *Counts) { c.End = c.Start.Add(-time.Second) }, "before they start")
	f(func(c *Counts) { c.Features[0].Bins = c.Features[0].Bins[1:] }, `feature "x": 11 bins, want 12`)
	f(func(c *Counts) { c.Features[1].Bins[0] -= 300; c.Features[1].Bins[1] += 300 }, `feature "c": a bin of -`)
	f(func(c *Counts) { c.Features[0].Bins[3]++ }, `feature "x": 201 values (binned, missing and non-finite) in 200 rows`)
	f(func(c *Counts) { c.Features[2].Bins[3] += 1000 }, `feature "p": a bin of`)
	f(func(c *Counts) { c.Features[0].Missing = -1 }, "-1 missing")
	f(func(c *Counts) { c.Features[0].Sum = math.NaN() }, "sum NaN")
	f(func(c *Counts) { c.Features[2].SumSq = math.Inf(1) }, "want finite ones")
	f(func(c *Counts) { c.Features[0].Sample[7] = math.Inf(-1) }, `feature "x": a sample value that is not finite`)
	f(func(c *Counts) { c.Features[0].Sample = append(c.Features[0].Sample, 0) }, "a sample of 101 values, want at most 100")
	f(func(c *Counts) { c.Features[1].Sample = Sample{1} }, "a sample of a categorical feature")

	// Counts of a replica with another reference.json for the version.
	other := startMonitor(t, Options{Config: follower.o.Config, Reference: mixedReference(t, 2, 3000), Follower: true})
	observeMixed(other, rand.New(rand.NewPCG(27, 27)), 10, false)
	c, _ := other.TakeCounts()
	if err := leader.MergeCounts(c); !errors.Is(err, ErrReferenceMismatch) {
		t.Fatalf("counts of another reference: %v, want ErrReferenceMismatch", err)
	}
	// A follower merges nothing.
	if err := follower.MergeCounts(counts); !errors.Is(err, ErrNotLeading) {
		t.Fatalf("a follower's merge: %v, want ErrNotLeading", err)
	}
	// The counts as they are merge.
	if err := leader.MergeCounts(counts); err != nil {
		t.Fatal(err)
	}
	if rows := leader.Report().Current.Rows; rows != 200 {
		t.Fatalf("%d rows in the open window after merging 200", rows)
	}
	text := prometheus(set)
	if merged, refused := metricValue(t, text, `infergate_drift_counts_total{result="merged"}`), metricValue(t, text, `infergate_drift_counts_total{result="refused"}`); merged != 1 || refused != 18 {
		t.Fatalf("counts_total: %v merged, %v refused; want 1, 18", merged, refused)
	}

	// What JSON cannot decode.
	g := func(sample, want string) {
		t.Helper()
		var c Counts
		err := json.Unmarshal([]byte(`{"features":[{"bins":[1],"sample":`+sample+`}]}`), &c)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("sample %s: error %v, want one containing %q", sample, err, want)
		}
	}
	g(`"f4:AAAAAAAA"`, "6 bytes are no whole number of 4-byte values")
	g(`"f2:AAAA"`, `want "f4:" or "f8:"`)
	g(`"f8:!!"`, "illegal base64")
	g(`{}`, "cannot decode a drift sample")
}

// A window by rows closes once merged counts fill it, and is judged by
// the methods of its configured size however much it holds.
func TestMergeCountsClosesWindowByRows(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ref := normalReference(t, 1, 4, 2000)
		cfg := Config{Window: WindowConfig{Rows: 1000}}
		leader := startMonitor(t, Options{Config: cfg, Reference: ref})
		follower := startMonitor(t, Options{Config: cfg, Reference: ref, Follower: true})
		r := rand.New(rand.NewPCG(28, 28))
		feed(follower, r, 1500, shifted(4, 0))
		feed(leader, r, 300, shifted(4, 0))
		ship(t, follower, leader)
		synctest.Wait()
		rep := leader.Report()
		if rep.WindowsJudged != 1 || rep.Last.Rows != 1800 || rep.Current.Rows != 0 {
			t.Fatalf("%d windows judged, the last of %d rows, %d rows open; want 1, 1800, 0", rep.WindowsJudged, rep.Last.Rows, rep.Current.Rows)
		}
		for _, fr := range rep.Last.Features {
			if fr.Method != MethodKS { // Wasserstein beyond 1000 rows
				t.Fatalf("feature %s of a 1000-row window holding 1800 judged by %s, want ks", fr.Name, fr.Method)
			}
		}
	})
}

// Labels counted by a follower reach the leader's error-rate detector.
func TestMergeCountsFeedsConceptDetector(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ref := normalReference(t, 1, 2, 2000)
		decisions := make(chan Decision, 4)
		leader := startMonitor(t, Options{Reference: ref, Commit: commitTo(decisions)})
		follower := startMonitor(t, Options{Reference: ref, Follower: true, Commit: noCommit(t)})
		for range 10 {
			for range 10 {
				follower.ObserveLabels(10, 9)
			}
			ship(t, follower, leader)
		}
		for range 10 {
			for range 10 {
				follower.ObserveLabels(10, 5)
			}
			ship(t, follower, leader)
		}
		synctest.Wait()
		if len(decisions) != 1 {
			t.Fatalf("%d decisions, want the concept drift", len(decisions))
		}
		if d := <-decisions; d.Type != DriftDetected || d.Reason != "concept" || d.Window.Labeled == 0 {
			t.Fatalf("decision %+v, want drift.detected for the concept", d)
		}
	})
}

// Aligned windows close at multiples of every on the monitor's clock,
// whenever the monitor started, and a follower that takes over leads in
// the window of the time.
func TestAlignedWindows(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// The monitors' clock runs 17.5 s ahead of the timers'.
		now := func() time.Time { return time.Now().Add(17500 * time.Millisecond) }
		at := func(k int64) time.Time { return time.Unix(0, k*int64(time.Minute)) }
		cfg := Config{Window: WindowConfig{Every: time.Minute}}
		ref := normalReference(t, 1, 2, 2000)
		aligned := startMonitor(t, Options{Config: cfg, Reference: ref, Now: now, AlignWindows: true})
		plain := startMonitor(t, Options{Config: cfg, Reference: ref, Now: now})
		follower := startMonitor(t, Options{Config: cfg, Reference: ref, Now: now, AlignWindows: true, Follower: true})
		start := now()
		k := start.UnixNano() / int64(time.Minute)
		if rep := aligned.Report(); rep.Current.Seq != k || !rep.Current.Start.Equal(at(k)) {
			t.Fatalf("started at %s in window %d from %s, want window %d from %s", start, rep.Current.Seq, rep.Current.Start, k, at(k))
		}
		r := rand.New(rand.NewPCG(29, 29))
		feed(aligned, r, 200, shifted(2, 0))
		feed(plain, r, 200, shifted(2, 0))
		time.Sleep(at(k + 1).Sub(now()))
		synctest.Wait()
		if rep := aligned.Report(); rep.Last == nil || rep.Last.Seq != k || !rep.Last.Start.Equal(at(k)) || !rep.Last.End.Equal(at(k+1)) ||
			rep.Last.Rows != 200 || rep.Current.Seq != k+1 || !rep.Current.Start.Equal(at(k+1)) {
			t.Fatalf("at %s the aligned monitor's last window %+v, open %+v; want window %d of [%s, %s)", now(), rep.Last, rep.Current, k, at(k), at(k+1))
		}
		if rep := plain.Report(); rep.Last != nil {
			t.Fatalf("a window not aligned closed %s after it opened", now().Sub(start))
		}
		// Idle minutes close empty windows on the minute, numbered by it.
		time.Sleep(2*time.Minute + 30*time.Second)
		synctest.Wait()
		if rep := aligned.Report(); rep.WindowsSkipped != 2 || rep.Last.Seq != k+2 || !rep.Last.Start.Equal(at(k+2)) || !rep.Last.End.Equal(at(k+3)) {
			t.Fatalf("at %s: %d skipped, last window %d of [%s, %s); want 2, window %d of [%s, %s)",
				now(), rep.WindowsSkipped, rep.Last.Seq, rep.Last.Start, rep.Last.End, k+2, at(k+2), at(k+3))
		}
		// A follower taking over mid-window leads in that window and
		// closes it on the minute, with the rows it counted as follower.
		feed(follower, r, 150, shifted(2, 0))
		follower.SetLeading(true, nil)
		if rep := follower.Report(); rep.Current.Seq != k+3 || !rep.Current.Start.Equal(at(k+3)) || rep.Current.Rows != 150 {
			t.Fatalf("the new leader's open window %+v, want window %d from %s with 150 rows", rep.Current, k+3, at(k+3))
		}
		time.Sleep(at(k + 4).Sub(now()))
		synctest.Wait()
		if rep := follower.Report(); rep.Last == nil || rep.Last.Seq != k+3 || !rep.Last.End.Equal(at(k+4)) || rep.Last.Rows != 150 || !rep.Last.Judged {
			t.Fatalf("the new leader's last window %+v, want window %d ending %s with 150 rows", rep.Last, k+3, at(k+4))
		}
	})
}

// The size of the counts a follower of the demo model sends each second:
// with 100 rows, and with a full reservoir (1000 values a feature), of
// float32 values (as the gateway observes float32 tensors) and of float64.
func TestCountsSizeDemo(t *testing.T) {
	ref, err := LoadReference("../configs/models/demo/1/reference.json")
	if err != nil {
		t.Fatal(err)
	}
	size := func(rows int, narrow bool) int {
		t.Helper()
		mon := startMonitor(t, Options{Reference: ref, Follower: true})
		r := rand.New(rand.NewPCG(30, 30))
		in, out := make([]float64, len(ref.Features)), make([]float64, 1)
		for range rows {
			for i := range in {
				s := ref.Features[i].Sample
				in[i] = s[r.IntN(len(s))] * (1 + r.NormFloat64()/100)
				if narrow {
					in[i] = float64(float32(in[i]))
				}
			}
			out[0] = float64(float32(r.Float64()))
			mon.Observe(Rows{Values: in, Width: len(in)}, Rows{Values: out, Width: 1})
		}
		c, _ := mon.TakeCounts()
		data, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		return len(data)
	}
	small, full, wide := size(100, true), size(5000, true), size(5000, false)
	t.Logf("demo counts in JSON: 100 rows %d bytes; a full reservoir of float32 values %d bytes, of float64 values %d bytes", small, full, wide)
	if full > 64<<10 {
		t.Fatalf("full counts of the demo model take %d bytes, want at most 64 KiB", full)
	}
}

// Windows that a leader closed but had not judged when it stopped leading
// go back into its open window, for the next leader: no row is lost in a
// hand-over. Which the monitor does first, judge them or step down, is up
// to its goroutine, so the hand-over is tried ten times.
func TestSetLeadingKeepsClosedWindows(t *testing.T) {
	for range 10 {
		synctest.Test(t, func(t *testing.T) {
			set := metrics.NewSet()
			release := make(chan struct{})
			mon := startMonitor(t, Options{
				Config: Config{Window: WindowConfig{Rows: 100}, Consecutive: 1}, Reference: normalReference(t, 1, 4, 2000), Metrics: set,
				Commit: func(State, *Decision) error {
					<-release // the judge is busy while windows close
					return nil
				},
			})
			r := rand.New(rand.NewPCG(31, 31))
			feed(mon, r, 100, shifted(4, 3))
			synctest.Wait()
			feed(mon, r, 350, shifted(4, 3)) // two windows close; the third overruns
			stepped := make(chan struct{})
			go func() {
				mon.SetLeading(false, nil)
				close(stepped)
			}()
			synctest.Wait()
			close(release)
			<-stepped
			synctest.Wait()
			judged := metricValue(t, prometheus(set), "infergate_drift_rows_total")
			c, _ := mon.TakeCounts()
			if judged+float64(c.Rows) != 450 || judged < 100 {
				t.Fatalf("%v rows judged and %d handed on, want 450 in all", judged, c.Rows)
			}
		})
	}
}

// With no empty window to swap in (all of them waiting to go back into
// the open one), TakeCounts copies the open window and empties it in place.
func TestTakeCountsWithoutSpareWindow(t *testing.T) {
	clock := newFakeClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	mon := startMonitor(t, countsOptions(t, true, clock))
	mon.Close() // so that nothing but the test moves windows
	var spare []*window
	for len(mon.free) > 0 {
		spare = append(spare, <-mon.free)
	}
	r := rand.New(rand.NewPCG(32, 32))
	observeMixed(mon, r, 40, false)
	if c, ok := mon.TakeCounts(); !ok || c.Rows != 40 || sum(c.Features[0].Bins) != 40 || len(c.Features[0].Sample) != 40 {
		t.Fatalf("counts %+v", c)
	}
	observeMixed(mon, r, 5, false)
	if c, ok := mon.TakeCounts(); !ok || c.Rows != 5 || len(c.Features[2].Sample) != 5 {
		t.Fatalf("counts after the first were taken: %+v", c)
	}
	if len(spare) != windowPool-1 || len(mon.free) != 0 {
		t.Fatalf("%d spare windows, %d free after TakeCounts; want %d, 0", len(spare), len(mon.free), windowPool-1)
	}
}
