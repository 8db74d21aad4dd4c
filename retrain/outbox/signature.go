package outbox

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// SignatureHeader is the header that carries a delivery's signature.
const SignatureHeader = "infergate-signature"

// DefaultMaxAge is the signature age that Verify accepts when given none.
const DefaultMaxAge = 5 * time.Minute

// Errors returned by Verify.
var (
	ErrMalformedSignature = errors.New("outbox: malformed signature header")
	ErrBadSignature       = errors.New("outbox: bad signature")
	ErrStale              = errors.New("outbox: stale signature timestamp")
)

// Sign returns the value of the infergate-signature header for body sent at
// t: "t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>".
// It is safe for concurrent use.
func Sign(secret []byte, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac(secret, ts, body))
}

func mac(secret []byte, ts string, body []byte) []byte {
	h := hmac.New(sha256.New, secret)
	h.Write([]byte(ts))
	h.Write([]byte{'.'})
	h.Write(body)
	return h.Sum(nil)
}

// Verify checks that header, the infergate-signature of body, was made with
// secret no longer than maxAge before now and no more than maxAge after it
// (DefaultMaxAge when maxAge is not positive). It returns an error wrapping
// ErrMalformedSignature, ErrBadSignature or ErrStale; ErrStale means the
// signature is authentic but too old or too far in the future, since the
// signature is checked first. Several v1 entries are allowed, so that a
// sender may sign with an old and a new secret during a rotation; unknown
// keys are ignored. It is safe for concurrent use.
//
// Verify does not detect a replay within maxAge: the receiver does, by
// remembering event ids.
func Verify(header string, secret []byte, body []byte, now time.Time, maxAge time.Duration) error {
	if maxAge <= 0 {
		maxAge = DefaultMaxAge
	}
	var ts string
	var sigs [][]byte
	for part := range strings.SplitSeq(header, ",") {
		key, value, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return fmt.Errorf("%w: %q is not key=value", ErrMalformedSignature, part)
		}
		switch key {
		case "t":
			if ts != "" {
				return fmt.Errorf("%w: more than one t", ErrMalformedSignature)
			}
			ts = value
		case "v1":
			sig, err := hex.DecodeString(value)
			if err != nil || len(sig) != sha256.Size {
				return fmt.Errorf("%w: v1 is not a hex SHA-256 HMAC", ErrMalformedSignature)
			}
			sigs = append(sigs, sig)
		}
	}
	unix, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: t is not a unix time in seconds", ErrMalformedSignature)
	}
	if len(sigs) == 0 {
		return fmt.Errorf("%w: no v1 signature", ErrMalformedSignature)
	}
	want := mac(secret, ts, body)
	authentic := false
	for _, sig := range sigs {
		authentic = hmac.Equal(sig, want) || authentic
	}
	if !authentic {
		return ErrBadSignature
	}
	if age := now.Sub(time.Unix(unix, 0)); age > maxAge || age < -maxAge {
		return fmt.Errorf("%w: signed %s ago, accepting at most %s either way", ErrStale, age.Round(time.Second), maxAge)
	}
	return nil
}
