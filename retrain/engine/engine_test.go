package engine_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/infergate/infergate/retrain/engine"
	"github.com/infergate/infergate/retrain/engine/enginetest"
)

// TestEmbeddedKeepsWritesAndCredentials writes to a bucket, restarts the
// server on the same state_dir and reads the write back with the same
// credentials, which only the owner may read.
func TestEmbeddedKeepsWritesAndCredentials(t *testing.T) {
	dir := t.TempDir()
	e := enginetest.StartIn(t, dir)
	ctx := context.Background()
	kv, err := e.JS.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	first, err := engine.ReadCredentials(dir)
	if err != nil {
		t.Fatal(err)
	}
	e.Stop()

	info, err := os.Stat(filepath.Join(dir, engine.CredentialsFile))
	if err != nil {
		t.Fatal(err)
	}
	if mode := info.Mode().Perm(); mode != 0o600 {
		t.Errorf("credentials file mode = %v, want 0600", mode)
	}
	e = enginetest.StartIn(t, dir)
	again, _ := engine.ReadCredentials(dir)
	if again.Password != first.Password || !strings.HasPrefix(again.URL, "nats://127.0.0.1:") {
		t.Errorf("credentials changed across a restart or not on loopback: %+v then %+v", first, again)
	}
	kv, err = e.JS.KeyValue(ctx, "test")
	if err != nil {
		t.Fatal(err)
	}
	got, err := kv.Get(ctx, "k")
	if err != nil || string(got.Value()) != "v" {
		t.Fatalf("after a restart: %v, %v", got, err)
	}
}

// TestConnectNamesTheURL: an unreachable cluster fails the start with an
// error naming the URL and what was tried.
func TestConnectNamesTheURL(t *testing.T) {
	t.Setenv("TEST_NATS_TOKEN", "secret")
	cfg := engine.Config{NATSURL: "nats://127.0.0.1:1", TokenEnv: "TEST_NATS_TOKEN", ConnectTimeout: 600 * time.Millisecond}
	if err := cfg.Validate("cluster"); err != nil {
		t.Fatal(err)
	}
	_, err := engine.Connect(cfg, "", "test", slog.New(slog.DiscardHandler))
	if err == nil {
		t.Fatal("connected to nothing")
	}
	for _, want := range []string{"nats://127.0.0.1:1", "token from $TEST_NATS_TOKEN", "attempts"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "secret") {
		t.Errorf("error %q shows the token", err)
	}
}

// TestConnectWaitsForJetStream: a server that answers without JetStream,
// as one whose JetStream is still starting does, is asked again until
// connect_timeout, then refused with the question to check.
func TestConnectWaitsForJetStream(t *testing.T) {
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	defer srv.Shutdown()
	if !srv.ReadyForConnections(5 * time.Second) {
		t.Fatal("the NATS server did not start")
	}
	cfg := engine.Config{NATSURL: srv.ClientURL(), ConnectTimeout: 1500 * time.Millisecond}
	start := time.Now()
	_, err = engine.Connect(cfg, "", "test", slog.New(slog.DiscardHandler))
	took := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), "is it enabled on the servers") {
		t.Fatalf("connected to a server without JetStream: %v", err)
	}
	if took < 1500*time.Millisecond || took > 10*time.Second {
		t.Fatalf("refused after %s, want after connect_timeout (1.5s)", took)
	}
}

// TestConfigRefusesWhatCannotWork names the key of each bad setting.
func TestConfigRefusesWhatCannotWork(t *testing.T) {
	for _, tc := range []struct {
		cfg  engine.Config
		want string
	}{
		{engine.Config{NATSURL: "localhost"}, "nats_url"},
		{engine.Config{NATSURL: "http://h:4222"}, "scheme"},
		{engine.Config{NATSURL: "nats://h:4222", TokenEnv: "INFERGATE_TEST_UNSET"}, "INFERGATE_TEST_UNSET"},
		{engine.Config{TokenEnv: "X"}, "need nats_url"},
		{engine.Config{StreamReplicas: 3}, "stream_replicas"},
	} {
		err := tc.cfg.Validate("cluster")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want one naming %q", tc.cfg, err, tc.want)
		}
	}
}
