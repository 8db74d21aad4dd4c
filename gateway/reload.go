package gateway

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/fsnotify/fsnotify"
)

// reloadDebounce is how long the watcher waits for changes to settle, so
// that an editor's write-by-rename or a burst of copies reloads once.
const reloadDebounce = 300 * time.Millisecond

var (
	reloadsTotal        = metrics.NewCounter(`infergate_config_reloads_total`)
	reloadErrors        = metrics.NewCounter(`infergate_config_reload_errors_total`)
	reloadVersionErrors = metrics.NewCounter(`infergate_model_version_load_errors_total`)
	reloadSuccessful    = metrics.NewGauge(`infergate_config_last_reload_successful`, nil)
)

func init() { reloadSuccessful.Set(1) }

// Reload reads the config file again (when the server has one) and
// rescans the model repository, then builds the new serving state: new
// versions are loaded and warmed up before anything routes to them, and
// versions no longer served are closed once the requests using them have
// finished. A config that does not parse or validate, or routing that
// cannot be applied, changes nothing; a single version that fails to load
// is logged and left out. Reload is safe for concurrent use.
func (s *Server) Reload() error {
	s.reloading.Lock()
	defer s.reloading.Unlock()
	s.cp.mu.Lock()
	if s.stopping.Load() {
		s.cp.mu.Unlock()
		return errors.New("cannot reload: the server is shutting down")
	}
	old, st, err := s.reloadLocked()
	s.cp.mu.Unlock()
	// Versions are closed outside the control lock: a drift monitor
	// closing stores its last state, which takes the lock.
	if err != nil {
		if st != nil {
			st.unloadExcept(old, s.log)
		}
	} else {
		// Requests already on the old state may still use what it alone
		// holds.
		if !waitIdle(old, s.cfg.ShutdownTimeout) {
			s.log.Warn("requests still use versions a reload removed; closing them anyway", "after", s.cfg.ShutdownTimeout)
		}
		old.unloadExcept(st, s.log)
	}
	// The gauge first, so that whoever sees a counter move sees the
	// outcome of that reload.
	if err != nil {
		reloadSuccessful.Set(0)
		reloadErrors.Inc()
		s.log.Error("reload refused; serving on with the previous state", "error", err)
	} else {
		reloadSuccessful.Set(1)
	}
	reloadsTotal.Inc()
	return err
}

// reloadLocked builds the new state and routes it; it returns the state
// before and the one built (nil when none was), for the caller to close
// what the one it keeps does not hold. It needs the control lock.
func (s *Server) reloadLocked() (old, st *state, err error) {
	cfg := s.cp.current
	if s.o.ConfigPath != "" {
		if cfg, err = LoadConfig(s.o.ConfigPath); err != nil {
			return nil, nil, err
		}
	}
	if cfg.Listen != s.cfg.Listen || cfg.MaxBodySize != s.cfg.MaxBodySize || cfg.StateDir != s.cfg.StateDir ||
		cfg.MaxInflightMemory != s.cfg.MaxInflightMemory || cfg.MaxConnections != s.cfg.MaxConnections ||
		cfg.MaxConnectionsPerIP != s.cfg.MaxConnectionsPerIP || cfg.MaxHeaderSize != s.cfg.MaxHeaderSize || cfg.TLS != s.cfg.TLS ||
		cfg.Admin != s.cfg.Admin || cfg.Runtime.Library != s.cfg.Runtime.Library || !reflect.DeepEqual(cfg.Webhooks, s.cfg.Webhooks) ||
		cfg.Cluster != s.cfg.Cluster || cfg.ModelStore.Sync != s.cfg.ModelStore.Sync ||
		cfg.ModelStore.ResyncInterval != s.cfg.ModelStore.ResyncInterval || !reflect.DeepEqual(cfg.Feedback, s.cfg.Feedback) {
		s.log.Warn("listen, max_body_size, max_inflight_memory, max_connections, max_connections_per_ip, max_header_size, tls, state_dir, admin, webhooks, cluster, feedback, model_store.sync, model_store.resync_interval and runtime take effect only after a restart")
	}
	// The store's versions are synced into the repository of the start
	// (versionSync's record of what it synced is of that folder): another
	// would be served empty.
	if s.versions != nil && cfg.Repository != s.cfg.Repository {
		s.log.Warn("repository takes effect only after a restart while model_store.sync is on; serving the one of the start",
			"repository", s.cfg.Repository, "config", cfg.Repository)
		cfg.Repository = s.cfg.Repository
	}
	old = s.serving.Load()
	if st, err = s.buildState(cfg, old, false); err != nil {
		return old, nil, err
	}
	if err := s.cp.routeLocked(cfg, st, false); err != nil {
		return old, st, err
	}
	s.serving.Store(st)
	s.cp.current = cfg
	s.log.Info("reload applied", "models", len(st.models))
	return old, st, nil
}

// waitIdle waits up to timeout for st to have nothing in flight.
func waitIdle(st *state, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for st.inflight.Load() > 0 {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}

// startWatcher reloads on changes of the config file or the repository
// (its model folders and their version folders), debounced.
func (s *Server) startWatcher() error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("cannot watch for changes: %w", err)
	}
	if err := s.watchPaths(w); err != nil {
		w.Close()
		return err
	}
	s.done.Add(1)
	go s.watch(w)
	return nil
}

// watchPaths watches the config file's folder (editors replace the file
// by rename), the repository, each model folder in it and each folder in
// those: a version copied in file by file fails to load while it is
// half-written, and the writes that complete it must bring another reload.
func (s *Server) watchPaths(w *fsnotify.Watcher) error {
	s.cp.mu.Lock()
	repo := s.cp.current.Repository
	s.cp.mu.Unlock()
	paths := []string{repo}
	if s.o.ConfigPath != "" {
		paths = append(paths, filepath.Dir(s.o.ConfigPath))
	}
	entries, err := os.ReadDir(repo)
	if err != nil {
		return fmt.Errorf("cannot watch the repository: %w", err)
	}
	// Dot-folders are not versions (scans skip them): uploads being
	// staged, versions being fetched or removed.
	for _, e := range entries {
		if !e.IsDir() || e.Name()[0] == '.' {
			continue
		}
		modelDir := filepath.Join(repo, e.Name())
		paths = append(paths, modelDir)
		versions, err := os.ReadDir(modelDir)
		if err != nil {
			continue // removed meanwhile: the next event says so
		}
		for _, v := range versions {
			if v.IsDir() && v.Name()[0] != '.' {
				paths = append(paths, filepath.Join(modelDir, v.Name()))
			}
		}
	}
	for _, p := range paths {
		if err := w.Add(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("cannot watch %q: %w", p, err)
		}
	}
	return nil
}

// watch merges bursts of events into one reload after reloadDebounce of
// quiet, until Shutdown.
func (s *Server) watch(w *fsnotify.Watcher) {
	defer s.done.Done()
	defer w.Close()
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	for {
		select {
		case <-s.stop:
			debounce.Stop()
			return
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			if s.relevant(ev) {
				debounce.Reset(reloadDebounce)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			s.log.Warn("file watcher error", "error", err)
		case <-debounce.C:
			// New folders are watched before the reload reads them, so that
			// a write after the reload's scan brings another reload.
			if err := s.watchPaths(w); err != nil {
				s.log.Warn("cannot watch the repository", "error", err)
			}
			s.Reload()
		}
	}
}

// relevant reports whether ev may change what is served: anything in the
// repository but in its dot-folders (which scans skip; what is renamed
// out of one is an event of its new name), or in the config file's folder
// the config file itself or the link its path goes through. Kubernetes mounts a ConfigMap's file as
// config.yaml -> ..data/config.yaml and updates it by renaming a new
// ..data link over the old one, so no event of an update names the file.
func (s *Server) relevant(ev fsnotify.Event) bool {
	if ev.Op == fsnotify.Chmod {
		return false
	}
	if s.o.ConfigPath == "" || filepath.Dir(ev.Name) != filepath.Dir(s.o.ConfigPath) {
		s.cp.mu.Lock()
		repo := s.cp.current.Repository
		s.cp.mu.Unlock()
		rel, err := filepath.Rel(repo, ev.Name)
		if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
			return true
		}
		for elem := range strings.SplitSeq(rel, string(filepath.Separator)) {
			if strings.HasPrefix(elem, ".") && elem != "." {
				return false
			}
		}
		return true
	}
	name := filepath.Base(ev.Name)
	return name == filepath.Base(s.o.ConfigPath) || name == linkHead(s.o.ConfigPath)
}

// linkHead returns the first element of the target of the symbolic link
// at path when the target is relative and stays in path's folder (..data
// for a ConfigMap's config.yaml -> ..data/config.yaml), else "". It is read
// at every event, since the link may be created or changed while watched.
func linkHead(path string) string {
	target, err := os.Readlink(path)
	if err != nil || filepath.IsAbs(target) {
		return ""
	}
	head, _, _ := strings.Cut(filepath.ToSlash(filepath.Clean(target)), "/")
	if head == "." || head == ".." {
		return ""
	}
	return head
}
