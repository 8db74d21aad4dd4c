package pipeline

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/infergate/infergate/retrain/engine"
	"github.com/infergate/infergate/retrain/engine/enginetest"
)

// lockedBuffer is a log's output that the test reads while a Service's
// goroutines write to it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestOpenWarnsWithoutModelVersions: Open on an engine whose model store
// holds no version of any configured model (an engine of the service's
// own, not the gateway's), or no model store at all, warns once, naming
// the engine and what to share with the gateway; with a version there it
// says nothing of it.
func TestOpenWarnsWithoutModelVersions(t *testing.T) {
	fx := newFixture(t)
	f := func(conn *engine.Conn, want bool) {
		t.Helper()
		var out lockedBuffer
		s, err := Open(Options{Config: fx.cfg, Engine: conn, Env: testEnv, Log: slog.New(slog.NewTextHandler(&out, nil))})
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		log := out.String()
		got := strings.Count(log, "none of the configured models has a version")
		if want && (got != 1 || !strings.Contains(log, "engine="+conn.URL) || !strings.Contains(log, "share the gateway's state_dir")) {
			t.Errorf("no version in the model store: the log says\n%s", log)
		}
		if !want && got != 0 {
			t.Errorf("a version in the model store: the log says\n%s", log)
		}
	}
	f(fx.engine.Conn, false)
	if err := fx.models.Delete(context.Background(), "demo", 1); err != nil {
		t.Fatal(err)
	}
	f(fx.engine.Conn, true)
	f(enginetest.Start(t).Conn, true)
}
