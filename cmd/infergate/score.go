package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/infergate/infergate/bench"
	"github.com/infergate/infergate/drift"
	"github.com/infergate/infergate/gateway"
	"github.com/infergate/infergate/gateway/batchjob"
	"github.com/infergate/infergate/retrain/engine"
	"github.com/infergate/infergate/retrain/modelstore"
	"github.com/infergate/infergate/runtime"
)

// scoreMemoryLimit is the Go heap's soft limit in a scoring job.
const scoreMemoryLimit = 96 << 20

// scoreBatchSizes are the batch sizes whose compute rate picks a job's
// batch size when --batch is not given.
var scoreBatchSizes = []int{16, 32, 64, 128, 256, 512, 1024}

// scoreCmd scores a table file with a model version: `infergate score`.
func scoreCmd(args []string) error {
	flags := flag.NewFlagSet("score", flag.ContinueOnError)
	configPath := flags.String("config", "configs/demo.yaml", "the gateway config: its repository, the model's settings, runtime and drift")
	model := flags.String("model", "", "the model to score with")
	versionFlag := flags.String("version", "", "the version (default: the newest the model's version policy serves)")
	in := flags.String("in", "", "the table to score: .parquet, .csv (with a header row) or .jsonl")
	out := flags.String("out", "", "the output table: .parquet, .csv or .jsonl")
	rejects := flags.String("rejects", "", "write rows with a null or NaN feature here, with the reason, and score the rest (default: such a row fails the job)")
	carry := flags.String("carry", "", "comma-separated columns copied to the output unchanged (an id, say)")
	allowExtra := flags.Bool("allow-extra", false, "leave out columns that are neither features nor carried (default: an error)")
	failOnDrift := flags.Bool("fail-on-drift", false, "stop before scoring when the file drifted from the version's reference")
	batch := flags.Int("batch", 0, "rows per model run (default: the fastest of the model's compute curve, measured first)")
	quiet := flags.Bool("quiet", false, "no progress bars")
	reportPath := flags.String("report", "", "also write what the job did as JSON here (rows, timings, rows/s, the batch size and its compute rate)")
	fleet := flags.Bool("fleet", false, "score on the fleet: publish the rows in chunks for the replicas with cluster.batch_jobs (reached through the config's cluster section) and assemble their outputs")
	maps := map[string]string{}
	flags.Func("map", "feature=column: read a feature from a column of another name (repeatable)", func(s string) error {
		f, c, ok := strings.Cut(s, "=")
		if !ok || f == "" || c == "" {
			return fmt.Errorf("want feature=column, got %q", s)
		}
		maps[f] = c
		return nil
	})
	if err := flags.Parse(args); err != nil {
		return err
	}
	if *model == "" || *in == "" || *out == "" {
		return errors.New("--model, --in and --out are required")
	}
	// A job's live memory is a few chunks and row groups, whatever the
	// file's size; a soft limit keeps the garbage collector from letting
	// the heap double past it between cycles (GOMEMLIMIT overrides).
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(scoreMemoryLimit)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var progress io.Writer = os.Stderr
	if *quiet {
		progress = nil
	}

	cfg, err := gateway.LoadConfig(*configPath)
	if err != nil {
		return err
	}
	mc := cfg.Model(*model)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	var conn *engine.Conn
	if *fleet {
		if conn, err = engine.Connect(cfg.Cluster.Config, cfg.StateDir, "score", log); err != nil {
			return fmt.Errorf("cannot score on the fleet: %w", err)
		}
		defer conn.Close()
	}
	version, dir, err := scoreVersion(cfg.Repository, *model, *versionFlag, mc, log)
	if err != nil && conn != nil {
		// The fleet's model store holds what its replicas serve.
		var fetched string
		version, fetched, dir, err = fetchScoreVersion(ctx, conn, *model, *versionFlag, mc, err)
		if fetched != "" {
			defer os.RemoveAll(fetched)
		}
	}
	if err != nil {
		return err
	}
	env, err := runtime.NewEnvironment(cfg.Runtime, log)
	if err != nil {
		return err
	}
	defer env.Close()
	v, _ := strconv.ParseInt(version, 10, 64)
	mv, err := env.LoadModelVersion(dir, *model, v, mc.ModelConfig)
	if err != nil {
		return err
	}
	defer mv.Close()
	job := batchjob.Job{
		Model: *model, Version: version, Run: mv, Features: mv.Features(), Map: maps, AllowExtra: *allowExtra,
		Drift: mc.Drift, FailOnDrift: *failOnDrift, BatchSize: *batch, In: *in, Out: *out, Rejects: *rejects,
		Log: os.Stderr, Progress: progress,
	}
	if *carry != "" {
		job.Carry = strings.Split(*carry, ",")
	}
	if job.Labels, err = gateway.LoadLabels(dir, mv.Outputs()); err != nil {
		return err
	}
	if !mc.Drift.Disabled {
		ref, err := drift.LoadReference(filepath.Join(dir, drift.ReferenceFile))
		switch {
		case errors.Is(err, fs.ErrNotExist):
			fmt.Fprintf(os.Stderr, "version %s of %s has no %s: the file's drift is not judged\n", version, *model, drift.ReferenceFile)
		case err != nil:
			return err
		default:
			job.Reference = ref
		}
	}
	var computeRate float64
	if n, ok := batchjob.CheckpointBatchSize(*out); ok && job.BatchSize == 0 {
		job.BatchSize = n // resuming: the first run's
	}
	if conn != nil {
		job.Fleet = &batchjob.Fleet{Conn: conn}
		fmt.Fprintf(os.Stderr, "scoring %s on the fleet at %s with version %s of %s\n", *in, conn.URL, version, *model)
	} else if job.BatchSize == 0 {
		if job.BatchSize, computeRate, err = fastestBatch(ctx, mv, progress); err != nil {
			return err
		}
	}
	if job.Fleet == nil {
		fmt.Fprintf(os.Stderr, "scoring %s with version %s of %s (%s provider, %d instances, batches of %d rows)\n",
			*in, version, *model, env.Provider(), mv.Instances(), job.BatchSize)
	}
	start := time.Now()
	rep, err := batchjob.Run(ctx, job)
	if err != nil {
		return err
	}
	took := time.Since(start)
	fmt.Fprintf(os.Stderr, "scored %d rows of %d (%d rejected", rep.Scored, rep.Rows, rep.Rejected)
	if rep.GroupsResumed > 0 {
		fmt.Fprintf(os.Stderr, ", %d rows in %d row groups resumed from the checkpoint", rep.RowsResumed, rep.GroupsResumed)
	}
	fmt.Fprintf(os.Stderr, ") in %s: validation %s, scoring %s (%.0f rows/s)\n", took.Round(time.Millisecond),
		rep.ValidateTime.Round(time.Millisecond), rep.ScoreTime.Round(time.Millisecond),
		float64(rep.Rows-rep.RowsResumed)/max(rep.ScoreTime.Seconds(), 1e-9))
	if f := rep.Fleet; f != nil {
		fmt.Fprintf(os.Stderr, "fleet job %s: %d chunks scored by %s; %d delivered again after their replica died or handed them back\n",
			f.Job, f.Chunks, formatScoredBy(f.ScoredBy), f.Redelivered)
	}
	fmt.Fprintf(os.Stderr, "wrote %s", *out)
	if rep.Validation.Judged() {
		fmt.Fprintf(os.Stderr, ", its drift report %s.drift.json", *out)
	}
	if *rejects != "" {
		fmt.Fprintf(os.Stderr, ", the rejects %s", *rejects)
	}
	fmt.Fprintln(os.Stderr)
	if *reportPath != "" {
		return writeScoreReport(*reportPath, scoreReport{Report: rep, ComputeRowsPerSec: computeRate, PeakRSS: peakRSS(),
			Seconds: took.Seconds(), RowsPerSec: float64(rep.Rows-rep.RowsResumed) / took.Seconds()})
	}
	return nil
}

// formatScoredBy lists the chunks each replica scored, by name.
func formatScoredBy(by map[string]int) string {
	var parts []string
	for _, name := range slices.Sorted(maps.Keys(by)) {
		parts = append(parts, fmt.Sprintf("%s %d", cmp.Or(name, "(unnamed)"), by[name]))
	}
	return strings.Join(parts, ", ")
}

// scoreReport is what --report writes: the job's report, how fast the
// whole job went (validation included), and the compute rate of the
// batch size it ran at when the compute curve chose it.
type scoreReport struct {
	*batchjob.Report
	ComputeRowsPerSec float64 `json:"compute_rows_per_s,omitempty"`
	Seconds           float64 `json:"seconds"`
	RowsPerSec        float64 `json:"rows_per_s"`
	// PeakRSS is the process's peak resident memory in bytes (0 where
	// /proc does not say).
	PeakRSS int64 `json:"peak_rss_bytes,omitempty"`
}

// peakRSS returns this process's peak resident set size in bytes, as
// /proc/self/status says (VmHWM): that of its own image. A parent's
// getrusage of it would also count the pages of the process that started
// it, which the child shares until it executes.
func peakRSS() int64 {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(status)) {
		if kb, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(kb), "kB")), 10, 64)
			return n << 10
		}
	}
	return 0
}

func writeScoreReport(path string, r scoreReport) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err == nil {
		err = os.WriteFile(path, append(data, '\n'), 0o644)
	}
	if err != nil {
		return fmt.Errorf("cannot write the report: %w", err)
	}
	return nil
}

// scoreVersion returns the version that scores and its folder: the one
// named, else the newest of those the model's version policy serves.
func scoreVersion(repo, model, named string, mc gateway.ModelConfig, log *slog.Logger) (string, string, error) {
	available, err := runtime.ScanRepository(repo, log)
	if err != nil {
		return "", "", err
	}
	versions := available[model]
	if len(versions) == 0 {
		return "", "", fmt.Errorf("cannot score: the repository %s has no version of model %q", repo, model)
	}
	if named != "" {
		v, err := strconv.ParseInt(named, 10, 64)
		if err != nil || !slices.Contains(versions, v) {
			return "", "", fmt.Errorf("cannot score: the repository %s has no version %q of model %q (it has %v)", repo, named, model, versions)
		}
		return named, filepath.Join(repo, model, named), nil
	}
	served := mc.VersionPolicy.Select(versions)
	if len(served) == 0 {
		return "", "", fmt.Errorf("cannot score: the version policy of model %q serves none of its versions %v", model, versions)
	}
	v := strconv.FormatInt(slices.Max(served), 10)
	return v, filepath.Join(repo, model, v), nil
}

// fetchScoreVersion fetches from the fleet's model store the version that
// scores, when the local repository has none (local, why): the one named,
// else the newest of the store's that the model's version policy serves.
// It returns the version, the temporary folder to remove once done, and
// the version's folder in it.
func fetchScoreVersion(ctx context.Context, conn *engine.Conn, model, named string, mc gateway.ModelConfig, local error) (string, string, string, error) {
	fail := func(err error) (string, string, string, error) {
		return "", "", "", fmt.Errorf("%w; nor from the fleet's model store: %w", local, err)
	}
	store, err := modelstore.OpenExisting(ctx, conn)
	if err != nil {
		return fail(err)
	}
	versions, err := store.Versions(ctx, model)
	if err != nil {
		return fail(err)
	}
	var v int64
	if named != "" {
		if v, err = strconv.ParseInt(named, 10, 64); err != nil || !slices.Contains(versions, v) {
			return fail(fmt.Errorf("it has no version %q of model %q (it has %v)", named, model, versions))
		}
	} else if served := mc.VersionPolicy.Select(versions); len(served) > 0 {
		v = slices.Max(served)
	} else {
		return fail(fmt.Errorf("the version policy of model %q serves none of its versions %v", model, versions))
	}
	tmp, err := os.MkdirTemp("", "infergate-score-")
	if err != nil {
		return fail(err)
	}
	version := strconv.FormatInt(v, 10)
	dir := filepath.Join(tmp, model, version)
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		os.RemoveAll(tmp)
		return fail(err)
	}
	if _, err := store.Fetch(ctx, model, v, dir); err != nil {
		os.RemoveAll(tmp)
		return fail(err)
	}
	fmt.Fprintf(os.Stderr, "version %s of %s fetched from the fleet's model store: the local repository has none\n", version, model)
	return version, tmp, dir, nil
}

// fastestBatch measures the model's compute curve and returns the batch
// size of its most rows per second, and that rate.
func fastestBatch(ctx context.Context, mv *runtime.ModelVersion, progress io.Writer) (int, float64, error) {
	res, err := bench.MeasureCompute(ctx, mv, bench.ComputeOptions{BatchSizes: scoreBatchSizes, Duration: 300 * time.Millisecond, Progress: progress})
	if err != nil {
		return 0, 0, err
	}
	fmt.Fprintf(os.Stderr, "compute curve: batches of %d rows are the fastest (%.0f rows/s)\n", res.Best.Batch, res.Best.RowsPerSec)
	return res.Best.Batch, res.Best.RowsPerSec, nil
}
