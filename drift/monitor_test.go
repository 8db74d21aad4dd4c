package drift

import (
	"bytes"
	"log/slog"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/VictoriaMetrics/metrics"
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
	return startMonitor(t, Options{Config: cfg, Reference: ref, Commit: commitTo(decisions)})
}

// commitTo returns a Commit that stores nothing and hands each decision
// to decisions.
func commitTo(decisions chan<- Decision) func(State, *Decision) error {
	return func(_ State, d *Decision) error {
		if d != nil {
			decisions <- *d
		}
		return nil
	}
}

func newMonitor(t *testing.T, ref *Reference, cfg Config) *Monitor {
	t.Helper()
	return startMonitor(t, Options{Config: cfg, Reference: ref})
}

// startMonitor starts a monitor of model m version 1 with o, its config
// after defaults and its columns, where unset, those of the reference in
// order; Close runs at the end of the test.
func startMonitor(t *testing.T, o Options) *Monitor {
	t.Helper()
	o.Config = o.Config.WithDefaults()
	if err := o.Config.Validate("drift"); err != nil {
		t.Fatal(err)
	}
	o.Model, o.Version = "m", "1"
	if o.Columns == nil {
		o.Columns = identityColumns(len(o.Reference.Features))
	}
	if o.PredictionColumns == nil {
		o.PredictionColumns = identityColumns(len(o.Reference.Predictions))
	}
	mon, err := New(o)
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

// shifted returns the shift by for each of nf features.
func shifted(nf int, by float64) []float64 {
	s := make([]float64, nf)
	for i := range s {
		s[i] = by
	}
	return s
}

// prometheus returns the series of set in the Prometheus text format.
func prometheus(set *metrics.Set) string {
	var buf bytes.Buffer
	set.WritePrometheus(&buf)
	return buf.String()
}

// metricValue returns the value of series in text, failing the test when
// text has no such series.
func metricValue(t *testing.T, text, series string) float64 {
	t.Helper()
	for line := range strings.SplitSeq(text, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			x, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("series %s: %s", series, err)
			}
			return x
		}
	}
	t.Fatalf("no series %s in\n%s", series, text)
	return 0
}

func TestMonitorTimeWindows(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ref := normalReference(t, 1, 4, 2000)
		set := metrics.NewSet()
		decisions := make(chan Decision, 10)
		var logs lockedBuffer
		mon := startMonitor(t, Options{
			Config:    Config{Window: WindowConfig{Every: time.Minute}, Consecutive: 2},
			Reference: ref, Metrics: set, Labels: `model="m",version="1"`, Commit: commitTo(decisions),
			Log: slog.New(slog.NewTextHandler(&logs, nil)),
		})
		r := rand.New(rand.NewPCG(4, 4))
		start := time.Now()
		// minute feeds rows rows into the open window, then waits until a
		// second past its end.
		minute := func(rows int, shift float64) Report {
			t.Helper()
			feed(mon, r, rows, shifted(4, shift))
			end := start.Add(time.Minute * time.Duration(mon.Report().Current.Seq+1))
			time.Sleep(time.Until(end) + time.Second)
			synctest.Wait()
			return mon.Report()
		}

		// Rows alone close no window, however many.
		feed(mon, r, 5000, shifted(4, 2))
		time.Sleep(59 * time.Second)
		synctest.Wait()
		if rep := mon.Report(); rep.WindowsJudged+rep.WindowsSkipped != 0 || rep.Current.Rows != 5000 || rep.Current.Seq != 0 {
			t.Fatalf("after 59s: %d windows judged, %d skipped, %d rows in window %d; want none, 5000 in window 0",
				rep.WindowsJudged, rep.WindowsSkipped, rep.Current.Rows, rep.Current.Seq)
		}
		// A minute closes it, and it is judged: drifted, one of two.
		time.Sleep(2 * time.Second)
		synctest.Wait()
		rep := mon.Report()
		if rep.WindowsJudged != 1 || rep.Last == nil || !rep.Last.Judged || !rep.Last.Drifted || rep.Last.Rows != 5000 ||
			!rep.Last.Start.Equal(start) || !rep.Last.End.Equal(start.Add(time.Minute)) || rep.DriftedInARow != 1 || rep.Drifted {
			t.Fatalf("after 61s: %+v", rep)
		}
		if rep.Current.Seq != 1 || rep.Current.Rows != 0 || !rep.Current.Start.Equal(start.Add(time.Minute)) {
			t.Fatalf("the open window after the first minute: %+v", rep.Current)
		}

		// A window below min_rows (100) is skipped: it is not judged and
		// neither extends nor breaks the run of drifted windows.
		rep = minute(90, 2)
		if rep.WindowsJudged != 1 || rep.WindowsSkipped != 1 || rep.Last.Judged || rep.Last.Rows != 90 || rep.Last.Features != nil || rep.DriftedInARow != 1 || rep.Drifted || len(decisions) != 0 {
			t.Fatalf("after a window of 90 rows: %d judged, %d skipped, last %+v, %d drifted in a row, drifted %v, %d decisions; want 1, 1, skipped, 1, false, 0",
				rep.WindowsJudged, rep.WindowsSkipped, rep.Last, rep.DriftedInARow, rep.Drifted, len(decisions))
		}
		// The report says why, and the log says it once.
		const why = "90 rows, fewer than min_rows 100 (models.m.drift.min_rows)"
		if rep.Last.SkippedReason != why || rep.MinRows != 100 || !maps.Equal(rep.WindowsSkippedBy, map[string]int64{SkipMinRows: 1}) {
			t.Fatalf("skipped window: reason %q, min_rows %d, skipped by reason %v; want %q, 100, min_rows: 1",
				rep.Last.SkippedReason, rep.MinRows, rep.WindowsSkippedBy, why)
		}
		if got := strings.Count(logs.String(), "drift window skipped"); got != 1 || !strings.Contains(logs.String(), why) {
			t.Fatalf("%d log lines of a skipped window, want 1 naming %q:\n%s", got, why, logs.String())
		}
		text := prometheus(set)
		if metricValue(t, text, `infergate_drift_windows_total{model="m",version="1",result="skipped"}`) != 1 ||
			metricValue(t, text, `infergate_drift_windows_total{model="m",version="1",result="judged"}`) != 1 {
			t.Fatalf("windows_total after one judged and one skipped window:\n%s", text)
		}
		// The second drifted window (the third window, number 2) completes the run.
		rep = minute(200, 2)
		if rep.Last.SkippedReason != "" {
			t.Fatalf("a judged window has skipped reason %q", rep.Last.SkippedReason)
		}
		if !rep.Drifted || rep.DriftedInARow != 2 || len(decisions) != 1 {
			t.Fatalf("after two drifted windows: drifted %v, %d in a row, %d decisions", rep.Drifted, rep.DriftedInARow, len(decisions))
		}
		d := <-decisions
		if d.Type != DriftDetected || d.Window.Seq != 2 || d.Window.Rows != 200 || !d.Time.Equal(start.Add(3*time.Minute)) || d.Model != "m" || d.Version != "1" {
			t.Fatalf("decision %s at window %d of %d rows at %s for %s/%s; want drift.detected at window 2 of 200 rows at %s for m/1",
				d.Type, d.Window.Seq, d.Window.Rows, d.Time, d.Model, d.Version, start.Add(3*time.Minute))
		}
		// An idle minute closes an empty window, which is skipped.
		time.Sleep(time.Minute)
		synctest.Wait()
		if rep := mon.Report(); rep.WindowsSkipped != 2 || rep.Last.Rows != 0 || rep.WindowsSkippedBy[SkipMinRows] != 2 ||
			rep.Last.SkippedReason != "0 rows, fewer than min_rows 100 (models.m.drift.min_rows)" {
			t.Fatalf("after an idle minute: %d skipped (%v), last window of %d rows (%q); want 2, 0 rows, fewer than min_rows",
				rep.WindowsSkipped, rep.WindowsSkippedBy, rep.Last.Rows, rep.Last.SkippedReason)
		}
		if got := strings.Count(logs.String(), "drift window skipped"); got != 1 {
			t.Fatalf("%d log lines after two skipped windows, want 1:\n%s", got, logs.String())
		}
	})
}

// lockedBuffer is a bytes.Buffer safe for concurrent use, for a logger.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// fakeClock is a clock that moves only when told; it is safe for
// concurrent use.
type fakeClock struct{ nanos atomic.Int64 }

func newFakeClock(t time.Time) *fakeClock {
	c := &fakeClock{}
	c.set(t)
	return c
}

func (c *fakeClock) Now() time.Time  { return time.Unix(0, c.nanos.Load()).UTC() }
func (c *fakeClock) set(t time.Time) { c.nanos.Store(t.UnixNano()) }

func TestMonitorCooldown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
		clock := newFakeClock(t0)
		decisions := make(chan Decision, 10)
		mon := startMonitor(t, Options{
			// A false alarm rate low enough that no clean window of the
			// seed drifts by chance.
			Config:    Config{Window: WindowConfig{Rows: 200}, Consecutive: 1, Cooldown: 10 * time.Minute, FalseAlarmRate: 0.001},
			Reference: normalReference(t, 1, 4, 2000), Commit: commitTo(decisions), Now: clock.Now,
		})
		r := rand.New(rand.NewPCG(5, 5))
		// f feeds a window that ends at t0+end, shifted by shift in every
		// feature, and checks the decision that follows, if any.
		f := func(end time.Duration, shift float64, want DecisionType) {
			t.Helper()
			clock.set(t0.Add(end))
			feed(mon, r, 200, shifted(4, shift))
			synctest.Wait()
			rep := mon.Report()
			if rep.Last == nil || !rep.Last.End.Equal(t0.Add(end)) || rep.Last.Drifted != (shift != 0) {
				t.Fatalf("window ending at +%s: last window %+v, want one ending then, drifted %v", end, rep.Last, shift != 0)
			}
			var got DecisionType
			select {
			case d := <-decisions:
				got = d.Type
				if !d.Time.Equal(t0.Add(end)) || !d.Window.End.Equal(t0.Add(end)) {
					t.Fatalf("window ending at +%s: decision at %s, window ending %s", end, d.Time, d.Window.End)
				}
			default:
			}
			if got != want {
				t.Fatalf("window ending at +%s, shift %v: decision %q, want %q", end, shift, got, want)
			}
		}
		f(time.Minute, 3, DriftDetected) // the cooldown runs to +11m
		f(2*time.Minute, 0, DriftResolved)
		f(3*time.Minute, 3, "") // drifted again within the cooldown: nothing
		f(5*time.Minute, 0, "") // clean again: nothing to resolve
		f(6*time.Minute, 3, "")
		f(10*time.Minute, 3, "")
		f(11*time.Minute, 3, DriftDetected) // the cooldown is over
		f(12*time.Minute, 3, "")            // drifted and already said so
		if rep := mon.Report(); !rep.Drifted || rep.DriftedInARow != 4 {
			t.Fatalf("drifted %v, %d windows in a row; want true, 4", rep.Drifted, rep.DriftedInARow)
		}
	})
}

func TestMonitorSample(t *testing.T) {
	f := func(sample float64, lo, hi int64) {
		t.Helper()
		mon := newMonitor(t, normalReference(t, 1, 2, 500), Config{Sample: sample, Window: WindowConfig{Rows: 1e9}})
		row := []float64{0.5, -0.5}
		for range 20000 {
			mon.Observe(Rows{Values: row, Width: 2}, Rows{})
		}
		if got := mon.Report().Current.Rows; got < lo || got > hi {
			t.Fatalf("sample %v: %d of 20000 one-row calls observed, want %d..%d", sample, got, lo, hi)
		}
	}
	f(1, 20000, 20000)
	// Binomial(20000, 1/2): mean 10000, sd 71; the bounds are 7 sd away.
	f(0.5, 9500, 10500)
	// Binomial(20000, 1/100): mean 200, sd 14.
	f(0.01, 100, 300)
}

func TestMonitorFeatureOverrides(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ref := normalReference(t, 1, 3, 2000)
		mon := newMonitor(t, ref, Config{
			Window: WindowConfig{Rows: 500},
			Features: map[string]FeatureConfig{
				"a": {Ignore: true},
				"b": {Method: MethodPSI, Threshold: Threshold{Value: 0.3}},
			},
		})
		r := rand.New(rand.NewPCG(7, 8)) // c is a KS test at 0.05: this seed has no false alarm
		f := func(shift []float64, wantShare float64, wantDrifted []bool) {
			t.Helper()
			feed(mon, r, 500, shift)
			synctest.Wait()
			last := mon.Report().Last
			if last.Share != wantShare || last.Drifted != (wantShare >= 0.5) {
				t.Fatalf("shift %v: share %v, window drifted %v; want %v, %v", shift, last.Share, last.Drifted, wantShare, wantShare >= 0.5)
			}
			for i, fr := range last.Features {
				if fr.Drifted != wantDrifted[i] {
					t.Fatalf("shift %v: feature %s drifted %v (%s %v against %v), want %v", shift, fr.Name, fr.Drifted, fr.Method, fr.Value, fr.Threshold, wantDrifted[i])
				}
			}
			a, b, c := last.Features[0], last.Features[1], last.Features[2]
			// a is reported but ignored: it is neither in the share nor one
			// of the KS tests among which the 0.05 is divided, so c keeps all of it.
			if !a.Ignored || !a.Judged || a.Method != MethodKS || b.Ignored || c.Ignored {
				t.Fatalf("ignored: a %v (judged %v, by %s), b %v, c %v; want only a, judged by ks", a.Ignored, a.Judged, a.Method, b.Ignored, c.Ignored)
			}
			if b.Method != MethodPSI || b.Threshold != 0.3 || b.Value != b.Statistics["psi"] {
				t.Fatalf("b: %s %v against %v, psi %v; want psi against 0.3", b.Method, b.Value, b.Threshold, b.Statistics["psi"])
			}
			if c.Method != MethodKS || c.Threshold != 0.05 || c.Value != c.Statistics["ks_p_value"] {
				t.Fatalf("c: %s %v against %v; want ks p-value against 0.05", c.Method, c.Value, c.Threshold)
			}
		}
		// Only the ignored feature drifts: the share of b and c is 0.
		f([]float64{3, 0, 0}, 0, []bool{true, false, false})
		// b drifts by PSI: one of the two features counted.
		f([]float64{0, 3, 0}, 0.5, []bool{false, true, false})
		f([]float64{3, 3, 3}, 1, []bool{true, true, true})
	})
}

func TestNewErrors(t *testing.T) {
	numeric := normalReference(t, 1, 2, 500)
	categorical := &Reference{Features: []Profile{BuildProfile("colour", Categorical, []float64{1, 2, 2, 3}, ProfileOptions{})}}
	f := func(o Options, want string) {
		t.Helper()
		o.Config = o.Config.WithDefaults()
		if o.Columns == nil && o.Reference != nil {
			o.Columns = identityColumns(len(o.Reference.Features))
		}
		o.Model, o.Version = "m", "1"
		mon, err := New(o)
		if err == nil {
			mon.Close()
			t.Fatalf("New succeeded, want an error containing %q", want)
		}
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("error %q does not contain %q", err, want)
		}
	}
	f(Options{}, "no reference profile")
	f(Options{Reference: numeric, Columns: []int{0}}, `model "m" version 1: 1 feature and 0 prediction columns for a reference of 2 and 0`)
	f(Options{Reference: numeric, PredictionColumns: []int{0}}, "2 feature and 1 prediction columns for a reference of 2 and 0")
	f(Options{Reference: numeric, Config: Config{Features: map[string]FeatureConfig{"b": {Method: MethodChiSquare}}}},
		`method chi_square cannot judge the numeric feature "b"`)
	f(Options{Reference: numeric, Config: Config{Method: MethodLInfinity}}, `method linf cannot judge the numeric feature "a"`)
	f(Options{Reference: categorical, Config: Config{Method: MethodKS}}, `method ks cannot judge the categorical feature "colour"`)
	f(Options{Reference: categorical, Config: Config{Features: map[string]FeatureConfig{"colour": {Method: MethodWasserstein}}}},
		`method wasserstein cannot judge the categorical feature "colour"`)
}

// categoricalReference profiles a numeric feature x and a categorical
// feature c of categories 0, 1, 2 with shares 1/2, 3/10, 1/5.
func categoricalReference(t *testing.T) *Reference {
	t.Helper()
	r := rand.New(rand.NewPCG(8, 8))
	x, c := make([]float64, 5000), make([]float64, 5000)
	for i := range x {
		x[i], c[i] = r.NormFloat64(), float64(min(i%10/5+i%10/8, 2)) // 0 0 0 0 0 1 1 1 2 2
	}
	ref := &Reference{Rows: 5000, Features: []Profile{BuildProfile("x", Numeric, x, ProfileOptions{}), BuildProfile("c", Categorical, c, ProfileOptions{})}}
	if err := ref.Validate(); err != nil {
		t.Fatal(err)
	}
	return ref
}

func TestMonitorCategorical(t *testing.T) {
	ref := categoricalReference(t)
	if want := []int64{2500, 1500, 1000, 0}; !slices.Equal(ref.Features[1].Counts, want) {
		t.Fatalf("reference counts %v, want %v", ref.Features[1].Counts, want)
	}
	f := func(rows int, want Method) {
		t.Helper()
		synctest.Test(t, func(t *testing.T) {
			mon := newMonitor(t, ref, Config{Window: WindowConfig{Rows: rows}})
			r := rand.New(rand.NewPCG(9, 9))
			buf := make([]float64, 2)
			window := func(category func() float64) FeatureResult {
				for range rows {
					buf[0], buf[1] = r.NormFloat64(), category()
					mon.Observe(Rows{Values: buf, Width: 2}, Rows{})
				}
				synctest.Wait()
				return mon.Report().Last.Features[1]
			}
			// Drawn with the reference's shares: no drift.
			shares := []float64{0, 0, 0, 0, 0, 1, 1, 1, 2, 2}
			null := window(func() float64 { return shares[r.IntN(10)] })
			if null.Method != want || null.Drifted || null.Count != int64(rows) {
				t.Fatalf("%d rows: judged by %s, drifted %v (%v against %v), count %d; want %s, false, %d",
					rows, null.Method, null.Drifted, null.Value, null.Threshold, null.Count, want, rows)
			}
			if _, ok := null.Statistics["linf"]; !ok || null.Statistics[null.Statistic] != null.Value {
				t.Fatalf("%d rows: statistics %v", rows, null.Statistics)
			}
			// A tenth of the rows take category 7, never seen: the last bin.
			unseen := window(func() float64 {
				if r.IntN(10) == 0 {
					return 7
				}
				return shares[r.IntN(10)]
			})
			if !unseen.Drifted || unseen.Counts[3] < int64(rows)/20 || !slices.Equal(unseen.Categories, []float64{0, 1, 2}) {
				t.Fatalf("%d rows with unseen categories: drifted %v (%v against %v), counts %v", rows, unseen.Drifted, unseen.Value, unseen.Threshold, unseen.Counts)
			}
			// Shares moved from 1/2, 3/10, 1/5 to 1/5, 3/10, 1/2.
			moved := window(func() float64 { return 2 - shares[r.IntN(10)] })
			if !moved.Drifted {
				t.Fatalf("%d rows with moved shares: not drifted (%v against %v)", rows, moved.Value, moved.Threshold)
			}
		})
	}
	f(500, MethodChiSquare)
	f(1000, MethodChiSquare)
	f(2000, MethodJensenShannon)
}

func TestMonitorAutoThreshold(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ref := normalReference(t, 11, 8, 4000)
		const windows = 200
		mon := newMonitor(t, ref, Config{
			Window: WindowConfig{Rows: 200}, Threshold: Threshold{Auto: true}, FalseAlarmRate: 0.1, Consecutive: 1,
			Features: map[string]FeatureConfig{"a": {Method: MethodPSI}, "b": {Method: MethodHellinger}},
		})
		r := rand.New(rand.NewPCG(12, 12))
		flagged := map[string]int{}
		drifted := 0
		for range windows {
			feed(mon, r, 200, shifted(8, 0))
			synctest.Wait()
			last := mon.Report().Last
			for _, fr := range last.Features {
				if fr.Drifted {
					flagged[fr.Name]++
				}
			}
			drifted += boolIndex(last.Drifted)
		}
		rep := mon.Report()
		if rep.WindowsJudged != windows {
			t.Fatalf("%d windows judged, want %d", rep.WindowsJudged, windows)
		}
		// Family-wise: one window in 10 drifts by chance, whichever of the
		// eight features flags it (20 of 200, 4.2 windows' standard deviation).
		rate := float64(drifted) / windows
		t.Logf("calibrated thresholds: a (psi) %.4g, b (hellinger) %.4g, c (ks statistic) %.4g; flagged %v, windows drifted %.3f",
			rep.Last.Features[0].Threshold, rep.Last.Features[1].Threshold, rep.Last.Features[2].Threshold, flagged, rate)
		if rate < 0.04 || rate > 0.18 {
			t.Fatalf("%d of %d null windows drifted (features flagged %v), want 4%%..18%%", drifted, windows, flagged)
		}
		if a := rep.Last.Rule; a.Name != RuleFamilyWise || a.Controlled != 8 || math.Abs(a.FeatureRate-0.1/8) > 1e-12 || len(a.Uncontrolled) > 0 {
			t.Fatalf("rule applied %+v, want family_wise over 8 controlled features at 0.0125 each", a)
		}
		for _, fr := range rep.Last.Features {
			if !(fr.Threshold > 0 && fr.Threshold < 1) {
				t.Fatalf("feature %s: calibrated threshold %v", fr.Name, fr.Threshold)
			}
			if flagged[fr.Name] > windows/10 {
				t.Fatalf("feature %s (%s) flagged in %d of %d null windows", fr.Name, fr.Method, flagged[fr.Name], windows)
			}
		}
		// A shift of one standard deviation is still found in every feature.
		feed(mon, r, 200, shifted(8, 1))
		synctest.Wait()
		for _, fr := range mon.Report().Last.Features {
			if !fr.Drifted {
				t.Fatalf("feature %s: a 1-sd shift not found: %s %v against %v", fr.Name, fr.Method, fr.Value, fr.Threshold)
			}
		}
	})
}

// An auto threshold is calibrated for the method of the configured window
// size; a window that grew past it while every other was being judged must
// be judged by the same method, not by the one its size would pick.
func TestMonitorAutoThresholdKeepsItsMethod(t *testing.T) {
	synctest.Test(t, testAutoThresholdKeepsItsMethod)
}

func testAutoThresholdKeepsItsMethod(t *testing.T) {
	ref := normalReference(t, 1, 2, 2000)
	mon := newMonitor(t, ref, Config{Window: WindowConfig{Rows: 1000}, Threshold: Threshold{Auto: true}})
	synctest.Wait() // for the calibration
	mon.Close()     // so that evaluate below runs alone
	w := newWindow(ref, 1000)
	r := rand.New(rand.NewPCG(13, 13))
	for range 3000 { // an overrun window: three times the configured rows
		for i := range 2 {
			w.add(i, mon.jury.judges[i].profile, r.NormFloat64())
		}
		w.rows++
	}
	for _, fr := range mon.evaluate(w).Features {
		if fr.Method != MethodKS || fr.Drifted {
			t.Fatalf("feature %s of a 3000-row window: %s %v against %v, drifted %v; want ks, not drifted", fr.Name, fr.Method, fr.Value, fr.Threshold, fr.Drifted)
		}
	}
}

// predictionReference profiles nf standard normal features and one
// prediction uniform on [0, 1).
func predictionReference(t *testing.T, nf int) *Reference {
	t.Helper()
	ref := normalReference(t, 1, nf, 2000)
	p := make([]float64, 2000)
	for i := range p {
		p[i] = (float64(i) + 0.5) / 2000
	}
	ref.Predictions = []Profile{BuildProfile("score", Numeric, p, ProfileOptions{})}
	if err := ref.Validate(); err != nil {
		t.Fatal(err)
	}
	return ref
}

func TestMonitorPredictions(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mon := newMonitor(t, predictionReference(t, 2), Config{Window: WindowConfig{Rows: 200}})
		r := rand.New(rand.NewPCG(14, 14))
		in, out := make([]float64, 20), make([]float64, 20) // 10 rows of 2 inputs and of 2 outputs
		f := func(predictionShift float64, withOutputs, wantDrifted bool) {
			t.Helper()
			for range 20 {
				for k := range in {
					in[k] = r.NormFloat64()
				}
				for k := range out {
					out[k] = r.Float64() + predictionShift // column 0 is the prediction; 1 is ignored
				}
				o := Rows{Values: out, Width: 2}
				if !withOutputs {
					o = Rows{}
				}
				mon.Observe(Rows{Values: in, Width: 2}, o)
			}
			synctest.Wait()
			last := mon.Report().Last
			p := last.Features[2]
			if !p.Prediction || p.Name != "score" || p.Judged != withOutputs || p.Drifted != wantDrifted || last.Features[0].Prediction {
				t.Fatalf("shift %v, outputs %v: prediction %+v; want judged %v, drifted %v", predictionShift, withOutputs, p, withOutputs, wantDrifted)
			}
			// Predictions take no part in the share, and their KS test is
			// corrected only among predictions: 0.05 for the one, 0.05/2
			// for each of the two features.
			if last.Share != 0 || last.Drifted || last.Features[0].Threshold != 0.025 || withOutputs && p.Threshold != 0.05 {
				t.Fatalf("shift %v: share %v, drifted %v, feature threshold %v, prediction threshold %v; want 0, false, 0.025, 0.05",
					predictionShift, last.Share, last.Drifted, last.Features[0].Threshold, p.Threshold)
			}
		}
		f(0, true, false)
		f(0.5, true, true)
		f(0.5, false, false) // no outputs in the requests: nothing to judge
	})
}

func TestMonitorMetrics(t *testing.T) {
	f := func(labels string, series func(extra string) string) {
		t.Helper()
		synctest.Test(t, func(t *testing.T) {
			set := metrics.NewSet()
			ref := predictionReference(t, 1)
			ref.Features = append(ref.Features, BuildProfile("colour", Categorical, []float64{1, 2, 2, 3}, ProfileOptions{}))
			mon := startMonitor(t, Options{Config: Config{Window: WindowConfig{Rows: 200}}, Reference: ref, Metrics: set, Labels: labels})
			r := rand.New(rand.NewPCG(15, 15))
			in, out := make([]float64, 2), make([]float64, 1)
			for range 200 {
				in[0], in[1], out[0] = r.NormFloat64(), float64(1+r.IntN(3)), r.Float64()
				mon.Observe(Rows{Values: in, Width: 2}, Rows{Values: out, Width: 1})
			}
			synctest.Wait()
			text := prometheus(set)
			last := mon.Report().Last
			for _, fr := range last.Features {
				feature := `feature="` + fr.Name + `"`
				for _, stat := range statisticNames[fr.Kind] {
					got := metricValue(t, text, series(`infergate_drift_statistic{`+feature+`,statistic="`+stat+`"}`))
					if !near(got, fr.Statistics[stat], 1e-9) {
						t.Fatalf("%s %s: exported %v, reported %v", fr.Name, stat, got, fr.Statistics[stat])
					}
				}
				if got := metricValue(t, text, series(`infergate_drift_feature_drifted{`+feature+`}`)); got != float64(boolIndex(fr.Drifted)) {
					t.Fatalf("%s: feature_drifted %v, reported drifted %v", fr.Name, got, fr.Drifted)
				}
				// The per-bin counts, for a central Prometheus to merge.
				for b, n := range fr.Counts {
					if got := metricValue(t, text, series(`infergate_drift_bin_rows_total{`+feature+`,bin="`+strconv.Itoa(b)+`"}`)); got != float64(n) {
						t.Fatalf("%s bin %d: exported %v rows, window counted %d", fr.Name, b, got, n)
					}
				}
			}
			for s, want := range map[string]float64{
				`infergate_drift_windows_total{result="judged"}`:   1,
				`infergate_drift_windows_total{result="skipped"}`:  0,
				`infergate_drift_decisions_total{type="detected"}`: 0,
				`infergate_drift_decisions_total{type="resolved"}`: 0,
				`infergate_drift_commit_errors_total`:              0,
				`infergate_drift_counts_total{result="merged"}`:    0,
				`infergate_drift_counts_total{result="refused"}`:   0,
				`infergate_drift_rows_total`:                       200,
				`infergate_drift_window_overruns_total`:            0,
				`infergate_drift_share`:                            last.Share,
				`infergate_drift_drifted`:                          0,
			} {
				if got := metricValue(t, text, series(s)); got != want {
					t.Fatalf("%s = %v, want %v", series(s), got, want)
				}
			}
		})
	}
	// The labels given come first in every series.
	f(`model="m",version="1"`, func(s string) string {
		name, rest, ok := strings.Cut(s, "{")
		if !ok {
			return s + `{model="m",version="1"}`
		}
		return name + `{model="m",version="1",` + rest
	})
	f("", func(s string) string { return s })
}

// TestMonitorMetricsGoStale checks that a window's gauges exist only while
// that window is the last one closed: none before the first judged window,
// and none once a window closes unjudged (here, one period without rows);
// and that disable_bin_series leaves the per-bin counters out.
func TestMonitorMetricsGoStale(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		set := metrics.NewSet()
		mon := startMonitor(t, Options{Config: Config{Window: WindowConfig{Every: time.Minute}, MinRows: 100, DisableBinSeries: true},
			Reference: normalReference(t, 1, 2, 2000), Metrics: set, Labels: `model="m",version="1"`})
		windowGauges := []string{"infergate_drift_statistic{", "infergate_drift_feature_drifted{", "infergate_drift_share{"}
		present := func(when string, want bool) {
			t.Helper()
			text := prometheus(set)
			for _, g := range windowGauges {
				if strings.Contains(text, g) != want {
					t.Fatalf("%s: series %s present %v, want %v:\n%s", when, g, !want, want, text)
				}
			}
			if strings.Contains(text, "infergate_drift_bin_rows_total") {
				t.Fatalf("%s: bin series exported with disable_bin_series:\n%s", when, text)
			}
		}
		present("before any window closed", false)
		r := rand.New(rand.NewPCG(16, 16))
		in := make([]float64, 2)
		for range 200 {
			in[0], in[1] = r.NormFloat64(), r.NormFloat64()
			mon.Observe(Rows{Values: in, Width: 2}, Rows{})
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		if rep := mon.Report(); rep.WindowsJudged != 1 {
			t.Fatalf("%d windows judged after one period of 200 rows, want 1", rep.WindowsJudged)
		}
		present("after a judged window", true)
		time.Sleep(time.Minute)
		synctest.Wait()
		present("after a window without rows", false)
		if got := metricValue(t, prometheus(set), `infergate_drift_windows_total{model="m",version="1",result="skipped"}`); got != 1 {
			t.Fatalf("%v windows skipped, want 1", got)
		}
	})
}

func TestDDM(t *testing.T) {
	var d DDM
	r := rand.New(rand.NewPCG(9, 9))
	stream := func(rows int, errRate float64) (first ConceptLevel, at int) {
		for i := range rows {
			miss := 0
			if r.Float64() < errRate {
				miss = 1
			}
			switch lv := d.add(1, miss); {
			case lv == ConceptDrift:
				return lv, i
			case lv == ConceptWarning && first == "":
				first, at = lv, i
			}
		}
		return first, at
	}
	if lv, at := stream(5000, 0.1); lv == ConceptDrift {
		t.Fatalf("a steady 10%% error rate signalled drift at row %d", at)
	}
	lv, at := stream(2000, 0.4)
	if lv != ConceptDrift || at > 300 {
		t.Fatalf("a jump from 10%% to 40%% errors: %q after %d rows, want drift within 300", lv, at)
	}
}

func TestMonitorConceptDrift(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ref := normalReference(t, 1, 2, 4000)
		decisions := make(chan Decision, 4)
		mon := newTestMonitor(t, ref, Config{}, decisions)
		feed(mon, rand.New(rand.NewPCG(1, 1)), 500, []float64{0, 0})
		for range 100 {
			mon.ObserveLabels(10, 9) // 90% right
		}
		synctest.Wait()
		if rep := mon.Report(); rep.Concept != ConceptStable || len(decisions) != 0 {
			t.Fatalf("steady accuracy: concept %s, %d decisions", rep.Concept, len(decisions))
		}
		for range 100 {
			mon.ObserveLabels(10, 5) // 50% right
		}
		synctest.Wait()
		d := <-decisions
		if d.Type != DriftDetected || d.Reason != "concept" || d.Window.Labeled == 0 {
			t.Fatalf("got %+v, want drift.detected for the concept", d)
		}
		if rep := mon.Report(); !rep.Drifted {
			t.Fatal("the version is not marked drifted after a concept drift")
		}
	})
}

// TestMonitorFloat32Profile serves a monitor the very rows its reference
// was profiled from, as an FP32 input holds them: with a profile built in
// float32 the window's bins are the reference's, count for count; with one
// in float64, values on the edges move bins and the window drifts.
func TestMonitorFloat32Profile(t *testing.T) {
	// Tied values around 10, each a hair above or below in float64, which
	// FP32 rounds away (its spacing there is about 1e-6).
	r := rand.New(rand.NewPCG(7, 7))
	values := make([]float64, 1000)
	served := make([]float64, len(values))
	for i := range values {
		x := float32(10 + math.Round(r.NormFloat64()*4)/4)
		served[i] = float64(x)
		values[i] = served[i] + float64(r.IntN(2)*2-1)*1e-9
	}
	f := func(float32Profile, wantSame bool) {
		t.Helper()
		ref := &Reference{Rows: len(values), Features: []Profile{BuildProfile("a", Numeric, values, ProfileOptions{Float32: float32Profile})}}
		mon := newMonitor(t, ref, Config{Window: WindowConfig{Rows: len(values)}})
		mon.Observe(Rows{Values: served, Width: 1}, Rows{})
		fr := waitJudged(t, mon, 1).Last.Features[0]
		if same := slices.Equal(fr.Counts, fr.ReferenceCounts); same != wantSame {
			t.Fatalf("profiled in float32 %v: window counts %v, reference counts %v; want equal %v",
				float32Profile, fr.Counts, fr.ReferenceCounts, wantSame)
		}
		if wantSame && (fr.Drifted || fr.Statistics["psi"] != 0) {
			t.Fatalf("the reference's own rows drifted: %+v", fr)
		}
	}
	f(true, true)
	f(false, false)
}

// TestWarnSmallWindows: a distance method with a fixed threshold over
// windows of fewer than 300 rows is warned of once, naming the features;
// p-value methods, threshold auto and large windows are not.
func TestWarnSmallWindows(t *testing.T) {
	ref := normalReference(t, 1, 3, 2000)
	f := func(cfg Config, want bool) {
		t.Helper()
		var logs lockedBuffer
		startMonitor(t, Options{Config: cfg, Reference: ref, Log: slog.New(slog.NewTextHandler(&logs, nil))})
		if got := strings.Count(logs.String(), "drift windows this small"); got != map[bool]int{false: 0, true: 1}[want] {
			t.Fatalf("%+v: %d warnings, want %v:\n%s", cfg.Window, got, want, logs.String())
		}
	}
	small := Config{Window: WindowConfig{Rows: 50}, Method: MethodPSI, Threshold: Threshold{Value: 0.2}}
	f(small, true)
	large := small
	large.Window.Rows = 1000
	f(large, false)
	ks := small
	ks.Method, ks.Threshold = MethodKS, Threshold{Value: 0.05}
	f(ks, false)
}

// With windows by time, an auto threshold is calibrated for each window
// size as it first comes, at the largest calibration size the window
// reaches: a 150-row window is judged by the thresholds of 100-row ones,
// the same that windows of 100 rows get, and a 1200-row one by those of
// 1000 rows.
func TestMonitorAutoThresholdByTime(t *testing.T) {
	ref := normalReference(t, 3, 2, 1000)
	want := func(rows int) []float64 {
		off, err := NewOffline(ref, Config{Window: WindowConfig{Rows: rows}, Threshold: Threshold{Auto: true}})
		if err != nil {
			t.Fatal(err)
		}
		res, err := off.Judge(gaussianWindow(rand.New(rand.NewPCG(1, 1)), rows, 2, 0))
		if err != nil {
			t.Fatal(err)
		}
		var out []float64
		for _, f := range res.Features {
			out = append(out, f.Threshold)
		}
		return out
	}
	want100, want1000 := want(100), want(1000)
	synctest.Test(t, func(t *testing.T) {
		mon := newMonitor(t, ref, Config{Window: WindowConfig{Every: time.Minute}, MinRows: 50, Threshold: Threshold{Auto: true}})
		r := rand.New(rand.NewPCG(2, 2))
		for _, c := range []struct {
			rows  int
			shift float64
			want  []float64
		}{{150, 0, want100}, {150, 1, want100}, {1200, 0, want1000}} {
			feed(mon, r, c.rows, shifted(2, c.shift))
			time.Sleep(time.Minute)
			synctest.Wait()
			last := mon.Report().Last
			var got []float64
			for _, f := range last.Features {
				got = append(got, f.Threshold)
			}
			if last.Rows != int64(c.rows) || !slices.Equal(got, c.want) || last.Drifted != (c.shift > 0) {
				t.Fatalf("a window of %d rows shifted by %v: %d rows, thresholds %v, drifted %v; want thresholds %v, drifted %v",
					c.rows, c.shift, last.Rows, got, last.Drifted, c.want, c.shift > 0)
			}
		}
	})
}

// A drift, of the concept or of the features, does not silence its
// version: within the cooldown a new alarm decides nothing; after it, a
// new alarm of the error-rate detector (a false one came first, say, or
// the retrain it started was rejected) or drifted windows detect again.
func TestMonitorDetectsAgainAfterConceptDrift(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ref := normalReference(t, 1, 2, 4000)
		decisions := make(chan Decision, 4)
		mon := newTestMonitor(t, ref, Config{Window: WindowConfig{Rows: 200}, Consecutive: 1, Cooldown: time.Minute}, decisions)
		r := rand.New(rand.NewPCG(1, 1))
		alarm := func() {
			for range 100 {
				mon.ObserveLabels(10, 9)
			}
			for range 100 {
				mon.ObserveLabels(10, 5)
			}
			synctest.Wait()
		}
		alarm()
		if d := <-decisions; d.Type != DriftDetected || d.Reason != "concept" {
			t.Fatalf("got %+v, want drift.detected for the concept", d)
		}
		alarm() // within the cooldown
		feed(mon, r, 200, []float64{2, 2})
		synctest.Wait()
		if len(decisions) != 0 {
			t.Fatalf("within the cooldown: %+v", <-decisions)
		}
		time.Sleep(time.Minute)
		alarm()
		if d := <-decisions; d.Type != DriftDetected || d.Reason != "concept" {
			t.Fatalf("after the cooldown: got %+v, want drift.detected for the concept again", d)
		}
		time.Sleep(time.Minute)
		feed(mon, r, 200, []float64{2, 2})
		synctest.Wait()
		if d := <-decisions; d.Type != DriftDetected || d.Reason != "features" {
			t.Fatalf("drifted windows after a concept drift's cooldown: got %+v, want drift.detected for the features", d)
		}
		// A drift of the features that outlasts its cooldown (its retrain
		// rejected) asks again.
		time.Sleep(time.Minute)
		feed(mon, r, 200, []float64{2, 2})
		synctest.Wait()
		if d := <-decisions; d.Type != DriftDetected || d.Reason != "features" {
			t.Fatalf("windows still drifted after the cooldown: got %+v, want drift.detected for the features again", d)
		}
	})
}
