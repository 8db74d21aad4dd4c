package gateway

import (
	"bytes"
	"strings"
	"testing"

	"github.com/infergate/infergate/router"
)

// The runtime profiles are served to the admin token's holder only, and
// what they serve is a profile Go's tools read.
func TestProfilesNeedTheAdminToken(t *testing.T) {
	cfg := abConfig(t, router.Config{})
	_, url := startServer(t, cfg)
	auth := []string{"Authorization", "Bearer " + testToken}
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/heap", "/debug/pprof/profile?seconds=1"} {
		if code, _, body := call(t, "GET", url+path, nil); code != 401 || !strings.Contains(string(body), "bearer token") {
			t.Fatalf("%s without a token: %d %s", path, code, body)
		}
		if code, _, body := call(t, "GET", url+path, nil, "Authorization", "Bearer wrong"); code != 401 {
			t.Fatalf("%s with a wrong token: %d %s", path, code, body)
		}
	}
	if code, _, body := call(t, "GET", url+"/debug/pprof/", nil, auth...); code != 200 || !strings.Contains(string(body), "goroutine") {
		t.Fatalf("the index: %d %.200s", code, body)
	}
	if code, _, body := call(t, "GET", url+"/debug/pprof/goroutine?debug=1", nil, auth...); code != 200 || !strings.Contains(string(body), "goroutine profile:") {
		t.Fatalf("the goroutines: %d %.200s", code, body)
	}
	// A CPU profile of a second, in the format go tool pprof reads (gzipped protobuf).
	code, _, body := call(t, "GET", url+"/debug/pprof/profile?seconds=1", nil, auth...)
	if code != 200 || !bytes.HasPrefix(body, []byte{0x1f, 0x8b}) {
		t.Fatalf("a CPU profile: %d, %d bytes starting %q", code, len(body), body[:min(len(body), 16)])
	}
	if code, _, _ := call(t, "POST", url+"/debug/pprof/heap", nil, auth...); code != 405 {
		t.Fatalf("POST: %d, want 405", code)
	}

	cfg.Admin.TokenEnv = ""
	cfg.StateDir = t.TempDir()
	_, off := startServer(t, cfg)
	if code, _, body := call(t, "GET", off+"/debug/pprof/", nil, auth...); code != 404 || !strings.Contains(string(body), "admin API is off") {
		t.Fatalf("admin off: %d %s", code, body)
	}
}
