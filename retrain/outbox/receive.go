package outbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// Receive reads an event delivered to a webhook receiver: r's body, at
// most maxBody bytes, its signature checked against secret at now (no older
// or further ahead than maxAge; 0 means DefaultMaxAge), then decoded. On an
// error it also returns the status to answer: 413 for a body too large,
// 401 for a signature missing or wrong, 400 otherwise.
func Receive(r *http.Request, secret []byte, now time.Time, maxAge time.Duration, maxBody int64) (Event, int, error) {
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, maxBody))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return Event{}, http.StatusRequestEntityTooLarge, fmt.Errorf("the body exceeds %d bytes", maxBody)
	case err != nil:
		return Event{}, http.StatusBadRequest, fmt.Errorf("cannot read the body: %w", err)
	}
	sig := r.Header.Get(SignatureHeader)
	if sig == "" {
		return Event{}, http.StatusUnauthorized, errors.New("missing " + SignatureHeader + " header")
	}
	if err := Verify(sig, secret, body, now, maxAge); err != nil {
		return Event{}, http.StatusUnauthorized, err
	}
	var ev Event
	if err := json.Unmarshal(body, &ev); err != nil {
		return Event{}, http.StatusBadRequest, fmt.Errorf("cannot decode the CloudEvent: %w", err)
	}
	return ev, 0, nil
}
