package main

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/infergate/infergate/retrain/engine"
)

// stateEngine is a process's state engine: the embedded server of its
// state_dir (nil in a fleet) and the connection to it or to the cluster.
type stateEngine struct {
	embedded *engine.Embedded
	conn     *engine.Conn
}

// openEngine connects the process called name to its state engine: the
// fleet's cluster when cfg names one, else the embedded server of
// stateDir: joined when one runs there (another process of this machine
// started it), else started here. With neither, there is none (nil, nil).
func openEngine(cfg engine.Config, stateDir, name string, log *slog.Logger) (*stateEngine, error) {
	e := &stateEngine{}
	if cfg.NATSURL == "" && stateDir != "" {
		if _, err := engine.ReadCredentials(stateDir); err == nil {
			join := cfg
			join.ConnectTimeout = 500 * time.Millisecond
			if conn, err := engine.Connect(join, stateDir, name, log); err == nil {
				log.Info("joined the embedded engine of another process", "url", conn.URL, "store", stateDir)
				e.conn = conn
				return e, nil
			}
		}
	}
	if cfg.NATSURL == "" {
		if stateDir == "" {
			return nil, nil
		}
		var err error
		if e.embedded, err = engine.StartEmbedded(stateDir, log); err != nil {
			return nil, err
		}
		log.Info("embedded engine started", "url", e.embedded.Credentials().URL, "store", stateDir)
	}
	var err error
	if e.conn, err = engine.Connect(cfg, stateDir, name, log); err != nil {
		e.close()
		return nil, err
	}
	if cfg.NATSURL != "" {
		log.Info("connected to the fleet's engine", "url", e.conn.NC.ConnectedUrlRedacted(), "stream_replicas", e.conn.Replicas)
	}
	return e, nil
}

// connection returns the connection, nil without an engine.
func (e *stateEngine) connection() *engine.Conn {
	if e == nil {
		return nil
	}
	return e.conn
}

// close closes the connection, then stops the embedded server; what was
// acknowledged is on disk. A nil engine does nothing.
func (e *stateEngine) close() {
	if e == nil {
		return
	}
	if e.conn != nil {
		e.conn.Close()
	}
	if e.embedded != nil {
		e.embedded.Shutdown()
	}
}

// startRetried calls start, and again while it fails for want of an answer
// from the engine (a cluster just formed, still electing the leaders of
// the streams and buckets start asked for), until cfg's start timeout
// passes; what names what starts, in the log. A request the server refused
// for want of permission also ends in a timeout: when conn saw one, start
// is not made again and the refusal is returned.
func startRetried(cfg engine.Config, conn *engine.Conn, log *slog.Logger, what string, start func() error) error {
	deadline := time.Now().Add(cfg.StartTimeout())
	for attempt := 1; ; attempt++ {
		err := start()
		if conn != nil && err != nil {
			if last := conn.NC.LastError(); errors.Is(last, nats.ErrPermissionViolation) {
				return fmt.Errorf("%w (the engine refused a request: %w; the credentials need the JetStream API, $JS.API.>)", err, last)
			}
		}
		if err == nil || !engine.NoAnswer(err) || time.Now().After(deadline) {
			return err
		}
		if attempt == 1 {
			log.Warn("the engine does not answer yet; starting again until it does", "what", what, "error", err, "until", deadline.Format(time.TimeOnly))
		}
		time.Sleep(time.Second)
	}
}
