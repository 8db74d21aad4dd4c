package pipeline

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/infergate/infergate/retrain/engine"
	"github.com/infergate/infergate/retrain/modelstore"
	"github.com/infergate/infergate/retrain/outbox"
	"github.com/infergate/infergate/retrain/strictyaml"
	"github.com/infergate/infergate/runtime"
)

// BuiltinDemo, as a model's training_data, stands for the demo model's
// training rows: trainer.Synthetic(1, 4000), with their labels.
const BuiltinDemo = "builtin:demo"

// Config is the retrain service's config file. A zero field takes its
// default (see WithDefaults). A Config is plain data.
type Config struct {
	// Listen is the address of the webhook receiver and GET /runs
	// (default 127.0.0.1:8090).
	Listen string `yaml:"listen"`
	// StateDir is the state_dir of the embedded engine (see package
	// engine) when the process uses one: the gateway's, whose engine holds
	// the model versions and the captured traffic that runs start from, as
	// well as the runs, the seen event ids and the outbox (default state,
	// the gateway's usual state_dir, next to the config file). The Service
	// reads nothing there: it gets the engine's connection in
	// Options.Engine.
	StateDir string `yaml:"state_dir"`
	// Cluster points the service at a fleet's NATS cluster; without
	// nats_url it joins the embedded engine of state_dir (see
	// retrain/engine), started there when none runs.
	Cluster engine.Config `yaml:"cluster"`
	// SecretEnv names the environment variable holding the HMAC secret that
	// incoming webhooks are signed with; required.
	SecretEnv string `yaml:"secret_env"`
	// MaxAge is the oldest (and the furthest in the future) a webhook's
	// signature timestamp may be (default 5m).
	MaxAge time.Duration `yaml:"max_age"`
	// Gateway is where candidates are canaried; without a URL runs end
	// after publishing.
	Gateway GatewayConfig `yaml:"gateway"`
	// Runtime configures ONNX Runtime, which validation runs candidates on.
	Runtime runtime.Config `yaml:"runtime"`
	// Models are the models that drift events start runs for, by name.
	Models map[string]ModelConfig `yaml:"models"`
	// Webhooks receive the retrain.succeeded and retrain.failed events.
	Webhooks []outbox.Target `yaml:"webhooks"`

	// baseDir is the config file's folder, where training commands run;
	// empty (the working folder) for a Config not read by ParseConfig.
	baseDir string
}

// GatewayConfig says how to reach the gateway's admin API.
type GatewayConfig struct {
	// URL is the gateway's base URL, such as http://127.0.0.1:8080.
	URL string `yaml:"url"`
	// TokenEnv names the environment variable holding the admin API's
	// bearer token; required with URL.
	TokenEnv string `yaml:"token_env"`
	// ReadyTimeout is the deadline of the canary step (reload, wait for
	// the published version to be ready, start its canary) and of each
	// other call to the gateway, retried until then (default 2m).
	ReadyTimeout time.Duration `yaml:"ready_timeout"`
}

// ModelConfig is the pipeline of one model.
type ModelConfig struct {
	// TrainingData is the model's training-time data: a .csv (with a header
	// row) or .jsonl file with a column per feature and a label column, or
	// BuiltinDemo; required.
	TrainingData string `yaml:"training_data"`
	// Label names the label column of TrainingData (default label).
	Label string `yaml:"label"`
	// Train says how candidates are trained (default: the built-in MLP).
	Train TrainConfig `yaml:"train"`
	// HoldoutShare is the share of the recent rows and of the training-time
	// rows held out for validation, in (0, 1) (default 0.2).
	HoldoutShare float64 `yaml:"holdout_share"`
	// TrainingShare is the share of the rows trained on that come from the
	// training-time data, the rest being recent captured rows, in [0, 1)
	// (default 0.5; to train on recent rows only set a tiny value such as
	// 1e-9); fewer are used when there are not that many.
	TrainingShare float64 `yaml:"training_share"`
	// Seed fixes the shuffle, the splits and the built-in trainer's
	// initialization (default 0, itself a seed).
	Seed uint64 `yaml:"seed"`
	// MinRows is the fewest labeled captured rows a run trains on (default
	// 100).
	MinRows int `yaml:"min_rows"`
	// LabelWait is how long a run waits for MinRows labeled rows, since
	// labels arrive after the traffic (and captured blocks reach the
	// engine within a second); then it fails (default 5m).
	LabelWait time.Duration `yaml:"label_wait"`
	// Lookback moves the start of the captured rows read back from the
	// start of the event's window, which is the last of the consecutive
	// drifted windows (default 0).
	Lookback time.Duration `yaml:"lookback"`
	// Validate holds the candidate's bars.
	Validate ValidateConfig `yaml:"validate"`
	// Canary is the body of POST /admin/models/{m}/canary, the gateway's
	// canary section, without version (the pipeline sets it). The gateway
	// validates it.
	Canary map[string]any `yaml:"canary"`
}

// TrainConfig chooses the trainer: Builtin or Command, not both.
type TrainConfig struct {
	// Builtin trains a small MLP in process (the default).
	Builtin *BuiltinConfig `yaml:"builtin"`
	// Command is run with INFERGATE_DATA_DIR (holding train.csv and
	// holdout.csv) and INFERGATE_OUTPUT_DIR (where it writes model.onnx) in
	// its environment, in the config file's folder.
	Command []string `yaml:"command"`
	// Timeout bounds the training (default 10m).
	Timeout time.Duration `yaml:"timeout"`
}

// BuiltinConfig configures trainer.TrainMLP; zero fields take trainer's
// defaults, and the model's seed seeds it.
type BuiltinConfig struct {
	// Hidden holds the hidden layers' widths (default [16]); [] trains a
	// logistic regression.
	Hidden       []int   `yaml:"hidden"`
	Epochs       int     `yaml:"epochs"`
	LearningRate float64 `yaml:"learning_rate"`
	BatchSize    int     `yaml:"batch_size"`
	L2           float64 `yaml:"l2"`
}

// ValidateConfig holds the bars a candidate must clear to be published.
type ValidateConfig struct {
	// MinImprovement is how much the candidate's accuracy on the recent
	// holdout must exceed the current version's by more than (default 0:
	// it must be strictly better).
	MinImprovement float64 `yaml:"min_improvement"`
	// MaxRegression is how far the candidate's accuracy on the
	// training-time holdout may fall below the current version's (default
	// 0.02; to allow none set a tiny value such as 1e-9).
	MaxRegression float64 `yaml:"max_regression"`
	// MaxLatencyP99 bounds the p99 latency of single-row runs of the
	// candidate in process (default 5ms).
	MaxLatencyP99 time.Duration `yaml:"max_latency_p99"`
	// BenchmarkRuns is the number of those runs (default 500).
	BenchmarkRuns int `yaml:"benchmark_runs"`
}

// LoadConfig reads, decodes and validates the config file at path; relative
// paths in it are relative to its folder.
func LoadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("cannot read config %q: %w", path, err)
	}
	cfg, err := ParseConfig(data, filepath.Dir(path))
	if err != nil {
		return Config{}, fmt.Errorf("cannot load config %q: %w", path, err)
	}
	return cfg, nil
}

// ParseConfig decodes data strictly (see strictyaml.Decode: an unknown key,
// a value of the wrong type, a duplicate key, a second document or an empty
// one is an error naming its key and line), makes its relative paths
// relative to dir, applies the defaults and validates the result.
func ParseConfig(data []byte, dir string) (Config, error) {
	var cfg Config
	if err := strictyaml.Decode(data, &cfg, "config"); err != nil {
		return Config{}, removedKeys(data, err)
	}
	cfg.Runtime.Library = resolve(dir, cfg.Runtime.Library)
	cfg = cfg.WithDefaults()
	cfg.baseDir = dir
	cfg.StateDir = resolve(dir, cfg.StateDir)
	for name, mc := range cfg.Models {
		if mc.TrainingData != BuiltinDemo {
			mc.TrainingData = resolve(dir, mc.TrainingData)
		}
		cfg.Models[name] = mc
	}
	return cfg, cfg.Validate()
}

// removedKeys returns err, the strict decode's error, said better when the
// document names a key that an earlier version took: repository, whose
// versions live in the engine's model store now.
func removedKeys(data []byte, err error) error {
	var old struct {
		Repository yaml.Node `yaml:"repository"`
	}
	if yaml.Unmarshal(data, &old) != nil || old.Repository.Kind == 0 {
		return err
	}
	return fmt.Errorf("cannot decode config: line %d: repository: no longer taken: model versions live in the engine's object store %s, "+
		"which the service publishes candidates to and every gateway replica syncs its repository from; delete the key "+
		"(a gateway publishes the versions of its repository folder to the store when it starts)", old.Repository.Line, modelstore.Bucket)
}

func resolve(dir, path string) string {
	if path == "" || filepath.IsAbs(path) {
		return path
	}
	return filepath.Join(dir, path)
}

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	c.Listen = cmp.Or(c.Listen, "127.0.0.1:8090")
	c.StateDir = cmp.Or(c.StateDir, "state")
	c.MaxAge = cmp.Or(c.MaxAge, outbox.DefaultMaxAge)
	c.Gateway.ReadyTimeout = cmp.Or(c.Gateway.ReadyTimeout, 2*time.Minute)
	if len(c.Runtime.Providers) == 0 {
		c.Runtime.Providers = runtime.DefaultConfig().Providers
	}
	models := make(map[string]ModelConfig, len(c.Models))
	for name, mc := range c.Models {
		models[name] = mc.WithDefaults()
	}
	c.Models = models
	return c
}

// WithDefaults returns m with every zero field set to its default.
func (m ModelConfig) WithDefaults() ModelConfig {
	m.Label = cmp.Or(m.Label, "label")
	m.HoldoutShare = cmp.Or(m.HoldoutShare, 0.2)
	m.TrainingShare = cmp.Or(m.TrainingShare, 0.5)
	m.MinRows = cmp.Or(m.MinRows, 100)
	m.LabelWait = cmp.Or(m.LabelWait, 5*time.Minute)
	m.Train.Timeout = cmp.Or(m.Train.Timeout, 10*time.Minute)
	if m.Train.Builtin == nil && len(m.Train.Command) == 0 {
		m.Train.Builtin = &BuiltinConfig{}
	}
	if b := m.Train.Builtin; b != nil && b.Hidden == nil {
		bc := *b
		bc.Hidden = []int{16}
		m.Train.Builtin = &bc
	}
	v := &m.Validate
	v.MaxRegression = cmp.Or(v.MaxRegression, 0.02)
	v.MaxLatencyP99 = cmp.Or(v.MaxLatencyP99, 5*time.Millisecond)
	v.BenchmarkRuns = cmp.Or(v.BenchmarkRuns, 500)
	return m
}

// Validate reports the first invalid setting of c, after defaults, naming
// its key. It does not look at the environment: Open does.
func (c *Config) Validate() error {
	if err := c.Cluster.Validate("cluster"); err != nil {
		return err
	}
	switch {
	case c.SecretEnv == "":
		return errors.New("secret_env: required: the environment variable holding the webhooks' HMAC secret")
	case c.MaxAge <= 0:
		return fmt.Errorf("max_age: must be positive, got %s", c.MaxAge)
	case len(c.Models) == 0:
		return errors.New("models: configure at least one model")
	}
	if c.Gateway.URL != "" {
		if u, err := url.Parse(c.Gateway.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("gateway.url: must be an absolute http or https URL, got %q", c.Gateway.URL)
		}
		if c.Gateway.TokenEnv == "" {
			return errors.New("gateway.token_env: required with gateway.url: the environment variable holding the admin API's bearer token")
		}
	}
	if c.Gateway.ReadyTimeout < 0 {
		return fmt.Errorf("gateway.ready_timeout: must be positive, got %s", c.Gateway.ReadyTimeout)
	}
	if err := c.Runtime.Validate(); err != nil {
		return err
	}
	for _, name := range slices.Sorted(maps.Keys(c.Models)) {
		if err := c.Models[name].validate("models." + name); err != nil {
			return err
		}
		if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\\\x00") {
			return fmt.Errorf("models.%s: a model name must be one plain path element", name)
		}
	}
	return outbox.ValidateTargets("webhooks", c.Webhooks)
}

func (m ModelConfig) validate(path string) error {
	v := m.Validate
	switch {
	case m.TrainingData == "":
		return fmt.Errorf("%s.training_data: required: a .csv or .jsonl file of the training-time data, or %s", path, BuiltinDemo)
	case !(m.HoldoutShare > 0 && m.HoldoutShare < 1):
		return fmt.Errorf("%s.holdout_share: must be in (0, 1), got %g", path, m.HoldoutShare)
	case !(m.TrainingShare >= 0 && m.TrainingShare < 1):
		return fmt.Errorf("%s.training_share: must be in [0, 1), got %g", path, m.TrainingShare)
	case m.MinRows < 2:
		return fmt.Errorf("%s.min_rows: must be at least 2 (one to train on, one to hold out), got %d", path, m.MinRows)
	case m.LabelWait < 0 || m.Lookback < 0:
		return fmt.Errorf("%s: label_wait and lookback must not be negative", path)
	case m.Train.Builtin != nil && len(m.Train.Command) > 0:
		return fmt.Errorf("%s.train: set builtin or command, not both", path)
	case m.Train.Timeout < 0:
		return fmt.Errorf("%s.train.timeout: must be positive, got %s", path, m.Train.Timeout)
	case !(v.MinImprovement >= 0 && v.MinImprovement < 1):
		return fmt.Errorf("%s.validate.min_improvement: must be in [0, 1), got %g", path, v.MinImprovement)
	case !(v.MaxRegression > 0 && v.MaxRegression <= 1):
		return fmt.Errorf("%s.validate.max_regression: must be in (0, 1], got %g", path, v.MaxRegression)
	case v.MaxLatencyP99 < 0:
		return fmt.Errorf("%s.validate.max_latency_p99: must be positive, got %s", path, v.MaxLatencyP99)
	case v.BenchmarkRuns < 1:
		return fmt.Errorf("%s.validate.benchmark_runs: must be at least 1, got %d", path, v.BenchmarkRuns)
	}
	if _, ok := m.Canary["version"]; ok {
		return fmt.Errorf("%s.canary.version: leave it out: the pipeline canaries the version it publishes", path)
	}
	if ext := strings.ToLower(filepath.Ext(m.TrainingData)); m.TrainingData != BuiltinDemo && ext != ".csv" && ext != ".jsonl" && ext != ".ndjson" {
		return fmt.Errorf("%s.training_data: want a .csv or .jsonl file, or %s, got %q", path, BuiltinDemo, m.TrainingData)
	}
	if b := m.Train.Builtin; b != nil {
		for i, h := range b.Hidden {
			if h < 1 {
				return fmt.Errorf("%s.train.builtin.hidden[%d]: must be at least 1, got %d", path, i, h)
			}
		}
		if b.Epochs < 0 || b.BatchSize < 0 || b.LearningRate < 0 || b.L2 < 0 {
			return fmt.Errorf("%s.train.builtin: epochs, batch_size, learning_rate and l2 must not be negative", path)
		}
	}
	return nil
}
