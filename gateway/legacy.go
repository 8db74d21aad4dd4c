package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/infergate/infergate/retrain/legacy"
	"github.com/infergate/infergate/retrain/outbox"
)

// legacyFile is the file under state_dir in which a gateway kept its
// state before the engine: routing, drift states and the webhook outbox.
// The first start on the engine imports it (importLegacy).
const legacyFile = "infergate.db"

// legacyImport counts what importLegacy did.
type legacyImport struct {
	// routes and drifts were created in the control bucket; the kept ones
	// were not, since the bucket held that model's routing or that
	// version's drift state already; badDrift could not be decoded.
	routes, routesKept           int
	drifts, driftsKept, badDrift int
	// webhooks counts the outbox's deliveries (see outbox.ImportLegacy).
	webhooks outbox.LegacyCounts
}

// importLegacy imports the state file that a gateway before the engine
// kept in stateDir, if there is one and the gateway has an engine, then
// renames it to infergate.db.imported-<UTC time>, so that the next start
// leaves it alone. What the control bucket holds wins over the file: a
// model's routing and a version's drift state are only created, never
// replaced, so a fleet's newer state stays. The outbox's deliveries go to
// the webhook outbox (see outbox.ImportLegacy). A damaged file stops the
// start with an error that names it and how to recover; nothing is
// renamed then, nor after any other error: importing again is harmless.
// It runs while New starts, before routing and the control loop do, and
// reads the bucket again afterwards (under the lock, see rewatch), so that
// routing starts from what it wrote.
func (cp *controlPlane) importLegacy(stateDir string) error {
	if cp.store == nil || stateDir == "" {
		return nil
	}
	path := filepath.Join(stateDir, legacyFile)
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("cannot import the state file %s: %w", path, err)
	}
	old, err := legacy.ReadGateway(path)
	if err != nil {
		return fmt.Errorf("cannot import the gateway's state from before the engine: %w", err)
	}
	var n legacyImport
	for _, model := range slices.Sorted(maps.Keys(old.Routes)) {
		if err := cp.importLegacyRoutes(path, model, old.Routes[model], &n); err != nil {
			return err
		}
	}
	for _, d := range old.Drift {
		if err := cp.importLegacyDrift(path, d, &n); err != nil {
			return err
		}
	}
	if n.webhooks, err = cp.outbox.ImportLegacy(context.Background(), old.Outbox, cp.now()); err != nil {
		return fmt.Errorf("cannot import the webhook outbox of %s: %w", path, err)
	}
	if err := cp.rewatch(); err != nil {
		return err
	}
	moved, err := legacy.Retire(path, cp.now())
	if err != nil {
		return err
	}
	log := cp.log.Info
	if n.webhooks.Unimportable > 0 || n.badDrift > 0 {
		log = cp.log.Warn
	}
	log("imported the state file of the gateway from before the engine; it was renamed and is no longer read",
		"file", path, "renamed_to", moved, "routes", n.routes, "routes_kept", n.routesKept,
		"drift_states", n.drifts, "drift_states_kept", n.driftsKept, "drift_states_unreadable", n.badDrift,
		"events_emitted", n.webhooks.Emitted, "dead_letters", n.webhooks.DeadLetters, "deliveries_not_importable", n.webhooks.Unimportable)
	return nil
}

// importLegacyRoutes creates model's routing from data, its record in
// path, unless the bucket holds one. The record says this replica wrote
// it, as the gateway alone did: so routing applies it only while the
// config file's section is still the one it was stored under, as the
// gateway before the engine did.
func (cp *controlPlane) importLegacyRoutes(path, model string, data []byte, n *legacyImport) error {
	rec, err := decodeLegacyRoutes(data)
	if err != nil {
		return fmt.Errorf("cannot import the stored routing of model %q from %s: %w; move the file aside to start from the config file's routing (losing admin changes and canaries), or restore it from a backup",
			model, path, err)
	}
	rec.Replica, rec.Leader = cp.cluster.Replica, cp.cluster.Replica
	value, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("cannot encode the imported routing of model %q: %w", model, err)
	}
	switch _, err := cp.store.put(routingKey(model), value, 0); {
	case errors.Is(err, errConflict):
		n.routesKept++
	case err != nil:
		return fmt.Errorf("cannot import the routing of model %q into bucket %s: %w", model, controlBucket, err)
	default:
		n.routes++
	}
	return nil
}

// decodeLegacyRoutes decodes a routing record of the gateway before the
// engine; one written before durations were Go duration strings holds
// its canary's interval in nanoseconds, which it converts.
func decodeLegacyRoutes(data []byte) (*routeRecord, error) {
	rec := new(routeRecord)
	err := json.Unmarshal(data, rec)
	if converted, ok := nanosecondIntervals(data); err != nil && ok {
		*rec = routeRecord{}
		err = json.Unmarshal(converted, rec)
	}
	if err != nil {
		return nil, err
	}
	return rec, nil
}

// nanosecondIntervals rewrites the "interval" values that records of
// earlier versions hold as numbers of nanoseconds into Go duration
// strings; it reports false when there are none.
func nanosecondIntervals(data []byte) ([]byte, bool) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var doc any
	if dec.Decode(&doc) != nil {
		return nil, false
	}
	converted := false
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for key, x := range v {
				if n, ok := x.(json.Number); ok && key == "interval" {
					if ns, err := n.Int64(); err == nil {
						v[key], converted = time.Duration(ns).String(), true
					}
					continue
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(doc)
	if !converted {
		return nil, false
	}
	out, err := json.Marshal(doc)
	return out, err == nil
}

// importLegacyDrift creates the drift state of d's version unless the
// bucket holds one. A state that cannot be decoded is logged and left
// out: that version's monitoring starts afresh, as it does for a stored
// state that cannot be read.
func (cp *controlPlane) importLegacyDrift(path string, d legacy.DriftState, n *legacyImport) error {
	rec := driftRecord{written: written{Replica: cp.cluster.Replica, Leader: cp.cluster.Replica}}
	if err := json.Unmarshal(d.State, &rec.State); err != nil {
		n.badDrift++
		cp.log.Error("not importing a drift state that cannot be read; that version's monitoring starts afresh",
			"file", path, "model", d.Model, "version", d.Version, "error", err)
		return nil
	}
	value, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("cannot encode the imported drift state of model %q version %s: %w", d.Model, d.Version, err)
	}
	switch _, err := cp.store.put(driftStateKey(d.Model, d.Version), value, 0); {
	case errors.Is(err, errConflict):
		n.driftsKept++
	case err != nil:
		return fmt.Errorf("cannot import the drift state of model %q version %s into bucket %s: %w", d.Model, d.Version, controlBucket, err)
	default:
		n.drifts++
	}
	return nil
}

// rewatch reads the control bucket again, through a new watch in place
// of the one newControlPlane started, so that what importLegacy wrote is
// in cp's records, revisions and drift states before routing starts. It
// takes the lock: the fleet's reports already arrive.
func (cp *controlPlane) rewatch() error {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	cp.watcher.Stop()
	cp.watcher = nil
	return cp.watch()
}
