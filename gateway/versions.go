package gateway

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/infergate/infergate/retrain/engine"
	"github.com/infergate/infergate/retrain/modelstore"
	"github.com/infergate/infergate/router"
	"github.com/infergate/infergate/runtime"
)

// versionSync keeps a replica's local repository a cache of the engine's
// model store (retrain/modelstore): a version published there is fetched
// into the repository (a temporary folder renamed into place) and loaded
// by a reload; a version deleted there is removed here and unloaded. At
// start, the versions of the repository that the store never held are
// published to it (seeding: how a repository of one machine, the demo's
// included, reaches the fleet), and the store's are fetched before the
// first state is built. The leader also deletes the versions beyond
// model_store.keep_versions.
//
// A version made or removed by hand in the repository while the gateway
// runs is left as it is: only what changes in the store is synced. The
// repository is read at start only (a reload keeps it; see reloadLocked),
// so that seen always describes the folder synced.
//
// The sync runs on one goroutine, started by start and ended by close;
// seen, reloadPending and reloadRefused belong to it (and to
// openVersionSync before it).
type versionSync struct {
	srv   *Server
	store *modelstore.Store
	log   *slog.Logger
	// seen is, by "<model>/<version>", the store's entry last synced:
	// an entry seen again (the resync's list, a repeated watch update)
	// is not synced again.
	seen map[string]modelstore.Entry
	// reloadPending says that the repository changed since the last
	// reload the sync asked for succeeded: it asks again at every change
	// and resync until one does. reloadRefused says that a refusal was
	// logged.
	reloadPending, reloadRefused bool
	// changes are the store's updates, nil while the watch is broken.
	changes <-chan modelstore.Entry
	// wake asks for a sync now (an upload or a delete by this replica);
	// 1-buffered, so that requests merge.
	wake     chan struct{}
	interval time.Duration

	ctx    context.Context
	cancel context.CancelFunc
	done   sync.WaitGroup
}

// openVersionSync opens the model store on conn, starts watching it,
// sweeps the leftovers of a gateway killed midway out of repo, seeds the
// store with the versions of repo it never held and fetches into repo
// those it holds that repo lacks, so that the first state serves them.
// Only a store that cannot be opened or listed fails it; a version that
// cannot be published or fetched is logged, and tried again later.
func openVersionSync(srv *Server, conn *engine.Conn, cfg Config) (*versionSync, error) {
	ctx, cancel := context.WithCancel(context.Background())
	store, err := modelstore.Open(ctx, conn)
	if err != nil {
		cancel()
		return nil, err
	}
	vs := &versionSync{srv: srv, store: store, log: srv.log, seen: make(map[string]modelstore.Entry),
		wake: make(chan struct{}, 1), interval: cmp.Or(cfg.ModelStore.ResyncInterval, DefaultConfig().ModelStore.ResyncInterval),
		ctx: ctx, cancel: cancel}
	// Watched before the first list, so that nothing published between
	// the two is missed.
	if vs.changes, err = store.Watch(ctx); err != nil {
		cancel()
		return nil, err
	}
	vs.sweep(cfg.Repository)
	entries, err := store.List(ctx)
	if err == nil {
		vs.seed(cfg.Repository, entries)
		_, _, err = vs.reconcile(cfg.Repository)
	}
	if err != nil {
		cancel()
		return nil, fmt.Errorf("cannot sync the model repository %s with the model store: %w", cfg.Repository, err)
	}
	return vs, nil
}

// start starts the sync's goroutine.
func (vs *versionSync) start() { vs.done.Go(vs.loop) }

// close stops the sync, interrupting a fetch in progress (its temporary
// folder is removed), and waits for it.
func (vs *versionSync) close() {
	if vs != nil {
		vs.cancel()
		vs.done.Wait()
	}
}

// poke asks for a sync now.
func (vs *versionSync) poke() {
	select {
	case vs.wake <- struct{}{}:
	default:
	}
}

// loop syncs on every change the watch reports, on poke, and every
// resync interval, until close. A broken watch is made again at the
// next interval.
func (vs *versionSync) loop() {
	t := time.NewTicker(vs.interval)
	defer t.Stop()
	for {
		select {
		case <-vs.ctx.Done():
			return
		case _, ok := <-vs.changes:
			if !ok {
				vs.changes = nil
				vs.log.Warn("the watch of the model store ended; listing it every resync_interval until it is renewed", "every", vs.interval)
				continue
			}
		case <-vs.wake:
		case <-t.C:
			if vs.changes == nil {
				if changes, err := vs.store.Watch(vs.ctx); err == nil {
					vs.changes = changes
					vs.log.Info("the watch of the model store is renewed")
				}
			}
		}
		vs.syncOnce()
	}
}

// syncOnce brings the repository up to date with the store, reloads when
// that changed it (or a reload it asked for before was refused), and, on
// the leader, applies the retention.
func (vs *versionSync) syncOnce() {
	cp := vs.srv.cp
	cp.mu.Lock()
	repo := cp.current.Repository
	cp.mu.Unlock()
	entries, changed, err := vs.reconcile(repo)
	if err != nil {
		vs.log.Warn("cannot sync the model repository with the model store; trying again", "error", err)
	}
	vs.reloadPending = vs.reloadPending || changed
	if vs.reloadPending && !vs.srv.stopping.Load() && vs.ctx.Err() == nil {
		// Reload logs each refusal itself, with its reason.
		switch rerr := vs.srv.Reload(); {
		case rerr == nil:
			vs.reloadPending = false
			if vs.reloadRefused {
				vs.reloadRefused = false
				vs.log.Info("the model versions synced from the model store are loaded, the reload they waited for applied")
			}
		case !vs.reloadRefused:
			vs.reloadRefused = true
			vs.log.Warn("model versions synced from the model store wait for a reload that applies; asking again at every change of the store and every resync_interval",
				"every", vs.interval)
		}
	}
	if err == nil {
		vs.retain(entries)
	}
}

// uploadStaging begins the name of the folder, in the repository, where
// an upload is written and checked before it is published: on the file
// system the versions are fetched to, sized for them, and skipped by
// repository scans (a dot-folder).
const uploadStaging = ".upload-"

// sweep removes from repo what a gateway killed midway (SIGKILL, a
// crash) left behind: uploads being staged (.upload-*), versions being
// fetched (<model>/.<version>.fetch-*) or removed (<model>/.removed-*).
// Versions moved aside (<model>/.replaced-*) are kept for whoever looks.
// A repository is one replica's: a process sharing it would lose what it
// writes there at this moment.
func (vs *versionSync) sweep(repo string) {
	leftover := func(name string) bool {
		return strings.HasPrefix(name, ".removed-") || strings.HasPrefix(name, ".") && strings.Contains(name, ".fetch-")
	}
	var doomed []string
	entries, _ := os.ReadDir(repo) // none yet: nothing to sweep
	for _, e := range entries {
		switch {
		case !e.IsDir():
		case strings.HasPrefix(e.Name(), uploadStaging):
			doomed = append(doomed, filepath.Join(repo, e.Name()))
		case e.Name()[0] != '.':
			inner, _ := os.ReadDir(filepath.Join(repo, e.Name()))
			for _, v := range inner {
				if v.IsDir() && leftover(v.Name()) {
					doomed = append(doomed, filepath.Join(repo, e.Name(), v.Name()))
				}
			}
		}
	}
	for _, path := range doomed {
		if err := os.RemoveAll(path); err != nil {
			vs.log.Warn("cannot remove what an earlier run left in the model repository", "path", path, "error", err)
			continue
		}
		vs.log.Info("removed what an earlier run left in the model repository (an upload, fetch or removal it did not finish)", "path", path)
	}
}

// versionKey is a version's key in seen.
func versionKey(model string, version int64) string {
	return model + "/" + strconv.FormatInt(version, 10)
}

// seed publishes the versions of repo that the store never held (by
// entries: neither published nor deleted) to it. Two replicas seeding one
// version at once is harmless: the store takes one, and the other finds
// the same files there; different files are logged naming both, and the
// store's win (reconcile).
func (vs *versionSync) seed(repo string, entries []modelstore.Entry) {
	found, err := runtime.ScanRepository(repo, slog.New(slog.DiscardHandler))
	if err != nil {
		return // no repository yet: the store's versions make it
	}
	held := make(map[string]bool, len(entries))
	for _, e := range entries {
		held[versionKey(e.Model, e.Version)] = true
	}
	for _, model := range slices.Sorted(maps.Keys(found)) {
		if modelstore.ValidModel(model) != nil {
			continue
		}
		for _, version := range found[model] {
			key := versionKey(model, version)
			if held[key] {
				continue
			}
			dir := filepath.Join(repo, model, strconv.FormatInt(version, 10))
			m, err := vs.store.Publish(vs.ctx, model, version, dir)
			switch {
			case err == nil:
				vs.log.Info("model version published to the model store from the local repository", "model", model, "version", version, "files", m.Digests())
				vs.seen[key] = modelstore.Entry{Model: model, Version: version, ID: m.ID}
			case errors.Is(err, modelstore.ErrExists) && m != nil:
				// Another replica seeded it meanwhile.
				if local, lerr := modelstore.Describe(dir, model, version); lerr == nil && local.SameFiles(m) {
					vs.seen[key] = modelstore.Entry{Model: model, Version: version, ID: m.ID}
				}
			default:
				vs.log.Error("cannot publish a version of the local repository to the model store; other replicas will not have it", "model", model, "version", version, "error", err)
			}
		}
	}
}

// reconcile takes in what the store holds: it fetches into repo each
// published version not synced yet, replacing a local folder of the same
// version with other files, and removes from repo each version deleted
// from the store since it was synced. It returns the store's entries and
// whether repo changed.
func (vs *versionSync) reconcile(repo string) ([]modelstore.Entry, bool, error) {
	entries, err := vs.store.List(vs.ctx)
	if err != nil {
		return nil, false, err
	}
	changed := false
	for _, e := range entries {
		key := versionKey(e.Model, e.Version)
		if vs.seen[key] == e || vs.ctx.Err() != nil {
			continue
		}
		dir := filepath.Join(repo, e.Model, strconv.FormatInt(e.Version, 10))
		if e.Deleted {
			if _, err := os.Lstat(dir); err == nil {
				if err := removeVersionDir(dir); err != nil {
					vs.log.Error("cannot remove a version deleted from the model store from the local repository", "model", e.Model, "version", e.Version, "error", err)
					continue
				}
				vs.log.Info("model version deleted from the model store; removed from the local repository", "model", e.Model, "version", e.Version)
				changed = true
			}
			vs.seen[key] = e
			continue
		}
		ok, fetched := vs.syncVersion(e, dir)
		if ok {
			vs.seen[key] = e
		}
		changed = changed || fetched
	}
	return entries, changed, nil
}

// syncVersion makes dir hold the published version e: as it is, when its
// files are the store's, else fetched. It reports whether dir holds e
// now, and whether it was fetched.
func (vs *versionSync) syncVersion(e modelstore.Entry, dir string) (ok, fetched bool) {
	want, err := vs.store.Manifest(vs.ctx, e.Model, e.Version)
	if errors.Is(err, modelstore.ErrNotFound) {
		return false, false // deleted meanwhile: the watch says so next
	}
	if err != nil {
		vs.log.Warn("cannot read a version's manifest from the model store; trying again", "model", e.Model, "version", e.Version, "error", err)
		return false, false
	}
	if same, exists := localMatches(dir, want); same {
		return true, false
	} else if exists {
		local, _ := localManifest(dir, e.Model, e.Version)
		aside := filepath.Join(filepath.Dir(dir), fmt.Sprintf(".replaced-%d-%s", e.Version, time.Now().UTC().Format("20060102T150405.000000000")))
		vs.log.Error("the local repository holds other files than the model store under this version; the store's replace them (the local folder is moved aside)",
			"model", e.Model, "version", e.Version, "local", describeFiles(local), "store", want.Digests(), "moved_to", aside)
		if err := os.Rename(dir, aside); err != nil {
			vs.log.Error("cannot move the local version aside", "model", e.Model, "version", e.Version, "error", err)
			return false, false
		}
	}
	m, err := vs.store.Fetch(vs.ctx, e.Model, e.Version, dir)
	if errors.Is(err, modelstore.ErrExists) {
		// Fetched meanwhile by another replica on the same folder.
		same, _ := localMatches(dir, want)
		return same, false
	}
	if err != nil {
		if vs.ctx.Err() == nil {
			vs.log.Error("cannot fetch a model version from the model store; trying again at the next change or resync", "model", e.Model, "version", e.Version, "error", err)
		}
		return false, false
	}
	vs.log.Info("model version fetched from the model store", "model", e.Model, "version", e.Version, "files", m.Digests())
	return true, true
}

// localManifest returns the manifest of the version folder dir: the one
// a fetch left in it, or one made from its files.
func localManifest(dir, model string, version int64) (*modelstore.Manifest, error) {
	m, err := modelstore.ReadManifest(dir, model, version)
	if errors.Is(err, modelstore.ErrNotFound) {
		return modelstore.Describe(dir, model, version)
	}
	return m, err
}

// localMatches reports whether the folder dir holds want's files, and
// whether it exists.
func localMatches(dir string, want *modelstore.Manifest) (same, exists bool) {
	if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
		return false, false
	}
	local, err := localManifest(dir, want.Model, want.Version)
	return err == nil && local.SameFiles(want), true
}

func describeFiles(m *modelstore.Manifest) string {
	if m == nil {
		return "unreadable"
	}
	return m.Digests()
}

// removeVersionDir removes a version folder: renamed first to a name that
// repository scans skip, so that a reload never sees it half removed.
func removeVersionDir(dir string) error {
	gone := filepath.Join(filepath.Dir(dir), fmt.Sprintf(".removed-%s-%d", filepath.Base(dir), time.Now().UnixNano()))
	if err := os.Rename(dir, gone); err != nil {
		return err
	}
	return os.RemoveAll(gone)
}

// retain deletes, on the leader, the oldest published versions of each
// model beyond model_store.keep_versions, never one that the model's
// routing references or its version_policy selects.
func (vs *versionSync) retain(entries []modelstore.Entry) {
	live := make(map[string][]int64)
	for _, e := range entries {
		if !e.Deleted {
			live[e.Model] = append(live[e.Model], e.Version)
		}
	}
	cp := vs.srv.cp
	cp.mu.Lock()
	keep := cp.current.ModelStore.KeepVersions
	if !cp.leading || keep <= 0 {
		cp.mu.Unlock()
		return
	}
	var doomed []modelstore.Entry
	for _, model := range slices.Sorted(maps.Keys(live)) {
		versions := live[model] // ascending, as List sorts
		excess := len(versions) - keep
		if excess <= 0 {
			continue
		}
		protected := cp.referencedVersionsLocked(model)
		policy := cp.current.Models[model].withDefaults().VersionPolicy
		for _, v := range policy.Select(versions) {
			protected[strconv.FormatInt(v, 10)] = true
		}
		for _, v := range versions {
			if excess == 0 {
				break
			}
			if !protected[strconv.FormatInt(v, 10)] {
				doomed = append(doomed, modelstore.Entry{Model: model, Version: v})
				excess--
			}
		}
	}
	cp.mu.Unlock()
	for _, e := range doomed {
		if err := vs.store.Delete(vs.ctx, e.Model, e.Version); err != nil && !errors.Is(err, modelstore.ErrNotFound) {
			vs.log.Warn("cannot delete a version beyond model_store.keep_versions; trying again", "model", e.Model, "version", e.Version, "error", err)
			continue
		}
		vs.log.Info("model version deleted from the model store: beyond model_store.keep_versions", "model", e.Model, "version", e.Version, "keep", keep)
	}
}

// referencedVersionsLocked returns the versions of model that its routing
// references: the split's, the shadows', the canary's (of the file's and
// the admin's sections), and those of the table in effect (the primary).
// It needs the control lock.
func (cp *controlPlane) referencedVersionsLocked(model string) map[string]bool {
	refs := make(map[string]bool)
	r := cp.routes[model]
	if r == nil {
		return refs
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, cfg := range []router.Config{r.file, r.base} {
		for v := range cfg.Split {
			refs[v] = true
		}
		for _, sh := range cfg.Shadow {
			refs[sh.Version] = true
		}
		if cfg.Canary != nil {
			refs[cfg.Canary.Version] = true
		}
	}
	if r.canary != nil {
		refs[r.canary.Config.Version] = true
	}
	if rt := r.table.Load(); rt != nil {
		for i := range rt.t.Len() {
			refs[rt.t.Version(i)] = true
		}
	}
	return refs
}
