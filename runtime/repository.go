package runtime

import (
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
)

// Model is a model of the repository with its loaded versions, oldest first.
type Model struct {
	Name     string
	Versions []*ModelVersion
}

// Version returns the loaded version v, or nil.
func (m *Model) Version(v int64) *ModelVersion {
	for _, mv := range m.Versions {
		if mv.Version == v {
			return mv
		}
	}
	return nil
}

// Latest returns the newest loaded version, or nil when none is loaded.
func (m *Model) Latest() *ModelVersion {
	if len(m.Versions) == 0 {
		return nil
	}
	return m.Versions[len(m.Versions)-1]
}

// Close unloads every version of m, draining each first.
func (m *Model) Close() {
	for _, v := range m.Versions {
		v.Close()
	}
}

// ScanRepository lists the models under root in Triton's layout
// (<root>/<model>/<version>/model.onnx) with their numeric versions sorted
// ascending. Version folders that are not positive numbers, or lack a
// model.onnx, are skipped with a log line.
func ScanRepository(root string, log *slog.Logger) (map[string][]int64, error) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil, fmt.Errorf("cannot read model repository %q: %w", root, err)
	}
	models := make(map[string][]int64)
	for _, e := range entries {
		if !e.IsDir() || e.Name()[0] == '.' {
			continue
		}
		versions, err := scanVersions(filepath.Join(root, e.Name()), log)
		if err != nil {
			return nil, err
		}
		models[e.Name()] = versions
	}
	return models, nil
}

func scanVersions(dir string, log *slog.Logger) ([]int64, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("cannot read model folder %q: %w", dir, err)
	}
	var versions []int64
	for _, e := range entries {
		if !e.IsDir() || e.Name()[0] == '.' {
			continue
		}
		v, err := strconv.ParseInt(e.Name(), 10, 64)
		if err != nil || v <= 0 {
			log.Info("ignoring non-numeric version folder", "path", filepath.Join(dir, e.Name()))
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, e.Name(), "model.onnx")); err != nil {
			log.Warn("ignoring version folder without model.onnx", "path", filepath.Join(dir, e.Name()))
			continue
		}
		versions = append(versions, v)
	}
	slices.Sort(versions)
	return versions, nil
}

// LoadRepository loads, warms up and returns every model under root with the
// versions its policy selects, sorted by name. Models without an entry in
// cfgs get the defaults. A version that fails to load fails the whole load,
// after unloading what had loaded, so a broken repository never half-serves.
func (e *Environment) LoadRepository(root string, cfgs map[string]ModelConfig, log *slog.Logger) ([]*Model, error) {
	found, err := ScanRepository(root, log)
	if err != nil {
		return nil, err
	}
	for name := range cfgs {
		if _, ok := found[name]; !ok {
			return nil, fmt.Errorf("cannot configure model %q: no folder %q in repository %q", name, name, root)
		}
	}
	var models []*Model
	fail := func(err error) ([]*Model, error) {
		for _, m := range models {
			m.Close()
		}
		return nil, err
	}
	for _, name := range slices.Sorted(maps.Keys(found)) {
		cfg := cfgs[name]
		m := &Model{Name: name}
		models = append(models, m)
		for _, version := range cfg.VersionPolicy.Select(found[name]) {
			dir := filepath.Join(root, name, strconv.FormatInt(version, 10))
			mv, err := e.LoadModelVersion(dir, name, version, cfg)
			if err != nil {
				return fail(err)
			}
			m.Versions = append(m.Versions, mv)
			log.Info("model version loaded", "model", name, "version", version,
				"instances", mv.Instances(), "provider", e.provider)
		}
		if len(m.Versions) == 0 {
			log.Warn("model has no version to serve", "model", name, "available", found[name])
		}
	}
	return models, nil
}
