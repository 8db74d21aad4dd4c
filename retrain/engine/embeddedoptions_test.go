package engine_test

import (
	"testing"
	"time"

	"github.com/infergate/infergate/retrain/engine"
)

// TestEmbeddedSyncSettings: StartEmbedded syncs every write; a
// SyncInterval syncs only that often.
func TestEmbeddedSyncSettings(t *testing.T) {
	f := func(o engine.EmbeddedOptions, always bool, interval time.Duration) {
		t.Helper()
		e, err := engine.StartEmbeddedWith(t.TempDir(), o)
		if err != nil {
			t.Fatal(err)
		}
		defer e.Shutdown()
		c := e.Server().JetStreamConfig()
		if c == nil || c.SyncAlways != always || c.SyncInterval != interval {
			t.Errorf("options %+v: server runs JetStream with %+v; want sync always %v, interval %s", o, c, always, interval)
		}
	}
	f(engine.EmbeddedOptions{}, true, 2*time.Minute)
	f(engine.EmbeddedOptions{SyncInterval: 5 * time.Second}, false, 5*time.Second)
}
