package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// readyPoll is how often the gateway is asked whether the version is ready.
const readyPoll = 200 * time.Millisecond

// startCanary asks the gateway to reload its repository, waits for the
// candidate to be ready and starts its canary. Without gateway.url it
// leaves the candidate published, unrouted.
func (st *runState) startCanary(ctx context.Context) error {
	gw := st.s.cfg.Gateway
	if gw.URL == "" {
		st.logf("no gateway.url configured: version %s is published, no canary started", st.run.Candidate)
		return nil
	}
	model, version := url.PathEscape(st.run.Model), st.run.Candidate
	if _, err := st.call(ctx, http.MethodPost, "/admin/reload", nil); err != nil {
		return fmt.Errorf("cannot reload the gateway: %w", err)
	}
	st.logf("asked the gateway at %s to reload", gw.URL)
	wait, cancel := context.WithTimeout(ctx, gw.ReadyTimeout)
	defer cancel()
	for {
		_, err := st.call(wait, http.MethodGet, "/v2/models/"+model+"/versions/"+version+"/ready", nil)
		if err == nil {
			break
		}
		select {
		case <-wait.Done():
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("version %s is not ready on the gateway after %s (gateway.ready_timeout): %w", version, gw.ReadyTimeout, err)
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
	if _, err := st.call(ctx, http.MethodPost, "/admin/models/"+model+"/canary", body); err != nil {
		return fmt.Errorf("cannot start the canary of version %s: %w", version, err)
	}
	st.logf("canary of version %s started: %s", version, body)
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
	body, err := st.call(ctx, http.MethodGet, "/admin/models/"+url.PathEscape(st.run.Model)+"/routing", nil)
	if err != nil {
		return fmt.Errorf("cannot read the routing of model %q from the gateway: %w", st.run.Model, err)
	}
	st.routing = new(routing)
	if err := json.Unmarshal(body, st.routing); err != nil {
		return fmt.Errorf("cannot decode the routing of model %q: %w", st.run.Model, err)
	}
	if c := st.routing.Canary; c != nil && c.Phase == "progressing" {
		return fmt.Errorf("a canary of version %s of model %q is in progress; its outcome comes first", c.Config.Version, st.run.Model)
	}
	return nil
}

// pinPrimary keeps unpinned traffic on the current version once the
// candidate is published: without a split the gateway sends it all to the
// newest version, which would put the candidate in service before its
// canary. It sets the split through the admin API, keeping the rest.
func (st *runState) pinPrimary(ctx context.Context) error {
	r := st.routing
	if r == nil || r.Config["split"] != nil {
		return nil
	}
	cfg := maps.Clone(r.Config)
	cfg["split"] = map[string]int{st.base.VersionName: 1}
	delete(cfg, "canary")
	body, err := json.Marshal(cfg)
	if err != nil {
		return fmt.Errorf("cannot encode routing: %w", err)
	}
	if _, err := st.call(ctx, http.MethodPut, "/admin/models/"+url.PathEscape(st.run.Model)+"/routing", body); err != nil {
		return fmt.Errorf("cannot keep traffic on version %s while the candidate is published: %w", st.base.VersionName, err)
	}
	st.logf("pinned unpinned traffic to version %s until the canary starts", st.base.VersionName)
	return nil
}

// call makes one request to the gateway with the admin token and returns
// the body of a 2xx answer; any other is an error quoting the answer.
func (st *runState) call(ctx context.Context, method, path string, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(st.s.cfg.Gateway.URL, "/")+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+st.s.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := st.s.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("cannot read the answer to %s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("%s %s: the gateway answered %s: %s", method, path, resp.Status, bytes.TrimSpace(answer))
	}
	return answer, nil
}
