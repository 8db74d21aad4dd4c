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
	// State, when set, is where the monitor starts: the last State that
	// Commit stored, so that a restart neither forgets a drift nor starts
	// the error-rate detector over.
	State *State
	// Commit, when set, stores st durably, with decision d when d is not
	// nil, in one write: a decision and the state it leads to are stored
	// together or not at all. The monitor takes that state only once
	// Commit returned nil; on an error it decides nothing else and commits
	// the same decision again after a backoff (commitRetryMin doubling up
	// to commitRetryMax) until one succeeds, so that no decision is lost
	// and nothing waits in memory but it. With d nil, Commit is a
	// checkpoint: every checkpointEvery while labels arrive, and at Close.
	// Commit is called from the monitor's goroutine only.
	Commit func(st State, d *Decision) error
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// State is the part of a monitor's judgement that outlives its process:
// whether the version drifted, why, until when it is cooling down, and
// the error-rate detector. It round-trips through encoding/json.
type State struct {
	Drifted bool `json:"drifted"`
	// Reason is the Reason of the decision that set Drifted.
	Reason        string    `json:"reason,omitempty"`
	CooldownUntil time.Time `json:"cooldown_until,omitzero"`
	Concept       DDM       `json:"concept"`
}

// apply changes st as decision d says, with cooldown after a detection.
func (st *State) apply(d *Decision, cooldown time.Duration) {
	if d.Type == DriftDetected {
		st.Drifted, st.Reason, st.CooldownUntil = true, d.Reason, d.Time.Add(cooldown)
		return
	}
	st.Drifted, st.Reason = false, ""
}

// The backoff of a decision that Commit could not store, and how often
// the error-rate detector's state is checkpointed while labels arrive.
const (
	commitRetryMin  = 100 * time.Millisecond
	commitRetryMax  = 30 * time.Second
	checkpointEvery = 10 * time.Second
)

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
	// reportMu guards the judgement state below, owned by the run goroutine
	// but for state.Concept, conceptAlarm and dirty, which ObserveLabels
	// changes too.
	last            *WindowResult
	judged, skipped int64
	// state is what Commit stores. Clean feature windows resolve only a
	// drift of the features (state.Reason): in a concept drift the inputs
	// look as ever.
	state         State
	conceptLevel  ConceptLevel
	streak, clean int // drifted and clean windows in a row
	// conceptAlarm is the concept drift the error-rate detector signalled,
	// for the run goroutine to decide on (alarm wakes it); dirty is set
	// when labels arrived since the last checkpoint.
	conceptAlarm *Decision
	dirty        bool
	alarm        chan struct{} // 1-buffered

	// pending is the decision that Commit failed to store, retried when
	// retry fires after retryIn; the run goroutine owns the three.
	pending *Decision
	retry   *time.Timer
	retryIn time.Duration
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
	if o.Commit == nil {
		o.Commit = func(State, *Decision) error { return nil }
	}
	mon := &Monitor{
		o: o, cfg: o.Config,
		free: make(chan *window, windowPool), closed: make(chan *window, windowPool),
		stop: make(chan struct{}), done: make(chan struct{}), alarm: make(chan struct{}, 1),
	}
	if o.State != nil {
		mon.state = *o.State
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
	mon.m.setDrifted(mon.state.Drifted)
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

// Close stops the monitor's goroutine after a last try to commit a pending
// decision, or else a checkpoint. Rows observed afterwards are kept but
// never judged.
func (mon *Monitor) Close() {
	select {
	case <-mon.stop:
	default:
		close(mon.stop)
	}
	<-mon.done
}

// run judges closed windows and, for windows by time, closes them; it
// decides on concept drift, commits decisions and checkpoints.
func (mon *Monitor) run() {
	defer close(mon.done)
	mon.retry = time.NewTimer(time.Hour)
	mon.retry.Stop()
	defer mon.retry.Stop()
	if !mon.calibrate() {
		mon.finish()
		return
	}
	var tick <-chan time.Time
	if every := mon.cfg.Window.Every; every > 0 {
		t := time.NewTicker(every)
		defer t.Stop()
		tick = t.C
	}
	checkpoint := time.NewTicker(checkpointEvery)
	defer checkpoint.Stop()
	for {
		select {
		case w := <-mon.closed:
			mon.judgeWindow(w)
			mon.free <- w
		case <-tick:
			mon.mu.Lock()
			mon.rotateLocked()
			mon.mu.Unlock()
		case <-mon.alarm:
			mon.decideConcept()
		case <-mon.retry.C:
			mon.commitPending()
		case <-checkpoint.C:
			mon.checkpoint()
		case <-mon.stop:
			mon.finish()
			return
		}
	}
}

// finish, as the monitor stops, tries once more to commit the pending
// decision, or else decides on a concept alarm still waiting and
// checkpoints. A decision still not stored is not lost for good: the
// state last stored leads to it again.
func (mon *Monitor) finish() {
	if mon.pending != nil {
		mon.commitPending()
		return
	}
	mon.decideConcept()
	if mon.pending == nil {
		mon.checkpoint()
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
		st := &mon.state
		switch {
		case mon.pending != nil:
			// The next state change is the pending decision's.
		case !st.Drifted && mon.streak >= mon.cfg.Consecutive && !res.End.Before(st.CooldownUntil):
			decision = &Decision{Type: DriftDetected, Reason: "features"}
		case st.Drifted && st.Reason == "features" && mon.clean >= mon.cfg.Consecutive:
			decision = &Decision{Type: DriftResolved, Reason: "features"}
		}
	}
	mon.last = &res
	mon.reportMu.Unlock()

	if decision != nil {
		decision.Model, decision.Version, decision.Time, decision.Window = mon.o.Model, mon.o.Version, res.End, res
		mon.pending = decision
		mon.commitPending()
	}
}

// decideConcept turns the error-rate detector's alarm into a concept
// drift decision, unless the version drifted already or is cooling down,
// or a decision is pending (which, once stored, calls it again).
func (mon *Monitor) decideConcept() {
	if mon.pending != nil {
		return
	}
	mon.reportMu.Lock()
	d := mon.conceptAlarm
	mon.conceptAlarm = nil
	if d != nil && (mon.state.Drifted || d.Time.Before(mon.state.CooldownUntil)) {
		d = nil
	}
	mon.reportMu.Unlock()
	if d != nil {
		mon.pending = d
		mon.commitPending()
	}
}

// commitPending stores the pending decision with the state it leads to
// and then takes that state; when Commit fails, it tries again later.
func (mon *Monitor) commitPending() {
	d := mon.pending
	mon.reportMu.Lock()
	next := mon.state
	mon.reportMu.Unlock()
	next.apply(d, mon.cfg.Cooldown)
	if err := mon.o.Commit(next, d); err != nil {
		mon.retryIn = min(max(2*mon.retryIn, commitRetryMin), commitRetryMax)
		mon.retry.Reset(mon.retryIn)
		mon.m.commitErrors.Inc()
		mon.o.Log.Error("cannot store drift decision; the version's drift state waits for it", "decision", d.Type, "reason", d.Reason,
			"model", d.Model, "version", d.Version, "retry_in", mon.retryIn, "error", err)
		return
	}
	mon.pending, mon.retryIn = nil, 0
	mon.reportMu.Lock()
	mon.state.apply(d, mon.cfg.Cooldown)
	if d.Reason == "concept" {
		mon.streak, mon.clean = 0, 0
	}
	mon.reportMu.Unlock()
	mon.m.setDrifted(d.Type == DriftDetected)
	mon.logDecision(d)
	mon.decideConcept()
}

// checkpoint stores the state when labels changed it since the last
// checkpoint, and no decision is pending (its commit stores the state).
func (mon *Monitor) checkpoint() {
	if mon.pending != nil {
		return
	}
	mon.reportMu.Lock()
	st, dirty := mon.state, mon.dirty
	mon.dirty = false
	mon.reportMu.Unlock()
	if !dirty {
		return
	}
	if err := mon.o.Commit(st, nil); err != nil {
		mon.reportMu.Lock()
		mon.dirty = true
		mon.reportMu.Unlock()
		mon.m.commitErrors.Inc()
		mon.o.Log.Warn("cannot checkpoint drift state; the next checkpoint tries again", "model", mon.o.Model, "version", mon.o.Version, "error", err)
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

// logDecision logs and counts d, which is stored.
func (mon *Monitor) logDecision(d *Decision) {
	var names []string
	for _, f := range d.Window.Features {
		if f.Drifted && !f.Prediction {
			names = append(names, f.Name)
		}
	}
	mon.o.Log.Warn("drift decision", "decision", d.Type, "reason", d.Reason, "model", d.Model, "version", d.Version,
		"window", d.Window.Seq, "rows", d.Window.Rows, "drift_share", d.Window.Share, "drifted_features", names)
	mon.m.decision(d.Type)
}

// ObserveLabels records that rows rows of a request were labeled by
// feedback and correct of them predicted right. The labels count towards
// the open window's accuracy and feed the error-rate detector, whose drift
// (the concept changed: the same inputs now mean other outputs) is a
// drift.detected decision with Reason "concept", subject to the cooldown,
// which the monitor's goroutine makes.
func (mon *Monitor) ObserveLabels(rows, correct int) {
	mon.mu.Lock()
	w := mon.cur
	w.labeled += int64(rows)
	w.correct += int64(correct)
	open := WindowResult{Seq: w.seq, Start: w.start, Rows: w.rows, Labeled: w.labeled, Accuracy: float64(w.correct) / float64(max(w.labeled, 1))}
	mon.mu.Unlock()

	now := mon.o.Now()
	mon.reportMu.Lock()
	mon.conceptLevel = mon.state.Concept.add(rows, rows-correct)
	mon.dirty = true
	alarm := mon.conceptLevel == ConceptDrift
	if alarm {
		mon.conceptAlarm = &Decision{Type: DriftDetected, Reason: "concept", Model: mon.o.Model, Version: mon.o.Version, Time: now, Window: open}
	}
	mon.reportMu.Unlock()
	if alarm {
		select {
		case mon.alarm <- struct{}{}:
		default:
		}
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
	rep.Drifted, rep.DriftedInARow = mon.state.Drifted, mon.streak
	rep.WindowsJudged, rep.WindowsSkipped, rep.Last = mon.judged, mon.skipped, mon.last
	rep.Concept = cmp.Or(mon.conceptLevel, ConceptStable)
	mon.reportMu.Unlock()
	return rep
}
