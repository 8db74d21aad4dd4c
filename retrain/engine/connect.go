package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Config is how a process reaches a fleet's NATS cluster: the connection
// half of the `cluster:` section. With no NATSURL a process uses the
// embedded server of its state_dir.
type Config struct {
	// NATSURL lists the cluster's servers, comma-separated; a tls:// URL
	// asks for TLS.
	NATSURL string `yaml:"nats_url"`
	// CredsEnv names an environment variable holding the path of a NATS
	// credentials file (a user JWT and its nkey seed).
	CredsEnv string `yaml:"creds_env"`
	// TokenEnv names an environment variable holding a token.
	TokenEnv string `yaml:"token_env"`
	// UserEnv and PasswordEnv name environment variables holding a user
	// name and its password.
	UserEnv     string `yaml:"user_env"`
	PasswordEnv string `yaml:"password_env"`
	// CAFile verifies the servers' certificates of a tls:// URL (default:
	// the system's roots).
	CAFile string `yaml:"ca_file"`
	// StreamReplicas is how many servers keep each stream and bucket
	// (default 3 with NATSURL; the embedded server keeps 1).
	StreamReplicas int `yaml:"stream_replicas"`
	// ConnectTimeout bounds how long a process waits for the engine at
	// start: to connect, and to answer its first calls (default 1m; see
	// StartTimeout).
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
}

// Validate checks c; the environment variables it names must be set.
func (c Config) Validate(section string) error {
	if c.NATSURL == "" {
		for _, env := range []string{c.CredsEnv, c.TokenEnv, c.UserEnv, c.PasswordEnv, c.CAFile} {
			if env != "" {
				return fmt.Errorf("%s: credentials and ca_file need nats_url (without it the embedded server of state_dir is used)", section)
			}
		}
		if c.StreamReplicas > 1 {
			return fmt.Errorf("%s.stream_replicas: %d needs nats_url: the embedded server keeps 1 copy", section, c.StreamReplicas)
		}
		return nil
	}
	for _, u := range strings.Split(c.NATSURL, ",") {
		p, err := url.Parse(strings.TrimSpace(u))
		if err != nil || p.Host == "" {
			return fmt.Errorf("%s.nats_url: %q is not a URL such as nats://host:4222", section, u)
		}
		switch p.Scheme {
		case "nats", "tls", "ws", "wss":
		default:
			return fmt.Errorf("%s.nats_url: %q: scheme %q is not nats, tls, ws or wss", section, u, p.Scheme)
		}
	}
	for key, env := range map[string]string{"creds_env": c.CredsEnv, "token_env": c.TokenEnv, "user_env": c.UserEnv, "password_env": c.PasswordEnv} {
		if env != "" && os.Getenv(env) == "" {
			return fmt.Errorf("%s.%s: environment variable %s is not set", section, key, env)
		}
	}
	if (c.UserEnv == "") != (c.PasswordEnv == "") {
		return fmt.Errorf("%s: user_env and password_env go together", section)
	}
	if c.TokenEnv != "" && (c.CredsEnv != "" || c.UserEnv != "") {
		return fmt.Errorf("%s: token_env excludes creds_env and user_env", section)
	}
	if c.StreamReplicas < 0 || c.StreamReplicas > 5 {
		return fmt.Errorf("%s.stream_replicas: %d is not between 1 and 5", section, c.StreamReplicas)
	}
	if c.ConnectTimeout < 0 {
		return fmt.Errorf("%s.connect_timeout: %s is negative", section, c.ConnectTimeout)
	}
	return nil
}

// Conn is a process's connection to the engine.
type Conn struct {
	NC *nats.Conn
	JS jetstream.JetStream
	// Replicas is the replication of the streams and buckets created
	// through the connection.
	Replicas int
	// URL is what the connection was made to, without credentials.
	URL string
	// connected is false while the connection is down.
	connected atomic.Bool
}

// Connected reports whether the connection is up.
func (c *Conn) Connected() bool { return c.connected.Load() }

// Close closes the connection; what was published and acknowledged stays.
func (c *Conn) Close() {
	if c != nil {
		c.NC.Close()
	}
}

// Connect connects the process called name to the engine: to cfg.NATSURL
// when set, else to the embedded server of stateDir, which must have
// started. It retries the first connection for cfg.ConnectTimeout, then
// fails with an error naming the URL and what was tried. Once connected,
// it reconnects for ever: a lost connection is logged once, and its
// return too.
func Connect(cfg Config, stateDir, name string, log *slog.Logger) (*Conn, error) {
	c := &Conn{Replicas: max(cfg.StreamReplicas, 1)}
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(100*time.Millisecond, time.Second),
		nats.PingInterval(time.Second),
		nats.MaxPingsOutstanding(2),
		nats.ReconnectBufSize(64 << 20),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if nc.IsClosed() {
				return // closed on purpose
			}
			if c.connected.Swap(false) {
				log.Warn("lost the connection to the engine; serving on with the last state, reconnecting", "url", c.URL, "error", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			if !c.connected.Swap(true) {
				log.Info("reconnected to the engine", "url", nc.ConnectedUrlRedacted())
			}
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			log.Warn("engine connection error", "url", c.URL, "error", err)
		}),
	}
	tried := ""
	if cfg.NATSURL == "" {
		creds, err := ReadCredentials(stateDir)
		if err != nil {
			return nil, fmt.Errorf("cannot join the embedded engine of state_dir %s: %w (set cluster.nats_url, or start infergate serve there first)", stateDir, err)
		}
		c.URL, tried = creds.URL, "the embedded server's user and password from "+CredentialsFile
		opts = append(opts, nats.UserInfo(creds.User, creds.Password))
	} else {
		if cfg.StreamReplicas == 0 {
			c.Replicas = 3
		}
		c.URL = cfg.NATSURL
		var what []string
		switch {
		case cfg.CredsEnv != "":
			opts = append(opts, nats.UserCredentials(os.Getenv(cfg.CredsEnv)))
			what = append(what, "credentials file from $"+cfg.CredsEnv)
		case cfg.TokenEnv != "":
			opts = append(opts, nats.Token(os.Getenv(cfg.TokenEnv)))
			what = append(what, "token from $"+cfg.TokenEnv)
		}
		if cfg.UserEnv != "" {
			opts = append(opts, nats.UserInfo(os.Getenv(cfg.UserEnv), os.Getenv(cfg.PasswordEnv)))
			what = append(what, "user and password from $"+cfg.UserEnv+" and $"+cfg.PasswordEnv)
		}
		if cfg.CAFile != "" {
			opts = append(opts, nats.RootCAs(cfg.CAFile))
			what = append(what, "TLS verified by "+cfg.CAFile)
		}
		if len(what) == 0 {
			what = append(what, "no credentials")
		}
		tried = strings.Join(what, ", ")
	}
	timeout := cfg.StartTimeout()
	opts = append(opts, nats.Timeout(min(timeout, 2*time.Second)))
	deadline := time.Now().Add(timeout)
	var nc *nats.Conn
	var err error
	attempts := 0
	for {
		attempts++
		if nc, err = nats.Connect(c.URL, opts...); err == nil || time.Now().After(deadline) || isAuthError(err) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if err != nil {
		return nil, fmt.Errorf("cannot connect to the engine at %s (%s; %d attempts over %s): %w", c.URL, tried, attempts, timeout, err)
	}
	c.NC = nc
	c.connected.Store(true)
	if c.JS, err = jetstream.New(nc); err != nil {
		nc.Close()
		return nil, fmt.Errorf("cannot use JetStream at %s: %w", c.URL, err)
	}
	// A cluster whose JetStream is still starting answers as one without
	// it: asked again until the deadline.
	for {
		ctx, cancel := context.WithTimeout(context.Background(), min(timeout, 2*time.Second))
		_, err = c.JS.AccountInfo(ctx)
		cancel()
		if err == nil || !NoAnswer(err) || time.Now().After(deadline) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("cannot use JetStream at %s (is it enabled on the servers, and the account allowed to use it?): %w", c.URL, err)
	}
	return c, nil
}

func isAuthError(err error) bool {
	return errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) || errors.Is(err, nats.ErrAuthRevoked)
}
