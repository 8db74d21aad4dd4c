package outbox

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// dispatchBody is the body of GitHub's repository_dispatch endpoint.
type dispatchBody struct {
	EventType     string          `json:"event_type"`
	ClientPayload json.RawMessage `json:"client_payload"`
}

// post makes one delivery attempt of the stored event to t, canceled with
// ctx. On failure it also returns the receiver's Retry-After, if any.
func (ob *Outbox) post(ctx context.Context, t *target, eventID, eventType string, event []byte) (time.Duration, error) {
	body, contentType := event, ContentType
	if t.Format == FormatGitHubDispatch {
		var err error
		if body, err = json.Marshal(dispatchBody{EventType: eventType, ClientPayload: event}); err != nil {
			return 0, fmt.Errorf("cannot encode repository_dispatch body: %w", err)
		}
		contentType = "application/json"
	}
	ctx, cancel := context.WithTimeout(ctx, t.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.URL, bytes.NewReader(body))
	if err != nil {
		return 0, fmt.Errorf("cannot make request: %w", err)
	}
	h := req.Header
	h.Set("Content-Type", contentType)
	h.Set("User-Agent", "infergate-outbox")
	h.Set("ce-id", eventID)
	if t.secret != nil {
		h.Set(SignatureHeader, Sign(t.secret, ob.now(), body))
	}
	if t.token != "" {
		h.Set("Authorization", "Bearer "+t.token)
	}
	if t.Format == FormatGitHubDispatch {
		h.Set("Accept", "application/vnd.github+json")
		h.Set("X-GitHub-Api-Version", "2022-11-28")
	}
	resp, err := ob.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	// Read a little for the error, drain a little more so the connection
	// can be reused.
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	// Any 2xx is a delivery made: a receiver answers a delivery of an
	// event id it accepted before with 200 and its first answer (README,
	// "The API"); anything else is tried again.
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return 0, nil
	}
	err = fmt.Errorf("the receiver answered %s", resp.Status)
	if s := bytes.TrimSpace(snippet); len(s) > 0 {
		err = fmt.Errorf("the receiver answered %s: %q", resp.Status, s)
	}
	return retryAfter(resp.Header.Get("Retry-After"), ob.now()), err
}

// retryAfter parses a Retry-After header: delay seconds or an HTTP date.
func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0)
	}
	return 0
}
