package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/schollz/progressbar/v3"

	"github.com/infergate/infergate/drift"
	"github.com/infergate/infergate/gateway"
	"github.com/infergate/infergate/retrain/capture"
	"github.com/infergate/infergate/retrain/capture/export"
	"github.com/infergate/infergate/retrain/engine"
	"github.com/infergate/infergate/retrain/modelstore"
)

// captureCmd runs `infergate capture export` until it is done or SIGINT
// or SIGTERM stops it (which leaves no file).
func captureCmd(args []string) error {
	if len(args) == 0 || args[0] != "export" {
		return errors.New("want `infergate capture export --model M --out F [--format parquet|jsonl] [--version V] [--since T] [--config C]`")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The spinner only where someone watches: on a terminal.
	var progress io.Writer = io.Discard
	if st, err := os.Stderr.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
		progress = os.Stderr
	}
	return captureExport(ctx, args[1:], os.Stdout, progress)
}

// captureExport writes the captured rows of a model, joined with their
// labels, to one Parquet or JSON-lines file; it reports to out and draws
// its progress on progress.
func captureExport(ctx context.Context, args []string, out, progress io.Writer) error {
	fs := flag.NewFlagSet("capture export", flag.ContinueOnError)
	configPath := fs.String("config", "configs/demo.yaml", "the gateway's config: its state_dir or cluster holds the capture")
	model := fs.String("model", "", "the model whose captured rows to export (required)")
	version := fs.String("version", "", "only the rows this version answered (default: every version)")
	sinceFlag := fs.String("since", "", "only the rows captured at or after this: an RFC 3339 time, or a duration back from now such as 24h (default: all the stream holds)")
	formatFlag := fs.String("format", "", "parquet or jsonl (default: by the extension of --out)")
	outPath := fs.String("out", "", "the file to write; written as <out>.tmp and renamed once complete (required)")
	quiet := fs.Bool("quiet", false, "no progress bar")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *model == "" || *outPath == "" {
		return errors.New("--model and --out are required")
	}
	format, err := exportFormat(*formatFlag, *outPath)
	if err != nil {
		return err
	}
	since, err := parseSince(*sinceFlag, time.Now())
	if err != nil {
		return err
	}
	cfg, err := gateway.LoadConfig(*configPath)
	if err != nil {
		return err
	}
	eng, err := openEngine(cfg.Cluster.Config, cfg.StateDir, "infergate capture export", slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	if eng == nil {
		return fmt.Errorf("config %s has neither state_dir nor cluster: there is no captured traffic to read", *configPath)
	}
	defer eng.close()
	x := &exporter{conn: eng.connection(), repo: cfg.Repository, model: *model, version: *version, since: since,
		features: make(map[string][]string)}

	rec, err := x.firstRecord(ctx)
	if err != nil {
		return err
	}
	features, err := x.featuresOf(ctx, rec.Version)
	if err != nil {
		return err
	}
	var bar *progressbar.ProgressBar
	if !*quiet {
		bar = progressbar.NewOptions64(-1, progressbar.OptionSetWriter(progress), progressbar.OptionSetDescription("exporting "+*model),
			progressbar.OptionShowIts(), progressbar.OptionSetItsString("rows"),
			progressbar.OptionSpinnerType(14), progressbar.OptionThrottle(100*time.Millisecond),
			// No spinner goroutine of the library's own: it reads the bar's
			// state unlocked while this one writes it (a data race); the
			// spinner turns at each update instead.
			progressbar.OptionSetSpinnerChangeInterval(0),
			progressbar.OptionOnCompletion(func() { fmt.Fprintln(progress) }))
	}
	var file *export.File
	defer func() {
		if file != nil {
			file.Abort() // after Commit it does nothing
		}
	}()
	versions := map[string]bool{}
	for ex, err := range capture.Examples(ctx, x.conn, capture.Query{Model: *model, Since: since, Unlabeled: true}) {
		if err != nil {
			return err
		}
		if *version != "" && ex.Version != *version {
			continue
		}
		if file == nil {
			layout, err := export.NewLayout(&rec, &ex, features)
			if err != nil {
				return fmt.Errorf("cannot export model %q: %w", *model, err)
			}
			if file, err = export.Create(*outPath, format, layout, export.Options{}); err != nil {
				return err
			}
		}
		if !versions[ex.Version] {
			if err := x.sameFeatures(ctx, rec.Version, features, ex.Version); err != nil {
				return err
			}
			versions[ex.Version] = true
		}
		if err := file.Write(&ex); err != nil {
			return err
		}
		if bar != nil && file.Rows()%256 == 0 {
			bar.Describe(fmt.Sprintf("exporting %s: %d rows", *model, file.Rows()))
			bar.Add(256)
		}
	}
	if file == nil {
		return x.noRows() // the rows read first went meanwhile (retention)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := file.Commit(); err != nil {
		return err
	}
	if bar != nil {
		bar.Describe(fmt.Sprintf("exported %s: %d rows", *model, file.Rows()))
		bar.Set64(file.Rows())
		bar.Finish()
	}
	size := int64(-1)
	if st, err := os.Stat(*outPath); err == nil {
		size = st.Size()
	}
	vs := slices.Sorted(func(yield func(string) bool) {
		for v := range versions {
			if !yield(v) {
				return
			}
		}
	})
	plural := ""
	if len(vs) > 1 {
		plural = "s"
	}
	_, err = fmt.Fprintf(out, "wrote %s: %d rows of model %s (version%s %s) captured %s, %d columns, %d bytes\n",
		*outPath, file.Rows(), *model, plural, strings.Join(vs, ", "), x.sinceText(), len(file.Layout().Columns()), size)
	return err
}

// exportFormat returns the format flag names, or the one out's extension
// implies.
func exportFormat(flagValue, out string) (export.Format, error) {
	if flagValue == "" {
		switch strings.ToLower(filepath.Ext(out)) {
		case ".parquet":
			return export.Parquet, nil
		case ".jsonl", ".ndjson":
			return export.JSONL, nil
		}
		return "", fmt.Errorf("cannot tell the format of %q: pass --format parquet or jsonl", out)
	}
	f, err := export.ParseFormat(flagValue)
	if err != nil {
		return "", fmt.Errorf("invalid --format: %w", err)
	}
	return f, nil
}

// parseSince reads --since: an RFC 3339 time, or a duration before now.
func parseSince(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("invalid --since %q: want an RFC 3339 time such as 2026-12-01T08:00:00Z, or a duration back from now such as 24h or 90m", s)
}

// exporter is what an export reads from the engine.
type exporter struct {
	conn           *engine.Conn
	repo           string
	model, version string
	since          time.Time
	// store is the model store, opened (not created) by the first
	// featuresOf that needs it; nil while the engine has none. features
	// caches the feature names of each version.
	store    *modelstore.Store
	features map[string][]string
}

// sinceText says which rows the export chose by time.
func (x *exporter) sinceText() string {
	if x.since.IsZero() {
		return "at any time"
	}
	return "since " + x.since.UTC().Format(time.RFC3339)
}

// firstRecord returns the first captured record of the export: the
// datatypes of its tensors type the columns. It fails, naming what is
// missing, when the model has no capture stream or no rows to export.
func (x *exporter) firstRecord(ctx context.Context) (capture.Record, error) {
	name := capture.StreamName(x.model)
	if _, err := x.conn.JS.Stream(ctx, name); errors.Is(err, jetstream.ErrStreamNotFound) {
		return capture.Record{}, fmt.Errorf("no captured traffic of model %q: the engine at %s has no stream %s (is models.%s.capture.sample above 0 in the gateway's config?)",
			x.model, x.conn.URL, name, x.model)
	} else if err != nil {
		return capture.Record{}, fmt.Errorf("cannot read captured traffic of model %q: %w", x.model, err)
	}
	for r, err := range capture.Records(ctx, x.conn, x.model, x.since) {
		if err != nil {
			return capture.Record{}, err
		}
		if x.version == "" || r.Version == x.version {
			return r, nil
		}
	}
	return capture.Record{}, x.noRows()
}

// noRows is the error of an export that found no rows.
func (x *exporter) noRows() error {
	if x.version != "" {
		return fmt.Errorf("no captured rows of version %s of model %q %s", x.version, x.model, x.sinceText())
	}
	return fmt.Errorf("no captured rows of model %q %s", x.model, x.sinceText())
}

// sameFeatures fails when version's reference names its features other
// than first's does (features): one file has one set of columns.
func (x *exporter) sameFeatures(ctx context.Context, first string, features []string, version string) error {
	if version == first {
		return nil
	}
	other, err := x.featuresOf(ctx, version)
	if err != nil {
		return err
	}
	if other != nil && !slices.Equal(other, features) {
		return fmt.Errorf("version %s of model %q names its features %q, version %s %q: export one version at a time (--version)",
			version, x.model, other, first, features)
	}
	return nil
}

// featuresOf returns the feature names of the reference profile of
// version: from the engine's model store, or, for a version the store
// does not hold, from the config's model repository; nil when the version
// has no reference.
func (x *exporter) featuresOf(ctx context.Context, version string) ([]string, error) {
	if names, ok := x.features[version]; ok {
		return names, nil
	}
	data, err := x.reference(ctx, version)
	if err != nil {
		return nil, err
	}
	var names []string
	if data != nil {
		var ref struct {
			Features []struct {
				Name string `json:"name"`
			} `json:"features"`
		}
		if err := json.Unmarshal(data, &ref); err != nil {
			return nil, fmt.Errorf("cannot read the reference of version %s of model %q: %w", version, x.model, err)
		}
		for _, f := range ref.Features {
			names = append(names, f.Name)
		}
	}
	x.features[version] = names
	return names, nil
}

// reference returns the reference.json of version, nil when it has none:
// from the engine's model store, which is only read (no bucket is
// created), or for a version the store does not hold from the config's
// repository.
func (x *exporter) reference(ctx context.Context, version string) ([]byte, error) {
	v, err := strconv.ParseInt(version, 10, 64)
	if err != nil || v <= 0 || modelstore.ValidModel(x.model) != nil {
		return nil, nil // no version of a repository
	}
	if x.store == nil {
		// No store (ErrNotFound) holds no version: the repository's.
		if x.store, err = modelstore.OpenExisting(ctx, x.conn); err != nil && !errors.Is(err, modelstore.ErrNotFound) {
			return nil, err
		}
	}
	if x.store != nil {
		// One file, digest checked, rather than the whole version (its
		// model may be large).
		data, err := x.store.ReadFile(ctx, x.model, v, drift.ReferenceFile)
		switch {
		case err == nil:
			return data, nil
		case errors.Is(err, fs.ErrNotExist):
			return nil, nil
		case !errors.Is(err, modelstore.ErrNotFound):
			return nil, fmt.Errorf("cannot read the reference of version %s of model %q from the model store: %w", version, x.model, err)
		}
	}
	data, err := os.ReadFile(filepath.Join(x.repo, x.model, version, drift.ReferenceFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cannot read the reference of version %s of model %q: %w", version, x.model, err)
	}
	return data, nil
}
