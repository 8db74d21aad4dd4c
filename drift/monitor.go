package drift

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

// DecisionType names what a Decision says.
type DecisionType string

// The decisions a Monitor makes.
const (
	DriftDetected DecisionType = "drift.detected"
	DriftResolved DecisionType = "drift.resolved"
)

// Decision is a change of a version's drift state.
type Decision struct {
	Type    DecisionType `json:"type"`
	Model   string       `json:"model"`
	Version string       `json:"version"`
	Time    time.Time    `json:"time"`
	// Window is the window that completed the run of Consecutive windows
	// (for a concept drift, the open window's number and rows so far).
	Window WindowResult `json:"window"`
	// Reason is "features" when the share of drifted features decided,
	// "concept" when the error rate of labeled rows did.
	Reason string `json:"reason"`
}

// Rows is a row-major block of values: Width columns per row.
type Rows struct {
	Values []float64
	Width  int
}

// Options are what a Monitor is built from.
type Options struct {
	Config    Config // after WithDefaults
	Reference *Reference
	Model     string
	Version   string
	// Columns[i] is the input column holding Reference.Features[i], and
	// PredictionColumns[i] the output column of Reference.Predictions[i].
	Columns, PredictionColumns []int
	Log                        *slog.Logger
	// Metrics, when set, receives the monitor's series, each labelled
	// with Labels (for example `model="demo",version="1"`).
	Metrics *metrics.Set
	Labels  string
	// Decisions receives every decision; when it is full the decision is
	// logged and counted as dropped. It may be nil.
	Decisions chan<- Decision
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// windowPool is the number of windows a monitor owns: the open one, and
// closed ones waiting for or under judgement.
const windowPool = 4

// Monitor keeps the drift state of one model version. It is safe for
// concurrent use.
type Monitor struct {
	o      Options
	cfg    Config
	judges []judge // the reference's features, then its predictions
	m      monitorMetrics

	mu sync.Mutex
	// cur is the open window and seq the number of the next one; mu guards both.
	cur *window
	seq int64

	free   chan *window // reset windows ready to open
	closed chan *window // closed windows waiting for judgement
	stop   chan struct{}
	done   chan struct{}

	reportMu sync.Mutex
	// reportMu guards the judgement state below, owned by the run goroutine.
	last            *WindowResult
	judged, skipped int64
	concept         ddm
	conceptLevel    ConceptLevel
	streak, clean   int // drifted and clean windows in a row
	drifted         bool
	// driftReason is the Reason of the decision that set drifted. Clean
	// feature windows resolve only a drift of the features: in a concept
	// drift the inputs look as ever.
	driftReason   string
	cooldownUntil time.Time
}

// New starts monitoring with o. It returns an error when the columns do
// not match the reference. Close stops it.
func New(o Options) (*Monitor, error) {
	if o.Reference == nil {
		return nil, errors.New("cannot monitor drift: no reference profile")
	}
	ref := o.Reference
	if len(o.Columns) != len(ref.Features) || len(o.PredictionColumns) != len(ref.Predictions) {
		return nil, fmt.Errorf("cannot monitor drift of model %q version %s: %d feature and %d prediction columns for a reference of %d and %d",
			o.Model, o.Version, len(o.Columns), len(o.PredictionColumns), len(ref.Features), len(ref.Predictions))
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	mon := &Monitor{
		o: o, cfg: o.Config,
		free: make(chan *window, windowPool), closed: make(chan *window, windowPool),
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	for _, group := range [][]Profile{ref.Features, ref.Predictions} {
		for i := range group {
			p := &group[i]
			fc := o.Config.Features[p.Name]
			j := judge{
				profile: p, prediction: len(mon.judges) >= len(ref.Features), ignore: fc.Ignore,
				method: cmp.Or(fc.Method, o.Config.Method), threshold: fc.Threshold,
				refCounts: make([]float64, len(p.Counts)), curCounts: make([]float64, len(p.Counts)),
			}
			if j.threshold == (Threshold{}) {
				j.threshold = o.Config.Threshold
			}
			if j.method != "" && !j.method.validFor(p.Kind) {
				return nil, fmt.Errorf("cannot monitor drift of model %q version %s: method %s cannot judge the %s feature %q",
					o.Model, o.Version, j.method, p.Kind, p.Name)
			}
			for b, n := range p.Counts {
				j.refCounts[b] = float64(n)
			}
			mon.judges = append(mon.judges, j)
		}
	}
	mon.cur = newWindow(ref, o.Config.Reservoir)
	mon.cur.reset(0, o.Now())
	mon.seq = 1
	for range windowPool - 1 {
		mon.free <- newWindow(ref, o.Config.Reservoir)
	}
	mon.m = newMonitorMetrics(o.Metrics, o.Labels, mon.judges)
	go mon.run()
	return mon, nil
}

// Observe records the rows of a request: in holds the input columns the
// reference's features come from, out the output columns of its
// predictions (out may be empty when the reference has none). With a
// sample rate below 1 only that share of calls is recorded. Observe
// allocates nothing.
func (mon *Monitor) Observe(in, out Rows) {
	if in.Width == 0 || mon.cfg.Sample < 1 && rand.Float64() >= mon.cfg.Sample {
		return
	}
	rows := len(in.Values) / in.Width
	withPredictions := len(mon.o.PredictionColumns) > 0 && out.Width > 0 && len(out.Values) >= rows*out.Width
	nf := len(mon.o.Columns)
	mon.mu.Lock()
	for r := range rows {
		w := mon.cur
		row := in.Values[r*in.Width : (r+1)*in.Width]
		for i, col := range mon.o.Columns {
			w.add(i, mon.judges[i].profile, row[col])
		}
		if withPredictions {
			row := out.Values[r*out.Width : (r+1)*out.Width]
			for i, col := range mon.o.PredictionColumns {
				w.add(nf+i, mon.judges[nf+i].profile, row[col])
			}
		}
		w.rows++
		if limit := mon.cfg.Window.Rows; limit > 0 && w.rows >= int64(limit) {
			mon.rotateLocked()
		}
	}
	mon.mu.Unlock()
}

// rotateLocked closes the open window and opens the next. When every
// window is still waiting for judgement the open one stays open (and
// grows), which is counted.
func (mon *Monitor) rotateLocked() {
	select {
	case next := <-mon.free:
		now := mon.o.Now()
		mon.cur.end = now
		mon.closed <- mon.cur // never blocks: closed holds the whole pool
		next.reset(mon.seq, now)
		mon.cur, mon.seq = next, mon.seq+1
	default:
		mon.m.overruns.Inc()
	}
}

// Close stops the monitor's goroutine. Rows observed afterwards are kept
// but never judged.
func (mon *Monitor) Close() {
	select {
	case <-mon.stop:
	default:
		close(mon.stop)
	}
	<-mon.done
}

// run judges closed windows and, for windows by time, closes them.
func (mon *Monitor) run() {
	defer close(mon.done)
	if !mon.calibrate() {
		return
	}
	var tick <-chan time.Time
	if every := mon.cfg.Window.Every; every > 0 {
		t := time.NewTicker(every)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case w := <-mon.closed:
			mon.judgeWindow(w)
			mon.free <- w
		case <-tick:
			mon.mu.Lock()
			mon.rotateLocked()
			mon.mu.Unlock()
		case <-mon.stop:
			return
		}
	}
}

// calibrate computes the auto thresholds, one feature at a time; it
// returns false when Close interrupted it.
func (mon *Monitor) calibrate() bool {
	for i := range mon.judges {
		j := &mon.judges[i]
		if !j.threshold.Auto {
			continue
		}
		select {
		case <-mon.stop:
			return false
		default:
		}
		j.calibrate(mon.cfg.Window.Rows, mon.cfg.Reservoir, mon.cfg.FalseAlarmEvery, uint64(i))
		mon.o.Log.Info("drift threshold calibrated", "model", mon.o.Model, "version", mon.o.Version,
			"feature", j.profile.Name, "method", j.methodFor(int64(mon.cfg.Window.Rows)), "threshold", j.threshold.Value)
	}
	return true
}

// judgeWindow judges w, updates the version's drift state and emits the
// decision that follows, if any.
func (mon *Monitor) judgeWindow(w *window) {
	res := mon.evaluate(w)
	mon.m.record(w, &res, mon.judges)

	var decision *Decision
	mon.reportMu.Lock()
	if !res.Judged {
		mon.skipped++
	} else {
		mon.judged++
		if res.Drifted {
			mon.streak, mon.clean = mon.streak+1, 0
		} else {
			mon.streak, mon.clean = 0, mon.clean+1
		}
		switch {
		case !mon.drifted && mon.streak >= mon.cfg.Consecutive && !res.End.Before(mon.cooldownUntil):
			mon.drifted, mon.driftReason, mon.cooldownUntil = true, "features", res.End.Add(mon.cfg.Cooldown)
			decision = &Decision{Type: DriftDetected, Reason: "features"}
		case mon.drifted && mon.driftReason == "features" && mon.clean >= mon.cfg.Consecutive:
			mon.drifted = false
			decision = &Decision{Type: DriftResolved, Reason: "features"}
		}
	}
	mon.last = &res
	drifted := mon.drifted
	mon.reportMu.Unlock()

	mon.m.setDrifted(drifted)
	if decision != nil {
		decision.Model, decision.Version, decision.Time, decision.Window = mon.o.Model, mon.o.Version, res.End, res
		mon.emit(decision)
	}
}

// evaluate judges every feature of w.
func (mon *Monitor) evaluate(w *window) WindowResult {
	res := WindowResult{Seq: w.seq, Start: w.start, End: w.end, Rows: w.rows, Judged: w.rows >= int64(mon.cfg.MinRows), Labeled: w.labeled}
	if w.labeled > 0 {
		res.Accuracy = float64(w.correct) / float64(w.labeled)
	}
	if !res.Judged {
		return res
	}
	// Bonferroni: the p-value tests of one group share its false-alarm rate.
	var tests [2]int
	for i := range mon.judges {
		j := &mon.judges[i]
		if !j.ignore && j.methodFor(w.rows).isPValue() {
			tests[boolIndex(j.prediction)]++
		}
	}
	var judged, drifted int
	for i := range mon.judges {
		j := &mon.judges[i]
		fr := j.evaluate(w, i, tests[boolIndex(j.prediction)])
		if fr.Judged && !fr.Ignored && !fr.Prediction {
			judged++
			if fr.Drifted {
				drifted++
			}
		}
		res.Features = append(res.Features, fr)
	}
	if judged > 0 {
		res.Share = float64(drifted) / float64(judged)
	}
	res.Drifted = judged > 0 && res.Share >= mon.cfg.DriftShare
	return res
}

func boolIndex(b bool) int {
	if b {
		return 1
	}
	return 0
}

// emit hands d to the decisions channel and logs it.
func (mon *Monitor) emit(d *Decision) {
	var names []string
	for _, f := range d.Window.Features {
		if f.Drifted && !f.Prediction {
			names = append(names, f.Name)
		}
	}
	mon.o.Log.Warn("drift decision", "decision", d.Type, "reason", d.Reason, "model", d.Model, "version", d.Version,
		"window", d.Window.Seq, "rows", d.Window.Rows, "drift_share", d.Window.Share, "drifted_features", names)
	mon.m.decision(d.Type)
	if mon.o.Decisions == nil {
		return
	}
	select {
	case mon.o.Decisions <- *d:
	default:
		mon.m.decisionsDropped.Inc()
		mon.o.Log.Error("drift decision dropped: its consumer is not keeping up", "decision", d.Type, "model", d.Model, "version", d.Version)
	}
}

// ObserveLabels records that rows rows of a request were labeled by
// feedback and correct of them predicted right. The labels count towards
// the open window's accuracy and feed the error-rate detector, whose drift
// (the concept changed: the same inputs now mean other outputs) is a
// drift.detected decision with Reason "concept", subject to the cooldown.
func (mon *Monitor) ObserveLabels(rows, correct int) {
	mon.mu.Lock()
	w := mon.cur
	w.labeled += int64(rows)
	w.correct += int64(correct)
	open := WindowResult{Seq: w.seq, Start: w.start, Rows: w.rows, Labeled: w.labeled, Accuracy: float64(w.correct) / float64(max(w.labeled, 1))}
	mon.mu.Unlock()

	now := mon.o.Now()
	var decision *Decision
	mon.reportMu.Lock()
	mon.conceptLevel = mon.concept.add(rows, rows-correct)
	if mon.conceptLevel == ConceptDrift && !mon.drifted && !now.Before(mon.cooldownUntil) {
		mon.drifted, mon.driftReason, mon.cooldownUntil = true, "concept", now.Add(mon.cfg.Cooldown)
		mon.streak, mon.clean = 0, 0
		decision = &Decision{Type: DriftDetected, Reason: "concept", Model: mon.o.Model, Version: mon.o.Version, Time: now, Window: open}
	}
	drifted := mon.drifted
	mon.reportMu.Unlock()
	if decision != nil {
		mon.m.setDrifted(drifted)
		mon.emit(decision)
	}
}

// Report is a version's drift state as GET .../drift answers it.
type Report struct {
	Model   string `json:"model_name"`
	Version string `json:"model_version"`
	// Drifted is the version-level state: set by drift.detected, cleared
	// by drift.resolved.
	Drifted        bool         `json:"drifted"`
	Window         WindowConfig `json:"window"`
	DriftShare     float64      `json:"drift_share_threshold"`
	Consecutive    int          `json:"consecutive"`
	DriftedInARow  int          `json:"drifted_windows_in_a_row"`
	WindowsJudged  int64        `json:"windows_judged"`
	WindowsSkipped int64        `json:"windows_skipped"`
	// Concept is the error-rate detector's level over the labeled rows.
	Concept ConceptLevel `json:"concept"`
	Current OpenWindow   `json:"current"`
	// Last is the most recent closed window, nil before the first.
	Last *WindowResult `json:"last"`
}

// OpenWindow is the window still collecting rows.
type OpenWindow struct {
	Seq      int64          `json:"window"`
	Start    time.Time      `json:"start"`
	Rows     int64          `json:"rows"`
	Features []FeatureCount `json:"features"`
}

// FeatureCount is a feature's counts so far in the open window.
type FeatureCount struct {
	Name    string  `json:"name"`
	Count   int64   `json:"count"`
	Missing int64   `json:"missing"`
	Counts  []int64 `json:"counts"`
}

// Report returns a copy of the monitor's state.
func (mon *Monitor) Report() Report {
	rep := Report{
		Model: mon.o.Model, Version: mon.o.Version, Window: mon.cfg.Window,
		DriftShare: mon.cfg.DriftShare, Consecutive: mon.cfg.Consecutive,
	}
	mon.mu.Lock()
	w := mon.cur
	rep.Current = OpenWindow{Seq: w.seq, Start: w.start, Rows: w.rows}
	for i := range w.features {
		f := &w.features[i]
		rep.Current.Features = append(rep.Current.Features, FeatureCount{
			Name: mon.judges[i].profile.Name, Count: f.count, Missing: f.missing, Counts: slices.Clone(f.counts),
		})
	}
	mon.mu.Unlock()
	mon.reportMu.Lock()
	rep.Drifted, rep.DriftedInARow = mon.drifted, mon.streak
	rep.WindowsJudged, rep.WindowsSkipped, rep.Last = mon.judged, mon.skipped, mon.last
	rep.Concept = cmp.Or(mon.conceptLevel, ConceptStable)
	mon.reportMu.Unlock()
	return rep
}
