package gateway

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/infergate/infergate/retrain/statefile"
	"github.com/infergate/infergate/retrain/statefile/statefiletest"
	"github.com/infergate/infergate/router"
)

// TestDamagedStoreIsRefused damages the gateway's state file the ways disks
// and crashes do: the gateway refuses to start on it with an error that
// names the file and says how to recover, never a panic or a silent start
// without its routing and pending deliveries.
func TestDamagedStoreIsRefused(t *testing.T) {
	base := t.TempDir()
	s, err := openStore(base)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 60 {
		rec := routeRecord{Admin: true, Base: router.Config{StickyHeader: fmt.Sprintf("x-user-%03d", i)}}
		if err := s.saveRoutes(fmt.Sprintf("model-%03d", i), rec); err != nil {
			t.Fatal(err)
		}
	}
	s.close()
	healthy, err := os.ReadFile(filepath.Join(base, storeFile))
	if err != nil {
		t.Fatal(err)
	}

	for _, d := range statefiletest.Damages(statefiletest.Seeds...) {
		t.Run(d.Name, func(t *testing.T) {
			cfg := testConfig(t)
			path := filepath.Join(cfg.StateDir, storeFile)
			if err := os.WriteFile(path, healthy, 0o600); err != nil {
				t.Fatal(err)
			}
			d.Apply(t, path)
			srv, err := New(Options{Config: cfg, Env: testEnv, Log: quiet})
			if err == nil {
				srv.Shutdown(context.Background())
				t.Fatal("the gateway started on a damaged state file")
			}
			if !errors.Is(err, statefile.ErrDamaged) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "move the file aside") {
				t.Fatalf("got %v, want an error that names %s, says it is damaged and how to recover", err, path)
			}
		})
	}

	s, err = openStore(base)
	if err != nil {
		t.Fatalf("the healthy store: %v", err)
	}
	defer s.close()
	if rec := s.loadRoutes("model-059", quiet); rec == nil || !rec.Admin || rec.Base.StickyHeader != "x-user-059" {
		t.Fatalf("the healthy store's routing of model-059: %+v", rec)
	}
}
