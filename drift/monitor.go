package drift

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"maps"
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
	// the error-rate detector over (a follower takes it when it leads,
	// unless SetLeading gives another).
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
	// Follower starts the monitor as a follower of a fleet's leader (see
	// SetLeading): it counts rows and labels for TakeCounts, and closes,
	// judges, decides and commits nothing. By default a monitor leads, as
	// one alone does.
	Follower bool
	// AlignWindows makes windows by time close at wall-clock multiples of
	// Config.Window.Every since the Unix epoch: window k covers
	// [k*every, (k+1)*every) and is numbered k, whenever the monitor
	// started. Every replica of a fleet, and each leader in turn, then
	// means the same rows by "window k". It is an option of the
	// deployment, set by whoever runs the fleet, rather than of the
	// model's drift config: a fleet needs it whatever the config file
	// says. Windows by rows ignore it.
	AlignWindows bool
	// Judged, when set, is given every closed window once it is judged
	// (or skipped for too few rows), so that a caller may keep a history
	// of them; only a leading monitor judges. It is called from the
	// monitor's goroutine and must not block.
	Judged func(WindowResult)
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

// SkipMinRows is the reason a closed window was not judged when it had
// fewer than min_rows rows, as Report.WindowsSkippedBy counts it.
const SkipMinRows = "min_rows"

// windowPool is the number of windows a monitor owns: the open one, and
// closed ones waiting for or under judgement.
const windowPool = 4

// Monitor keeps the drift state of one model version. It is safe for
// concurrent use.
type Monitor struct {
	o    Options
	cfg  Config
	jury *jury
	m    monitorMetrics

	mu sync.Mutex
	// cur is the open window and seq the number of the next one (of
	// windows not aligned); leading says whether the monitor judges
	// windows or only counts for TakeCounts. mu guards the three; the run
	// goroutine alone writes leading.
	cur     *window
	seq     int64
	leading bool
	// fingerprint identifies the reference in Counts.
	fingerprint string

	free   chan *window     // reset windows ready to open
	closed chan *window     // closed windows waiting for judgement
	lead   chan leadRequest // SetLeading's, for the run goroutine
	stop   chan struct{}
	done   chan struct{}
	// tick fires when the open window by time is due to close; the run
	// goroutine owns it.
	tick *time.Timer

	reportMu sync.Mutex
	// reportMu guards the judgement state below, owned by the run goroutine
	// but for state.Concept, conceptAlarm and dirty, which ObserveLabels
	// changes too.
	last            *WindowResult
	judged, skipped int64
	// skippedBy counts the skipped windows by reason (SkipMinRows).
	skippedBy map[string]int64
	// skipLogged holds the reasons a skipped window was logged for, once
	// each; the run goroutine owns it.
	skipLogged map[string]bool
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
		o: o, cfg: o.Config, leading: !o.Follower, fingerprint: fingerprint(ref),
		free: make(chan *window, windowPool), closed: make(chan *window, windowPool), lead: make(chan leadRequest),
		stop: make(chan struct{}), done: make(chan struct{}), alarm: make(chan struct{}, 1),
		skippedBy: map[string]int64{}, skipLogged: map[string]bool{},
	}
	if o.State != nil {
		mon.state = *o.State
	}
	jy, err := newJury(ref, o.Config)
	if err != nil {
		return nil, fmt.Errorf("cannot monitor drift of model %q version %s: %w", o.Model, o.Version, err)
	}
	jy.calibrated = func(j *judge, rows int64, threshold float64) {
		method := jy.methodOf(j, rows)
		o.Log.Info("drift threshold calibrated", "model", o.Model, "version", o.Version, "feature", j.profile.Name,
			"window_rows", rows, "method", method, "statistic", j.statisticOf(method), "threshold", threshold)
	}
	mon.jury = jy
	mon.warnSmallWindows()
	mon.cur = jy.newWindow(ref)
	now := o.Now()
	if k, ok := mon.slot(now); ok && mon.leading {
		mon.cur.reset(k, mon.slotStart(k, now))
	} else {
		mon.cur.reset(0, now)
		mon.seq = 1
	}
	for range windowPool - 1 {
		mon.free <- jy.newWindow(ref)
	}
	mon.m = newMonitorMetrics(o.Metrics, o.Labels, jy.judges, !mon.cfg.DisableBinSeries)
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
			w.add(i, mon.jury.judges[i].profile, row[col])
		}
		if withPredictions {
			row := out.Values[r*out.Width : (r+1)*out.Width]
			for i, col := range mon.o.PredictionColumns {
				w.add(nf+i, mon.jury.judges[nf+i].profile, row[col])
			}
		}
		w.addRow(row, mon.o.Columns)
		w.rows++
		mon.closeFullLocked()
	}
	mon.mu.Unlock()
}

// closeFullLocked closes the open window when the monitor leads and the
// window holds its rows.
func (mon *Monitor) closeFullLocked() {
	if limit := mon.cfg.Window.Rows; limit > 0 && mon.cur.rows >= int64(limit) && mon.leading {
		mon.rotateLocked()
	}
}

// rotateLocked closes the open window and opens the next; an aligned
// window closes at the start of the one that holds now. When every
// window is still waiting for judgement the open one stays open (and
// grows), which is counted.
func (mon *Monitor) rotateLocked() {
	select {
	case next := <-mon.free:
		now := mon.o.Now()
		end, seq := now, mon.seq
		if k, ok := mon.slot(now); ok {
			end, seq = mon.slotStart(k, now), k
		} else {
			mon.seq++
		}
		mon.cur.end = end
		mon.closed <- mon.cur // never blocks: closed holds the whole pool
		next.reset(seq, end)
		mon.cur = next
	default:
		mon.m.overruns.Inc()
	}
}

// slot returns the number of the aligned window that holds t, and false
// when windows are not aligned.
func (mon *Monitor) slot(t time.Time) (int64, bool) {
	every := int64(mon.cfg.Window.Every)
	if !mon.o.AlignWindows || every <= 0 {
		return 0, false
	}
	n := t.UnixNano()
	k := n / every
	if n%every < 0 {
		k-- // floor, before 1970
	}
	return k, true
}

// slotStart returns the start of aligned window k, in the location of now.
func (mon *Monitor) slotStart(k int64, now time.Time) time.Time {
	return time.Unix(0, k*int64(mon.cfg.Window.Every)).In(now.Location())
}

// leadRequest is a call of SetLeading, which waits for done.
type leadRequest struct {
	leading bool
	state   *State
	done    chan struct{}
}

// SetLeading makes the monitor lead (judge and decide) or follow (only
// count, for TakeCounts). A follower closes, judges, decides and commits
// nothing: its open window accumulates rows and labels until TakeCounts
// takes them; windows already closed but not judged go back into it, so
// that nothing it counted is lost to the fleet. A decision still waiting
// to be stored is dropped, as is the error-rate detector's progress since
// the last checkpoint: the next leader, from the state last stored,
// reaches them again. On becoming leader the monitor takes st, when not
// nil, as its state (the state the previous leader last committed), so
// that the drift, its cooldown and the error-rate detector carry over,
// before it judges anything; with st nil it keeps its own. Its open
// window, with what it counted since the last TakeCounts, becomes the
// leader's; an aligned window takes the current window's number and
// start. The runs of drifted and of clean windows start over, so a
// hand-over may delay a decision by up to Consecutive windows.
//
// A call that does not change whether the monitor leads changes nothing
// (st is ignored). SetLeading is safe for concurrent use; the monitor's
// goroutine does the work, and SetLeading returns once it is done, after
// a Commit in progress returned: after SetLeading(false, nil) returns the
// monitor commits nothing. It must not be called from Options.Commit.
// After Close it does nothing.
func (mon *Monitor) SetLeading(leading bool, st *State) {
	req := leadRequest{leading: leading, done: make(chan struct{})}
	if st != nil {
		c := *st
		req.state = &c
	}
	select {
	case mon.lead <- req:
		<-req.done
	case <-mon.done:
	}
}

// setLeading does what SetLeading asks, in the run goroutine.
func (mon *Monitor) setLeading(req leadRequest) {
	defer close(req.done)
	if req.leading == mon.leading {
		return
	}
	mon.pending, mon.retryIn = nil, 0
	mon.retry.Stop()
	mon.reportMu.Lock()
	if req.leading && req.state != nil {
		mon.state = *req.state
	}
	mon.streak, mon.clean = 0, 0
	mon.conceptAlarm, mon.dirty = nil, false
	drifted := mon.state.Drifted
	mon.reportMu.Unlock()
	mon.m.setDrifted(drifted)
	if !req.leading {
		mon.m.expire() // a follower judges no window
	}

	mon.mu.Lock()
	mon.leading = req.leading
	if req.leading {
		now := mon.o.Now()
		if k, ok := mon.slot(now); ok {
			mon.cur.seq, mon.cur.start = k, mon.slotStart(k, now)
		}
		mon.closeFullLocked()
	}
	mon.mu.Unlock()
	mon.armTick()
	msg := "drift monitor follows: it counts for the leader"
	if req.leading {
		msg = "drift monitor leads: it judges the fleet's windows"
	}
	mon.o.Log.Info(msg, "model", mon.o.Model, "version", mon.o.Version)
}

// armTick sets tick for the end of the open window when the monitor leads
// with windows by time: every from now, or the next multiple of every
// when windows are aligned (in a millisecond at the least, so that a
// clock that stands still cannot make the monitor spin).
func (mon *Monitor) armTick() {
	every := mon.cfg.Window.Every
	if every <= 0 || !mon.leading {
		mon.tick.Stop()
		return
	}
	now := mon.o.Now()
	if k, ok := mon.slot(now); ok {
		every = max(mon.slotStart(k+1, now).Sub(now), time.Millisecond)
	}
	mon.tick.Reset(every)
}

// closeByTime closes the open window when tick fired; an aligned window
// only once the clock is past its end (the clock and the timer may
// disagree), else tick waits for the rest.
func (mon *Monitor) closeByTime() {
	if !mon.leading {
		return
	}
	mon.mu.Lock()
	if k, ok := mon.slot(mon.o.Now()); !ok || k > mon.cur.seq {
		mon.rotateLocked()
	}
	mon.mu.Unlock()
	mon.armTick()
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
	mon.tick = time.NewTimer(time.Hour)
	mon.tick.Stop()
	defer mon.tick.Stop()
	if !mon.calibrate() {
		mon.finish()
		return
	}
	mon.armTick()
	checkpoint := time.NewTicker(checkpointEvery)
	defer checkpoint.Stop()
	for {
		select {
		case w := <-mon.closed:
			if mon.leading {
				mon.judgeWindow(w)
			} else {
				// Closed before the monitor followed: its counts go to
				// the leader with the open window's.
				mon.mu.Lock()
				mon.cur.merge(w)
				mon.mu.Unlock()
			}
			mon.free <- w
		case <-mon.tick.C:
			mon.closeByTime()
		case req := <-mon.lead:
			mon.setLeading(req)
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
	proceed := func() bool {
		select {
		case <-mon.stop:
			return false
		case req := <-mon.lead:
			mon.setLeading(req)
		default:
		}
		return true
	}
	return mon.jury.calibrate(proceed)
}

// judgeWindow judges w, updates the version's drift state and emits the
// decision that follows, if any.
func (mon *Monitor) judgeWindow(w *window) {
	res := mon.evaluate(w)
	mon.m.record(w, &res, mon.jury.judges)

	var decision *Decision
	if !res.Judged && !mon.skipLogged[SkipMinRows] {
		mon.skipLogged[SkipMinRows] = true
		mon.o.Log.Warn("drift window skipped: too few rows to judge; later windows skipped for this reason are counted in the drift report, not logged",
			"model", mon.o.Model, "version", mon.o.Version, "window", res.Seq, "rows", res.Rows, "min_rows", mon.cfg.MinRows,
			"reason", res.SkippedReason)
	}
	mon.reportMu.Lock()
	if !res.Judged {
		mon.skipped++
		mon.skippedBy[SkipMinRows]++
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
		case mon.streak >= mon.cfg.Consecutive && !res.End.Before(st.CooldownUntil):
			// Also while the version drifted already: a drift that lasts
			// past the cooldown (its retrain rejected, say) asks again.
			decision = &Decision{Type: DriftDetected, Reason: "features"}
		case st.Drifted && st.Reason == "features" && mon.clean >= mon.cfg.Consecutive:
			decision = &Decision{Type: DriftResolved, Reason: "features"}
		}
	}
	mon.last = &res
	mon.reportMu.Unlock()
	if mon.o.Judged != nil {
		mon.o.Judged(res)
	}

	if decision != nil {
		decision.Model, decision.Version, decision.Time, decision.Window = mon.o.Model, mon.o.Version, res.End, res
		mon.pending = decision
		mon.commitPending()
	}
}

// decideConcept turns the error-rate detector's alarm into a concept
// drift decision, unless the version is cooling down from a detection, or
// a decision is pending (which, once stored, calls it again).
//
// Only the cooldown holds a detection back, not the version's drifted
// state: a concept drift is never resolved (a concept does not come
// back), and a drift of the features that outlasts its retrain is not
// either, so once the cooldown is over a new alarm of the detector (which
// starts over after each) or drifted windows detect again, and
// retraining starts again. Otherwise one false alarm before a real
// change, or a retrain whose candidate validation rejected, would leave a
// version that can never ask for retraining.
func (mon *Monitor) decideConcept() {
	if mon.pending != nil || !mon.leading {
		return
	}
	mon.reportMu.Lock()
	d := mon.conceptAlarm
	mon.conceptAlarm = nil
	if d != nil && d.Time.Before(mon.state.CooldownUntil) {
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
	if d == nil {
		return // dropped as the monitor stopped leading
	}
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
// checkpoint, the monitor leads and no decision is pending (its commit
// stores the state).
func (mon *Monitor) checkpoint() {
	if mon.pending != nil || !mon.leading {
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
		res.SkippedReason = fmt.Sprintf("%d rows, fewer than min_rows %d (models.%s.drift.min_rows)", w.rows, mon.cfg.MinRows, mon.o.Model)
		return res
	}
	// A window by rows is judged by the methods of its configured size,
	// also when it grew past it (an overrun, or counts merged from a
	// fleet's followers); one by time by those of its own size.
	size := w.rows
	if rows := mon.cfg.Window.Rows; rows > 0 {
		size = int64(rows)
	}
	mon.jury.verdict(w, size, &res)
	return res
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
// the open window's accuracy and, in a leader, feed the error-rate
// detector, whose drift (the concept changed: the same inputs now mean
// other outputs) is a drift.detected decision with Reason "concept",
// subject to the cooldown, which the monitor's goroutine makes. A
// follower's labels reach the leader's detector through Counts.
func (mon *Monitor) ObserveLabels(rows, correct int) {
	mon.mu.Lock()
	w := mon.cur
	w.labeled += int64(rows)
	w.correct += int64(correct)
	open, leading := openResult(w), mon.leading
	mon.mu.Unlock()
	if leading {
		mon.detectConcept(rows, correct, open)
	}
}

// openResult returns what a decision on concept drift says of the open window w.
func openResult(w *window) WindowResult {
	return WindowResult{Seq: w.seq, Start: w.start, Rows: w.rows, Labeled: w.labeled, Accuracy: float64(w.correct) / float64(max(w.labeled, 1))}
}

// detectConcept feeds rows labeled rows, correct of them right, to the
// error-rate detector, and wakes the run goroutine when it signals drift;
// open is the window they count towards.
func (mon *Monitor) detectConcept(rows, correct int, open WindowResult) {
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
	// Leading is false in a follower, which only counts for the leader
	// and whose other fields are those of when it last led.
	Leading bool `json:"leading"`
	// Drifted is the version-level state: set by drift.detected, cleared
	// by drift.resolved.
	Drifted bool         `json:"drifted"`
	Window  WindowConfig `json:"window"`
	// Rule decides each window (family_wise or share), FalseAlarmRate is
	// what it holds the features to, and DriftShare is the share rule's
	// threshold (see Config).
	Rule           Rule    `json:"rule"`
	FalseAlarmRate float64 `json:"false_alarm_rate"`
	DriftShare     float64 `json:"drift_share_threshold"`
	Consecutive    int     `json:"consecutive"`
	DriftedInARow  int     `json:"drifted_windows_in_a_row"`
	WindowsJudged  int64   `json:"windows_judged"`
	WindowsSkipped int64   `json:"windows_skipped"`
	// WindowsSkippedBy counts the skipped windows by reason (SkipMinRows),
	// absent before the first.
	WindowsSkippedBy map[string]int64 `json:"windows_skipped_by_reason,omitempty"`
	// MinRows is the fewest rows a window needs to be judged: the open
	// window, closed with fewer, is skipped.
	MinRows int `json:"min_rows"`
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
		Rule: mon.cfg.Rule, FalseAlarmRate: mon.cfg.FalseAlarmRate, DriftShare: mon.cfg.DriftShare, Consecutive: mon.cfg.Consecutive, MinRows: mon.cfg.MinRows,
	}
	mon.mu.Lock()
	w := mon.cur
	rep.Current, rep.Leading = OpenWindow{Seq: w.seq, Start: w.start, Rows: w.rows}, mon.leading
	for i := range w.features {
		f := &w.features[i]
		rep.Current.Features = append(rep.Current.Features, FeatureCount{
			Name: mon.jury.judges[i].profile.Name, Count: f.count, Missing: f.missing, Counts: slices.Clone(f.counts),
		})
	}
	mon.mu.Unlock()
	mon.reportMu.Lock()
	rep.Drifted, rep.DriftedInARow = mon.state.Drifted, mon.streak
	rep.WindowsJudged, rep.WindowsSkipped, rep.Last = mon.judged, mon.skipped, mon.last
	if len(mon.skippedBy) > 0 {
		rep.WindowsSkippedBy = maps.Clone(mon.skippedBy)
	}
	rep.Concept = cmp.Or(mon.conceptLevel, ConceptStable)
	mon.reportMu.Unlock()
	return rep
}

// smallWindowRows is the window size below which the distance methods with
// a fixed threshold alarm on most clean windows: few rows over a dozen
// bins leave bins empty, which PSI and Jensen-Shannon floor at 1e-4, and a
// normed Wasserstein distance of a few rows is mostly noise.
const smallWindowRows = 300

// warnSmallWindows logs, once, the features judged by PSI, Jensen-Shannon
// or normed Wasserstein with a fixed threshold over windows of fewer than
// smallWindowRows rows.
func (mon *Monitor) warnSmallWindows() {
	rows := mon.cfg.Window.Rows
	if rows <= 0 || rows >= smallWindowRows {
		return
	}
	var features []string
	for _, j := range mon.jury.judges {
		switch j.method {
		case MethodPSI, MethodJensenShannon, MethodWasserstein:
			if !j.threshold.Auto && !j.ignore {
				features = append(features, j.profile.Name)
			}
		}
	}
	if len(features) > 0 {
		mon.o.Log.Warn("drift windows this small make PSI, Jensen-Shannon and normed Wasserstein with a fixed threshold alarm on most clean windows: judge them with ks or chi_square (p-values), threshold: auto, or windows of 300 rows or more",
			"model", mon.o.Model, "version", mon.o.Version, "window_rows", rows, "features", features)
	}
}
