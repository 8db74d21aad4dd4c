package engine

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"golang.org/x/crypto/bcrypt"
)

// The embedded server's files under state_dir: its JetStream store, and
// how a process of the same machine reaches it (URL and credentials, mode
// 0600).
const (
	StoreDir        = "jetstream"
	CredentialsFile = "nats.json"
)

// embeddedUser is the one user of an embedded server.
const embeddedUser = "infergate"

// startTimeout bounds how long the embedded server may take to recover its
// store and accept connections.
const startTimeout = time.Minute

// Credentials are how a process of this machine joins the embedded server
// of a state_dir.
type Credentials struct {
	URL      string `json:"url"`
	User     string `json:"user"`
	Password string `json:"password"`
}

// Embedded is the JetStream server of one machine.
type Embedded struct {
	srv   *server.Server
	creds Credentials
}

// StartEmbedded starts the embedded JetStream server of state_dir dir: its
// file store in dir/jetstream, every write synced to disk before it is
// acknowledged, listening on loopback only, with the credentials of
// dir/nats.json (generated at the first start). It listens on the port it
// had before when that port is free, else on a new one, and records the
// URL in dir/nats.json. It refuses a damaged store with a
// *StoreDamageError that says what is damaged and how to recover
// (storecheck.go).
func StartEmbedded(dir string, log *slog.Logger) (*Embedded, error) {
	return StartEmbeddedWith(dir, EmbeddedOptions{Log: log})
}

// StartEmbeddedWith is StartEmbedded with the settings of o.
func StartEmbeddedWith(dir string, o EmbeddedOptions) (*Embedded, error) {
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	syncAlways, syncInterval := o.syncSettings()
	if err := os.MkdirAll(filepath.Join(dir, StoreDir), 0o700); err != nil {
		return nil, fmt.Errorf("cannot create the embedded engine's store in %s: %w", dir, err)
	}
	credsPath := filepath.Join(dir, CredentialsFile)
	creds, err := ReadCredentials(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if creds.Password, err = randomPassword(); err != nil {
			return nil, err
		}
		creds.User = embeddedUser
	case err != nil:
		return nil, fmt.Errorf("%w; delete it to generate new credentials", err)
	}
	// The server keeps a hash: the password itself is random, so the
	// cheapest cost will do.
	hash, err := bcrypt.GenerateFromPassword([]byte(creds.Password), bcrypt.MinCost)
	if err != nil {
		return nil, fmt.Errorf("cannot hash the embedded engine's password: %w", err)
	}
	opts := &server.Options{
		ServerName:   "infergate-embedded",
		Host:         "127.0.0.1",
		Port:         previousPort(creds.URL),
		Username:     creds.User,
		Password:     string(hash),
		JetStream:    true,
		StoreDir:     filepath.Join(dir, StoreDir),
		SyncAlways:   syncAlways,
		SyncInterval: syncInterval,
		NoSigs:       true,
		MaxPayload:   8 << 20,
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("cannot configure the embedded engine in %s: %w", dir, err)
	}
	srv.SetLoggerV2(serverLog{log.With("component", "nats")}, false, false, false)
	check, err := checkStoreBefore(srv, opts.StoreDir, log)
	if err != nil {
		return nil, err
	}
	srv.Start()
	if !srv.ReadyForConnections(startTimeout) {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, fmt.Errorf("cannot start the embedded engine in %s: not ready within %s (is port %d taken, or the store damaged? the log above says why)",
			dir, startTimeout, opts.Port)
	}
	if err := check.checkAfter(); err != nil {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, err
	}
	creds.URL = srv.ClientURL()
	if err := writeCredentials(credsPath, creds); err != nil {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, err
	}
	return &Embedded{srv: srv, creds: creds}, nil
}

// previousPort returns the port of url when it is free to listen on, else
// server.RANDOM_PORT.
func previousPort(url string) int {
	_, p, err := net.SplitHostPort(trimScheme(url))
	if err != nil {
		return server.RANDOM_PORT
	}
	port, err := strconv.Atoi(p)
	if err != nil || port <= 0 {
		return server.RANDOM_PORT
	}
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", p))
	if err != nil {
		return server.RANDOM_PORT
	}
	ln.Close()
	return port
}

func trimScheme(url string) string {
	for i := 0; i+2 < len(url); i++ {
		if url[i:i+3] == "://" {
			return url[i+3:]
		}
	}
	return url
}

func randomPassword() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("cannot generate the embedded engine's password: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// ReadCredentials reads dir/nats.json, where the embedded server of the
// state_dir dir says how to reach it. An error wraps os.ErrNotExist when
// no server has started there yet.
func ReadCredentials(dir string) (Credentials, error) {
	path := filepath.Join(dir, CredentialsFile)
	var c Credentials
	data, err := os.ReadFile(path)
	if err != nil {
		return c, fmt.Errorf("cannot read the embedded engine's credentials: %w", err)
	}
	if err := json.Unmarshal(data, &c); err != nil || c.User == "" || c.Password == "" {
		if err == nil {
			err = errors.New("user or password missing")
		}
		return c, fmt.Errorf("cannot read the embedded engine's credentials %s: %w", path, err)
	}
	return c, nil
}

// writeCredentials replaces path with c, mode 0600, by a rename, so that a
// reader never sees half a file.
func writeCredentials(path string, c Credentials) error {
	data, _ := json.MarshalIndent(c, "", "  ")
	tmp := path + ".tmp"
	err := os.WriteFile(tmp, append(data, '\n'), 0o600)
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("cannot write the embedded engine's credentials %s: %w", path, err)
	}
	return nil
}

// Credentials returns how to reach the server.
func (e *Embedded) Credentials() Credentials { return e.creds }

// Server returns the server, for checks of its store.
func (e *Embedded) Server() *server.Server { return e.srv }

// Shutdown stops the server once its clients are gone or told to go, and
// waits until it has.
func (e *Embedded) Shutdown() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}

// serverLog passes the server's warnings and errors to slog; its notices
// go to debug.
type serverLog struct{ log *slog.Logger }

func (l serverLog) Noticef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l serverLog) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l serverLog) Fatalf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l serverLog) Errorf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l serverLog) Debugf(format string, v ...any)  {}
func (l serverLog) Tracef(format string, v ...any)  {}
