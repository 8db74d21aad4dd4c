package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// readyPoll is how often the gateway is asked whether the version is ready.
const readyPoll = 200 * time.Millisecond

// startCanary asks the gateway to reload its repository, waits for the
// candidate to be ready and starts its canary, all within
// gateway.ready_timeout, so a gateway that restarts meanwhile is waited
// for. Without gateway.url it leaves the candidate published, unrouted.
func (st *runState) startCanary(ctx context.Context) error {
	gw := st.s.cfg.Gateway
	if gw.URL == "" {
		st.logf("no gateway.url configured: version %s is published, no canary started", st.run.Candidate)
		return nil
	}
	step := ctx
	ctx, cancel := context.WithTimeout(ctx, gw.ReadyTimeout)
	defer cancel()
	model, version := url.PathEscape(st.run.Model), st.run.Candidate
	if _, err := st.call(ctx, http.MethodPost, "/admin/reload", nil); err != nil {
		return fmt.Errorf("cannot reload the gateway: %w", err)
	}
	st.logf("asked the gateway at %s to reload", gw.URL)
	// last is the error of the last poll that says something: not one whose
	// only attempt the deadline cut short. It says whether the version
	// never became ready (an answer such as 404) or the gateway could not
	// be reached (a *gaveUpError), a failure that may pass.
	var last error
	for {
		_, err := st.call(ctx, http.MethodGet, "/v2/models/"+model+"/versions/"+version+"/ready", nil)
		if err == nil {
			break
		}
		var gaveUp *gaveUpError
		if last == nil || !errors.As(err, &gaveUp) || gaveUp.attempts > 1 || ctx.Err() == nil {
			last = err
		}
		select {
		case <-ctx.Done():
			if step.Err() != nil {
				return step.Err()
			}
			return fmt.Errorf("version %s is not ready on the gateway after %s (gateway.ready_timeout): %w", version, gw.ReadyTimeout, last)
		case <-time.After(readyPoll):
		}
	}
	st.logf("version %s is ready on the gateway", version)
	canary := maps.Clone(st.cfg.Canary)
	if canary == nil {
		canary = map[string]any{}
	}
	canary["version"] = version
	body, err := json.Marshal(canary)
	if err != nil {
		return fmt.Errorf("cannot encode the canary section: %w", err)
	}
	// The gateway starts the canary afresh on every POST: one made again
	// after a lost answer would restart a canary already under way.
	started := func(ctx context.Context) (bool, error) { return st.hasCanary(ctx, version) }
	if _, err := st.callUnless(ctx, http.MethodPost, "/admin/models/"+model+"/canary", body, started); err != nil {
		return fmt.Errorf("cannot start the canary of version %s: %w", version, err)
	}
	st.mu.Lock()
	st.run.CanaryStarted = st.s.now().UTC()
	st.mu.Unlock()
	st.logf("canary of version %s started: %s", version, body) // stores the run
	return nil
}

// routing is the part of GET /admin/models/{m}/routing a run reads.
type routing struct {
	Source string         `json:"source"`
	Config map[string]any `json:"config"`
	Canary *struct {
		Phase  string `json:"phase"`
		Config struct {
			Version string `json:"version"`
		} `json:"config"`
	} `json:"canary"`
}

// readRouting reads the model's routing from the gateway, if one is
// configured, and refuses to retrain while a canary is in progress: its
// outcome decides what the current version is.
func (st *runState) readRouting(ctx context.Context) error {
	if st.s.cfg.Gateway.URL == "" {
		return nil
	}
	body, err := st.call(ctx, http.MethodGet, st.routingPath(), nil)
	if err != nil {
		return fmt.Errorf("cannot read the routing of model %q from the gateway: %w", st.run.Model, err)
	}
	if st.routing, err = st.decodeRouting(body); err != nil {
		return err
	}
	if c := st.routing.Canary; c != nil && c.Phase == "progressing" {
		return fmt.Errorf("a canary of version %s of model %q is in progress; its outcome comes first", c.Config.Version, st.run.Model)
	}
	return nil
}

func (st *runState) routingPath() string {
	return "/admin/models/" + url.PathEscape(st.run.Model) + "/routing"
}

func (st *runState) decodeRouting(body []byte) (*routing, error) {
	r := new(routing)
	if err := json.Unmarshal(body, r); err != nil {
		return nil, fmt.Errorf("cannot decode the routing of model %q: %w", st.run.Model, err)
	}
	return r, nil
}

// hasCanary asks the gateway once whether its routing of the model holds a
// canary of version, in whatever phase.
func (st *runState) hasCanary(ctx context.Context, version string) (bool, error) {
	req, err := st.request(ctx, http.MethodGet, st.routingPath(), nil)
	if err != nil {
		return false, err
	}
	body, _, err := st.callOnce(req)
	if err != nil {
		return false, err
	}
	r, err := st.decodeRouting(body)
	if err != nil {
		return false, err
	}
	return r.Canary != nil && r.Canary.Config.Version == version, nil
}

// pinPrimary keeps unpinned traffic on version base once the candidate is
// published: without a split the gateway sends it all to the newest
// version, which would put the candidate in service before its canary. It
// sets the split through the admin API, keeping the rest.
func (st *runState) pinPrimary(ctx context.Context, base string) error {
	r := st.routing
	if r == nil || r.Config["split"] != nil {
		return nil
	}
	cfg := maps.Clone(r.Config)
	cfg["split"] = map[string]int{base: 1}
	delete(cfg, "canary")
	body, err := json.Marshal(cfg)
	if err != nil {
		return fmt.Errorf("cannot encode routing: %w", err)
	}
	if _, err := st.call(ctx, http.MethodPut, st.routingPath(), body); err != nil {
		return fmt.Errorf("cannot keep traffic on version %s while the candidate is published: %w", base, err)
	}
	st.logf("pinned unpinned traffic to version %s until the canary starts", base)
	return nil
}

// Backoff between attempts of a call to the gateway: the delay before
// attempt n+1 is drawn uniformly from [d/2, d], d = gatewayBackoff*2^(n-1)
// up to gatewayBackoffMax, and no less than the gateway's Retry-After.
const (
	gatewayBackoff    = 100 * time.Millisecond
	gatewayBackoffMax = 2 * time.Second
)

// call makes a request to the gateway with the admin token and returns
// the body of a 2xx answer. A request that got no answer (connection
// refused or reset, a timeout) or a 429, 502, 503 or 504 is made again,
// with backoff, until ctx's deadline, or gateway.ready_timeout from now
// when ctx has none: so a restart of the gateway is waited for; then the
// error is a *gaveUpError. Any other answer is an error quoting it.
func (st *runState) call(ctx context.Context, method, path string, body []byte) ([]byte, error) {
	return st.callUnless(ctx, method, path, body, nil)
}

// callUnless is call for a request that must not take effect twice. Before
// each attempt after the first it asks done, when not nil, whether an
// earlier attempt took effect and only its answer was lost; if so it
// returns no answer and no error. done makes one request per attempt, and
// its failure counts as the attempt's.
func (st *runState) callUnless(ctx context.Context, method, path string, body []byte, done func(context.Context) (bool, error)) ([]byte, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, st.s.cfg.Gateway.ReadyTimeout)
		defer cancel()
	}
	req, err := st.request(ctx, method, path, body)
	if err != nil {
		return nil, err
	}
	deadline, _ := ctx.Deadline()
	start := time.Now()
	for attempt := 1; ; attempt++ {
		var (
			answer     []byte
			retryAfter time.Duration
			applied    bool
			err        error
		)
		if attempt > 1 && done != nil {
			applied, err = done(ctx)
		}
		if applied {
			st.logf("%s %s took effect, its answer lost: the gateway shows it", method, path)
			return nil, nil
		}
		if err == nil {
			answer, retryAfter, err = st.callOnce(req)
		}
		var refused *gatewayError
		if err == nil || errors.As(err, &refused) && !refused.retryable() {
			return answer, err
		}
		giveUp := &gaveUpError{err: err, attempts: attempt, took: time.Since(start)}
		delay := min(gatewayBackoff<<min(attempt-1, 10), gatewayBackoffMax)
		delay = max(delay/2+rand.N(delay/2+1), retryAfter)
		if ctx.Err() != nil || time.Now().Add(delay).After(deadline) {
			return nil, giveUp
		}
		if attempt == 1 {
			st.logf("%s %s failed (%v): trying again until %s", method, path, err, deadline.UTC().Format(time.RFC3339))
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, giveUp
		case <-t.C:
		}
	}
}

// request makes a request to the gateway with the admin token.
func (st *runState) request(ctx context.Context, method, path string, body []byte) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(st.s.cfg.Gateway.URL, "/")+path, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("cannot make the request %s %s: %w", method, path, err)
	}
	req.Header.Set("Authorization", "Bearer "+st.s.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return req, nil
}

// gaveUpError is the error of a call to the gateway that got no answer, or
// only answers that may change on their own, until its deadline: a failure
// that may pass (see transient).
type gaveUpError struct {
	err      error // the last attempt's
	attempts int
	took     time.Duration
}

func (e *gaveUpError) Error() string {
	return fmt.Sprintf("%v (gave up after %d attempts in %s)", e.err, e.attempts, e.took.Round(time.Millisecond))
}

func (e *gaveUpError) Unwrap() error { return e.err }

// gatewayError is an answer of the gateway other than 2xx.
type gatewayError struct {
	method, path, status string
	code                 int
	answer               []byte
}

func (e *gatewayError) Error() string {
	return fmt.Sprintf("%s %s: the gateway answered %s: %s", e.method, e.path, e.status, e.answer)
}

// retryable says whether the answer may change on its own: too many
// requests, or a gateway (or a proxy in front of it) that is restarting.
func (e *gatewayError) retryable() bool {
	switch e.code {
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// callOnce makes one attempt of req; on a failure it also returns the
// gateway's Retry-After, if any.
func (st *runState) callOnce(req *http.Request) ([]byte, time.Duration, error) {
	var err error
	if req.Body, err = req.GetBody(); err != nil {
		return nil, 0, fmt.Errorf("cannot rewind the body of %s %s: %w", req.Method, req.URL.Path, err)
	}
	resp, err := st.s.client.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, 0, fmt.Errorf("cannot read the answer to %s %s: %w", req.Method, req.URL.Path, err)
	}
	if resp.StatusCode/100 != 2 {
		var retryAfter time.Duration
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
			retryAfter = time.Duration(s) * time.Second
		}
		return nil, retryAfter, &gatewayError{method: req.Method, path: req.URL.Path, status: resp.Status, code: resp.StatusCode, answer: bytes.TrimSpace(answer)}
	}
	return answer, 0, nil
}
