package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/valyala/fasthttp"
	"google.golang.org/grpc/metadata"

	"github.com/infergate/infergate/batcher"
	"github.com/infergate/infergate/drift"
	"github.com/infergate/infergate/retrain/capture"
	"github.com/infergate/infergate/retrain/engine"
	"github.com/infergate/infergate/router"
	"github.com/infergate/infergate/runtime"
)

// platform is what model metadata reports for every model.
const platform = "onnx_onnxv1"

// extensions lists the protocol extensions the server speaks.
var extensions = []string{"binary_tensor_data", "classification", "model_configuration", "statistics"}

// Options are what a Server is built from.
type Options struct {
	Config Config
	// ConfigPath is the file Config was loaded from; with it, Reload and
	// the watcher read the file again. Without it they rescan the
	// repository under the same Config.
	ConfigPath string
	// Env is the open ONNX Runtime environment the models load into.
	Env *runtime.Environment
	Log *slog.Logger
	// Version is infergate's version, reported by server metadata.
	Version string
	// DriftDecisions, when set, receives every version's drift decisions;
	// a decision that finds it full is logged and dropped.
	DriftDecisions chan<- drift.Decision
	// Events, when set, receives canary events; one that finds it full is
	// logged and dropped.
	Events chan<- Event
	// Engine is where the state lives: the embedded engine of state_dir or
	// a fleet's cluster (see retrain/engine). Without it nothing outlives
	// the process and the gateway is alone.
	Engine *engine.Conn
	// Now is the control plane's clock (default time.Now).
	Now func() time.Time
}

// Server is the V2 gateway. It is safe for concurrent use.
type Server struct {
	o       Options
	log     *slog.Logger
	codecs  *codecs
	http    *fasthttp.Server
	serving atomic.Pointer[state]
	// cp owns routing, admin changes, canary analysis, leadership and
	// their events.
	cp         *controlPlane
	webhookSet *metrics.Set
	// metadata is the pre-encoded server metadata answer.
	metadata []byte
	stopping atomic.Bool
	// adminToken is the admin API's bearer token; empty turns the API off.
	adminToken []byte
	labels     *capture.Labels // nil without an engine
	// memory bounds what requests in flight hold; certs is nil without TLS.
	memory memoryBudget
	certs  *certReloader
	// maxConns and maxConnsPerIP bound the open connections, all and of
	// one address (guardedListener).
	maxConns, maxConnsPerIP int
	labelSet                *metrics.Set // the label store's series
	// versions syncs the repository with the engine's model store; nil
	// without an engine.
	versions *versionSync

	// batch scores chunks of the fleet's batch jobs; nil unless
	// cluster.batch_jobs is set.
	batch *batchWorker

	// grpc serves the gRPC protocol; nil unless grpc_listen is set.
	grpc *grpcServer

	// cfg is the config the server started with; what a reload cannot
	// change (listen, limits, timeouts) is read from it.
	cfg Config

	// reloading serialises reloads, whose closing of what they replaced
	// runs outside the control lock.
	reloading sync.Mutex

	mu sync.Mutex
	// listeners are those Serve was given; mu guards them and, with
	// stopping, makes a Serve that races Shutdown return at once.
	listeners []net.Listener

	// stop, closed by Shutdown, stops the file watcher and the memory
	// and certificate loops (done waits for them).
	stop chan struct{}
	done sync.WaitGroup
}

// state is everything a request needs, built whole and swapped in at once.
type state struct {
	models map[string]*model
	// inflight counts the requests and shadow copies using the state, so
	// that versions a reload removed are closed only once none does.
	inflight atomic.Int64
}

// model is a served model with its loaded versions, oldest first.
type model struct {
	name     string
	versions []*version
	// metadata is the pre-encoded model metadata answer (newest version's tensors).
	metadata []byte
	routes   *routes
	// capture is nil unless the model's capture is on.
	capture *modelCapture
	// predictions remembers captured requests' answers to score labels by.
	predictions *lru.Cache[string, prediction]
	// keys are the API keys the model's infer and feedback take.
	keys modelKeys
}

// version is a loaded model version with what serves it.
type version struct {
	rt *runtime.ModelVersion
	// cfg is the model section it was loaded with, less routing; a reload
	// keeps the version while its section stays the same.
	cfg      ModelConfig
	name     string
	metrics  *versionMetrics
	metadata []byte
	// batcher is nil when the version's tensors cannot be batched; then
	// each request runs on a free instance.
	batcher *batcher.Batcher
	// owned are the instances the batcher's workers hold.
	owned []*runtime.Session
	// admitted counts the requests in the handler for a batched version;
	// beyond admitLimit they are refused at once.
	admitted   atomic.Int64
	admitLimit int64
	// grpcHeader is the header a gRPC answer of the version carries.
	grpcHeader metadata.MD
	// maxJSONValues bounds the values of a request's JSON (requestValueLimit).
	maxJSONValues int
	// cache is nil unless the model's cache is on.
	cache *responseCache
	// drift is nil unless the version has a reference profile.
	drift *versionDrift
	// labels names the classes of each output for the classification
	// extension (labels.txt); nil, or nil for an output, where none.
	labels [][]string
	// interval counts answers for the canary analysis.
	interval intervalStats
	// shadow is set once a routing table mirrors traffic to the version;
	// admin reports read it while a routing change sets it.
	shadow atomic.Pointer[shadowTarget]
}

// New loads the model repository of o.Config into o.Env and returns a Server
// ready to serve it.
func New(o Options) (*Server, error) {
	cfg := o.Config
	cdc, err := newCodecs(int(cfg.MaxBodySize))
	if err != nil {
		return nil, err
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	var seen *leaderSeen
	if o.Engine != nil {
		// Every line says which replica wrote it, and who led then.
		seen = newLeaderSeen(o.Log.Handler())
		o.Log = slog.New(seen).With("replica", cfg.Cluster.withDefaults().Replica)
	}
	s := &Server{o: o, cfg: cfg, log: o.Log, codecs: cdc, stop: make(chan struct{}),
		labelSet: metrics.NewSet(), webhookSet: metrics.NewSet()}
	s.metadata = appendServerMetadata(nil, "infergate", o.Version, extensions)
	fail := func(err error) (*Server, error) {
		s.versions.close()
		s.batch.stop()
		s.closeLabels()
		if s.cp != nil {
			s.cp.shutdown()
			s.cp.closeEvents()
		}
		cdc.close()
		metrics.UnregisterSet(s.webhookSet, true) // a start made again registers its own
		return nil, err
	}
	if s.adminToken, err = cfg.Admin.token(); err != nil {
		return fail(err)
	}
	s.memory.limit, s.memory.drained = int64(cfg.MaxInflightMemory), make(chan struct{}, 1)
	if cfg.TLS.enabled() {
		if s.certs, err = newCertReloader(cfg.TLS, s.log); err != nil {
			return fail(err)
		}
	}
	if s.cp, err = newControlPlane(o, &s.serving, seen); err != nil {
		return fail(err)
	}
	if err := s.cp.openOutbox(cfg, o.Engine, s.webhookSet); err != nil {
		return fail(err)
	}
	if err := s.cp.importLegacy(cfg.StateDir); err != nil {
		return fail(err)
	}
	// A replica that can lead at once (the first of a fleet, or one
	// restarted within its lease) does, before its drift monitors start.
	s.cp.settleLease()
	metrics.RegisterSet(s.webhookSet)
	metrics.RegisterSet(s.labelSet)
	if o.Engine != nil {
		if s.labels, err = capture.OpenLabels(o.Engine, cfg.Feedback, s.captureOptions(s.labelSet)); err != nil {
			return fail(err)
		}
	}
	if o.Engine != nil && cfg.ModelStore.Sync {
		// The store's versions are in the repository before it is loaded.
		if s.versions, err = openVersionSync(s, o.Engine, cfg); err != nil {
			return fail(err)
		}
	}
	if o.Engine != nil && cfg.Cluster.BatchJobs {
		if s.batch, err = openBatchWorker(s, o.Engine, cfg.Cluster.withDefaults().Replica); err != nil {
			return fail(err)
		}
	}
	// The control lock orders this against the event loop and the
	// fleet's reports, which run already.
	s.cp.mu.Lock()
	st, err := s.buildState(cfg, nil, true)
	if err != nil {
		s.cp.mu.Unlock()
		return fail(err)
	}
	if err := s.cp.routeLocked(cfg, st, true); err != nil {
		s.cp.mu.Unlock()
		st.unload(s.log)
		return fail(err)
	}
	s.serving.Store(st)
	s.cp.mu.Unlock()
	descriptors := descriptorLimit()
	s.maxConns, s.maxConnsPerIP = cfg.connectionLimits(descriptors)
	if s.maxConns >= descriptors {
		s.log.Warn("max_connections is not below the descriptor limit: accepts will fail for want of descriptors before the limit is reached (they are retried, but idle connections are not closed to make room); raise ulimit -n or lower max_connections",
			"max_connections", s.maxConns, "descriptors", descriptors)
	}
	if cfg.GRPCListen != "" {
		s.grpc = newGRPCServer(s)
	}
	s.http = &fasthttp.Server{
		Handler:      s.handle,
		ErrorHandler: s.handleTransportError,
		Name:         "infergate",
		// guardedListener keeps the connections within max_connections;
		// this bounds the goroutines of those it closed and that have not
		// ended yet.
		Concurrency: 2 * s.maxConns,
		ConnState:   trackConnState,
		// A client that asks first is refused before it sends its body.
		ExpectHandler:                s.expect,
		ReadBufferSize:               int(cfg.MaxHeaderSize),
		MaxRequestBodySize:           int(cfg.MaxBodySize),
		StreamRequestBody:            true, // the handlers read bodies (readBody)
		ReadTimeout:                  cfg.ReadTimeout,
		WriteTimeout:                 cfg.WriteTimeout,
		IdleTimeout:                  cfg.IdleTimeout,
		DisablePreParseMultipartForm: true,
		NoDefaultContentType:         true,
		Logger:                       fasthttpLogger{o.Log},
	}
	s.cp.start()
	if s.batch != nil {
		s.batch.start()
	}
	if s.versions != nil {
		s.versions.start()
	}
	s.done.Go(func() { s.memory.returnMemory(s.stop) })
	if s.certs != nil {
		s.done.Go(func() { s.certs.watch(s.stop) })
	}
	if cfg.Watch {
		if err := s.startWatcher(); err != nil {
			s.Shutdown(context.Background())
			return nil, err
		}
	}
	return s, nil
}

// closeLabels closes the label store, if any, and drops its series.
func (s *Server) closeLabels() {
	if s.labels != nil {
		s.labels.Close()
	}
	metrics.UnregisterSet(s.labelSet, true)
}

// acquireState returns the serving state, counted in flight until release.
// The count is taken before the state is checked to still be the serving
// one, so a reload that saw the count at zero can never be raced.
func (s *Server) acquireState() *state {
	for {
		st := s.serving.Load()
		st.inflight.Add(1)
		if s.serving.Load() == st {
			return st
		}
		st.inflight.Add(-1)
	}
}

func (st *state) release() { st.inflight.Add(-1) }

// buildState loads the models of cfg's repository with their batchers,
// caches, drift monitors and metrics, reusing from old every version whose
// model section is unchanged. With strict, a version that fails to load
// fails the build (after unloading what it loaded); else it is logged,
// counted and left out, and the rest loads.
func (s *Server) buildState(cfg Config, old *state, strict bool) (*state, error) {
	found, err := runtime.ScanRepository(cfg.Repository, s.log)
	if err != nil {
		return nil, err
	}
	for name := range cfg.Models {
		if _, ok := found[name]; !ok {
			return nil, fmt.Errorf("cannot configure model %q: no folder %q in repository %q", name, name, cfg.Repository)
		}
	}
	st := &state{models: make(map[string]*model, len(found))}
	for _, name := range slices.Sorted(maps.Keys(found)) {
		mc := cfg.Models[name].withDefaults()
		// A version depends on its section but for routing and capture,
		// which are the model's: changing them keeps the version.
		vc := mc
		vc.Routing, vc.Capture, vc.Auth = router.Config{}, capture.Config{}, ModelAuth{}
		m := &model{name: name, predictions: newPredictions()}
		if m.keys, err = readModelKeys(mc.Auth, cfg.Auth.Keys); err != nil {
			st.unloadExcept(old, s.log)
			return nil, fmt.Errorf("cannot configure model %q: %w", name, err)
		}
		if om := old.model(name); om != nil {
			m.predictions = om.predictions
		}
		if m.capture, err = s.openCapture(name, mc, old); err != nil {
			st.unloadExcept(old, s.log)
			return nil, err
		}
		st.models[name] = m
		for _, number := range mc.VersionPolicy.Select(found[name]) {
			v, err := s.loadVersion(cfg, old, name, number, vc)
			if err != nil && strict {
				st.unloadExcept(old, s.log)
				return nil, err
			}
			if err != nil {
				reloadVersionErrors.Inc()
				if cfg.Watch {
					s.log.Error("model version not loaded; waiting for its files to change to try again (a folder still being copied in?)",
						"model", name, "version", number, "error", err)
				} else {
					s.log.Error("model version not loaded", "model", name, "version", number, "error", err)
				}
				continue
			}
			m.versions = append(m.versions, v)
		}
		if len(m.versions) == 0 {
			s.log.Warn("model has no version to serve", "model", name, "available", found[name])
		}
		m.metadata = m.encodeMetadata()
	}
	return st, nil
}

// loadVersion returns version number of model name: old's, when its
// section is unchanged, or freshly loaded, warmed up and started.
func (s *Server) loadVersion(cfg Config, old *state, name string, number int64, mc ModelConfig) (*version, error) {
	vname := strconv.FormatInt(number, 10)
	if old != nil {
		if om := old.models[name]; om != nil {
			if v := om.version([]byte(vname)); v != nil && reflect.DeepEqual(v.cfg, mc) {
				return v, nil
			}
		}
	}
	dir := filepath.Join(cfg.Repository, name, vname)
	rv, err := s.o.Env.LoadModelVersion(dir, name, number, mc.ModelConfig)
	if err != nil {
		return nil, err
	}
	v := &version{rt: rv, name: vname, cfg: mc, grpcHeader: metadata.Pairs(headerModelVersion, vname)}
	if err := v.start(mc, dir, s.log, s, int(cfg.MaxBodySize)); err != nil {
		v.close()
		return nil, err
	}
	s.log.Info("model version loaded", "model", name, "version", number, "instances", rv.Instances())
	return v, nil
}

// start builds what serves v from its config and folder: metrics,
// batcher, cache, drift monitor and metadata.
func (v *version) start(mc ModelConfig, dir string, log *slog.Logger, srv *Server, maxBody int) error {
	v.metrics = newVersionMetrics(v.rt.Model, v.name)
	v.metadata = appendModelMetadata(nil, v.rt.Model, []string{v.name}, platform, v.rt.Inputs(), v.rt.Outputs())
	var err error
	if v.batcher, err = startBatcher(v, mc.Batching); err != nil {
		return err
	}
	maxRows := 0
	if v.batcher != nil {
		maxRows = mc.Batching.MaxBatchSize
	}
	v.maxJSONValues = requestValueLimit(v.rt.Inputs(), maxRows, maxBody)
	v.admitLimit = int64(mc.Batching.MaxQueueSize + max(mc.Batching.MaxBatchSize, 1)*mc.Batching.Instances)
	if v.batcher == nil {
		v.metrics.addCompute()
		if mc.Batching.MaxBatchSize > 0 {
			log.Warn("model cannot be batched: its tensors lack a leading dynamic batch dimension or have other dynamic dimensions",
				"model", v.rt.Model, "version", v.name)
		}
	}
	if mc.Cache.Entries > 0 {
		if v.cache, err = newResponseCache(mc.Cache.Entries, v.metrics.set, v.metrics.labels); err != nil {
			return err
		}
	}
	if v.labels, err = LoadLabels(dir, v.rt.Outputs()); err != nil {
		return fmt.Errorf("cannot load model %q version %s: %w", v.rt.Model, v.name, err)
	}
	return v.startDrift(mc.Drift, dir, log, srv)
}

// close drains v and releases all it holds: queued requests finish, then
// its shadow workers stop, its monitor stops, and its sessions are destroyed.
func (v *version) close() {
	stopBatcher(v)
	if sh := v.shadow.Load(); sh != nil {
		sh.close()
	}
	if v.drift != nil {
		v.drift.monitor.Close()
	}
	v.rt.Close()
	if v.metrics != nil {
		v.metrics.unregister()
	}
}

// encodeMetadata encodes m's metadata answer: its versions, and the newest
// one's tensors.
func (m *model) encodeMetadata() []byte {
	newest := m.latest()
	if newest == nil {
		return appendModelMetadata(nil, m.name, nil, platform, nil, nil)
	}
	return appendModelMetadata(nil, m.name, m.versionNames(), platform, newest.rt.Inputs(), newest.rt.Outputs())
}

// unload drains and releases every version of st.
func (st *state) unload(log *slog.Logger) { st.unloadExcept(nil, log) }

// unloadExcept drains and releases the versions of st that keep is not
// also serving.
func (st *state) unloadExcept(keep *state, log *slog.Logger) {
	for name, m := range st.models {
		for _, v := range m.versions {
			if !keep.has(v) {
				v.close()
			}
		}
		if m.capture != nil && (keep == nil || keep.models[name] == nil || keep.models[name].capture != m.capture) {
			m.capture.close(log)
		}
	}
}

// model returns st's model name, or nil; a nil state has none.
func (st *state) model(name string) *model {
	if st == nil {
		return nil
	}
	return st.models[name]
}

// has reports whether st serves v; a nil state serves nothing.
func (st *state) has(v *version) bool {
	if st == nil {
		return false
	}
	m := st.models[v.rt.Model]
	return m != nil && slices.Contains(m.versions, v)
}

func (m *model) latest() *version {
	if len(m.versions) == 0 {
		return nil
	}
	return m.versions[len(m.versions)-1]
}

// version returns the loaded version named name, or nil.
func (m *model) version(name []byte) *version {
	for _, v := range m.versions {
		if v.name == string(name) {
			return v
		}
	}
	return nil
}

// Serve answers requests on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.stopping.Load() {
		s.mu.Unlock()
		return ln.Close()
	}
	s.listeners = append(s.listeners, ln)
	s.mu.Unlock()
	s.log.Info("serving", "address", ln.Addr().String(), "models", len(s.serving.Load().models),
		"tls", s.certs != nil, "max_connections", s.maxConns, "max_connections_per_ip", s.maxConnsPerIP)
	ln = newGuardedListener(ln, s.log, s.maxConns, s.maxConnsPerIP, s.certs == nil)
	if s.certs != nil {
		ln = tls.NewListener(ln, s.certs.tlsConfig())
	}
	err := s.http.Serve(ln)
	if s.stopping.Load() {
		return nil // the listener was closed by Shutdown
	}
	return err
}

// ListenAndServe listens on the configured addresses, listen and, when
// set, grpc_listen, and serves until Shutdown. When either server fails,
// the other stops too.
func (s *Server) ListenAndServe() error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("cannot listen on %q: %w", s.cfg.Listen, err)
	}
	if s.grpc == nil {
		return s.Serve(ln)
	}
	gln, err := net.Listen("tcp", s.cfg.GRPCListen)
	if err != nil {
		ln.Close()
		return fmt.Errorf("cannot listen on %q (grpc_listen): %w", s.cfg.GRPCListen, err)
	}
	grpcErr := make(chan error, 1)
	go func() {
		err := s.ServeGRPC(gln)
		if err != nil {
			ln.Close() // the HTTP server stops too
		}
		grpcErr <- err
	}()
	err = s.Serve(ln)
	if err != nil {
		s.grpc.server.Stop()
	}
	return errors.Join(err, <-grpcErr)
}

// Shutdown stops accepting connections, waits for requests in flight (up to
// the configured shutdown timeout or ctx), then unloads every model: each
// version's sessions are destroyed only after their runs drain. Calls after
// the first do nothing.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.stopping.Swap(true) {
		s.mu.Unlock()
		return nil
	}
	for _, ln := range s.listeners {
		ln.Close()
	}
	s.mu.Unlock()
	// No chunk of a batch job is taken from here on; those being scored
	// go back to the stream for another replica.
	s.batch.stop()
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ShutdownTimeout)
	defer cancel()
	grpcStopped := make(chan struct{})
	go func() {
		defer close(grpcStopped)
		if s.grpc != nil {
			s.grpc.stop(ctx)
		}
	}()
	err := s.http.ShutdownWithContext(ctx)
	<-grpcStopped
	if errors.Is(err, net.ErrClosed) {
		err = nil // fasthttp closing the listeners closed above
	}
	if errors.Is(err, context.DeadlineExceeded) {
		s.log.Warn("shutdown timed out with requests in flight; unloading models after they finish")
	}
	s.versions.close() // before the control plane, whose leadership its retention asks
	close(s.stop)
	s.done.Wait()
	s.cp.shutdown()
	// No reload or admin change runs from here on (they check stopping
	// under the control lock).
	s.cp.mu.Lock()
	st := s.serving.Load()
	s.cp.mu.Unlock()
	if !waitIdle(st, s.cfg.ShutdownTimeout) {
		s.log.Warn("shutdown timed out with shadow copies in flight; unloading models after they finish")
	}
	st.unload(s.log) // drift monitors judge their last windows, which may decide
	s.cp.closeEvents()
	s.closeLabels()
	s.codecs.close()
	return err
}

// handleTransportError answers what fasthttp rejects before the handler runs.
func (s *Server) handleTransportError(ctx *fasthttp.RequestCtx, err error) {
	if errors.Is(err, fasthttp.ErrBodyTooLarge) {
		writeError(ctx, fasthttp.StatusRequestEntityTooLarge,
			fmt.Sprintf("request body too large: the limit is %s (max_body_size)", s.cfg.MaxBodySize))
		return
	}
	if _, ok := errors.AsType[*fasthttp.ErrSmallBuffer](err); ok {
		writeError(ctx, fasthttp.StatusRequestHeaderFieldsTooLarge,
			fmt.Sprintf("request headers too large: the request line and headers may take %s (max_header_size)", s.cfg.MaxHeaderSize))
		return
	}
	if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
		// Also a connection that sent nothing, such as one a client's pool
		// opened and never used: 408 is the answer HTTP clients take as the
		// server closing an idle connection, where they log a 400.
		writeError(ctx, fasthttp.StatusRequestTimeout,
			fmt.Sprintf("no whole request within %s (read_timeout)", s.cfg.ReadTimeout))
		return
	}
	writeError(ctx, fasthttp.StatusBadRequest, "cannot read request: "+err.Error())
}

// writeError answers with status code and {"error": msg}; a 503 says
// when to retry (Retry-After: 1), as overload and not-ready pass soon.
func writeError(ctx *fasthttp.RequestCtx, code int, msg string) {
	ctx.Response.ResetBody()
	ctx.SetStatusCode(code)
	if code == fasthttp.StatusServiceUnavailable {
		ctx.Response.Header.Set(fasthttp.HeaderRetryAfter, "1")
	}
	ctx.SetContentType("application/json")
	ctx.Response.SetBodyRaw(appendError(nil, msg))
}

// fasthttpLogger routes fasthttp's own messages to slog.
type fasthttpLogger struct{ log *slog.Logger }

func (l fasthttpLogger) Printf(format string, args ...any) {
	l.log.Warn(fmt.Sprintf(format, args...), "component", "fasthttp")
}

// sortedNames returns the names of st's models, sorted.
func (st *state) sortedNames() []string {
	names := make([]string, 0, len(st.models))
	for name := range st.models {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}
