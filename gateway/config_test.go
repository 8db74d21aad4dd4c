package gateway

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/infergate/infergate/retrain/engine"
)

func TestLoadDemoConfig(t *testing.T) {
	cfg, err := LoadConfig("../configs/demo.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "127.0.0.1:8080" || cfg.Repository != filepath.Join("../configs", "models") {
		t.Fatalf("listen %q repository %q", cfg.Listen, cfg.Repository)
	}
	if cfg.Models["demo"].Batching.Instances != 2 || cfg.Models["demo"].Instances != 2 || cfg.MaxBodySize != 16<<20 || cfg.ShutdownTimeout != 30*time.Second {
		t.Fatalf("demo settings or defaults lost: %+v", cfg)
	}
}

func TestParseConfig(t *testing.T) {
	cfg, err := ParseConfig([]byte("repository: /srv/models\nmax_body_size: 64KiB\nruntime: {library: lib/ort.so}\n"), "/etc/infergate")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Repository != "/srv/models" || cfg.Runtime.Library != "/etc/infergate/lib/ort.so" || cfg.MaxBodySize != 64<<10 {
		t.Fatalf("got %+v", cfg)
	}

	f := func(doc, wantErr string) {
		t.Helper()
		_, err := ParseConfig([]byte(doc), ".")
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("config %q: got %v, want an error containing %q", doc, err, wantErr)
		}
	}
	f("listen: x\nlisten_addr: y\n", `line 2: listen_addr: unknown key`)
	f("models:\n  demo:\n    batching: {instnces: 2}\n", `line 3: models.demo.batching.instnces: unknown key (did you mean "instances"?)`)
	f("models:\n  demo:\n    batching:\n      instances: two\n", `line 4: models.demo.batching.instances`)
	f("models:\n  demo:\n    batching: {max_queue_delay: soon}\n", `max_queue_delay`)
	f("models:\n  demo:\n    batching: {max_queue_delay: auto}\n", `models.demo.batching.latency_target: must be set`)
	f("models:\n  demo:\n    cache: {entries: -1}\n", `models.demo.cache.entries: must not be negative`)
	f("read_timeout: 5 parsecs\n", `line 1: read_timeout: invalid duration`)
	f("max_body_size: 16mb\n", `max_body_size`)
	f("max_body_size: 0\n", `max_body_size: must be positive`)
	f("runtime:\n  providers: [tpu]\n", `runtime.providers[0]: unknown execution provider "tpu"`)
	f("runtime:\n  require_gpu: true\n", `runtime.require_gpu: needs "cuda"`)
	f("models:\n  demo:\n    version_policy: {latest: 2, all: true}\n", `models.demo.version_policy: set only one of`)
	f("listen: ''\n", "listen: must be set")
	f("grpc_listen: 8081\n", `grpc_listen: want host:port, for example 127.0.0.1:8081, got "8081"`)
	f("grpc_listen: ':http'\n", `grpc_listen: want host:port`)
	f("listen: ':9000'\ngrpc_listen: ':9000'\n", `grpc_listen: must differ from listen (":9000")`)
	if cfg, err := ParseConfig([]byte("grpc_listen: ':8081'\n"), "."); err != nil || cfg.GRPCListen != ":8081" {
		t.Fatalf("grpc_listen ':8081': got %q, %v", cfg.GRPCListen, err)
	}
	if DefaultConfig().GRPCListen != "" {
		t.Fatalf("gRPC is on by default")
	}
	f("models:\n  demo:\n    drift: {disable_bin_series: maybe}\n", `line 3: models.demo.drift.disable_bin_series`)
	f("models:\n  demo:\n    drift: {bin_series: false}\n", `line 3: models.demo.drift.bin_series: unknown key`)
	if cfg, err := ParseConfig([]byte("models:\n  demo:\n    drift: {disable_bin_series: true}\n"), "."); err != nil || !cfg.Models["demo"].Drift.DisableBinSeries {
		t.Fatalf("disable_bin_series: true: got %+v, %v", cfg.Models["demo"].Drift, err)
	}
}

// TestReplicaNameFromHostName: the default replica name is the host name
// made one key token, so a host name with dots is valid too.
func TestReplicaNameFromHostName(t *testing.T) {
	c := ClusterConfig{}.withDefaults()
	if err := (ClusterConfig{}).validate(); err != nil || !engine.ValidToken(c.Replica) {
		t.Fatalf("default replica %q: %v", c.Replica, err)
	}
	stateless := DefaultConfig()
	stateless.StateDir, stateless.Cluster.Replica = "", "r1"
	if err := stateless.Validate(); err == nil || !strings.Contains(err.Error(), "needs state_dir or cluster.nats_url") {
		t.Errorf("a cluster section with nothing to keep state in: %v", err)
	}
	for _, bad := range []ClusterConfig{{Replica: "a.b"}, {LeaseTTL: 1500 * time.Millisecond}, {ReportInterval: time.Hour}} {
		if err := bad.validate(); err == nil || !strings.Contains(err.Error(), "cluster.") {
			t.Errorf("%+v: error %v, want one naming its cluster key", bad, err)
		}
	}
}
