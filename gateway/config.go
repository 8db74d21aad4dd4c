package gateway

import (
	"cmp"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/infergate/infergate/batcher"
	"github.com/infergate/infergate/drift"
	"github.com/infergate/infergate/retrain/capture"
	"github.com/infergate/infergate/retrain/outbox"
	"github.com/infergate/infergate/retrain/strictyaml"
	"github.com/infergate/infergate/router"
	"github.com/infergate/infergate/runtime"
)

// Config is the whole configuration file. Each package owns its section.
type Config struct {
	// Listen is the address the V2 HTTP server binds.
	Listen string `yaml:"listen"`
	// GRPCListen is the address the gRPC server (the Open Inference
	// Protocol's GRPCInferenceService, health and reflection) binds; empty,
	// the default, serves no gRPC.
	GRPCListen string `yaml:"grpc_listen"`
	// Repository is the model repository folder, relative to the config file.
	Repository string `yaml:"repository"`
	// MaxBodySize bounds a request body, before and after decompression.
	MaxBodySize strictyaml.Size `yaml:"max_body_size"`
	// CompressMinSize is the smallest response body compressed for a client
	// that accepts gzip or zstd.
	CompressMinSize strictyaml.Size `yaml:"compress_min_size"`
	// ReadTimeout, WriteTimeout and IdleTimeout bound a connection's reads,
	// writes and keep-alive idleness.
	ReadTimeout  time.Duration `yaml:"read_timeout"`
	WriteTimeout time.Duration `yaml:"write_timeout"`
	IdleTimeout  time.Duration `yaml:"idle_timeout"`
	// ShutdownTimeout bounds how long a shutdown waits for requests in flight.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// MaxInflightMemory bounds the bytes that inference requests in flight
	// hold in bodies, parse trees and tensors; beyond it they get 503.
	MaxInflightMemory strictyaml.Size `yaml:"max_inflight_memory"`
	// MaxConnections bounds the open client connections, and
	// MaxConnectionsPerIP those from one address; 0 derives them from the
	// descriptor limit (see configs/README.md).
	MaxConnections      int `yaml:"max_connections"`
	MaxConnectionsPerIP int `yaml:"max_connections_per_ip"`
	// MaxHeaderSize bounds a request's line and headers; beyond it 431.
	MaxHeaderSize strictyaml.Size `yaml:"max_header_size"`
	// TLS, when its files are set, serves HTTPS.
	TLS TLSConfig `yaml:"tls"`

	// StateDir holds the embedded store of what must survive a restart
	// (routing and canary state set at run time), relative to the config
	// file; empty keeps nothing.
	StateDir string `yaml:"state_dir"`
	// Watch reloads the config file and the model repository when they change.
	Watch bool `yaml:"watch"`
	// Admin configures the admin API.
	Admin AdminConfig `yaml:"admin"`
	// Auth names the API keys that models' auth sections require.
	Auth AuthConfig `yaml:"auth"`
	// Webhooks are the targets drift and canary events are delivered to,
	// at least once, from a durable outbox in the state store.
	Webhooks []outbox.Target `yaml:"webhooks"`
	// Feedback configures the retention of the label streams of POST
	// .../feedback (one per model, in the engine).
	Feedback capture.LabelsConfig `yaml:"feedback"`
	// Cluster says where the state lives: the embedded engine of state_dir,
	// or a fleet's NATS cluster.
	Cluster ClusterConfig `yaml:"cluster"`
	// ModelStore configures the engine's object store of model versions,
	// which every replica syncs its repository from (see versions.go).
	ModelStore ModelStoreConfig `yaml:"model_store"`
	// Console bounds the histories the console reads (console.go).
	Console ConsoleConfig `yaml:"console"`

	Runtime runtime.Config         `yaml:"runtime"`
	Models  map[string]ModelConfig `yaml:"models"`
}

// AdminConfig configures the admin API under /admin/.
type AdminConfig struct {
	// TokenEnv names the environment variable that holds the bearer token;
	// the API is off unless it is set.
	TokenEnv string `yaml:"token_env"`
}

// token reads the admin token from the environment; a named variable that
// is unset or empty is an error, so that an operator never believes the
// API guarded when it is off.
func (a AdminConfig) token() ([]byte, error) {
	if a.TokenEnv == "" {
		return nil, nil
	}
	t := os.Getenv(a.TokenEnv)
	if t == "" {
		return nil, fmt.Errorf("admin.token_env: the environment variable %s is unset or empty", a.TokenEnv)
	}
	return []byte(t), nil
}

// ModelStoreConfig is the `model_store:` section: how the versions in the
// engine's object store are kept, uploaded and synced.
type ModelStoreConfig struct {
	// Sync keeps the repository in step with the store (default true);
	// false serves the repository folder as it is, for one managed by
	// other means (a mounted volume, a deploy tool), and refuses uploads.
	Sync bool `yaml:"sync"`
	// KeepVersions is how many published versions of each model the
	// leader keeps (default 5): it deletes the oldest beyond it, never one
	// that routing references or version_policy selects; 0 keeps all.
	KeepVersions int `yaml:"keep_versions"`
	// MaxUploadSize bounds the body of an upload, PUT
	// /admin/models/{m}/versions/{v} (default 256MiB); beyond it 413.
	MaxUploadSize strictyaml.Size `yaml:"max_upload_size"`
	// ResyncInterval is how often a replica lists the store besides
	// watching it, to catch up on what a broken watch missed (default 30s).
	ResyncInterval time.Duration `yaml:"resync_interval"`
}

// validate reports the first invalid setting of c.
func (c ModelStoreConfig) validate() error {
	switch {
	case c.KeepVersions < 0:
		return fmt.Errorf("model_store.keep_versions: must not be negative (0 keeps all), got %d", c.KeepVersions)
	case c.MaxUploadSize <= 0:
		return fmt.Errorf("model_store.max_upload_size: must be positive, got %d", c.MaxUploadSize)
	case c.ResyncInterval <= 0:
		return fmt.Errorf("model_store.resync_interval: must be positive, got %s", c.ResyncInterval)
	}
	return nil
}

// ModelConfig is one model's section: how its versions load, batch and cache.
type ModelConfig struct {
	runtime.ModelConfig `yaml:",inline"`
	Batching            batcher.Config `yaml:"batching"`
	Cache               CacheConfig    `yaml:"cache"`
	Drift               drift.Config   `yaml:"drift"`
	Routing             router.Config  `yaml:"routing"`
	Capture             capture.Config `yaml:"capture"`
	Auth                ModelAuth      `yaml:"auth"`
}

// CacheConfig configures a model's response cache.
type CacheConfig struct {
	// Entries is the number of responses kept per version; 0 turns the cache off.
	Entries int `yaml:"entries"`
}

// withDefaults fills the zero settings of a decoded model section.
func (mc ModelConfig) withDefaults() ModelConfig {
	mc.Batching = mc.Batching.WithDefaults()
	mc.Instances = mc.Batching.Instances
	mc.Drift = mc.Drift.WithDefaults()
	mc.Routing = mc.Routing.WithDefaults()
	mc.Capture = mc.Capture.WithDefaults()
	return mc
}

// DefaultConfig returns the configuration used for every option a file leaves out.
func DefaultConfig() Config {
	return Config{
		Listen:          "127.0.0.1:8080",
		Repository:      "models",
		StateDir:        "state",
		MaxBodySize:     16 << 20,
		CompressMinSize: 512,
		ReadTimeout:     30 * time.Second,
		WriteTimeout:    30 * time.Second,
		IdleTimeout:     2 * time.Minute,
		ShutdownTimeout: 30 * time.Second,
		// Sixteen bodies of the default max_body_size, decompressing at once.
		MaxInflightMemory: 256 << 20,
		MaxHeaderSize:     8 << 10,
		ModelStore:        ModelStoreConfig{Sync: true, KeepVersions: 5, MaxUploadSize: 256 << 20, ResyncInterval: 30 * time.Second},
		Runtime:           runtime.DefaultConfig(),
		Console:           ConsoleConfig{CanarySteps: 200, DriftWindows: 48, Events: 200},
	}
}

// LoadConfig reads, strictly decodes and validates the config file at path.
// Relative paths in it are resolved against the file's folder.
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

// ParseConfig decodes and validates a config document whose relative paths
// are relative to dir.
func ParseConfig(data []byte, dir string) (Config, error) {
	cfg := DefaultConfig()
	if err := strictyaml.Decode(data, &cfg, "config"); err != nil {
		return Config{}, err
	}
	if !filepath.IsAbs(cfg.Repository) {
		cfg.Repository = filepath.Join(dir, cfg.Repository)
	}
	if cfg.StateDir != "" && !filepath.IsAbs(cfg.StateDir) {
		cfg.StateDir = filepath.Join(dir, cfg.StateDir)
	}
	for _, path := range []*string{&cfg.TLS.CertFile, &cfg.TLS.KeyFile} {
		if *path != "" && !filepath.IsAbs(*path) {
			*path = filepath.Join(dir, *path)
		}
	}
	for name, src := range cfg.Auth.Keys {
		if src.File != "" && !filepath.IsAbs(src.File) {
			src.File = filepath.Join(dir, src.File)
			cfg.Auth.Keys[name] = src
		}
	}
	if cfg.Runtime.Library != "" && !filepath.IsAbs(cfg.Runtime.Library) {
		cfg.Runtime.Library = filepath.Join(dir, cfg.Runtime.Library)
	}
	for name, mc := range cfg.Models {
		cfg.Models[name] = mc.withDefaults()
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// validAddress reports whether addr is a host:port a listener can bind:
// the host may be empty (every interface), the port a number or 0.
func validAddress(addr string) bool {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	n, err := strconv.ParseUint(port, 10, 16)
	return err == nil && n <= 65535
}

// Validate reports the first invalid setting of c, naming its key.
func (c *Config) Validate() error {
	switch {
	case c.Listen == "":
		return fmt.Errorf("listen: must be set, for example 127.0.0.1:8080")
	case c.GRPCListen != "" && !validAddress(c.GRPCListen):
		return fmt.Errorf("grpc_listen: want host:port, for example 127.0.0.1:8081, got %q", c.GRPCListen)
	case c.GRPCListen != "" && c.GRPCListen == c.Listen:
		return fmt.Errorf("grpc_listen: must differ from listen (%q): gRPC has its own listener", c.Listen)
	case c.MaxBodySize <= 0:
		return fmt.Errorf("max_body_size: must be positive, got %d", c.MaxBodySize)
	case c.CompressMinSize < 0:
		return fmt.Errorf("compress_min_size: must not be negative, got %d", c.CompressMinSize)
	case c.ReadTimeout <= 0 || c.WriteTimeout <= 0 || c.IdleTimeout <= 0 || c.ShutdownTimeout <= 0:
		return fmt.Errorf("read_timeout, write_timeout, idle_timeout, shutdown_timeout: must be positive")
	case c.MaxInflightMemory < 4*c.MaxBodySize:
		// A compressed body holds itself and max_body_size to decompress
		// into; the parse of what it holds takes more again.
		return fmt.Errorf("max_inflight_memory: must hold at least four bodies of max_body_size (%s), got %s", c.MaxBodySize, c.MaxInflightMemory)
	case c.MaxConnections < 0 || c.MaxConnectionsPerIP < 0:
		return fmt.Errorf("max_connections, max_connections_per_ip: must not be negative (0 derives them from the descriptor limit)")
	case c.MaxHeaderSize < 1<<10 || c.MaxHeaderSize > 1<<20:
		return fmt.Errorf("max_header_size: must be within 1KiB..1MiB, got %s", c.MaxHeaderSize)
	}
	if err := c.TLS.validate(); err != nil {
		return err
	}
	if err := c.Cluster.validate(); err != nil {
		return err
	}
	if c.StateDir == "" && c.Cluster.NATSURL == "" && c.Cluster != (ClusterConfig{}) {
		return fmt.Errorf("cluster: needs state_dir or cluster.nats_url: without either the gateway keeps nothing and is alone")
	}
	if err := c.Auth.validate(); err != nil {
		return err
	}
	if err := c.ModelStore.validate(); err != nil {
		return err
	}
	if err := c.Console.validate(); err != nil {
		return err
	}
	if err := outbox.ValidateTargets("webhooks", c.Webhooks); err != nil {
		return err
	}
	if err := c.Feedback.WithDefaults().Validate("feedback"); err != nil {
		return err
	}
	if err := c.Runtime.Validate(); err != nil {
		return err
	}
	for name, mc := range c.Models {
		// Validated as served: a section built in code rather than decoded
		// gets its defaults at start too.
		mc = mc.withDefaults()
		if err := mc.Validate(name); err != nil {
			return err
		}
		if err := mc.Batching.Validate("models." + name + ".batching"); err != nil {
			return err
		}
		if err := mc.Drift.Validate("models." + name + ".drift"); err != nil {
			return err
		}
		if err := mc.Capture.Validate("models." + name + ".capture"); err != nil {
			return err
		}
		if err := mc.Routing.Validate("models." + name + ".routing"); err != nil {
			return err
		}
		if err := mc.Auth.validate("models."+name, c.Auth.Keys); err != nil {
			return err
		}
		if mc.Cache.Entries < 0 {
			return fmt.Errorf("models.%s.cache.entries: must not be negative, got %d", name, mc.Cache.Entries)
		}
	}
	return nil
}

// connectionLimits returns the connection limits in force, total and per
// address, deriving those left at 0 from the process's descriptor limit:
// the total leaves room for files and outgoing connections, and one address
// may hold half of it, so that one client cannot lock out the others.
func (c *Config) connectionLimits(descriptors int) (total, perIP int) {
	total = cmp.Or(c.MaxConnections, defaultMaxConnections(descriptors))
	return total, cmp.Or(c.MaxConnectionsPerIP, max(total/2, 1))
}

// Model returns the settings of model name, with the defaults of a model
// the file does not name.
func (c Config) Model(name string) ModelConfig { return c.Models[name].withDefaults() }
