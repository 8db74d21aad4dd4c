package gateway

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestAPIKeys: inference is open until keys are configured for it; feedback
// is refused with 401 unless a key is configured or the config says it is
// open; keys are compared against the Authorization bearer.
func TestAPIKeys(t *testing.T) {
	t.Setenv("INFERGATE_TEST_INFER_KEY", "infer-key-0123456789")
	t.Setenv("INFERGATE_TEST_LABEL_KEY", "label-key-0123456789")
	cfg := testConfig(t)
	cfg.Auth.Keys = map[string]KeySource{
		"app":     {Env: "INFERGATE_TEST_INFER_KEY"},
		"labeler": {Env: "INFERGATE_TEST_LABEL_KEY"},
	}
	demo := cfg.Models["demo"]
	demo.Auth = ModelAuth{Infer: []string{"app"}, Feedback: []string{"labeler"}}
	cfg.Models["demo"] = demo
	srv, url := startServer(t, cfg)
	f := func(path, body string, wantCode int, wantBody string, headers ...string) {
		t.Helper()
		code, h, b := call(t, "POST", url+path, []byte(body), headers...)
		if code != wantCode || !strings.Contains(string(b), wantBody) {
			t.Fatalf("POST %s %v: %d %s, want %d with %q", path, headers, code, b, wantCode, wantBody)
		}
		if code == 401 && h.Get("WWW-Authenticate") == "" {
			t.Fatalf("a 401 without WWW-Authenticate")
		}
	}
	label := `{"id":"req-1","label":1}`
	f("/v2/models/demo/infer", demoRequest, 401, "needs an API key")
	f("/v2/models/demo/infer", demoRequest, 401, "not valid", "Authorization", "Bearer label-key-0123456789")
	f("/v2/models/demo/infer", demoRequest, 200, `"outputs"`, "Authorization", "Bearer infer-key-0123456789")
	f("/v2/models/demo/feedback", label, 401, "needs an API key")
	f("/v2/models/demo/feedback", label, 401, "not valid", "Authorization", "Bearer infer-key-0123456789")
	f("/v2/models/demo/feedback", label, 200, `"recorded":1`, "Authorization", "Bearer label-key-0123456789")
	// A model without an auth section: inference open, feedback closed.
	f("/v2/models/versioned/feedback", label, 401, "open_feedback")
	f("/v2/models/demo/feedback", `text`, 415, "Content-Type", "Content-Type", "text/plain", "Authorization", "Bearer label-key-0123456789")

	// Keys are read again on reload: a rotated key replaces the old one.
	t.Setenv("INFERGATE_TEST_INFER_KEY", "rotated-key-0123456789")
	if err := srv.Reload(); err != nil {
		t.Fatal(err)
	}
	f("/v2/models/demo/infer", demoRequest, 401, "not valid", "Authorization", "Bearer infer-key-0123456789")
	f("/v2/models/demo/infer", demoRequest, 200, `"outputs"`, "Authorization", "Bearer rotated-key-0123456789")
	// A key that cannot be read refuses the reload and keeps the last ones.
	t.Setenv("INFERGATE_TEST_INFER_KEY", "")
	if err := srv.Reload(); err == nil || !strings.Contains(err.Error(), "INFERGATE_TEST_INFER_KEY") {
		t.Fatalf("reload with the key unset: %v, want a refusal naming the variable", err)
	}
	f("/v2/models/demo/infer", demoRequest, 200, `"outputs"`, "Authorization", "Bearer rotated-key-0123456789")
}

func TestAPIKeyConfigErrors(t *testing.T) {
	f := func(mutate func(*Config), want string) {
		t.Helper()
		cfg := testConfig(t)
		mutate(&cfg)
		err := cfg.Validate()
		if err == nil {
			_, err = New(Options{Config: cfg, Env: testEnv, Log: quiet})
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("got %v, want an error containing %q", err, want)
		}
	}
	f(func(c *Config) {
		c.Models["demo"] = ModelConfig{Auth: ModelAuth{Feedback: []string{"nobody"}}}
	}, `key "nobody" is not defined under auth.keys`)
	f(func(c *Config) { c.Auth.Keys = map[string]KeySource{"k": {}} }, "auth.keys.k: set exactly one of env and file")
	f(func(c *Config) {
		c.Auth.Keys = map[string]KeySource{"k": {Env: "INFERGATE_TEST_UNSET_KEY"}}
		c.Models["demo"] = ModelConfig{Auth: ModelAuth{Infer: []string{"k"}}}
	}, "environment variable INFERGATE_TEST_UNSET_KEY holds 0 bytes")
}

// TestContentTypeAndDuplicateKeys: a body that is not JSON by its type gets
// 415; a JSON body with a duplicate key gets 400.
func TestContentTypeAndDuplicateKeys(t *testing.T) {
	_, url := startServer(t, testConfig(t))
	f := func(body, contentType string, wantCode int, wantBody string) {
		t.Helper()
		code, _, b := call(t, "POST", url+"/v2/models/demo/infer", []byte(body), "Content-Type", contentType)
		if code != wantCode || !strings.Contains(string(b), wantBody) {
			t.Fatalf("%s %s: %d %s, want %d with %q", contentType, body, code, b, wantCode, wantBody)
		}
	}
	f(demoRequest, "text/plain", 415, `unsupported Content-Type`)
	f(demoRequest, "application/x-www-form-urlencoded", 415, "send application/json")
	f(demoRequest, "application/json; charset=utf-8", 200, `"outputs"`)
	f(demoRequest, "application/octet-stream", 200, `"outputs"`)
	f(demoRequest, "", 200, `"outputs"`)
	f(`{"id":"a","id":"b","inputs":[]}`, "application/json", 400, `duplicate key`)
}

// TestTooManyValuesAndHeaders: a body with more JSON values than the model's
// inputs can take is refused with 413 before it is parsed; headers beyond
// max_header_size get 431 with a clean message.
func TestTooManyValuesAndHeaders(t *testing.T) {
	_, url := startServer(t, testConfig(t))
	bomb := `{"inputs":[{"name":"input","shape":[1,8],"datatype":"FP32","data":[` + strings.Repeat("0,", 100_000) + `0]}]}`
	code, _, b := call(t, "POST", url+"/v2/models/demo/infer", []byte(bomb))
	if code != 413 || !strings.Contains(string(b), "more than") {
		t.Fatalf("a body of 100001 values for [1,8]: %d %s, want 413", code, b)
	}
	code, _, b = call(t, "POST", url+"/v2/models/demo/infer", []byte(demoRequest), "Authorization", "Bearer "+strings.Repeat("x", 6000))
	if code != 200 {
		t.Fatalf("a 6000-byte bearer under the default max_header_size: %d %s", code, b)
	}
	code, _, b = call(t, "POST", url+"/v2/models/demo/infer", []byte(demoRequest), "X-Big", strings.Repeat("x", 10_000))
	if code != 431 || !strings.Contains(string(b), "max_header_size") || strings.Contains(string(b), "readbuffersize") {
		t.Fatalf("a 10 KB header: %d %s, want 431 naming max_header_size", code, b)
	}
}

// TestTLSServesAndReloads serves HTTPS from a certificate and key file and
// picks up a new certificate written over them without a restart.
func TestTLSServesAndReloads(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeCert := func(name string, mtime time.Time) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"localhost"}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, _ := x509.MarshalECPrivateKey(key)
		os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
		os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)
		os.Chtimes(certFile, mtime, mtime)
		os.Chtimes(keyFile, mtime, mtime)
	}
	writeCert("first", time.Now().Add(-time.Minute))
	cfg := testConfig(t)
	cfg.TLS = TLSConfig{CertFile: certFile, KeyFile: keyFile}
	_, url := startServer(t, cfg)
	url = strings.Replace(url, "http://", "https://", 1)
	served := func() string {
		t.Helper()
		client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
		defer client.CloseIdleConnections()
		resp, err := client.Get(url + "/v2/health/live")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("GET over TLS: %d", resp.StatusCode)
		}
		return resp.TLS.PeerCertificates[0].Subject.CommonName
	}
	if got := served(); got != "first" {
		t.Fatalf("served %q, want the first certificate", got)
	}
	writeCert("second", time.Now())
	deadline := time.Now().Add(10 * time.Second)
	for served() != "second" {
		if time.Now().After(deadline) {
			t.Fatal("the new certificate was not served within 10s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestExpectContinue: a client that asks before sending its body (Expect:
// 100-continue) is refused before it sends it when the body is too large,
// not JSON or without the key the model requires; otherwise told to send.
func TestExpectContinue(t *testing.T) {
	t.Setenv("INFERGATE_TEST_INFER_KEY", "infer-key-0123456789")
	cfg := testConfig(t)
	cfg.Auth.Keys = map[string]KeySource{"app": {Env: "INFERGATE_TEST_INFER_KEY"}}
	demo := cfg.Models["demo"]
	demo.Auth = ModelAuth{Infer: []string{"app"}}
	cfg.Models["demo"] = demo
	_, url := startServer(t, cfg)
	f := func(path string, size int, headers string, want int, wantBody string) {
		t.Helper()
		conn := rawRequest(t, url, fmt.Sprintf("POST %s HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: %d%s", path, size, headers), "")
		conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want || !strings.Contains(string(body), wantBody) {
			t.Fatalf("POST %s with %q, asking first: %d %s, want %d with %q", path, headers, resp.StatusCode, body, want, wantBody)
		}
		if want == 401 && resp.Header.Get("WWW-Authenticate") == "" {
			t.Fatalf("POST %s asking first: a 401 without WWW-Authenticate", path)
		}
	}
	key := "\r\nAuthorization: Bearer infer-key-0123456789"
	f("/v2/models/demo/infer", 2_000_000, key, 413, `"error":"request body too large`)
	f("/v2/models/demo/infer", 100, key+"\r\nContent-Type: text/plain", 415, `"error":"unsupported Content-Type`)
	f("/v2/models/demo/infer", 100, "\r\nContent-Type: text/plain", 401, `"error":"this endpoint needs an API key`) // the key first, as without asking
	f("/v2/models/demo/versions/1/infer", 100, "\r\nAuthorization: Bearer wrong-key-0123456789", 401, "not valid")
	f("/v2/models/demo/feedback", 100, "", 401, "is closed")
	f("/v2/models/demo/versions/1/feedback", 100, "", 100, "") // the handler answers 404 once the body came
	f("/v2/models/demo/infer", 100, "\r\nAuthorization: bearer infer-key-0123456789", 100, "")
}

// A connection that sends no whole request within read_timeout, such as
// one an HTTP client's pool opened and never used, is answered 408, which
// clients take as the server closing an idle connection; a 400 made Go's
// client log an unsolicited response.
func TestReadTimeoutIs408(t *testing.T) {
	cfg := testConfig(t)
	cfg.ReadTimeout = 200 * time.Millisecond
	_, url := startServer(t, cfg)
	for _, sent := range []string{"", "POST /v2/models/echo_fp32/infer HTTP/1.1\r\nHost: x\r\n"} {
		conn, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		conn.Write([]byte(sent))
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		answer, _ := io.ReadAll(conn)
		conn.Close()
		if !bytes.HasPrefix(answer, []byte("HTTP/1.1 408 ")) || !bytes.Contains(answer, []byte("read_timeout")) {
			t.Errorf("after sending %q and waiting: got %q, want a 408 naming read_timeout", sent, answer)
		}
	}
}
