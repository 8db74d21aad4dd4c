package gateway

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

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
	if rec, err := s.loadRoutes("model-059"); err != nil || rec == nil || !rec.Admin || rec.Base.StickyHeader != "x-user-059" {
		t.Fatalf("the healthy store's routing of model-059: %+v, %v", rec, err)
	}
}

// TestStoredRoutingOfEarlierVersions: a record whose canary interval an
// earlier version stored in nanoseconds is read as the duration it was; a
// record that cannot be read at all stops the start with an error naming
// the file, rather than starting without the admin routing it held.
func TestStoredRoutingOfEarlierVersions(t *testing.T) {
	cfg := testConfig(t)
	s, err := openStore(cfg.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	put := func(model, data string) {
		t.Helper()
		err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(routesBucket).Put([]byte(model), []byte(data)) })
		if err != nil {
			t.Fatal(err)
		}
	}
	put("demo", `{"file":{},"base":{"split":{"1":1},"canary":{"version":"1","interval":90000000000}},"admin":true}`)
	if rec, err := s.loadRoutes("demo"); err != nil || rec == nil || rec.Base.Canary == nil || rec.Base.Canary.Interval != 90*time.Second {
		t.Fatalf("a record with the interval in nanoseconds: %+v, %v", rec, err)
	}
	put("demo", `{"file":{},"base":{"split":{"1":"one"}},"admin":true}`)
	s.close()
	srv, err := New(Options{Config: cfg, Env: testEnv, Log: quiet})
	if err == nil {
		srv.Shutdown(context.Background())
		t.Fatal("the gateway started without the stored routing it could not read")
	}
	if !strings.Contains(err.Error(), `stored routing of model "demo"`) || !strings.Contains(err.Error(), storeFile) {
		t.Fatalf("got %v, want an error naming the model and the file", err)
	}
}
