package main

import (
	"log/slog"
	"time"

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
