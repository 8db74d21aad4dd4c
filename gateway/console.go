package gateway

import (
	"cmp"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/infergate/infergate/drift"
	"github.com/infergate/infergate/retrain/engine"
	"github.com/infergate/infergate/retrain/outbox"
	"github.com/infergate/infergate/retrain/pipeline"
	"github.com/infergate/infergate/router"
)

// ConsoleConfig bounds the histories the console and the read endpoints
// serve; zero means the default.
type ConsoleConfig struct {
	// CanarySteps is how many canary steps are kept per model (200).
	CanarySteps int `yaml:"canary_steps"`
	// DriftWindows is how many judged drift windows are kept per model
	// version (48).
	DriftWindows int `yaml:"drift_windows"`
	// Events is how many of the gateway's recent events are kept (200).
	Events int `yaml:"events"`
}

// validate reports a setting that is negative or beyond what one stored
// list holds.
func (c ConsoleConfig) validate() error {
	for _, s := range []struct {
		key string
		n   int
	}{{"canary_steps", c.CanarySteps}, {"drift_windows", c.DriftWindows}, {"events", c.Events}} {
		if s.n < 0 || s.n > 10000 {
			return fmt.Errorf("console.%s: must be within 0..10000 (0 means the default), got %d", s.key, s.n)
		}
	}
	return nil
}

// withDefaults returns c with its zero fields set to the defaults.
func (c ConsoleConfig) withDefaults() ConsoleConfig {
	def := DefaultConfig().Console
	return ConsoleConfig{CanarySteps: cmp.Or(c.CanarySteps, def.CanarySteps),
		DriftWindows: cmp.Or(c.DriftWindows, def.DriftWindows), Events: cmp.Or(c.Events, def.Events)}
}

// Paging of the read endpoints: ?limit= defaults to defaultPage and is
// capped at maxPage.
const (
	defaultPage = 50
	maxPage     = 1000
)

// consoleCanaryStep is a canary step as the step history keeps it: what
// happened (Step: started, advanced, held, failed, promoted, rolledback),
// the weight before and after, the checks of the analysis that made it
// (none for a start or an operator's promote or rollback), and who made
// it.
type consoleCanaryStep struct {
	Time         time.Time        `json:"time"`
	Model        string           `json:"model_name"`
	Version      string           `json:"version"`
	Step         router.Kind      `json:"step"`
	Phase        router.Phase     `json:"phase"`
	WeightBefore int              `json:"weight_before"`
	WeightAfter  int              `json:"weight_after"`
	FailedChecks int              `json:"failed_checks"`
	Threshold    int              `json:"failed_checks_threshold"`
	Reason       string           `json:"reason,omitempty"`
	Checks       []router.Check   `json:"checks"`
	Measured     *router.Snapshot `json:"measured,omitempty"`
	Replica      string           `json:"replica,omitempty"`
	Leader       string           `json:"leader,omitempty"`
}

// recordCanarySteps adds steps, once stored, to their models' step
// histories.
func (cp *controlPlane) recordCanarySteps(steps []transition) {
	keep := cp.history.limits.CanarySteps
	for _, st := range steps {
		c := st.canary
		at := c.LastTransition
		if c.LastEvaluation.After(at) {
			at = c.LastEvaluation
		}
		rec := consoleCanaryStep{Time: at.UTC(), Model: st.model, Version: st.version, Step: st.tr.Kind, Phase: c.Phase,
			WeightBefore: st.tr.From, WeightAfter: st.tr.Weight, FailedChecks: st.tr.FailedChecks, Threshold: c.Config.Threshold,
			Reason: st.tr.Reason, Checks: []router.Check{}, Measured: st.tr.Measured, Replica: cp.cluster.Replica, Leader: cp.leaderName()}
		if st.tr.Kind == router.KindStarted {
			rec.WeightBefore = 0
		}
		if m := st.tr.Measured; m != nil {
			rec.Checks = c.Config.Checks(*m)
		}
		cp.history.add(canaryStepsPrefix+engine.Token(st.model), keep, "", rec)
	}
}

// recordWindow adds a judged window of model's version to its drift
// history.
func (cp *controlPlane) recordWindow(model, version string, res drift.WindowResult) {
	cp.history.add(driftWindowsKey(model, version), cp.history.limits.DriftWindows, "", res)
}

func driftWindowsKey(model, version string) string {
	return driftWindowsPrefix + engine.Token(model) + "." + version
}

// consoleEvent is an event as the event history keeps it.
type consoleEvent struct {
	ID      string    `json:"id"`
	Type    string    `json:"type"`
	Subject string    `json:"subject"`
	Time    time.Time `json:"time"`
	Replica string    `json:"replica,omitempty"`
	Leader  string    `json:"leader,omitempty"`
	// Data is the event's data as delivered.
	Data any `json:"data"`
}

// recordEvent adds e to the event history, once per event id (a new
// leader emits the last changes' events again).
func (cp *controlPlane) recordEvent(e *outbox.Event) {
	keep := cp.history.limits.Events
	rec := consoleEvent{ID: e.ID, Type: e.Type, Subject: e.Subject, Time: e.Time, Replica: e.Replica, Leader: e.Leader, Data: e.Data}
	cp.history.add(eventsKey, keep, e.ID, rec)
}

// pageOf reads ?limit= and ?before= and the page of the history at key,
// or answers 400 (bad arguments) or 503 (the engine did not answer).
func (s *Server) pageOf(ctx *fasthttp.RequestCtx, key string) (page[historyItem], bool) {
	args := ctx.QueryArgs()
	limit, before, err := pageArgs(args.Peek("limit"), args.Peek("before"), defaultPage, maxPage)
	if err != nil {
		writeError(ctx, fasthttp.StatusBadRequest, err.Error())
		return page[historyItem]{}, false
	}
	p, err := s.cp.history.read(key, limit, before)
	if err != nil {
		writeError(ctx, fasthttp.StatusServiceUnavailable, err.Error())
		return page[historyItem]{}, false
	}
	return p, true
}

// canarySteps serves GET /admin/models/{m}/canary/steps: the model's
// canary steps, newest first, paged by ?limit=&before=.
func (s *Server) canarySteps(ctx *fasthttp.RequestCtx, model string) {
	if !allowMethod(ctx, fasthttp.MethodGet) {
		return
	}
	if s.serving.Load().model(model) == nil {
		writeError(ctx, fasthttp.StatusNotFound, fmt.Sprintf("unknown model %q", model))
		return
	}
	if p, ok := s.pageOf(ctx, canaryStepsPrefix+engine.Token(model)); ok {
		writeJSONValue(ctx, p)
	}
}

// driftWindows serves GET /v2/models/{m}/versions/{v}/drift/windows: the
// version's judged drift windows, newest first, paged by ?limit=&before=.
func (s *Server) driftWindows(ctx *fasthttp.RequestCtx, m *model, v *version) {
	if v.drift == nil {
		writeError(ctx, fasthttp.StatusNotFound, fmt.Sprintf("model %q version %s has no drift monitoring: its folder has no %s (or drift is disabled)", m.name, v.name, drift.ReferenceFile))
		return
	}
	if p, ok := s.pageOf(ctx, driftWindowsKey(m.name, v.name)); ok {
		writeJSONValue(ctx, p)
	}
}

// eventWithDeliveries is an event of GET /admin/webhooks/events with its
// deliveries to each webhook target (empty without webhooks).
type eventWithDeliveries struct {
	historyItem
	Deliveries []outbox.Delivery `json:"deliveries"`
}

// consoleEvents serves GET /admin/webhooks/events: the gateway's recent
// events, newest first, paged by ?limit=&before=, each with its
// deliveries.
func (s *Server) consoleEvents(ctx *fasthttp.RequestCtx) {
	if !allowMethod(ctx, fasthttp.MethodGet) {
		return
	}
	p, ok := s.pageOf(ctx, eventsKey)
	if !ok {
		return
	}
	out := page[eventWithDeliveries]{Items: []eventWithDeliveries{}, NextBefore: p.NextBefore}
	for _, it := range p.Items {
		e := eventWithDeliveries{historyItem: it, Deliveries: []outbox.Delivery{}}
		if ob := s.cp.outbox; ob != nil {
			var head struct {
				ID   string `json:"id"`
				Type string `json:"type"`
			}
			if err := json.Unmarshal(it.Data, &head); err != nil {
				writeError(ctx, fasthttp.StatusInternalServerError, "cannot decode a stored event: "+err.Error())
				return
			}
			d, err := ob.Deliveries(head.ID, head.Type)
			if err != nil {
				writeError(ctx, fasthttp.StatusServiceUnavailable, err.Error())
				return
			}
			e.Deliveries = d
		}
		out.Items = append(out.Items, e)
	}
	writeJSONValue(ctx, out)
}

// retrainRuns serves GET /admin/retrain/runs: the retrain service's runs
// as the engine holds them, newest first, of ?model= when given, paged by
// ?limit=&before= (before a run id).
func (s *Server) retrainRuns(ctx *fasthttp.RequestCtx) {
	if !allowMethod(ctx, fasthttp.MethodGet) {
		return
	}
	if s.o.Engine == nil {
		writeError(ctx, fasthttp.StatusNotFound, "no retrain runs: the gateway runs without an engine (set state_dir or cluster.nats_url)")
		return
	}
	args := ctx.QueryArgs()
	limit, before, err := pageArgs(args.Peek("limit"), args.Peek("before"), defaultPage, maxPage)
	if err != nil {
		writeError(ctx, fasthttp.StatusBadRequest, err.Error())
		return
	}
	runs, err := pipeline.ListRuns(s.o.Engine)
	if err != nil {
		writeError(ctx, fasthttp.StatusServiceUnavailable, err.Error())
		return
	}
	model := string(args.Peek("model"))
	out := page[pipeline.Run]{Items: []pipeline.Run{}}
	for _, r := range runs {
		id, _ := strconv.ParseUint(r.ID, 10, 64)
		if before != 0 && id >= before || model != "" && r.Model != model {
			continue
		}
		if len(out.Items) == limit {
			out.NextBefore, _ = strconv.ParseUint(out.Items[len(out.Items)-1].ID, 10, 64)
			break
		}
		out.Items = append(out.Items, r)
	}
	writeJSONValue(ctx, out)
}

// consoleAssets are the console's page, style and script.
//
//go:embed console
var consoleAssets embed.FS

// consoleCSP lets the console load nothing but its own files and talk to
// nothing but the gateway that served it.
const consoleCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// consoleTypes are the content types of the console's files.
var consoleTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".svg":  "image/svg+xml",
}

// handleConsole serves the console's files under /console/.
func (s *Server) handleConsole(ctx *fasthttp.RequestCtx) {
	p := string(ctx.Path())
	if p == "/console" {
		ctx.Redirect("/console/", fasthttp.StatusMovedPermanently)
		return
	}
	if !allowMethod(ctx, fasthttp.MethodGet) {
		return
	}
	name := strings.TrimPrefix(p, "/console/")
	if name == "" {
		name = "index.html"
	}
	if strings.Contains(name, "/") || strings.HasPrefix(name, ".") {
		writeError(ctx, fasthttp.StatusNotFound, fmt.Sprintf("no such console file %q", name))
		return
	}
	data, err := consoleAssets.ReadFile("console/" + name)
	if errors.Is(err, fs.ErrNotExist) {
		writeError(ctx, fasthttp.StatusNotFound, fmt.Sprintf("no such console file %q", name))
		return
	}
	if err != nil {
		writeError(ctx, fasthttp.StatusInternalServerError, err.Error())
		return
	}
	ctx.SetContentType(consoleTypes[path.Ext(name)])
	ctx.Response.Header.Set("Content-Security-Policy", consoleCSP)
	ctx.Response.Header.Set("X-Content-Type-Options", "nosniff")
	ctx.Response.Header.Set("Referrer-Policy", "no-referrer")
	ctx.Response.Header.Set(fasthttp.HeaderCacheControl, "no-cache")
	ctx.SetBody(data)
}
