package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/valyala/fasthttp"

	"github.com/infergate/infergate/batcher"
	"github.com/infergate/infergate/drift"
	"github.com/infergate/infergate/runtime"
)

// platform is what model metadata reports for every model.
const platform = "onnx_onnxv1"

// extensions lists the protocol extensions the server speaks.
var extensions = []string{"binary_tensor_data"}

// Options are what a Server is built from.
type Options struct {
	Config Config
	// Env is the open ONNX Runtime environment the models load into.
	Env *runtime.Environment
	Log *slog.Logger
	// Version is infergate's version, reported by server metadata.
	Version string
	// DriftDecisions, when set, receives every version's drift decisions;
	// a decision that finds it full is logged and dropped.
	DriftDecisions chan<- drift.Decision
}

// Server is the V2 gateway. It is safe for concurrent use.
type Server struct {
	cfg     Config
	log     *slog.Logger
	codecs  *codecs
	http    *fasthttp.Server
	serving atomic.Pointer[state]
	// metadata is the pre-encoded server metadata answer.
	metadata []byte
	stopping atomic.Bool

	mu sync.Mutex
	// listeners are those Serve was given; mu guards them and, with
	// stopping, makes a Serve that races Shutdown return at once.
	listeners []net.Listener
}

// state is everything a request needs, built whole and swapped in at once.
type state struct {
	models map[string]*model
}

// model is a served model with its loaded versions, oldest first.
type model struct {
	name     string
	versions []*version
	// metadata is the pre-encoded model metadata answer (newest version's tensors).
	metadata []byte
}

// version is a loaded model version with what serves it.
type version struct {
	rt       *runtime.ModelVersion
	name     string
	metrics  *versionMetrics
	metadata []byte
	// batcher is nil when the version's tensors cannot be batched; then
	// each request runs on a free instance.
	batcher *batcher.Batcher
	// owned are the instances the batcher's workers hold.
	owned []*runtime.Session
	// cache is nil unless the model's cache is on.
	cache *responseCache
	// drift is nil unless the version has a reference profile.
	drift *versionDrift
}

// New loads the model repository of o.Config into o.Env and returns a Server
// ready to serve it.
func New(o Options) (*Server, error) {
	cfg := o.Config
	cdc, err := newCodecs(int(cfg.MaxBodySize))
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: o.Log, codecs: cdc}
	s.metadata = appendServerMetadata(nil, "infergate", o.Version, extensions)
	st, err := loadState(o)
	if err != nil {
		cdc.close()
		return nil, err
	}
	s.serving.Store(st)
	s.http = &fasthttp.Server{
		Handler:                      s.handle,
		ErrorHandler:                 s.handleTransportError,
		Name:                         "infergate",
		MaxRequestBodySize:           int(cfg.MaxBodySize),
		ReadTimeout:                  cfg.ReadTimeout,
		WriteTimeout:                 cfg.WriteTimeout,
		IdleTimeout:                  cfg.IdleTimeout,
		DisablePreParseMultipartForm: true,
		NoDefaultContentType:         true,
		Logger:                       fasthttpLogger{o.Log},
	}
	return s, nil
}

// loadState loads every model of the repository with its batchers, caches
// and metrics; on failure it unloads what it loaded.
func loadState(o Options) (*state, error) {
	cfg := o.Config
	loaded, err := o.Env.LoadRepository(cfg.Repository, cfg.runtimeConfigs(), o.Log)
	if err != nil {
		return nil, err
	}
	st := &state{models: make(map[string]*model, len(loaded))}
	for _, rm := range loaded {
		m := &model{name: rm.Name}
		for _, rv := range rm.Versions {
			m.versions = append(m.versions, &version{rt: rv, name: rv.VersionName})
		}
		m.metadata = m.encodeMetadata()
		st.models[rm.Name] = m
	}
	for _, m := range st.models {
		for _, v := range m.versions {
			dir := filepath.Join(cfg.Repository, m.name, v.name)
			if err := v.start(cfg.Models[m.name].withDefaults(), dir, o); err != nil {
				st.unload()
				return nil, err
			}
		}
	}
	return st, nil
}

// start builds what serves v from its config and folder: metrics,
// batcher, cache, drift monitor and metadata.
func (v *version) start(mc ModelConfig, dir string, o Options) error {
	v.metrics = newVersionMetrics(v.rt.Model, v.name)
	v.metadata = appendModelMetadata(nil, v.rt.Model, []string{v.name}, platform, v.rt.Inputs(), v.rt.Outputs())
	var err error
	if v.batcher, err = startBatcher(v, mc.Batching); err != nil {
		return err
	}
	if v.batcher == nil {
		v.metrics.addCompute()
		if mc.Batching.MaxBatchSize > 0 {
			o.Log.Warn("model cannot be batched: its tensors lack a leading dynamic batch dimension or have other dynamic dimensions",
				"model", v.rt.Model, "version", v.name)
		}
	}
	if mc.Cache.Entries > 0 {
		if v.cache, err = newResponseCache(mc.Cache.Entries, v.metrics.set, v.metrics.labels); err != nil {
			return err
		}
	}
	return v.startDrift(mc.Drift, dir, o)
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
func (st *state) unload() {
	for _, m := range st.models {
		for _, v := range m.versions {
			stopBatcher(v)
			if v.drift != nil {
				v.drift.monitor.Close()
			}
			v.rt.Close()
			if v.metrics != nil {
				v.metrics.unregister()
			}
		}
	}
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
	s.log.Info("serving", "address", ln.Addr().String(), "models", len(s.serving.Load().models))
	err := s.http.Serve(ln)
	if s.stopping.Load() {
		return nil // the listener was closed by Shutdown
	}
	return err
}

// ListenAndServe listens on the configured address and serves until Shutdown.
func (s *Server) ListenAndServe() error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("cannot listen on %q: %w", s.cfg.Listen, err)
	}
	return s.Serve(ln)
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
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ShutdownTimeout)
	defer cancel()
	err := s.http.ShutdownWithContext(ctx)
	if errors.Is(err, net.ErrClosed) {
		err = nil // fasthttp closing the listeners closed above
	}
	if errors.Is(err, context.DeadlineExceeded) {
		s.log.Warn("shutdown timed out with requests in flight; unloading models after they finish")
	}
	s.serving.Load().unload()
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
	writeError(ctx, fasthttp.StatusBadRequest, "cannot read request: "+err.Error())
}

// writeError answers with status code and {"error": msg}.
func writeError(ctx *fasthttp.RequestCtx, code int, msg string) {
	ctx.Response.ResetBody()
	ctx.SetStatusCode(code)
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
