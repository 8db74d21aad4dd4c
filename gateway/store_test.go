package gateway

import (
	"context"
	"strings"
	"testing"
)

// TestUnreadableRoutingStopsTheStart: a stored routing record that cannot
// be read stops the start with an error naming the model, the key and how
// to recover, rather than starting without the admin routing it held.
func TestUnreadableRoutingStopsTheStart(t *testing.T) {
	cfg := testConfig(t)
	e := testEngine(t, cfg.StateDir)
	s, err := openStore(e.Conn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.kv.Put(context.Background(), routingKey("demo"), []byte(`{"file":{},"base":{"split":{"1":"one"}},"admin":true}`)); err != nil {
		t.Fatal(err)
	}
	srv, err := New(Options{Config: cfg, Env: testEnv, Log: quiet, Engine: e.Conn})
	if err == nil {
		srv.Shutdown(context.Background())
		t.Fatal("the gateway started without the stored routing it could not read")
	}
	for _, want := range []string{`stored routing of model "demo"`, "routing.demo", controlBucket, "delete the key"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("got %v, want an error saying %q", err, want)
		}
	}
}
