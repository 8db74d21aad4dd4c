package pipeline

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

const minimalConfig = "secret_env: S\nmodels:\n  demo:\n    training_data: data/train.csv\n"

func TestConfigDefaults(t *testing.T) {
	cfg, err := ParseConfig([]byte(minimalConfig), "/etc/infergate")
	if err != nil {
		t.Fatal(err)
	}
	m := cfg.Models["demo"]
	switch {
	case cfg.Listen != "127.0.0.1:8090" || cfg.MaxAge != 5*time.Minute || cfg.StateDir != "/etc/infergate/state":
		t.Fatalf("top level: %+v", cfg)
	case m.TrainingData != "/etc/infergate/data/train.csv":
		t.Fatalf("paths: %+v", cfg)
	case m.Label != "label" || m.HoldoutShare != 0.2 || m.TrainingShare != 0.5 || m.MinRows != 100 || m.Train.Timeout != 10*time.Minute:
		t.Fatalf("model: %+v", m)
	case m.Train.Builtin == nil || !slices.Equal(m.Train.Builtin.Hidden, []int{16}):
		t.Fatalf("train: %+v", m.Train)
	case m.Validate != ValidateConfig{MaxRegression: 0.02, MaxLatencyP99: 5 * time.Millisecond, BenchmarkRuns: 500}:
		t.Fatalf("validate: %+v", m.Validate)
	}
	cfg, err = ParseConfig([]byte(minimalConfig+"    train: {builtin: {hidden: []}}\n"), ".")
	if err != nil || cfg.Models["demo"].Train.Builtin.Hidden == nil || len(cfg.Models["demo"].Train.Builtin.Hidden) != 0 {
		t.Fatalf("hidden: [] is a logistic regression: %v %+v", err, cfg.Models["demo"].Train.Builtin)
	}
}

func TestConfigErrors(t *testing.T) {
	f := func(config, want string) {
		t.Helper()
		_, err := ParseConfig([]byte(config), ".")
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("config %q: error %v, want %q", config, err, want)
		}
	}
	f(minimalConfig+"    train: {builtin: {hiden: [8]}}\n", `line 5: models.demo.train.builtin.hiden: unknown key (did you mean "hidden"?)`)
	f(minimalConfig+"    validate: {max_latency_p99: fast}\n", `line 5: models.demo.validate.max_latency_p99: invalid duration "fast"`)
	f("secret_env: S\nlisten: [1]\n", "cannot decode config")
	f("secret_env: S\nwebhooks:\n  - {name: ci, url: http://x, retries: 3}\n", "line 3: webhooks[0].retries: unknown key")
	f("models:\n  demo: {training_data: builtin:demo}\n", "secret_env: required")
	f("secret_env: S\n", "models: configure at least one model")
	f(minimalConfig+"    train: {command: [./train.sh], builtin: {}}\n", "models.demo.train: set builtin or command, not both")
	f(minimalConfig+"    canary: {version: \"3\"}\n", "models.demo.canary.version: leave it out")
	f(minimalConfig+"    holdout_share: 1\n", "models.demo.holdout_share: must be in (0, 1)")
	f("secret_env: S\nmodels:\n  demo: {training_data: train.parquet}\n", "models.demo.training_data: want a .csv or .jsonl file")
	f(minimalConfig+"gateway: {url: http://127.0.0.1:8080}\n", "gateway.token_env: required")
	f(minimalConfig+"webhooks: [{name: ci, url: ftp://x}]\n", "webhooks[0].url")
	f("secret_env: S\nsecret_env: T\n", "line 2: secret_env: duplicate key (first given at line 1)")
	f("secret_env: S\nmodels: {demo: {training_data: x.csv}}\n---\nsecret_env: T\n", "line 3: a second YAML document is not allowed")
	f("", "cannot decode config: the document is empty")
	f("# all commented out\n", "cannot decode config: the document is empty")
	// A key an earlier version took says where its job went.
	f(minimalConfig+"repository: models\n", "line 5: repository: no longer taken: model versions live in the engine's object store infergate_models")
}

// TestShippedConfig checks configs/retrain.yaml, the demo's.
func TestShippedConfig(t *testing.T) {
	cfg, err := LoadConfig("../../configs/retrain.yaml")
	if err != nil {
		t.Fatal(err)
	}
	m, dir := cfg.Models["demo"], filepath.Join("..", "..", "configs")
	if m.TrainingData != BuiltinDemo || m.Train.Builtin == nil || cfg.Gateway.URL != "http://127.0.0.1:8080" ||
		cfg.StateDir != filepath.Join(dir, "state") {
		t.Fatalf("%+v", cfg)
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(minimalConfig))
	f.Add([]byte(minimalConfig + "    train: {builtin: {hidden: [4, 4]}, timeout: 1m}\n    canary: {interval: 30s}\n"))
	f.Add([]byte("secret_env: S\nmodels: {a: &x {training_data: t.csv}, b: *x}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseConfig(data, ".")
		if err == nil {
			if err := cfg.Validate(); err != nil {
				t.Fatalf("ParseConfig accepted what Validate refuses: %v", err)
			}
		}
	})
}
