package gateway

import (
	"archive/tar"
	"bytes"
	"cmp"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/infergate/infergate/drift"
	"github.com/infergate/infergate/retrain/modelstore"
	"github.com/infergate/infergate/retrain/outbox"
	"github.com/infergate/infergate/retrain/strictyaml"
	"github.com/infergate/infergate/router"
	"github.com/infergate/infergate/runtime"
)

// adminOffText is the answer to every admin request while the admin API
// is off.
const adminOffText = "the admin API is off: set admin.token_env in the config"

// handleAdmin serves the admin API; rest is the path after "/admin/".
//
//	GET    models                      models with their versions and routing
//	GET    models/{m}/routing          the routing in effect and where it came from
//	PUT    models/{m}/routing          set split, sticky header, shadows (and a canary)
//	DELETE models/{m}/routing          drop the admin routing: the config file's applies
//	POST   models/{m}/canary           start a canary (body: the canary section)
//	POST   models/{m}/canary/promote   promote the canary now
//	POST   models/{m}/canary/rollback  roll the canary back now
//	GET    models/{m}/shadow           shadow comparison per shadow version
//	GET    models/{m}/versions         the versions in the model store (adminVersions)
//	PUT    models/{m}/versions/{v}     upload a version to the model store
//	DELETE models/{m}/versions/{v}     delete a version from the model store
//	GET    cluster                     the fleet: replicas, leader, heartbeats, routing revisions
//	GET    webhooks                    events waiting for delivery, and the dead letters
//	POST   webhooks/redrive            deliver a dead letter again: {"event_id", "target"}
//	GET    webhooks/events             recent events with their deliveries (console.go)
//	GET    models/{m}/canary/steps     the canary's steps with their checks (console.go)
//	GET    retrain/runs                the retrain service's runs (console.go)
//	POST   reload                      reload the config file and the repository
func (s *Server) handleAdmin(ctx *fasthttp.RequestCtx, rest string) {
	if !s.adminAuthorized(ctx) {
		return
	}
	parts := strings.Split(strings.Trim(rest, "/"), "/")
	method := string(ctx.Method())
	switch {
	case len(parts) == 1 && parts[0] == "reload":
		if allowMethod(ctx, fasthttp.MethodPost) {
			if err := s.Reload(); err != nil {
				writeError(ctx, fasthttp.StatusBadRequest, "reload refused: "+err.Error())
				return
			}
			writeJSON(ctx, []byte(`{"reloaded":true}`))
		}
	case len(parts) == 1 && parts[0] == "cluster":
		if allowMethod(ctx, fasthttp.MethodGet) {
			s.cp.mu.Lock()
			rep := s.cp.clusterReportLocked()
			s.cp.mu.Unlock()
			writeJSONValue(ctx, rep)
		}
	case len(parts) == 2 && parts[0] == "webhooks" && parts[1] == "events":
		s.consoleEvents(ctx)
	case len(parts) == 2 && parts[0] == "retrain" && parts[1] == "runs":
		s.retrainRuns(ctx)
	case len(parts) == 4 && parts[0] == "models" && parts[2] == "canary" && parts[3] == "steps":
		s.canarySteps(ctx, parts[1])
	case parts[0] == "webhooks" && len(parts) <= 2:
		s.adminWebhooks(ctx, strings.Join(parts[1:], "/"))
	case len(parts) == 1 && parts[0] == "models":
		if allowMethod(ctx, fasthttp.MethodGet) {
			s.adminModels(ctx)
		}
	case len(parts) >= 3 && parts[0] == "models" && parts[2] == "versions":
		s.adminVersions(ctx, method, parts[1], parts[3:])
	case len(parts) >= 3 && parts[0] == "models":
		s.adminModel(ctx, method, parts[1], strings.Join(parts[2:], "/"))
	default:
		writeError(ctx, fasthttp.StatusNotFound, fmt.Sprintf("no such admin endpoint %q", ctx.Path()))
	}
}

// adminAuthorized reports whether the request carries the admin token,
// and answers it otherwise: 404 while the admin API is off, else 401.
func (s *Server) adminAuthorized(ctx *fasthttp.RequestCtx) bool {
	if len(s.adminToken) == 0 {
		writeError(ctx, fasthttp.StatusNotFound, adminOffText)
		return false
	}
	auth := ctx.Request.Header.Peek(fasthttp.HeaderAuthorization)
	token, ok := bytes.CutPrefix(auth, []byte("Bearer "))
	if !ok || subtle.ConstantTimeCompare(token, s.adminToken) != 1 {
		ctx.Response.Header.Set(fasthttp.HeaderWWWAuthenticate, `Bearer realm="infergate admin"`)
		writeError(ctx, fasthttp.StatusUnauthorized, "missing or wrong bearer token")
		return false
	}
	return true
}

// versionState is a version as GET /admin/models lists it.
type versionState struct {
	Version string `json:"version"`
	State   string `json:"state"`
	// Weight is the version's share of the unpinned traffic, in percent.
	Weight float64 `json:"weight"`
	Shadow bool    `json:"shadow"`
	Drift  bool    `json:"drift_monitored"`
}

func (s *Server) adminModels(ctx *fasthttp.RequestCtx) {
	s.cp.mu.Lock()
	defer s.cp.mu.Unlock()
	st := s.serving.Load()
	type modelState struct {
		Model    string         `json:"model_name"`
		Versions []versionState `json:"versions"`
		Routing  routingReport  `json:"routing"`
	}
	out := []modelState{}
	for _, name := range st.sortedNames() {
		m := st.models[name]
		ms := modelState{Model: name, Versions: []versionState{}, Routing: m.routes.report()}
		total := 0
		for _, w := range ms.Routing.Effective {
			total += w
		}
		for _, v := range m.versions {
			vs := versionState{Version: v.name, State: "ready", Shadow: v.shadow.Load() != nil, Drift: v.drift != nil}
			if total > 0 {
				vs.Weight = 100 * float64(ms.Routing.Effective[v.name]) / float64(total)
			}
			ms.Versions = append(ms.Versions, vs)
		}
		out = append(out, ms)
	}
	writeJSONValue(ctx, out)
}

// adminModel serves the admin endpoints of model name; action is the path
// after "models/{m}/".
func (s *Server) adminModel(ctx *fasthttp.RequestCtx, method, name, action string) {
	s.cp.mu.Lock()
	defer s.cp.mu.Unlock()
	if s.stopping.Load() {
		writeError(ctx, fasthttp.StatusServiceUnavailable, "shutting down")
		return
	}
	m := s.serving.Load().models[name]
	if m == nil {
		writeError(ctx, fasthttp.StatusNotFound, fmt.Sprintf("unknown model %q", name))
		return
	}
	r := m.routes
	now := s.cp.now()
	switch {
	case action == "routing" && method == fasthttp.MethodGet:
		writeJSONValue(ctx, r.report())
	case action == "routing" && method == fasthttp.MethodPut:
		var cfg router.Config
		if !s.decodeAdminBody(ctx, &cfg, "routing") {
			return
		}
		cfg = cfg.WithDefaults()
		canary, _ := canaryOf(cfg, nil, now)
		s.setRoutingLocked(ctx, r, m, cfg, true, canary)
	case action == "routing" && method == fasthttp.MethodDelete:
		r.mu.Lock()
		file, was := r.file, r.canary
		r.mu.Unlock()
		canary, _ := canaryOf(file, was, now)
		s.setRoutingLocked(ctx, r, m, file, false, canary)
	case action == "canary" && method == fasthttp.MethodPost:
		var cc router.CanaryConfig
		if !s.decodeAdminBody(ctx, &cc, "canary") {
			return
		}
		r.mu.Lock()
		base, running := r.base, r.canary
		r.mu.Unlock()
		if running != nil && running.Phase != router.PhaseProgressing {
			running = nil
		}
		base.Canary = &cc
		base = base.WithDefaults()
		if err := base.Validate("routing"); err != nil {
			writeError(ctx, fasthttp.StatusBadRequest, err.Error())
			return
		}
		// The running canary asked for again (a retry whose answer was
		// lost) carries on; another config starts a new one.
		canary, _ := canaryOf(base, running, now)
		base.Canary = nil
		s.setRoutingLocked(ctx, r, m, base, true, canary)
	case (action == "canary/promote" || action == "canary/rollback") && method == fasthttp.MethodPost:
		s.endCanaryLocked(ctx, r, m, action == "canary/promote", now)
	case action == "shadow" && method == fasthttp.MethodGet:
		reports := []shadowReport{}
		for _, v := range m.versions {
			if sh := v.shadow.Load(); sh != nil {
				reports = append(reports, sh.report())
			}
		}
		writeJSONValue(ctx, struct {
			Model   string         `json:"model_name"`
			Shadows []shadowReport `json:"shadows"`
		}{name, reports})
	case action == "routing" || action == "canary" || action == "canary/promote" || action == "canary/rollback" || action == "shadow":
		writeError(ctx, fasthttp.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed on %s", method, ctx.Path()))
	default:
		writeError(ctx, fasthttp.StatusNotFound, fmt.Sprintf("no such admin endpoint %q", ctx.Path()))
	}
}

// maxAdminValues bounds the JSON values of an admin body: a routing section
// with a split over every version a model may have holds far fewer.
const maxAdminValues = 1 << 14

// maxAdminBody bounds an admin request's body: a routing or canary section.
const maxAdminBody = 1 << 20

// readAdminBody reads an admin request's body. Admin bodies are an
// authenticated operator's and small, so they are read outside the memory
// budget: a rollback must work while requests hold all of it.
func readAdminBody(ctx *fasthttp.RequestCtx) ([]byte, int, error) {
	var body []byte
	if stream := ctx.RequestBodyStream(); stream != nil {
		var err error
		if body, err = io.ReadAll(io.LimitReader(stream, maxAdminBody+1)); err != nil {
			return nil, fasthttp.StatusBadRequest, fmt.Errorf("cannot read the request body: %w", err)
		}
	} else {
		body = ctx.Request.Body()
	}
	if len(body) > maxAdminBody {
		return nil, fasthttp.StatusRequestEntityTooLarge, fmt.Errorf("admin request body too large: the limit is %d bytes", maxAdminBody)
	}
	return body, 0, nil
}

// decodeAdminBody decodes the JSON body into dst, or answers 400 naming
// what is wrong; what names the body in errors ("the routing body").
func (s *Server) decodeAdminBody(ctx *fasthttp.RequestCtx, dst any, what string) bool {
	body, code, err := readAdminBody(ctx)
	if err != nil {
		writeError(ctx, code, err.Error())
		return false
	}
	if len(bytes.TrimSpace(body)) == 0 {
		writeError(ctx, fasthttp.StatusBadRequest, "the request needs a body: the "+what+" section as JSON")
		return false
	}
	if err := decodeAdminJSON(body, dst); err != nil {
		writeError(ctx, fasthttp.StatusBadRequest, fmt.Sprintf("cannot decode the %s body: %s", what, err))
		return false
	}
	return true
}

// decodeAdminJSON decodes body into dst (a pointer to a struct) strictly:
// one JSON value and nothing after it, no key given twice (parsers disagree
// on which one wins), no key that dst has no field for, every value of its
// field's type (a number into an int must be a whole number), and not a
// change that sets nothing (null, {}): a body is a change to make.
func decodeAdminJSON(body []byte, dst any) error {
	// encoding/json matches keys to fields in any case, so keys that
	// differ in case only are duplicates too.
	sc := jsonScanner{foldKeys: true}
	if _, err := sc.scan(body, maxAdminValues); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		if te := (*json.UnmarshalTypeError)(nil); errors.As(err, &te) && te.Field != "" {
			return fmt.Errorf("%s: want %s, got %s", te.Field, te.Type, te.Value)
		}
		return err
	}
	if reflect.ValueOf(dst).Elem().IsZero() {
		return errors.New("it sets nothing (null or {}): give the settings to change")
	}
	return nil
}

// setRoutingLocked validates base with canary against m's versions and,
// when it can route, makes it r's routing, persisted. It needs the control lock.
func (s *Server) setRoutingLocked(ctx *fasthttp.RequestCtx, r *routes, m *model, base router.Config, admin bool, canary *router.Canary) {
	if err := base.Validate("routing"); err != nil {
		writeError(ctx, fasthttp.StatusBadRequest, err.Error())
		return
	}
	rt, err := buildTable(m, base, canary)
	if err != nil {
		writeError(ctx, fasthttp.StatusBadRequest, err.Error())
		return
	}
	r.mu.Lock()
	started := canary != nil && canary != r.canary
	var steps []transition
	if started {
		steps = append(steps, s.cp.startedTransition(r.model, canary))
	}
	// Stored first: a change that would not survive a restart, or reach
	// the other replicas, is not made.
	if err := s.cp.saveRoutesLocked(r.model, routeRecord{File: r.file, Base: base, Admin: admin, Canary: canary}, steps, false); err != nil {
		r.mu.Unlock()
		writeStoreError(ctx, "the routing change", err)
		return
	}
	r.base, r.admin, r.canary = base, admin, canary
	r.installLocked(rt)
	if started {
		m.resetIntervals()
		s.cp.logTransitions(steps)
	}
	r.mu.Unlock()
	s.log.Info("routing changed by the admin API", "model", r.model, "split", base.Split, "canary", canary != nil)
	writeJSONValue(ctx, r.report())
}

// endCanaryLocked promotes or rolls back r's canary at once.
func (s *Server) endCanaryLocked(ctx *fasthttp.RequestCtx, r *routes, m *model, promote bool, now time.Time) {
	r.mu.Lock()
	if r.canary == nil {
		r.mu.Unlock()
		writeError(ctx, fasthttp.StatusBadRequest, fmt.Sprintf("model %q has no canary", r.model))
		return
	}
	next := *r.canary // r's changes only once stored
	var tr router.Transition
	var err error
	if promote {
		tr, err = next.Promote(now)
	} else {
		tr, err = next.Rollback(now, "rolled back by the admin API")
	}
	if err != nil {
		r.mu.Unlock()
		writeError(ctx, fasthttp.StatusBadRequest, fmt.Sprintf("cannot end the canary of model %q: %s", r.model, err))
		return
	}
	if err := s.cp.commitCanaryLocked(r, m, &next, tr, true, false); err != nil {
		r.mu.Unlock()
		writeStoreError(ctx, "the canary's end", err)
		return
	}
	r.mu.Unlock()
	writeJSONValue(ctx, r.report())
}

// adminWebhooks serves GET /admin/webhooks and POST /admin/webhooks/redrive.
func (s *Server) adminWebhooks(ctx *fasthttp.RequestCtx, action string) {
	ob := s.cp.outbox
	if ob == nil {
		writeError(ctx, fasthttp.StatusNotFound, "no webhooks are configured")
		return
	}
	switch action {
	case "":
		if !allowMethod(ctx, fasthttp.MethodGet) {
			return
		}
		pending, err := ob.Pending()
		if err != nil {
			writeError(ctx, fasthttp.StatusInternalServerError, err.Error())
			return
		}
		dead, err := ob.DeadLetters()
		if err != nil {
			writeError(ctx, fasthttp.StatusInternalServerError, err.Error())
			return
		}
		writeJSONValue(ctx, struct {
			Pending     int                 `json:"pending"`
			DeadLetters []outbox.DeadLetter `json:"dead_letters"`
		}{pending, append([]outbox.DeadLetter{}, dead...)})
	case "redrive":
		if !allowMethod(ctx, fasthttp.MethodPost) {
			return
		}
		var req struct {
			EventID string `json:"event_id"`
			Target  string `json:"target"`
		}
		if !s.decodeAdminBody(ctx, &req, "redrive") {
			return
		}
		switch err := ob.Redrive(req.EventID, req.Target); {
		case errors.Is(err, outbox.ErrNotFound):
			writeError(ctx, fasthttp.StatusNotFound, err.Error())
		case err != nil:
			writeError(ctx, fasthttp.StatusInternalServerError, err.Error())
		default:
			writeJSON(ctx, []byte(`{"redriven":true}`))
		}
	default:
		writeError(ctx, fasthttp.StatusNotFound, fmt.Sprintf("no such admin endpoint %q", ctx.Path()))
	}
}

// writeStoreError answers a change that could not be stored, so was not
// made: 409 when another replica changed the routing first, else 503.
func writeStoreError(ctx *fasthttp.RequestCtx, what string, err error) {
	if errors.Is(err, errConflict) {
		writeError(ctx, fasthttp.StatusConflict, fmt.Sprintf("cannot store %s, so it is not applied: %v", what, err))
		return
	}
	writeError(ctx, fasthttp.StatusServiceUnavailable, fmt.Sprintf("cannot store %s, so it is not applied: %v", what, err))
}

func writeJSONValue(ctx *fasthttp.RequestCtx, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		writeError(ctx, fasthttp.StatusInternalServerError, "cannot encode the answer: "+err.Error())
		return
	}
	writeJSON(ctx, data)
}

// adminVersions serves the versions of model in the engine's model store;
// rest is the path after "models/{m}/versions".
//
//	GET    models/{m}/versions        the versions the store holds, with their files
//	PUT    models/{m}/versions/{v}    upload version v (a tar or multipart body), checked, then published
//	DELETE models/{m}/versions/{v}    delete version v from the store (409 while routing references it)
//
// Every replica loads or unloads the version through its sync.
func (s *Server) adminVersions(ctx *fasthttp.RequestCtx, method, model string, rest []string) {
	switch {
	case s.versions == nil && s.o.Engine != nil:
		writeError(ctx, fasthttp.StatusConflict, "this replica does not sync the model store (model_store.sync: false): upload through another replica")
		return
	case s.versions == nil:
		writeError(ctx, fasthttp.StatusNotFound, "no model store: the gateway runs without an engine (set state_dir or cluster.nats_url)")
		return
	}
	if err := modelstore.ValidModel(model); err != nil {
		writeError(ctx, fasthttp.StatusBadRequest, err.Error())
		return
	}
	switch len(rest) {
	case 0:
		if allowMethod(ctx, fasthttp.MethodGet) {
			s.listVersions(ctx, model)
		}
		return
	case 1:
	default:
		writeError(ctx, fasthttp.StatusNotFound, fmt.Sprintf("no such admin endpoint %q", ctx.Path()))
		return
	}
	version, err := strconv.ParseInt(rest[0], 10, 64)
	if err != nil || version <= 0 || strconv.FormatInt(version, 10) != rest[0] {
		writeError(ctx, fasthttp.StatusBadRequest, fmt.Sprintf("version %q is not a positive integer such as 3", rest[0]))
		return
	}
	switch method {
	case fasthttp.MethodPut:
		s.uploadVersion(ctx, model, version)
	case fasthttp.MethodDelete:
		s.deleteVersion(ctx, model, version)
	default:
		ctx.Response.Header.Set(fasthttp.HeaderAllow, "PUT, DELETE")
		writeError(ctx, fasthttp.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed on %s; use PUT or DELETE", method, ctx.Path()))
	}
}

// storedVersion is a version as GET /admin/models/{m}/versions lists it,
// and as an upload answers.
type storedVersion struct {
	Model     string            `json:"model_name"`
	Version   string            `json:"version"`
	Files     []modelstore.File `json:"files"`
	Published time.Time         `json:"published"`
}

// storedVersionOf returns m as the admin API answers it: where its files
// lie in the store is the store's affair.
func storedVersionOf(m *modelstore.Manifest) storedVersion {
	v := storedVersion{Model: m.Model, Version: strconv.FormatInt(m.Version, 10), Published: m.Published}
	for _, f := range m.Files {
		f.Object = ""
		v.Files = append(v.Files, f)
	}
	return v
}

// versionsTimeout bounds the admin API's calls to the model store that
// move no model: a listing, a delete.
const versionsTimeout = 30 * time.Second

func (s *Server) listVersions(ctx *fasthttp.RequestCtx, model string) {
	c, cancel := context.WithTimeout(context.Background(), versionsTimeout)
	defer cancel()
	entries, err := s.versions.store.List(c)
	if err != nil {
		writeError(ctx, fasthttp.StatusServiceUnavailable, err.Error())
		return
	}
	out := []storedVersion{}
	for _, e := range entries {
		if e.Model != model || e.Deleted {
			continue
		}
		m, err := s.versions.store.Manifest(c, model, e.Version)
		if errors.Is(err, modelstore.ErrNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			writeError(ctx, fasthttp.StatusServiceUnavailable, err.Error())
			return
		}
		out = append(out, storedVersionOf(m))
	}
	writeJSONValue(ctx, struct {
		Model    string          `json:"model_name"`
		Versions []storedVersion `json:"versions"`
	}{model, out})
}

func (s *Server) deleteVersion(ctx *fasthttp.RequestCtx, model string, version int64) {
	name := strconv.FormatInt(version, 10)
	s.cp.mu.Lock()
	referenced := s.cp.referencedVersionsLocked(model)[name]
	s.cp.mu.Unlock()
	if referenced {
		writeError(ctx, fasthttp.StatusConflict, fmt.Sprintf(
			"version %s of model %q is referenced by its routing (split, shadow, canary, or the primary): route away from it first", name, model))
		return
	}
	c, cancel := context.WithTimeout(context.Background(), versionsTimeout)
	defer cancel()
	switch err := s.versions.store.Delete(c, model, version); {
	case errors.Is(err, modelstore.ErrNotFound):
		writeError(ctx, fasthttp.StatusNotFound, fmt.Sprintf("version %s of model %q is not in the model store", name, model))
		return
	case errors.Is(err, modelstore.ErrLeftovers):
		s.log.Warn("a deleted version left objects in the model store", "model", model, "version", version, "error", err)
	case err != nil:
		writeError(ctx, fasthttp.StatusServiceUnavailable, err.Error())
		return
	}
	s.versions.poke()
	s.log.Info("model version deleted from the model store by the admin API", "model", model, "version", version)
	writeJSONValue(ctx, struct {
		Model   string `json:"model_name"`
		Version string `json:"version"`
		Deleted bool   `json:"deleted"`
	}{model, name, true})
}

// publishTimeout bounds the publication of an upload that passed its
// checks.
const publishTimeout = 5 * time.Minute

// uploadVersion serves PUT /admin/models/{m}/versions/{v}: the body's
// files are written to a temporary folder in the repository (a
// dot-folder, uploadStaging), checked (checkUpload) and published to the
// model store; 201 names the version and its digests. A number published
// once, deleted or not, is refused (409).
func (s *Server) uploadVersion(ctx *fasthttp.RequestCtx, model string, version int64) {
	s.cp.mu.Lock()
	limit := int64(cmp.Or(s.cp.current.ModelStore.MaxUploadSize, DefaultConfig().ModelStore.MaxUploadSize))
	repo := s.cp.current.Repository
	s.cp.mu.Unlock()
	if s.serving.Load().model(model) == nil {
		writeError(ctx, fasthttp.StatusNotFound, fmt.Sprintf("unknown model %q: versions are uploaded to a model the gateway serves", model))
		return
	}
	if n := ctx.Request.Header.ContentLength(); n > 0 && int64(n) > limit {
		writeError(ctx, fasthttp.StatusRequestEntityTooLarge, fmt.Sprintf("upload too large: the limit is %s (model_store.max_upload_size)", strictyaml.Size(limit)))
		return
	}
	c, cancel := context.WithTimeout(context.Background(), publishTimeout)
	defer cancel()
	retired := fmt.Sprintf("version %d of model %q was published and deleted; numbers are not reused (upload a new version)", version, model)
	switch _, err := s.versions.store.Manifest(c, model, version); {
	case err == nil:
		writeError(ctx, fasthttp.StatusConflict, fmt.Sprintf("version %d of model %q is published already; a version's files never change (upload a new version)", version, model))
		return
	case errors.Is(err, modelstore.ErrRetired):
		writeError(ctx, fasthttp.StatusConflict, retired)
		return
	case !errors.Is(err, modelstore.ErrNotFound):
		writeError(ctx, fasthttp.StatusServiceUnavailable, err.Error())
		return
	}
	// In the repository, whose volume is sized for versions (a temporary
	// folder's may not hold one); sweep removes what a kill leaves.
	dir, err := os.MkdirTemp(repo, uploadStaging)
	if err != nil {
		writeError(ctx, storageStatus(err), "cannot store the upload: "+err.Error())
		return
	}
	defer os.RemoveAll(dir)
	names, code, err := readUpload(ctx, dir, limit)
	if err == nil {
		code, err = s.checkUpload(model, version, dir, names)
	}
	if err != nil {
		writeError(ctx, code, err.Error())
		return
	}
	m, err := s.versions.store.Publish(c, model, version, dir)
	if errors.Is(err, modelstore.ErrRetired) {
		writeError(ctx, fasthttp.StatusConflict, retired)
		return
	}
	if errors.Is(err, modelstore.ErrExists) {
		writeError(ctx, fasthttp.StatusConflict, fmt.Sprintf("version %d of model %q was published meanwhile by another writer", version, model))
		return
	}
	if err != nil {
		writeError(ctx, fasthttp.StatusServiceUnavailable, err.Error())
		return
	}
	s.versions.poke()
	s.log.Info("model version uploaded to the model store by the admin API", "model", model, "version", version, "files", m.Digests())
	ctx.SetStatusCode(fasthttp.StatusCreated)
	writeJSONValue(ctx, storedVersionOf(m))
}

// errUploadTooLarge is returned by a boundedReader past its limit.
var errUploadTooLarge = errors.New("upload too large")

// boundedReader reads at most left bytes of r; reading more fails with
// errUploadTooLarge, so that no more than the limit is ever stored.
type boundedReader struct {
	r    io.Reader
	left int64
}

func (b *boundedReader) Read(p []byte) (int, error) {
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.r.Read(p)
	if b.left -= int64(n); b.left < 0 {
		return 0, errUploadTooLarge
	}
	return n, err
}

// uploadStorageError is a failure to store a file of an upload: the
// server's, answered 500 (507 when the disk is full), where a body that
// cannot be read is the client's (400).
type uploadStorageError struct{ err error }

func (e *uploadStorageError) Error() string { return e.err.Error() }
func (e *uploadStorageError) Unwrap() error { return e.err }

// storageStatus is the status answering a failure to store an upload.
func storageStatus(err error) int {
	if errors.Is(err, syscall.ENOSPC) {
		return fasthttp.StatusInsufficientStorage
	}
	return fasthttp.StatusInternalServerError
}

// storingWriter writes an upload's file, its errors uploadStorageErrors,
// so that io.Copy's error tells the writer's failures from the reader's.
type storingWriter struct{ f *os.File }

func (w storingWriter) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	if err != nil {
		err = &uploadStorageError{err}
	}
	return n, err
}

// readUpload writes the files of the request's body, a tar archive
// (application/x-tar) or a multipart/form-data form, into dir, reading at
// most limit bytes; it returns the names written, or the status and error
// to answer: 413 beyond the limit, 400 for a body that is not what it
// should be, 500 (507 when the disk is full) when a file cannot be
// stored. Only the files of modelstore.Files are taken, each once.
func readUpload(ctx *fasthttp.RequestCtx, dir string, limit int64) (map[string]bool, int, error) {
	var body io.Reader = bytes.NewReader(ctx.Request.Body())
	if stream := ctx.RequestBodyStream(); stream != nil {
		body = stream
	}
	br := &boundedReader{r: body, left: limit}
	names := make(map[string]bool)
	fail := func(err error) (map[string]bool, int, error) {
		var stored *uploadStorageError
		switch {
		case errors.Is(err, errUploadTooLarge):
			return nil, fasthttp.StatusRequestEntityTooLarge, fmt.Errorf("upload too large: the limit is %s (model_store.max_upload_size)", strictyaml.Size(limit))
		case errors.As(err, &stored):
			return nil, storageStatus(err), err
		}
		return nil, fasthttp.StatusBadRequest, err
	}
	save := func(name string, r io.Reader) error {
		if !slices.Contains(modelstore.Files, name) {
			return fmt.Errorf("unexpected file %q in the upload: a version holds %s", name, strings.Join(modelstore.Files, ", "))
		}
		if names[name] {
			return fmt.Errorf("the upload holds %s twice", name)
		}
		names[name] = true
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			return fmt.Errorf("cannot store %s of the upload: %w", name, &uploadStorageError{err})
		}
		_, err = io.Copy(storingWriter{f}, r)
		if cerr := f.Close(); err == nil && cerr != nil {
			err = &uploadStorageError{cerr}
		}
		var stored *uploadStorageError
		if errors.As(err, &stored) {
			return fmt.Errorf("cannot store %s of the upload: %w", name, err)
		}
		if err != nil {
			return fmt.Errorf("cannot read %s of the upload: %w", name, err)
		}
		return nil
	}
	mediaType, params, _ := mime.ParseMediaType(string(ctx.Request.Header.ContentType()))
	switch mediaType {
	case "application/x-tar", "application/tar":
		tr := tar.NewReader(br)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				return fail(fmt.Errorf("cannot read the tar archive: %w", err))
			}
			name := strings.TrimPrefix(h.Name, "./")
			if h.Typeflag == tar.TypeDir && (name == "" || name == ".") {
				continue
			}
			if h.Typeflag != tar.TypeReg && slices.Contains(modelstore.Files, name) {
				return fail(fmt.Errorf("%s in the tar archive is not a regular file", name))
			}
			if err := save(name, tr); err != nil {
				return fail(err)
			}
		}
	case "multipart/form-data":
		mr := multipart.NewReader(br, params["boundary"])
		for {
			p, err := mr.NextPart()
			if err == io.EOF {
				break
			}
			if err != nil {
				return fail(fmt.Errorf("cannot read the multipart form: %w", err))
			}
			// -F model.onnx=@file names the part; -F file=@model.onnx
			// names the file.
			name := p.FormName()
			if !slices.Contains(modelstore.Files, name) && slices.Contains(modelstore.Files, p.FileName()) {
				name = p.FileName()
			}
			err = save(name, p)
			p.Close()
			if err != nil {
				return fail(err)
			}
		}
	default:
		return nil, fasthttp.StatusUnsupportedMediaType, fmt.Errorf(
			"unsupported Content-Type %q: send the version's files as application/x-tar or multipart/form-data", ctx.Request.Header.ContentType())
	}
	// Whatever follows the archive is read too, so that a body beyond
	// the limit is refused whatever it holds.
	if _, err := io.Copy(io.Discard, br); err != nil {
		return fail(err)
	}
	if !names[modelstore.ModelFile] {
		return nil, fasthttp.StatusBadRequest, fmt.Errorf("the upload has no %s", modelstore.ModelFile)
	}
	return names, 0, nil
}

// checkUpload checks the files of an upload in dir before they are
// published: model.onnx loads in ONNX Runtime under the model's config,
// with the inputs and outputs of the version served now; reference.json
// (required while that version is monitored for drift) is a reference
// profile the new version can be monitored by; metrics.json is JSON;
// labels.txt has one non-empty line per class. It returns the status and
// error to answer.
func (s *Server) checkUpload(model string, number int64, dir string, names map[string]bool) (int, error) {
	s.cp.mu.Lock()
	mc := s.cp.current.Models[model].withDefaults()
	s.cp.mu.Unlock()
	var current *version
	if m := s.serving.Load().model(model); m != nil {
		current = m.latest()
	}
	if names["metrics.json"] {
		data, err := os.ReadFile(filepath.Join(dir, "metrics.json"))
		if err != nil {
			return fasthttp.StatusInternalServerError, fmt.Errorf("cannot read the upload's metrics.json back: %w", err)
		}
		if !json.Valid(data) {
			return fasthttp.StatusBadRequest, errors.New("metrics.json is not JSON")
		}
	}
	if !names[drift.ReferenceFile] && !mc.Drift.Disabled && current != nil && current.drift != nil {
		return fasthttp.StatusBadRequest, fmt.Errorf("the upload needs %s: model %q is monitored for drift (its version %s has a reference profile)",
			drift.ReferenceFile, model, current.name)
	}
	rc := mc.ModelConfig
	rc.Instances = 1
	rv, err := s.o.Env.LoadModelVersion(dir, model, number, rc)
	if err != nil {
		return fasthttp.StatusUnprocessableEntity, fmt.Errorf("model.onnx does not load in ONNX Runtime under model %q's config: %w", model, err)
	}
	defer rv.Close()
	if current != nil {
		if err := sameTensorInfos("input", current.name, current.rt.Inputs(), rv.Inputs()); err != nil {
			return fasthttp.StatusUnprocessableEntity, err
		}
		if err := sameTensorInfos("output", current.name, current.rt.Outputs(), rv.Outputs()); err != nil {
			return fasthttp.StatusUnprocessableEntity, err
		}
	}
	if names[drift.ReferenceFile] {
		ref, err := drift.LoadReference(filepath.Join(dir, drift.ReferenceFile))
		if err != nil {
			return fasthttp.StatusUnprocessableEntity, err
		}
		if !mc.Drift.Disabled {
			if _, _, _, err := driftLayout(rv, mc.Drift.Input, ref); err != nil {
				return fasthttp.StatusUnprocessableEntity, fmt.Errorf("%s does not fit the model: %w", drift.ReferenceFile, err)
			}
		}
	}
	if names[labelsFile] {
		if _, err := LoadLabels(dir, rv.Outputs()); err != nil {
			return fasthttp.StatusUnprocessableEntity, err
		}
	}
	return 0, nil
}

// sameTensorInfos reports the first difference of an upload's inputs or
// outputs (kind says which) from those of the version served now, named
// current, naming the tensor.
func sameTensorInfos(kind, current string, want, got []runtime.TensorInfo) error {
	for _, w := range want {
		i := slices.IndexFunc(got, func(g runtime.TensorInfo) bool { return g.Name == w.Name })
		if i < 0 {
			return fmt.Errorf("the upload has no %s %q, which version %s has (%s)", kind, w.Name, current, w)
		}
		if g := got[i]; g.DataType != w.DataType || !slices.Equal(g.Shape, w.Shape) {
			return fmt.Errorf("the upload's %s %q is %s, version %s's is %s", kind, w.Name, g, current, w)
		}
	}
	for _, g := range got {
		if !slices.ContainsFunc(want, func(w runtime.TensorInfo) bool { return w.Name == g.Name }) {
			return fmt.Errorf("the upload has an %s %q that version %s lacks (%s)", kind, g.Name, current, g)
		}
	}
	return nil
}
