package pipeline

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/infergate/infergate/retrain/modelstore"
	"github.com/infergate/infergate/runtime"
)

// The steps of a run, in order.
var steps = []struct {
	name string
	do   func(*runState, context.Context) error
	// makes says that the step makes the candidate: a run that resumes
	// the canary of a version published before skips it.
	makes bool
}{
	{"data", (*runState).selectData, false},
	{"train", (*runState).train, true},
	{"validate", (*runState).validate, true},
	{"publish", (*runState).publish, true},
	{"canary", (*runState).startCanary, false},
}

// maxStepLog bounds the log lines kept per step.
const maxStepLog = 500

// runState is one run in progress, owned by its worker's goroutine; only
// the training command's output is written from another (mu guards run).
type runState struct {
	s    *Service
	cfg  ModelConfig
	work string // a temporary folder for the data and the candidate
	// fetched is a temporary folder holding the current version, fetched
	// from the model store.
	fetched string

	mu      sync.Mutex
	run     *Run // guarded by mu
	dropped int  // guarded by mu: log lines of the step left out

	routing   *routing              // the model's routing on the gateway, when one is configured
	base      *runtime.ModelVersion // the newest version when the run began
	spec      spec
	data      splits
	candidate string // the candidate's model.onnx
	resumed   bool   // the candidate is a version published before and never canaried (see resume)
	cand      *runtime.ModelVersion
	metrics   Metrics
}

// execute runs r's steps and records its outcome.
func (s *Service) execute(w *worker, r *Run) {
	s.running.Add(1)
	defer s.running.Add(-1)
	st := &runState{s: s, cfg: w.cfg, run: r}
	defer st.cleanup()
	s.log.Info("retrain run started", "run", r.ID, "model", r.Model, "trigger", r.Trigger, "since", r.Since)
	ctx := w.runContext() // ends when Shutdown interrupts, or this process loses the model's lease
	var err error
	for _, step := range steps {
		if st.resumed && step.makes {
			continue
		}
		if ctx.Err() != nil {
			err = fmt.Errorf("%w: %s before the %s step", errInterrupted, stopped(ctx), step.name)
			break
		}
		st.begin(step.name)
		if err = step.do(st, ctx); err != nil && ctx.Err() != nil {
			err = fmt.Errorf("%w: %s during the %s step: %w", errInterrupted, stopped(ctx), step.name, err)
		}
		st.end(err)
		if err != nil {
			break
		}
	}
	st.mu.Lock()
	if st.metrics.BaseVersion != "" {
		m := st.metrics
		r.Metrics = &m
	}
	r.finish(s.now().UTC(), err)
	r.Notified = s.outbox == nil
	// Tried until it is stored, or Shutdown interrupts: then the run stays
	// recorded as running, and the next Open records it as interrupted,
	// tells so and does it again; its outcome here is told to nobody.
	saveErr := s.persist(func() error { return s.save(r) })
	st.mu.Unlock()
	if saveErr != nil {
		s.log.Error("cannot record the outcome of a retrain run: the next start does it again", "run", r.ID, "model", r.Model,
			"outcome", r.Outcome, "error", saveErr)
		return
	}
	if err != nil {
		s.log.Warn("retrain run failed", "run", r.ID, "model", r.Model, "reason", r.Reason, "took", r.Finished.Sub(r.Started).Round(time.Millisecond))
	} else {
		s.log.Info("retrain run succeeded", "run", r.ID, "model", r.Model, "version", r.Candidate, "took", r.Finished.Sub(r.Started).Round(time.Millisecond))
	}
	s.notify(r)
}

func (st *runState) cleanup() {
	if st.cand != nil {
		st.cand.Close()
	}
	if st.base != nil {
		st.base.Close()
	}
	for _, dir := range []string{st.work, st.fetched} {
		if dir != "" {
			os.RemoveAll(dir)
		}
	}
}

// modelStore opens the engine's model store, where versions are read
// from and published to.
func (s *Service) modelStore(ctx context.Context) (*modelstore.Store, error) {
	return modelstore.Open(ctx, s.conn)
}

// newestVersion returns the newest version of model published in the
// model store, 0 when there is none.
func newestVersion(ctx context.Context, store *modelstore.Store, model string) (int64, error) {
	versions, err := store.Versions(ctx, model)
	if err != nil || len(versions) == 0 {
		return 0, err
	}
	return versions[len(versions)-1], nil
}

// step returns the current step. It needs st.mu.
func (st *runState) stepLocked() *Step { return &st.run.Steps[len(st.run.Steps)-1] }

func (st *runState) begin(name string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.run.Steps = append(st.run.Steps, Step{Name: name, Start: st.s.now().UTC(), Log: []string{}})
	st.dropped = 0
	st.saveLocked()
}

func (st *runState) end(err error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	step := st.stepLocked()
	step.Duration = Duration(st.s.now().Sub(step.Start))
	if st.dropped > 0 {
		step.Log = append(step.Log, fmt.Sprintf("(%d more lines left out)", st.dropped))
	}
	attrs := []any{"run", st.run.ID, "model", st.run.Model, "step", step.Name, "took", time.Duration(step.Duration).Round(time.Millisecond)}
	if err != nil {
		step.Error = err.Error()
		st.s.log.Warn("retrain step failed", append(attrs, "error", err)...)
	} else {
		st.s.log.Info("retrain step done", attrs...)
	}
	st.saveLocked()
}

// logf adds a line to the current step's log, and to the service's.
func (st *runState) logf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	st.mu.Lock()
	defer st.mu.Unlock()
	st.appendLocked(msg)
	st.s.log.Info(msg, "run", st.run.ID, "model", st.run.Model, "step", st.stepLocked().Name)
	st.saveLocked()
}

func (st *runState) appendLocked(line string) {
	if step := st.stepLocked(); len(step.Log) < maxStepLog {
		step.Log = append(step.Log, line)
	} else {
		st.dropped++
	}
}

// saveLocked stores the run as it is, so GET /runs shows its progress. It
// needs st.mu.
func (st *runState) saveLocked() {
	if err := st.s.save(st.run); err != nil {
		st.s.log.Error("cannot record the progress of a retrain run", "run", st.run.ID, "error", err)
	}
}

// lineWriter copies a command's output into the step's log, a line at a
// time. exec.Cmd calls Write from one goroutine at a time when Stdout and
// Stderr are the same lineWriter.
type lineWriter struct {
	st  *runState
	buf []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 && len(w.buf) < 4096 {
			return len(p), nil
		}
		if i < 0 {
			i = len(w.buf) // a very long line is cut
		}
		w.line(string(w.buf[:i]))
		w.buf = w.buf[min(i+1, len(w.buf)):]
	}
}

func (w *lineWriter) flush() {
	if len(w.buf) > 0 {
		w.line(string(w.buf))
		w.buf = nil
	}
}

func (w *lineWriter) line(text string) {
	w.st.mu.Lock()
	w.st.appendLocked("| " + text)
	w.st.mu.Unlock()
	w.st.s.log.Info("| "+text, "run", w.st.run.ID, "model", w.st.run.Model, "step", "train")
}

// spinner shows a progress spinner on the service's Progress writer until
// the returned function is called.
func (st *runState) spinner(desc string) (stop func()) {
	w := st.s.progress
	if w == nil {
		return func() {}
	}
	bar := progressbar.NewOptions(-1, progressbar.OptionSetWriter(w), progressbar.OptionSetDescription(desc),
		progressbar.OptionSpinnerType(14), progressbar.OptionSetElapsedTime(true), progressbar.OptionClearOnFinish(),
		// The ticker below turns the spinner: the library's own goroutine
		// would read the bar's state unlocked (a data race).
		progressbar.OptionSetSpinnerChangeInterval(0))
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				bar.Add(1)
			}
		}
	}()
	return func() {
		close(done)
		wg.Wait()
		bar.Finish()
	}
}
