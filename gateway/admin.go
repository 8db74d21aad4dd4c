package gateway

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/infergate/infergate/retrain/outbox"
	"github.com/infergate/infergate/router"
)

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
//	GET    cluster                     the fleet: replicas, leader, heartbeats, routing revisions
//	GET    webhooks                    events waiting for delivery, and the dead letters
//	POST   webhooks/redrive            deliver a dead letter again: {"event_id", "target"}
//	POST   reload                      reload the config file and the repository
func (s *Server) handleAdmin(ctx *fasthttp.RequestCtx, rest string) {
	if len(s.adminToken) == 0 {
		writeError(ctx, fasthttp.StatusNotFound, "the admin API is off: set admin.token_env in the config")
		return
	}
	auth := ctx.Request.Header.Peek(fasthttp.HeaderAuthorization)
	token, ok := bytes.CutPrefix(auth, []byte("Bearer "))
	if !ok || subtle.ConstantTimeCompare(token, s.adminToken) != 1 {
		ctx.Response.Header.Set(fasthttp.HeaderWWWAuthenticate, `Bearer realm="infergate admin"`)
		writeError(ctx, fasthttp.StatusUnauthorized, "missing or wrong bearer token")
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
	case parts[0] == "webhooks" && len(parts) <= 2:
		s.adminWebhooks(ctx, strings.Join(parts[1:], "/"))
	case len(parts) == 1 && parts[0] == "models":
		if allowMethod(ctx, fasthttp.MethodGet) {
			s.adminModels(ctx)
		}
	case len(parts) >= 3 && parts[0] == "models":
		s.adminModel(ctx, method, parts[1], strings.Join(parts[2:], "/"))
	default:
		writeError(ctx, fasthttp.StatusNotFound, fmt.Sprintf("no such admin endpoint %q", ctx.Path()))
	}
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
