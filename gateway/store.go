package gateway

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/infergate/infergate/retrain/statefile"
	"github.com/infergate/infergate/router"
)

// storeFile is the embedded store's file under state_dir.
const storeFile = "infergate.db"

var routesBucket = []byte("routes")

// store keeps what must survive a restart in a bbolt file: each model's
// routing as the admin API or a canary left it. A nil store keeps nothing.
// It is safe for concurrent use.
type store struct {
	db *bolt.DB
}

// routeRecord is a model's stored routing, with the config file's section
// as it was then, so that a later change of the file can win over it.
type routeRecord struct {
	File   router.Config  `json:"file"`
	Base   router.Config  `json:"base"`
	Admin  bool           `json:"admin"`
	Canary *router.Canary `json:"canary,omitempty"`
}

// openStore opens (creating) the store under dir; an empty dir gives the
// nil store. A damaged store file is refused (see statefile.Open).
func openStore(dir string) (*store, error) {
	if dir == "" {
		return nil, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("cannot create state_dir %q: %w", dir, err)
	}
	path := filepath.Join(dir, storeFile)
	db, err := statefile.Open(path, bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, err
	}
	err = db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(routesBucket)
		return err
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("cannot prepare the state store %q: %w", path, err)
	}
	return &store{db: db}, nil
}

func (s *store) close() {
	if s != nil {
		s.db.Close()
	}
}

// loadRoutes returns model's stored routing, or nil when it has none. A
// record written before durations were Go duration strings is read with its
// nanoseconds converted. A record that cannot be read is an error naming
// the file: starting without it would silently drop admin routing and a
// running canary.
func (s *store) loadRoutes(model string) (*routeRecord, error) {
	if s == nil {
		return nil, nil
	}
	var rec *routeRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		data := tx.Bucket(routesBucket).Get([]byte(model))
		if data == nil {
			return nil
		}
		rec = new(routeRecord)
		err := json.Unmarshal(data, rec)
		if converted, ok := nanosecondIntervals(data); err != nil && ok {
			*rec = routeRecord{}
			err = json.Unmarshal(converted, rec)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("cannot read the stored routing of model %q in %s: %w; move the file aside to start from the config file's routing (losing admin changes and canaries), or restore it from a backup",
			model, s.db.Path(), err)
	}
	return rec, nil
}

// nanosecondIntervals rewrites the "interval" values that records of
// earlier versions hold as numbers of nanoseconds into Go duration strings;
// it reports false when there are none.
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

// saveRoutes stores rec as model's routing; bbolt syncs the file before
// the commit returns.
func (s *store) saveRoutes(model string, rec routeRecord) error {
	if s == nil {
		return nil
	}
	return s.db.Update(func(tx *bolt.Tx) error { return putRoutes(tx, model, rec) })
}

// putRoutes writes rec as model's routing in tx.
func putRoutes(tx *bolt.Tx, model string, rec routeRecord) error {
	data, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("cannot encode the routing of model %q: %w", model, err)
	}
	return tx.Bucket(routesBucket).Put([]byte(model), data)
}
