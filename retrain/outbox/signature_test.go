package outbox

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestVerify(t *testing.T) {
	secret, body := []byte("s3cret"), []byte(`{"id":"1"}`)
	now := time.Unix(1_700_000_000, 0)
	valid := Sign(secret, now, body)
	f := func(header string, body []byte, at time.Time, want error) {
		t.Helper()
		err := Verify(header, secret, body, at, 5*time.Minute)
		if !errors.Is(err, want) || (want == nil) != (err == nil) {
			t.Fatalf("Verify(%q) at %d: got %v, want %v", header, at.Unix(), err, want)
		}
	}
	f(valid, body, now, nil)
	f(valid, body, now.Add(4*time.Minute), nil)
	f(valid, body, now.Add(-4*time.Minute), nil)
	f(valid, body, now.Add(6*time.Minute), ErrStale)  // old
	f(valid, body, now.Add(-6*time.Minute), ErrStale) // from the future
	f(valid, []byte(`{"id":"2"}`), now, ErrBadSignature)
	f(Sign([]byte("other"), now, body), body, now, ErrBadSignature)
	f(Sign([]byte("other"), now, body), body, now.Add(time.Hour), ErrBadSignature) // a forgery is not merely stale
	f(strings.Replace(valid, "t=1700000000", "t=1700000001", 1), body, now, ErrBadSignature)
	f(valid+",v1="+strings.Repeat("ab", 32), body, now, nil) // a second secret during a rotation
	f("t=1700000000,v1="+strings.Repeat("ab", 32)+","+strings.TrimPrefix(valid, "t=1700000000,"), body, now, nil)
	f(valid+",v0=ignored", body, now, nil)
	f(" "+strings.ReplaceAll(valid, ",", " , "), body, now, nil)

	f("", body, now, ErrMalformedSignature)
	f("garbage", body, now, ErrMalformedSignature)
	f("t=1700000000", body, now, ErrMalformedSignature)
	f(valid[strings.Index(valid, "v1="):], body, now, ErrMalformedSignature)
	f("t=soon,"+valid[strings.Index(valid, "v1="):], body, now, ErrMalformedSignature)
	f("t=1700000000,v1=zz", body, now, ErrMalformedSignature)
	f("t=1700000000,v1=abcd", body, now, ErrMalformedSignature)
	f("t=1700000000,t=1700000000,"+valid[strings.Index(valid, "v1="):], body, now, ErrMalformedSignature)
}

func TestVerifyDefaultMaxAge(t *testing.T) {
	secret, body, now := []byte("k"), []byte("b"), time.Unix(1_700_000_000, 0)
	h := Sign(secret, now, body)
	if err := Verify(h, secret, body, now.Add(DefaultMaxAge-time.Second), 0); err != nil {
		t.Fatal(err)
	}
	if err := Verify(h, secret, body, now.Add(DefaultMaxAge+time.Second), 0); !errors.Is(err, ErrStale) {
		t.Fatalf("got %v, want ErrStale", err)
	}
}
