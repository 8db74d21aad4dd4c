package outbox

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestReceive: a signed delivery decodes to the event sent; a body too
// large, a signature missing or wrong, and a body that is no CloudEvent
// are refused with the status to answer.
func TestReceive(t *testing.T) {
	secret, now := []byte("s3cret"), time.Now()
	ev, err := NewEvent("/test", TypeDriftDetected, "demo/1", map[string]any{"x": 1})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(ev)
	req := func(body []byte, sig string) *http.Request {
		r := httptest.NewRequest(http.MethodPost, "/hook", bytes.NewReader(body))
		if sig != "" {
			r.Header.Set(SignatureHeader, sig)
		}
		return r
	}
	got, code, err := Receive(req(body, Sign(secret, now, body)), secret, now, time.Minute, 1<<20)
	if err != nil || code != 0 || got.ID != ev.ID || got.Type != ev.Type || got.Subject != "demo/1" {
		t.Fatalf("a signed delivery: %+v %d %v", got, code, err)
	}
	notJSON := []byte("{")
	for _, c := range []struct {
		what string
		r    *http.Request
		code int
		text string
	}{
		{"too large", req(body, Sign(secret, now, body)), http.StatusRequestEntityTooLarge, "exceeds 10 bytes"},
		{"no signature", req(body, ""), http.StatusUnauthorized, "missing " + SignatureHeader},
		{"another secret", req(body, Sign([]byte("other"), now, body)), http.StatusUnauthorized, "signature"},
		{"not a CloudEvent", req(notJSON, Sign(secret, now, notJSON)), http.StatusBadRequest, "cannot decode"},
	} {
		limit := int64(1 << 20)
		if c.what == "too large" {
			limit = 10
		}
		if _, code, err := Receive(c.r, secret, now, time.Minute, limit); code != c.code || err == nil || !strings.Contains(err.Error(), c.text) {
			t.Errorf("%s: %d %v, want %d with %q", c.what, code, err, c.code, c.text)
		}
	}
}
