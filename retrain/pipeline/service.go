package pipeline

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/infergate/infergate/retrain/engine"
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

// takeRetry is how long a worker waits before it tries again to start a
// queued run that it could not mark as running.
const takeRetry = time.Second

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
}

// Service receives drift webhooks and runs the pipeline of each configured
// model. It is safe for concurrent use; see the package documentation.
type Service struct {
	cfg      Config
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

	stopping  chan struct{}      // closed when Shutdown begins: no run starts after it
	stopOnce  sync.Once          //
	runCtx    context.Context    // the running runs' context
	interrupt context.CancelFunc // cancels runCtx
	wg        sync.WaitGroup     // the workers
	running   atomic.Int32       // runs in progress

	closeMu sync.RWMutex // held for reading by the public methods, so Shutdown waits for them
	closed  bool         // guarded by closeMu

	mu     sync.Mutex        // serializes accepting events and taking runs
	queued map[string]string // guarded by mu: model -> its queued run's id
	// unseen maps the id of an event whose run is stored but whose
	// acceptance could not be, to its answer: a re-delivery records it
	// then (recover does after a crash).
	unseen map[string][]byte // guarded by mu
}

// worker runs one model's runs, one at a time, on its own goroutine.
type worker struct {
	model string
	cfg   ModelConfig
	wake  chan struct{} // 1-buffered; merged signals that a run is queued
}

// Open creates the run store's buckets on the engine, opens the outbox and
// starts its delivery, marks the runs that a crash left running as failed
// (queuing a run that does each again), emits the outcomes that may not
// have gone out, and starts one worker per model, which runs the queued
// runs. Shutdown stops it.
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
	s := &Service{
		cfg: cfg, env: o.Env, log: o.Log, client: o.Client, progress: o.Progress, now: o.Now, secret: []byte(secret),
		workers: make(map[string]*worker), stopping: make(chan struct{}), queued: make(map[string]string),
		unseen: make(map[string][]byte),
	}
	if cfg.Gateway.URL != "" {
		if s.token = os.Getenv(cfg.Gateway.TokenEnv); s.token == "" {
			return nil, fmt.Errorf("cannot open retrain service: gateway.token_env: environment variable %s is not set", cfg.Gateway.TokenEnv)
		}
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
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
	if len(cfg.Webhooks) > 0 {
		host, _ := os.Hostname()
		s.outbox, err = outbox.Open(outbox.Options{Conn: o.Engine, Name: OutboxName, Targets: cfg.Webhooks, Log: s.log, Replica: host})
		if err != nil {
			return nil, fmt.Errorf("cannot open retrain service: %w", err)
		}
	}
	if err := s.importLegacy(); err != nil {
		if s.outbox != nil {
			s.outbox.Close()
		}
		return nil, fmt.Errorf("cannot open retrain service: %w", err)
	}
	unnotified, err := s.recover()
	if err == nil && s.outbox != nil {
		err = s.outbox.Start()
	}
	if err != nil {
		if s.outbox != nil {
			s.outbox.Close()
		}
		return nil, fmt.Errorf("cannot open retrain service: %w", err)
	}
	s.runCtx, s.interrupt = context.WithCancel(context.Background())
	for name, mc := range cfg.Models {
		w := &worker{model: name, cfg: mc, wake: make(chan struct{}, 1)}
		if s.queued[name] != "" {
			w.wake <- struct{}{}
		}
		s.workers[name] = w
	}
	s.log.Info("retrain service opened", "engine", o.Engine.URL, "runs", RunsBucket, "models", len(cfg.Models), "queued", len(s.queued),
		"outcomes_to_emit", len(unnotified))
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

// recover prunes the store, records that the events of the runs queued or
// running were seen (a crash may have come between the two writes of
// accept), marks the runs left running as failed, finds the queued ones
// and returns the finished runs whose outcome may not have been emitted.
// Every write is one that a crash may interrupt: the next recover does the
// rest.
func (s *Service) recover() ([]Run, error) {
	now := s.now().UTC()
	runs, err := s.store.all()
	if err == nil {
		runs, err = s.store.prune(runs, keepRuns)
	}
	if err != nil {
		return nil, fmt.Errorf("cannot recover the runs: %w", err)
	}
	var changed, interrupted, unnotified []*Run
	for i := range runs {
		r := &runs[i]
		_, configured := s.cfg.Models[r.Model]
		if (r.Outcome == Queued || r.Outcome == Running) && r.RetryOf == "" {
			if err := s.repairSeen(r, now); err != nil {
				return nil, fmt.Errorf("cannot recover the runs: %w", err)
			}
		}
		switch {
		case r.Outcome == Running:
			interrupted = append(interrupted, r)
		case r.Outcome == Queued && !configured:
			r.finish(now, fmt.Errorf("model %q is no longer configured", r.Model))
			changed = append(changed, r)
		case r.Outcome == Queued && s.queued[r.Model] != "":
			r.finish(now, fmt.Errorf("superseded by run %s, queued for the same model", s.queued[r.Model]))
			changed = append(changed, r)
		case r.Outcome == Queued:
			s.queued[r.Model] = r.ID
		case !r.Notified && s.outbox == nil:
			changed = append(changed, r)
		case !r.Notified:
			unnotified = append(unnotified, r)
		}
	}
	// An interrupted run is done again, unless a run of its model is
	// queued anyway or the gateway acknowledged its canary: so the loop a
	// crash broke still closes. The retry is stored before the
	// interruption, so that a crash between the two does not lose it.
	for _, r := range interrupted {
		_, configured := s.cfg.Models[r.Model]
		if configured && r.CanaryStarted.IsZero() && s.queued[r.Model] == "" {
			if err := s.queueRetry(*r, now); err != nil {
				return nil, fmt.Errorf("cannot recover the runs: %w", err)
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
			return nil, fmt.Errorf("cannot recover the runs: %w", err)
		}
		if !r.Notified {
			unnotified = append(unnotified, r)
		}
	}
	// So is one that published a version and failed to canary it for a
	// reason that may pass: the new run canaries it (see resume).
	for model := range s.cfg.Models {
		if s.queued[model] != "" {
			continue
		}
		r, _, ok, err := s.uncanaried(model, "")
		if err != nil {
			s.log.Warn("cannot look for a version never canaried", "model", model, "error", err)
			continue
		}
		if ok {
			if err := s.queueRetry(r, now); err != nil {
				return nil, fmt.Errorf("cannot recover the runs: %w", err)
			}
		}
	}
	out := make([]Run, 0, len(unnotified))
	for _, r := range unnotified {
		out = append(out, *r)
	}
	slices.SortFunc(out, func(a, b Run) int { return cmp.Compare(runNumber(a.ID), runNumber(b.ID)) })
	return out, nil
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

// queueRetry queues a run that does run r again, for the same event.
func (s *Service) queueRetry(r Run, now time.Time) error {
	retry := Run{Model: r.Model, Trigger: r.Trigger, RetryOf: r.ID, DriftVersion: r.DriftVersion, Since: r.Since,
		QueuedAt: now, Outcome: Queued, Steps: []Step{}}
	if err := s.store.newRun(&retry); err != nil {
		return err
	}
	s.queued[r.Model] = retry.ID
	return nil
}

// Shutdown stops the service: no queued run starts any more (they run
// after the next Open), the running ones may finish until ctx is done and
// are then interrupted (recorded as failed), and the outbox stops
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
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxWebhookBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("the body exceeds %d bytes", maxWebhookBody))
			return
		}
		writeError(w, http.StatusBadRequest, "cannot read the body: "+err.Error())
		return
	}
	sig := r.Header.Get(outbox.SignatureHeader)
	if sig == "" {
		writeError(w, http.StatusUnauthorized, "missing "+outbox.SignatureHeader+" header")
		return
	}
	if err := outbox.Verify(sig, s.secret, body, s.now(), s.cfg.MaxAge); err != nil {
		s.log.Warn("webhook refused", "reason", err.Error(), "remote", r.RemoteAddr)
		writeError(w, http.StatusUnauthorized, err.Error())
		return
	}
	var ev outbox.Event
	if err := json.Unmarshal(body, &ev); err != nil {
		writeError(w, http.StatusBadRequest, "cannot decode the CloudEvent: "+err.Error())
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
		queued, err := Run{}, ErrNoRun
		if id := s.queued[model]; id != "" {
			if queued, err = s.store.get(id); errors.Is(err, ErrNoRun) {
				s.log.Warn("a queued retrain run is gone from the store: a new one is queued", "run", id, "model", model)
				delete(s.queued, model)
			}
		}
		switch {
		case err == nil:
			queued.Coalesced = append(queued.Coalesced, ev.ID)
			if err := s.store.put(&queued); err != nil {
				return nil, false, fmt.Errorf("cannot record event %q: %w", ev.ID, err)
			}
			a = acceptance{Status: "coalesced", Run: queued.ID}
		case errors.Is(err, ErrNoRun):
			r := Run{Model: model, Trigger: ev.ID, DriftVersion: version, Since: d.since(s.workers[model].cfg.Lookback), QueuedAt: now, Outcome: Queued, Steps: []Step{}}
			if err := s.store.newRun(&r); err != nil {
				return nil, false, fmt.Errorf("cannot record event %q: %w", ev.ID, err)
			}
			a = acceptance{Status: "queued", Run: r.ID}
			s.queued[model] = r.ID
			select {
			case s.workers[model].wake <- struct{}{}:
			default:
			}
		default:
			return nil, false, fmt.Errorf("cannot record event %q: %w", ev.ID, err)
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

// work runs w's queued runs one at a time until Shutdown begins.
func (s *Service) work(w *worker) {
	defer s.wg.Done()
	for {
		select {
		case <-s.stopping:
			return
		case <-w.wake:
		}
		for {
			select {
			case <-s.stopping:
				return // the queued run stays queued, for the next Open
			default:
			}
			r, ok, err := s.take(w.model)
			if err == nil {
				if ok {
					s.execute(w, r)
				}
				break
			}
			s.log.Error("cannot start a retrain run; trying again", "model", w.model, "error", err, "in", takeRetry)
			select {
			case <-s.stopping:
				return
			case <-time.After(takeRetry):
			}
		}
	}
}

// take marks model's queued run as running and returns it; ok is false
// when none is queued.
func (s *Service) take(model string) (_ *Run, ok bool, _ error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := s.queued[model]
	if id == "" {
		return nil, false, nil
	}
	r, err := s.store.get(id)
	if errors.Is(err, ErrNoRun) {
		delete(s.queued, model)
		s.log.Warn("a queued retrain run is gone from the store: it does not run", "run", id, "model", model)
		return nil, false, nil
	}
	if err == nil {
		r.Outcome, r.Started = Running, s.now().UTC()
		err = s.store.put(&r)
	}
	if err != nil {
		return nil, false, err
	}
	delete(s.queued, model)
	return &r, true, nil
}

// save stores r as it is now.
func (s *Service) save(r *Run) error { return s.store.put(r) }

// persist calls write until it succeeds, waiting longer after each
// failure, as long as the runs may go on (Shutdown's context ends that);
// an error that another try cannot mend ends it too. It returns write's
// last error.
func (s *Service) persist(write func() error) error {
	wait := 100 * time.Millisecond
	for {
		err := write()
		if err == nil || errors.Is(err, errConflict) || errors.Is(err, ErrNoRun) || errors.Is(err, outbox.ErrFull) ||
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
