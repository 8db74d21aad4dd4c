// Package enginetest starts an embedded engine for a test, in the test's
// temporary folder, and connects to it.
package enginetest

import (
	"log/slog"
	"testing"

	"github.com/infergate/infergate/retrain/engine"
)

// Engine is a test's embedded server and its connection.
type Engine struct {
	*engine.Conn
	Embedded *engine.Embedded
	Dir      string
}

// Start starts an embedded server in a temporary folder of t and connects
// to it; both stop when t ends.
func Start(t testing.TB) *Engine {
	t.Helper()
	return StartIn(t, t.TempDir())
}

// StartIn starts an embedded server whose state_dir is dir (so that a test
// can start a second one on the same store later) and connects to it.
func StartIn(t testing.TB, dir string) *Engine {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	emb, err := engine.StartEmbedded(dir, log)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := engine.Connect(engine.Config{}, dir, "test", log)
	if err != nil {
		emb.Shutdown()
		t.Fatal(err)
	}
	e := &Engine{Conn: conn, Embedded: emb, Dir: dir}
	t.Cleanup(e.Stop)
	return e
}

// Stop closes the connection and stops the server; it is idempotent.
func (e *Engine) Stop() {
	e.Conn.Close()
	e.Embedded.Shutdown()
}
