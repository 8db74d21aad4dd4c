package pipeline

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/infergate/infergate/retrain/engine"
	"github.com/infergate/infergate/retrain/modelstore"
	"github.com/infergate/infergate/retrain/outbox"
	"github.com/infergate/infergate/runtime"
)

// Source is the CloudEvents source of the events a Service emits.
const Source = "/infergate/retrain"

// ErrClosed is returned by a Service that Shutdown has stopped.
var ErrClosed = errors.New("pipeline: closed")

// maxWebhookBody bounds a webhook's body; drift events are a few KiB.
const maxWebhookBody = 1 << 20

// OutboxName is the outbox.Options Name of the service's outbox: its
// events are in the engine's stream infergate_outbox_retrain.
const OutboxName = "retrain"

// maxAttempts bounds the tries of a change to a model's queue that finds
// it changed by another writer since it was read.
const maxAttempts = 16

// orphanAge is how old a queued run that the model's queue does not name
// must be for a recovery to take it up: younger, it may be one that an
// accept is about to name there (see recoverModel).
const orphanAge = time.Minute

// Options are what a Service is opened with. Config, Engine and Env are
// required.
type Options struct {
	// Config is the service's config, as ParseConfig returns it.
	Config Config
	// Engine is the connection to the engine that keeps the runs, the ids
	// of the events seen and the outbox (see RunsBucket, SeenBucket and
	// OutboxName); the caller closes it after Shutdown.
	Engine *engine.Conn
	// Env is the process's ONNX Runtime environment; candidates and the
	// current versions are loaded in it for validation.
	Env *runtime.Environment
	// Log gets one line per run step and per event worth an operator's
	// attention (default: discarded).
	Log *slog.Logger
	// Client calls the gateway's API (default: a client with a 30s timeout).
	Client *http.Client
	// Progress, when set, gets a progress spinner while a model trains;
	// give it a terminal only.
	Progress io.Writer
	// Now is the clock (default time.Now).
	Now func() time.Time
	// LeaseTTL is how long this process's lease on a model lasts without a
	// renewal (default DefaultLeaseTTL; whole seconds, at least 1s): the
	// longest a run that a dead process left waits before another process
	// on the engine takes it up. Renewals come every third of it.
	LeaseTTL time.Duration
}

// Service receives drift webhooks and runs the pipeline of each configured
// model. It is safe for concurrent use; see the package documentation.
type Service struct {
	cfg      Config
	conn     *engine.Conn // the engine: runs, captured traffic, model versions
	env      *runtime.Environment
	log      *slog.Logger
	client   *http.Client
	ownHTTP  bool // client is the service's own, its idle connections closed by Shutdown
	progress io.Writer
	now      func() time.Time
	secret   []byte
	token    string // the gateway's admin token
	store    *store
	outbox   *outbox.Outbox // nil without webhooks
	workers  map[string]*worker
	holder   string        // this process as a lease holder
	leaseTTL time.Duration //
	poll     time.Duration // how often an idle worker looks at its model's queue and lease

	stopping  chan struct{}      // closed when Shutdown begins: no run starts after it
	stopOnce  sync.Once          //
	runCtx    context.Context    // the running runs' context
	interrupt context.CancelFunc // cancels runCtx
	wg        sync.WaitGroup     // the workers
	running   atomic.Int32       // runs in progress

	closeMu sync.RWMutex // held for reading by the public methods, so Shutdown waits for them
	closed  bool         // guarded by closeMu

	mu sync.Mutex // serializes this process's accepting of events
	// unseen maps the id of an event whose run is stored but whose
	// acceptance could not be, to its answer: a re-delivery records it
	// then (recover does after a crash).
	unseen map[string][]byte // guarded by mu
}

// worker runs one model's runs, one at a time, on its own goroutine,
// while this process holds the model's lease.
type worker struct {
	model string
	cfg   ModelConfig
	wake  chan struct{} // 1-buffered; merged signals that a run is queued
	lease *lease
	// current is the id of the run the worker runs, nil between runs: its
	// writes need the lease (see Service.save).
	current atomic.Pointer[string]
}

// runContext returns the context of the worker's run: cancelled when
// Shutdown interrupts the runs, or when this process loses the model's
// lease (then with errLeaseLost as its cause), so that a run stops before
// any further step, publishing and canarying included, once another
// process may have taken it up. It needs the lease held.
func (w *worker) runContext() context.Context { return w.lease.context() }

// stopped says why ctx, a run's context, ended: for the reason of a run
// interrupted ("interrupted: the retrain service stopped during the train
// step").
func stopped(ctx context.Context) string {
	if errors.Is(context.Cause(ctx), errLeaseLost) {
		return "the retrain service lost the model's lease"
	}
	return "the retrain service stopped"
}

// runs reports whether the worker runs the run with id.
func (w *worker) runs(id string) bool {
	p := w.current.Load()
	return p != nil && *p == id
}

// Open creates the run store's buckets on the engine, opens the outbox and
// starts its delivery, puts in order the runs of each model whose lease
// no other process holds (see recover: the runs that a crash left running
// are marked failed, and a run queued that does each again), emits the
// outcomes that may not have gone out, and starts one worker per model,
// which runs the model's queued runs while it holds its lease. Shutdown
// stops it.
func Open(o Options) (*Service, error) {
	cfg := o.Config.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("cannot open retrain service: %w", err)
	}
	if o.Env == nil {
		return nil, errors.New("cannot open retrain service: no ONNX Runtime environment")
	}
	if o.Engine == nil {
		return nil, errors.New("cannot open retrain service: no engine connection to keep its runs in")
	}
	secret := os.Getenv(cfg.SecretEnv)
	if secret == "" {
		return nil, fmt.Errorf("cannot open retrain service: secret_env: environment variable %s is not set", cfg.SecretEnv)
	}
	ttl := o.LeaseTTL
	if ttl == 0 {
		ttl = DefaultLeaseTTL
	}
	if ttl < time.Second || ttl%time.Second != 0 {
		return nil, fmt.Errorf("cannot open retrain service: the lease TTL must be whole seconds, at least 1s (the engine expires keys by the second), got %s", ttl)
	}
	s := &Service{
		cfg: cfg, conn: o.Engine, env: o.Env, log: o.Log, client: o.Client, progress: o.Progress, now: o.Now, secret: []byte(secret),
		workers: make(map[string]*worker), stopping: make(chan struct{}), unseen: make(map[string][]byte),
		holder: holderID(), leaseTTL: ttl, poll: ttl / 4,
	}
	if cfg.Gateway.URL != "" {
		if s.token = os.Getenv(cfg.Gateway.TokenEnv); s.token == "" {
			return nil, fmt.Errorf("cannot open retrain service: gateway.token_env: environment variable %s is not set", cfg.Gateway.TokenEnv)
		}
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.log = s.log.With("holder", s.holder)
	if s.client == nil {
		s.client = &http.Client{Timeout: 30 * time.Second, Transport: http.DefaultTransport.(*http.Transport).Clone()}
		s.ownHTTP = true
	}
	if s.now == nil {
		s.now = time.Now
	}
	var err error
	if s.store, err = openStore(o.Engine); err != nil {
		return nil, fmt.Errorf("cannot open retrain service: %w", err)
	}
	s.runCtx, s.interrupt = context.WithCancel(context.Background())
	for name, mc := range cfg.Models {
		s.workers[name] = &worker{model: name, cfg: mc, wake: make(chan struct{}, 1), lease: s.newLease(name)}
	}
	fail := func(err error) (*Service, error) {
		for _, w := range s.workers {
			w.lease.release()
		}
		s.interrupt()
		if s.outbox != nil {
			s.outbox.Close()
		}
		return nil, fmt.Errorf("cannot open retrain service: %w", err)
	}
	if len(cfg.Webhooks) > 0 {
		s.outbox, err = outbox.Open(outbox.Options{Conn: o.Engine, Name: OutboxName, Targets: cfg.Webhooks, Log: s.log, Replica: s.holder})
		if err != nil {
			return fail(err)
		}
	}
	if err := s.importLegacy(); err != nil {
		return fail(err)
	}
	unnotified, err := s.recover()
	if err == nil && s.outbox != nil {
		err = s.outbox.Start()
	}
	if err != nil {
		return fail(err)
	}
	s.checkModelStore()
	held := 0
	for _, w := range s.workers {
		if w.lease.holds() {
			held++
		}
	}
	s.log.Info("retrain service opened", "engine", o.Engine.URL, "runs", RunsBucket, "models", len(cfg.Models),
		"models_with_runs_to_do", held, "lease_ttl", ttl, "outcomes_to_emit", len(unnotified))
	for _, w := range s.workers {
		s.wg.Add(1)
		go s.work(w)
	}
	if len(unnotified) > 0 {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			for i := range unnotified {
				s.notify(&unnotified[i])
			}
		}()
	}
	return s, nil
}

// checkModelStore warns when none of the configured models has a version
// in the engine's model store: each run starts from its model's newest
// version there, so every run would fail. The likely cause is an engine of
// the service's own, not the gateway's.
func (s *Service) checkModelStore() {
	if len(s.cfg.Models) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	models, err := modelstore.OpenExisting(ctx, s.conn)
	for model := range s.cfg.Models {
		if err != nil {
			break
		}
		var versions []int64
		if versions, err = models.Versions(ctx, model); err == nil && len(versions) > 0 {
			return
		}
	}
	if err != nil && !errors.Is(err, modelstore.ErrNotFound) {
		s.log.Warn("cannot check the model store for the configured models' versions", "error", err)
		return
	}
	attrs := []any{"engine", s.conn.URL, "model_store", modelstore.Bucket, "models", strings.Join(slices.Sorted(maps.Keys(s.cfg.Models)), ",")}
	if s.cfg.Cluster.NATSURL == "" {
		attrs = append(attrs, "state_dir", s.cfg.StateDir)
	}
	s.log.Warn("none of the configured models has a version in the engine's model store: every run fails until one does; "+
		"a gateway publishes its repository there when it starts, so the retrain service must share the gateway's state_dir "+
		"(one machine) or its cluster (a fleet)", attrs...)
}

// newLease returns this process's lease on model, not held.
func (s *Service) newLease(model string) *lease {
	return newLease(s.store.queues, s.conn.JS, model, s.holder, s.leaseTTL, s.log.With("model", model))
}

// recover prunes the store and, for each model that this process may
// run or whose runs are queued or running, takes the model's lease if no
// other process holds it and puts its runs in order (recoverModel); it
// keeps the lease of a configured model with a run to do, for its worker,
// and returns the finished runs whose outcome may not have been emitted.
// A model whose lease another process holds is that process's to put in
// order. Every write is one that a crash may interrupt: the next recovery
// does the rest.
func (s *Service) recover() ([]Run, error) {
	runs, err := s.store.all()
	if err == nil {
		runs, err = s.store.prune(runs, keepRuns)
	}
	if err != nil {
		return nil, fmt.Errorf("cannot recover the runs: %w", err)
	}
	models := map[string]bool{}
	for model := range s.cfg.Models {
		models[model] = true
	}
	var unnotified []Run
	for i := range runs {
		switch r := &runs[i]; {
		case r.Outcome == Queued || r.Outcome == Running:
			models[r.Model] = true
		case r.Notified:
		case s.outbox == nil:
			r.Notified = true // there are no webhooks to tell
			if err := s.store.put(r); err != nil && !errors.Is(err, errConflict) {
				return nil, fmt.Errorf("cannot recover the runs: %w", err)
			}
		default:
			unnotified = append(unnotified, *r)
		}
	}
	for _, model := range slices.Sorted(maps.Keys(models)) {
		l := s.newLease(model)
		if w := s.workers[model]; w != nil {
			l = w.lease
		}
		ok, err := l.acquire(s.runCtx)
		if err != nil {
			return nil, fmt.Errorf("cannot recover the runs: %w", err)
		}
		if !ok {
			s.log.Info("another process holds the lease of a model: it runs its runs", "model", model)
			continue
		}
		told, q, err := s.recoverModel(model, true)
		if err != nil || s.workers[model] == nil || q.Queued == "" {
			l.release()
		}
		if err != nil {
			return nil, fmt.Errorf("cannot recover the runs: %w", err)
		}
		unnotified = append(unnotified, told...)
	}
	slices.SortFunc(unnotified, func(a, b Run) int { return cmp.Compare(runNumber(a.ID), runNumber(b.ID)) })
	return unnotified, nil
}

// recoverModel puts model's runs in order after the process that ran them
// stopped, and returns the runs it finished, whose outcome is to be told,
// and the model's queue after it. It needs the model's lease, which no
// other process holds then: so no run of the model is running, whatever
// the store says. An accept may change the queue, or the run it names,
// meanwhile: it reads them again then (see recoverModelOnce).
func (s *Service) recoverModel(model string, atStart bool) (told []Run, q queue, err error) {
	for range 4 {
		var more []Run
		more, q, err = s.recoverModelOnce(model, atStart)
		told = append(told, more...)
		if !errors.Is(err, errConflict) {
			break
		}
	}
	return told, q, err
}

// recoverModelOnce does the work of recoverModel, reading the runs and
// the queue once; every write is in place of the revision read, and one
// that finds another ends it (with errConflict).
//
// It records that the events of the runs queued or running were seen (a
// crash may have come between the two writes of an accept); names a
// queued run that the queue does not name as the queued one, or
// coalesces its events into it and ends it as superseded, once it is
// older than orphanAge (at the process's start, at once: a crash may
// have come between the run's write and the queue's); ends the queued
// runs of a model no longer configured; marks the runs left running as
// failed, queuing a run that does each again unless a run of the model
// is queued anyway or the gateway acknowledged its canary; and queues
// a run that takes up a version published and never canaried (see
// resume). The retry is stored before the interruption, so that a crash
// between the two does not lose it.
func (s *Service) recoverModelOnce(model string, atStart bool) (told []Run, q queue, err error) {
	now := s.now().UTC()
	defer func() {
		if err != nil {
			err = fmt.Errorf("model %q: %w", model, err)
		}
	}()
	runs, err := s.store.all()
	if err != nil {
		return nil, q, err
	}
	if q, err = s.store.getQueue(model); err != nil {
		return nil, q, err
	}
	before := q
	_, configured := s.cfg.Models[model]
	var queued *Run
	var running, orphans []*Run
	for i := range runs {
		r := &runs[i]
		switch {
		case r.Model != model:
			continue
		case r.Outcome == Running:
			running = append(running, r)
		case r.Outcome == Queued && (r.ID == q.Queued || r.ID == q.Running && q.Queued == ""):
			queued, q.Queued = r, r.ID // one whose start failed stays queued
		case r.Outcome == Queued:
			if configured && !atStart && now.Sub(r.QueuedAt) < orphanAge {
				continue // an accept may be about to name it in the queue
			}
			orphans = append(orphans, r)
		default:
			continue
		}
		if r.RetryOf == "" {
			s.recordSeen(r)
		}
	}
	var changed []*Run
	if queued == nil {
		q.Queued = ""
	}
	q.Running = "" // a run left running is recovered below
	merged := false
	for _, r := range orphans {
		switch {
		case !configured:
			r.finish(now, fmt.Errorf("model %q is no longer configured", r.Model))
		case queued == nil:
			queued, q.Queued = r, r.ID
			continue
		default:
			for _, id := range slices.Concat([]string{r.Trigger}, r.Coalesced) {
				if id != queued.Trigger && !slices.Contains(queued.Coalesced, id) {
					queued.Coalesced, merged = append(queued.Coalesced, id), true
				}
			}
			r.finish(now, fmt.Errorf("superseded by run %s, queued for the same model", queued.ID))
		}
		changed = append(changed, r)
	}
	if queued != nil && !configured {
		queued.finish(now, fmt.Errorf("model %q is no longer configured", queued.Model))
		changed, q.Queued, merged = append(changed, queued), "", false
	}
	if merged {
		if err := s.store.put(queued); err != nil {
			return nil, q, err // an accept coalesced into it meanwhile
		}
	}
	if q.Queued != before.Queued || q.Running != before.Running || q.rev == 0 {
		if err := s.store.putQueue(model, &q); err != nil {
			return nil, q, err
		}
	}
	for _, r := range running {
		if configured && r.CanaryStarted.IsZero() && q.Queued == "" {
			if err := s.queueRetry(*r, now, &q); err != nil {
				return nil, q, err
			}
		}
		step := "first"
		if len(r.Steps) > 0 {
			step = r.Steps[len(r.Steps)-1].Name
		}
		r.finish(now, fmt.Errorf("%w: the retrain service stopped during the %s step", errInterrupted, step))
		changed = append(changed, r)
	}
	for _, r := range changed {
		if s.outbox == nil {
			r.Notified = true // there are no webhooks to tell
		}
		if err := s.store.put(r); err != nil {
			return told, q, err
		}
		if !r.Notified {
			told = append(told, *r)
		}
	}
	// So is one that published a version and failed to canary it for a
	// reason that may pass: the new run canaries it (see resume).
	if configured && q.Queued == "" {
		r, _, ok, err := s.uncanaried(model, "")
		if err != nil {
			s.log.Warn("cannot look for a version never canaried", "model", model, "error", err)
		} else if ok {
			if err := s.queueRetry(r, now, &q); err != nil {
				return nil, q, err
			}
		}
	}
	return told, q, nil
}

// repairSeen records that the events of run r, queued or running, were
// accepted, with the answers that accept gave, unless that is recorded:
// accept stores a run before the acceptance of its event.
func (s *Service) repairSeen(r *Run, now time.Time) error {
	put := func(id string, a acceptance) error {
		answer, err := encodeJSON(a)
		if err == nil {
			err = s.store.putSeen(id, seenEvent{At: now, Answer: string(answer)})
		}
		return err
	}
	if err := put(r.Trigger, acceptance{Status: "queued", Run: r.ID}); err != nil {
		return err
	}
	for _, id := range r.Coalesced {
		if err := put(id, acceptance{Status: "coalesced", Run: r.ID}); err != nil {
			return err
		}
	}
	return nil
}

// queueRetry queues a run that does run r again, for the same event, and
// names it in q, the model's queue, unless an accept queued a run of the
// model meanwhile: that one does the model's run then.
func (s *Service) queueRetry(r Run, now time.Time, q *queue) error {
	retry := Run{Model: r.Model, Trigger: r.Trigger, RetryOf: r.ID, DriftVersion: r.DriftVersion, Since: r.Since,
		QueuedAt: now, Outcome: Queued, Steps: []Step{}}
	if err := s.store.newRun(&retry); err != nil {
		return err
	}
	q.Queued = retry.ID
	err := s.store.putQueue(r.Model, q)
	if errors.Is(err, errConflict) {
		if *q, err = s.store.getQueue(r.Model); err == nil && q.Queued != "" {
			s.log.Info("a run was queued while a retry was: the retry is dropped", "run", q.Queued, "retry_of", r.ID, "model", r.Model)
			if err := s.store.remove(&retry); err != nil {
				s.log.Warn("cannot delete a retry not queued: a later recovery ends it", "run", retry.ID, "error", err)
			}
			return nil
		}
		if err == nil {
			err = errConflict
		}
	}
	return err
}

// Shutdown stops the service: no queued run starts here any more (another
// process's service runs them, or this one's after the next Open), the
// running ones may finish until ctx is done and are then interrupted
// (recorded as failed), the leases are given back, and the outbox stops
// delivering and closes; the engine connection stays open. It returns once
// every goroutine of the service has stopped.
func (s *Service) Shutdown(ctx context.Context) error {
	s.stopOnce.Do(func() { close(s.stopping) })
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		if n := s.running.Load(); n > 0 {
			s.log.Warn("interrupting the running retrain runs", "runs", n)
		}
		s.interrupt()
		<-done
	}
	s.interrupt()
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var err error
	if s.outbox != nil {
		err = s.outbox.Close()
	}
	if s.ownHTTP {
		s.client.CloseIdleConnections()
	}
	s.log.Info("retrain service stopped")
	return err
}

// Close interrupts the running runs and stops the service at once.
func (s *Service) Close() error {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return s.Shutdown(ctx)
}

// Handler returns the service's HTTP API:
//
//	POST /webhook    a signed CloudEvent; drift.detected queues a run (202)
//	GET  /runs       the runs, newest first (?model=M, ?limit=N, default 100)
//	GET  /runs/{id}  one run
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /webhook", s.handleWebhook)
	mux.HandleFunc("GET /runs", func(w http.ResponseWriter, r *http.Request) {
		limit := 100
		if v := r.URL.Query().Get("limit"); v != "" {
			var err error
			if limit, err = strconv.Atoi(v); err != nil {
				writeError(w, http.StatusBadRequest, fmt.Sprintf("limit %q is not a number", v))
				return
			}
		}
		runs, err := s.Runs(r.URL.Query().Get("model"), limit)
		if err != nil {
			writeError(w, http.StatusInternalServerError, err.Error())
			return
		}
		writeJSON(w, http.StatusOK, runs)
	})
	mux.HandleFunc("GET /runs/{id}", func(w http.ResponseWriter, r *http.Request) {
		run, err := s.Run(r.PathValue("id"))
		switch {
		case errors.Is(err, ErrNoRun):
			writeError(w, http.StatusNotFound, err.Error())
		case err != nil:
			writeError(w, http.StatusInternalServerError, err.Error())
		default:
			writeJSON(w, http.StatusOK, run)
		}
	})
	return mux
}

// Runs returns the runs of model (of every model when empty), newest
// first, at most limit of them (all when limit is not positive).
func (s *Service) Runs(model string, limit int) ([]Run, error) {
	runs := []Run{}
	err := s.view(func() error {
		return s.store.newest(func(r Run) bool {
			if model == "" || r.Model == model {
				runs = append(runs, r)
			}
			return limit <= 0 || len(runs) < limit
		})
	})
	if err != nil {
		return nil, err
	}
	return runs, nil
}

// Run returns the run with id; the error wraps ErrNoRun when there is none.
func (s *Service) Run(id string) (Run, error) {
	var run Run
	err := s.view(func() (err error) {
		run, err = s.store.get(id)
		return err
	})
	return run, err
}

// view calls fn unless Shutdown has stopped the service.
func (s *Service) view(fn func() error) error {
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	return fn()
}

// acceptance is the answer to an accepted webhook.
type acceptance struct {
	Status string `json:"status"` // queued, coalesced or ignored
	Run    string `json:"run,omitempty"`
	Reason string `json:"reason,omitempty"`
}

func (s *Service) handleWebhook(w http.ResponseWriter, r *http.Request) {
	ev, code, err := outbox.Receive(r, s.secret, s.now(), s.cfg.MaxAge, maxWebhookBody)
	if err != nil {
		if code == http.StatusUnauthorized {
			s.log.Warn("webhook refused", "reason", err.Error(), "remote", r.RemoteAddr)
		}
		writeError(w, code, err.Error())
		return
	}
	answer, replay, err := s.accept(ev)
	switch {
	case errors.Is(err, ErrClosed):
		writeError(w, http.StatusServiceUnavailable, "the retrain service is stopping")
	case errors.Is(err, errBadEvent):
		writeError(w, http.StatusBadRequest, err.Error())
	case err != nil:
		writeError(w, http.StatusInternalServerError, err.Error())
	case replay:
		// A re-delivery of an accepted event is delivered too: the sender
		// may have missed the first answer (it came late, or the sender
		// died before it arrived).
		writeBody(w, http.StatusOK, answer)
	default:
		writeBody(w, http.StatusAccepted, answer)
	}
}

var errBadEvent = errors.New("bad event")

// driftData is what a drift.detected event's data holds (a drift.Decision);
// only these fields are read, and all are optional.
type driftData struct {
	Model   string    `json:"model"`
	Version string    `json:"version"`
	Time    time.Time `json:"time"`
	// Reason is "features" when drifted windows decided, "concept" when
	// the error rate of labeled rows did.
	Reason string `json:"reason"`
	Window struct {
		Start time.Time `json:"start"`
	} `json:"window"`
}

// since is when the traffic a run trains on begins: the drifted window's
// start, less lookback; for a concept drift, which the error rate shows
// the moment it is decided, the decision's time.
func (d driftData) since(lookback time.Duration) time.Time {
	switch {
	case d.Reason == "concept" && !d.Time.IsZero():
		return d.Time
	case d.Window.Start.IsZero():
		return time.Time{}
	}
	return d.Window.Start.Add(-lookback)
}

// accept records ev's id and, for a drift.detected event of a configured
// model, queues a run or coalesces ev into the model's queued run (stored
// first); it returns the answer's body, which is stored with the id. For an
// id it has accepted before it changes nothing and returns that first
// answer with replay set.
func (s *Service) accept(ev outbox.Event) (answer []byte, replay bool, err error) {
	var d driftData
	json.Unmarshal(ev.Data, &d) // lenient: the subject may say it all
	model, version, _ := strings.Cut(ev.Subject, "/")
	model, version = cmp.Or(model, d.Model), cmp.Or(version, d.Version)
	a := acceptance{Status: "ignored"}
	switch {
	case ev.Type != outbox.TypeDriftDetected:
		a.Reason = fmt.Sprintf("event type %s starts no run", ev.Type)
	case model == "":
		return nil, false, fmt.Errorf("%w: a drift.detected event must name its model in its subject (model/version) or data.model", errBadEvent)
	case s.workers[model] == nil:
		a.Reason = fmt.Sprintf("no pipeline is configured for model %q", model)
	}

	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	if s.closed {
		return nil, false, ErrClosed
	}
	s.mu.Lock() // so no other accept records ev.ID between the look and the update
	defer s.mu.Unlock()
	if answer, ok := s.unseen[ev.ID]; ok {
		// Its run is stored, the answer never given: give it now.
		if err := s.store.putSeen(ev.ID, seenEvent{At: s.now().UTC(), Answer: string(answer)}); err != nil {
			return nil, false, err
		}
		delete(s.unseen, ev.ID)
		return answer, false, nil
	}
	first, replay, err := s.store.getSeen(ev.ID)
	if err != nil {
		return nil, false, err
	}
	if replay {
		s.log.Info("webhook received again: answered as the first time", "event", ev.ID, "type", ev.Type, "first_received", first.At)
		return []byte(first.Answer), true, nil
	}
	now := s.now().UTC()
	if a.Reason == "" {
		var again bool
		a, again, err = s.enqueue(ev.ID, model, version, d.since(s.workers[model].cfg.Lookback), now)
		if err != nil {
			return nil, false, fmt.Errorf("cannot record event %q: %w", ev.ID, err)
		}
		if again {
			// A re-delivery of an event whose run is stored and whose
			// acceptance is not: recorded now, answered as the first time.
			if answer, err = encodeJSON(a); err == nil {
				err = s.store.putSeen(ev.ID, seenEvent{At: now, Answer: string(answer)})
			}
			if err != nil {
				return nil, false, err
			}
			s.log.Info("webhook received again: answered as the first time", "event", ev.ID, "type", ev.Type, "run", a.Run)
			return answer, true, nil
		}
	}
	if answer, err = encodeJSON(a); err != nil {
		return nil, false, err
	}
	// The run is stored before the acceptance: a crash between the two
	// leaves a run whose event recover records as seen.
	if err := s.store.putSeen(ev.ID, seenEvent{At: now, Answer: string(answer)}); err != nil {
		if a.Run != "" {
			s.unseen[ev.ID] = answer
		}
		return nil, false, err
	}
	switch a.Status {
	case "queued":
		s.log.Info("retrain run queued", "run", a.Run, "model", model, "drifted_version", version, "event", ev.ID)
	case "coalesced":
		s.log.Info("drift event coalesced into the queued run", "run", a.Run, "model", model, "event", ev.ID)
	default:
		s.log.Info("webhook ignored", "event", ev.ID, "type", ev.Type, "reason", a.Reason)
	}
	return answer, false, nil
}

// enqueue queues a run of model for event id, or coalesces id into the
// model's queued run, whichever process queued it, and returns the answer.
// again is set, with the first answer, when the queued or the running run
// of the model holds id already: a re-delivery whose first acceptance was
// not recorded, or an event delivered to two processes at once. Every
// write is in place of the revision read, and one that finds a change
// made meanwhile (another accept, the lease holder taking the queued run)
// reads again: so the events delivered to several processes at once end
// up in one queued run, each once.
func (s *Service) enqueue(id, model, version string, since, now time.Time) (a acceptance, again bool, err error) {
	holds := func(r *Run) (acceptance, bool) {
		switch {
		case r.Trigger == id:
			return acceptance{Status: "queued", Run: r.ID}, true
		case slices.Contains(r.Coalesced, id):
			return acceptance{Status: "coalesced", Run: r.ID}, true
		}
		return acceptance{}, false
	}
	for range maxAttempts {
		q, err := s.store.getQueue(model)
		if err != nil {
			return a, false, err
		}
		if q.Queued != "" {
			r, err := s.store.get(q.Queued)
			switch {
			case errors.Is(err, ErrNoRun) || err == nil && r.Outcome != Queued:
				s.log.Warn("the queued retrain run of a model is gone from the store, or no longer queued: a new one is queued",
					"run", q.Queued, "model", model)
				q.Queued = ""
				if err := s.store.putQueue(model, &q); err != nil && !errors.Is(err, errConflict) {
					return a, false, err
				}
				continue
			case err != nil:
				return a, false, err
			}
			if a, ok := holds(&r); ok {
				return a, true, nil
			}
			r.Coalesced = append(r.Coalesced, id)
			if err := s.store.put(&r); errors.Is(err, errConflict) {
				continue
			} else if err != nil {
				return a, false, err
			}
			return acceptance{Status: "coalesced", Run: r.ID}, false, nil
		}
		if q.Running != "" {
			if r, err := s.store.get(q.Running); err == nil {
				if a, ok := holds(&r); ok {
					return a, true, nil
				}
			} else if !errors.Is(err, ErrNoRun) {
				return a, false, err
			}
		}
		r := Run{Model: model, Trigger: id, DriftVersion: version, Since: since, QueuedAt: now, Outcome: Queued, Steps: []Step{}}
		if err := s.store.newRun(&r); err != nil {
			return a, false, err
		}
		q.Queued = r.ID
		err = s.store.putQueue(model, &q)
		if err == nil {
			if w := s.workers[model]; w != nil {
				select {
				case w.wake <- struct{}{}:
				default:
				}
			}
			return acceptance{Status: "queued", Run: r.ID}, false, nil
		}
		if errors.Is(err, errConflict) {
			// Another accept queued a run meanwhile, or the lease holder
			// took one, or a recovery named this one in the queue.
			if now, err := s.store.getQueue(model); err == nil && (now.Queued == r.ID || now.Running == r.ID) {
				return acceptance{Status: "queued", Run: r.ID}, false, nil
			}
		}
		// A run no queue names runs nowhere: it goes, unless it changed,
		// which only a recovery that names it or supersedes it does.
		if rerr := s.store.remove(&r); rerr != nil {
			s.log.Warn("cannot delete a run the model's queue does not name: a later recovery of the model takes it up", "run", r.ID,
				"model", model, "error", rerr)
		}
		if !errors.Is(err, errConflict) {
			return a, false, err
		}
	}
	return a, false, fmt.Errorf("the queue of model %q changed %d times while the event was being queued", model, maxAttempts)
}

// work runs w's model's runs while this process holds, or can take, the
// model's lease, until Shutdown begins. It looks at the model's queue when
// an accept of this process queues a run, and every poll interval: so a
// run that another process queued while this one held the lease, or one
// that a process which died left queued or running, is taken up within
// the lease's TTL and a poll interval.
func (s *Service) work(w *worker) {
	defer s.wg.Done()
	defer w.lease.release()
	poll := time.NewTicker(s.poll)
	defer poll.Stop()
	for {
		s.serve(w)
		select {
		case <-s.stopping:
			return
		case <-w.wake:
		case <-poll.C:
		}
	}
}

// serve takes w's model's lease when its queue has a run to do or names a
// run running and no process holds the lease, puts the model's runs in
// order (recoverModel) and runs its queued runs one after another; it
// gives the lease back once none is queued, or when Shutdown begins.
func (s *Service) serve(w *worker) {
	for {
		select {
		case <-s.stopping:
			return // a queued run stays queued, for the next holder
		default:
		}
		if !w.lease.holds() {
			w.lease.release() // one lost: its keeper stops
			q, err := s.store.getQueue(w.model)
			if err != nil {
				s.log.Warn("cannot read the queue of a model; trying again", "model", w.model, "error", err, "in", s.poll)
				return
			}
			if q.Queued == "" && q.Running == "" {
				return
			}
			if ok, err := w.lease.acquire(s.runCtx); err != nil || !ok {
				if err != nil {
					s.log.Warn("cannot take the lease of a model; trying again", "model", w.model, "error", err, "in", s.poll)
				}
				return // its holder runs the queued run after its own
			}
			told, _, err := s.recoverModel(w.model, false)
			for i := range told {
				s.notify(&told[i])
			}
			if err != nil {
				s.log.Error("cannot put the runs of a model in order; trying again", "model", w.model, "error", err, "in", s.poll)
				w.lease.release()
				return
			}
		}
		r, ok, err := s.take(w)
		if err != nil {
			s.log.Error("cannot start a retrain run; trying again", "model", w.model, "error", err, "in", s.poll)
			w.lease.release()
			return
		}
		if !ok {
			w.lease.release()
			// An accept of another process may have queued a run after
			// take looked, while this one held the lease: look again.
			if q, err := s.store.getQueue(w.model); err != nil || q.Queued == "" {
				return
			}
			continue
		}
		s.execute(w, r)
		s.ended(w, r)
	}
}

// take marks the queued run of w's model as running, in the model's queue
// and then in its record, and returns it; ok is false when none is
// queued. It needs the model's lease. Before the run leaves the queue, the
// events it holds are recorded as seen, so that a re-delivery to any
// process is answered as the first time rather than queued again.
func (s *Service) take(w *worker) (_ *Run, ok bool, _ error) {
	for range maxAttempts {
		q, err := s.store.getQueue(w.model)
		if err != nil || q.Queued == "" {
			return nil, false, err
		}
		r, err := s.store.get(q.Queued)
		if errors.Is(err, ErrNoRun) || err == nil && r.Outcome != Queued {
			s.log.Warn("the queued retrain run of a model is gone from the store, or no longer queued: it does not run", "run", q.Queued, "model", w.model)
			q.Queued = ""
			if err := s.store.putQueue(w.model, &q); err != nil && !errors.Is(err, errConflict) {
				return nil, false, err
			}
			continue
		}
		if err != nil {
			return nil, false, err
		}
		s.recordSeen(&r)
		q.Queued, q.Running = "", r.ID
		if err := s.store.putQueue(w.model, &q); errors.Is(err, errConflict) {
			continue // an accept coalesced into it meanwhile
		} else if err != nil {
			return nil, false, err
		}
		// An accept that read the queue before may still coalesce into the
		// run until its record says running: then it is read again.
		for range maxAttempts {
			r.Outcome, r.Started = Running, s.now().UTC()
			err := s.store.put(&r)
			if !errors.Is(err, errConflict) {
				if err != nil {
					return nil, false, err // the next recovery of the model queues it again
				}
				id := r.ID
				w.current.Store(&id)
				return &r, true, nil
			}
			if r, err = s.store.get(r.ID); err != nil {
				return nil, false, err
			}
			s.recordSeen(&r)
		}
		return nil, false, fmt.Errorf("run %s changed %d times while it was being started", r.ID, maxAttempts)
	}
	return nil, false, fmt.Errorf("the queue of model %q changed %d times while its queued run was being started", w.model, maxAttempts)
}

// recordSeen records that the events of run r were accepted, as
// repairSeen does; a failure is logged: the acceptances wait for a
// re-delivery then, answered from the run's record by this process.
func (s *Service) recordSeen(r *Run) {
	if err := s.repairSeen(r, s.now().UTC()); err != nil {
		s.log.Warn("cannot record the events of a retrain run as seen", "run", r.ID, "model", r.Model, "error", err)
	}
}

// ended clears the running run r from its model's queue once it is over,
// unless the queue names another since (a recovery of another process,
// after this one lost the lease).
func (s *Service) ended(w *worker, r *Run) {
	defer w.current.Store(nil)
	if !w.lease.holds() {
		return // a run not recorded as over: the next holder recovers it
	}
	for range maxAttempts {
		q, err := s.store.getQueue(w.model)
		if err == nil && q.Running != r.ID {
			return
		}
		if err == nil {
			q.Running = ""
			if err = s.store.putQueue(w.model, &q); err == nil || !errors.Is(err, errConflict) {
				if err != nil {
					s.log.Warn("cannot clear the running run of a model's queue: the next holder of its lease does", "run", r.ID, "model", w.model, "error", err)
				}
				return
			}
		}
		if err != nil && !errors.Is(err, errConflict) {
			s.log.Warn("cannot clear the running run of a model's queue: the next holder of its lease does", "run", r.ID, "model", w.model, "error", err)
			return
		}
	}
}

// save stores r as it is now. The run that a worker runs is stored only
// while this process holds its model's lease: once it is lost, another
// process may have taken the run up, and this one's record must not
// overwrite that one's (a write after the other's is refused anyway: it
// is in place of the revision this process wrote last).
func (s *Service) save(r *Run) error {
	if w := s.workers[r.Model]; w != nil && w.runs(r.ID) && !w.lease.holds() {
		return fmt.Errorf("cannot record run %s: %w", r.ID, errLeaseLost)
	}
	return s.store.put(r)
}

// persist calls write until it succeeds, waiting longer after each
// failure, as long as the runs may go on (Shutdown's context ends that);
// an error that another try cannot mend ends it too. It returns write's
// last error.
func (s *Service) persist(write func() error) error {
	wait := 100 * time.Millisecond
	for {
		err := write()
		if err == nil || errors.Is(err, errConflict) || errors.Is(err, ErrNoRun) || errors.Is(err, errLeaseLost) || errors.Is(err, outbox.ErrFull) ||
			errors.Is(err, outbox.ErrClosed) || errors.Is(err, outbox.ErrInvalidEvent) {
			return err
		}
		select {
		case <-s.runCtx.Done():
			return err
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// notify emits the event of finished run r and records that it did.
func (s *Service) notify(r *Run) {
	if s.outbox == nil {
		return
	}
	ev, err := r.event()
	if err == nil {
		err = s.persist(func() error {
			ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
			defer cancel()
			return s.outbox.Emit(ctx, ev)
		})
	}
	if err == nil {
		r.Notified = true
		err = s.persist(func() error { return s.save(r) })
		if errors.Is(err, errConflict) {
			// Another process found it untold and told it too: the engine
			// and the receivers dropped the second copy.
			if stored, gerr := s.store.get(r.ID); gerr == nil && stored.Notified {
				err = nil
			}
		}
	}
	if err != nil {
		// The next Open emits it again, with the same id: the engine and
		// the receivers drop a second copy.
		s.log.Error("cannot emit the outcome of a retrain run", "run", r.ID, "model", r.Model, "error", err)
	}
}

// finish ends r as succeeded (err nil) or failed with err as the reason,
// and gives it the id of the event that tells so.
func (r *Run) finish(now time.Time, err error) {
	r.Finished, r.Outcome, r.Reason, r.Transient = now, Succeeded, "", false
	if err != nil {
		r.Outcome, r.Reason, r.Transient = Failed, err.Error(), transient(err)
	}
	if r.EventID == "" {
		ev, _ := outbox.NewEvent(Source, outbox.TypeRetrainFailed, r.Model, nil)
		r.EventID = ev.ID
	}
}

// eventData is the data of a retrain.succeeded or retrain.failed event.
type eventData struct {
	Run          string   `json:"run"`
	Model        string   `json:"model"`
	Version      string   `json:"version,omitempty"`
	DriftVersion string   `json:"drift_version,omitempty"`
	Trigger      string   `json:"trigger"`
	Outcome      string   `json:"outcome"`
	Reason       string   `json:"reason,omitempty"`
	Metrics      *Metrics `json:"metrics,omitempty"`
}

// event returns the event that tells r's outcome; its subject is the
// candidate ("demo/2") of a succeeded run, the drifted version of a failed one.
func (r *Run) event() (outbox.Event, error) {
	typ, subject := outbox.TypeRetrainFailed, r.Model+"/"+r.DriftVersion
	if r.Outcome == Succeeded {
		typ, subject = outbox.TypeRetrainSucceeded, r.Model+"/"+r.Candidate
	}
	data, err := json.Marshal(eventData{Run: r.ID, Model: r.Model, Version: r.Candidate, DriftVersion: r.DriftVersion,
		Trigger: r.Trigger, Outcome: r.Outcome, Reason: r.Reason, Metrics: r.Metrics})
	if err != nil {
		return outbox.Event{}, fmt.Errorf("cannot encode the event of run %s: %w", r.ID, err)
	}
	return outbox.Event{ID: r.EventID, Source: Source, Type: typ, Subject: strings.TrimSuffix(subject, "/"), Time: r.Finished, Data: data}, nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := encodeJSON(v)
	if err != nil {
		code, b = http.StatusInternalServerError, []byte(`{"error":"cannot encode the answer"}`+"\n")
	}
	writeBody(w, code, b)
}

// encodeJSON encodes an answer's body.
func encodeJSON(v any) ([]byte, error) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("cannot encode the answer: %w", err)
	}
	return append(b, '\n'), nil
}

func writeBody(w http.ResponseWriter, code int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(body)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}
