package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/infergate/infergate/retrain/table"
	"github.com/infergate/infergate/retrain/trainer"
)

// The batch scoring section's files and bounds.
const (
	scoreRows     = 1_000_000
	scoreRowsLong = 5_000_000
	scoreMaxRSS   = 256 << 20
	heavyFeatures = 256
)

// scoring measures `infergate score` as a user runs it, a process of its
// own: 1,000,000 rows of the demo model and of the heavy one against the
// compute ceiling that the job measures itself (the model's compute curve
// on the same sessions, whose fastest batch size it then scores at), and
// its peak RSS at 1,000,000 and 5,000,000 rows of the demo's.
func (s *suite) scoring(ctx context.Context) error {
	dir, err := os.MkdirTemp("", "infergate-score-")
	if err != nil {
		return fmt.Errorf("cannot create the scoring folder: %w", err)
	}
	defer os.RemoveAll(dir)
	// The demo model with its reference, the heavy one without.
	repo := filepath.Join(dir, "models")
	for dst, src := range map[string]string{
		"demo/1/model.onnx":     filepath.Join("configs", "models", "demo", "1", "model.onnx"),
		"demo/1/reference.json": filepath.Join("configs", "models", "demo", "1", "reference.json"),
		"heavy/1/model.onnx":    filepath.Join(s.repo, "heavy_off", "1", "model.onnx"),
	} {
		data, err := os.ReadFile(src)
		if err == nil {
			err = os.MkdirAll(filepath.Join(repo, filepath.Dir(dst)), 0o755)
		}
		if err == nil {
			err = os.WriteFile(filepath.Join(repo, dst), data, 0o644)
		}
		if err != nil {
			return fmt.Errorf("cannot write the scoring repository: %w", err)
		}
	}
	config := filepath.Join(dir, "score.yaml")
	features := make([]string, heavyFeatures)
	for i := range features {
		features[i] = fmt.Sprintf("f%d", i)
	}
	yaml := fmt.Sprintf("repository: %s\nmodels:\n  heavy:\n    inputs: [{name: input, features: [%s]}]\n",
		repo, strings.Join(features, ", "))
	if err := os.WriteFile(config, []byte(yaml), 0o644); err != nil {
		return fmt.Errorf("cannot write the scoring config: %w", err)
	}
	type job struct {
		name, model, in string
		carry           []string
		rows            int
		write           func(path string, rows int) error
	}
	demoTable := func(path string, rows int) error { return trainer.WriteSyntheticTable(path, rows, 1, false) }
	heavyTable := func(path string, rows int) error { return writeRandomTable(path, rows, features) }
	jobs := []job{
		{"demo, 1,000,000 rows", "demo", filepath.Join(dir, "demo-1m.parquet"), []string{"--carry", "id"}, scoreRows, demoTable},
		{"demo, 5,000,000 rows", "demo", filepath.Join(dir, "demo-5m.parquet"), []string{"--carry", "id"}, scoreRowsLong, demoTable},
		{"heavy, 1,000,000 rows", "heavy", filepath.Join(dir, "heavy-1m.parquet"), nil, scoreRows, heavyTable},
	}
	var b strings.Builder
	b.WriteString("| job | batch | compute ceiling (rows/s) | score (rows/s) | ratio | validation | scoring | peak RSS |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	var rss []int64
	for _, j := range jobs {
		if err := ctx.Err(); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "%-44s writing %s\n", "score: "+j.name, filepath.Base(j.in))
		if err := j.write(j.in, j.rows); err != nil {
			return err
		}
		rep, maxRSS, err := runScore(ctx, config, j.model, j.in, dir, j.carry...)
		os.Remove(j.in)
		if err != nil {
			return err
		}
		rss = append(rss, maxRSS)
		ratio := rep.RowsPerSec / rep.ComputeRowsPerSec
		fmt.Fprintf(os.Stderr, "%-44s %8.0f rows/s, %.2f x the compute ceiling, peak RSS %.0f MiB\n", "score: "+j.name, rep.RowsPerSec, ratio, float64(maxRSS)/(1<<20))
		fmt.Fprintf(&b, "| %s | %d | %.0f | %.0f | %.2f | %.2fs | %.2fs | %.0f MiB |\n", j.name, rep.BatchSize, rep.ComputeRowsPerSec,
			rep.RowsPerSec, ratio, rep.ValidateTime.Seconds(), rep.ScoreTime.Seconds(), float64(maxRSS)/(1<<20))
		if j.rows == scoreRows {
			s.ratio("score "+j.name+" vs its compute ceiling (rows/s, whole job)", rep.RowsPerSec, rep.ComputeRowsPerSec, 0.9)
		}
	}
	s.md.WriteString("## Batch scoring\n\n")
	fmt.Fprintf(&s.md, "`infergate score --config score.yaml --model M --in F.parquet --out scores.parquet --report r.json --quiet`, "+
		"a process of its own, on Parquet files of the demo's customers (an id and 8 FP32 features, judged against the "+
		"demo's reference: the validation pass) and of %d random FP32 features for the heavy model (no reference: one pass). "+
		"The job measures the model's compute curve at batch sizes %v on its own sessions (the model's instances, "+
		"the runtime's default threads) and scores at the fastest; the ratio is the whole job's rows/s (validation, "+
		"scoring and writing) over that batch size's compute rate. Peak RSS is the process's own, as it reads it from /proc/self/status (VmHWM) at the end.\n\n", heavyFeatures, scoreBatchSizes)
	s.md.WriteString(b.String() + "\n")
	s.add(check{scenario: "score peak RSS at 1,000,000 and 5,000,000 rows (demo)", target: fmt.Sprintf("≤ %d MiB, flat", scoreMaxRSS>>20),
		measured: fmt.Sprintf("%.0f and %.0f MiB", float64(rss[0])/(1<<20), float64(rss[1])/(1<<20)),
		met:      rss[0] <= scoreMaxRSS && rss[1] <= scoreMaxRSS && float64(rss[1]) <= 1.15*float64(rss[0])})
	return nil
}

// runScore runs `infergate score` on in with model (and args) and returns
// its report and its peak RSS in bytes.
func runScore(ctx context.Context, config, model, in, dir string, args ...string) (*scoreReport, int64, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, 0, err
	}
	out, report := filepath.Join(dir, "scores.parquet"), filepath.Join(dir, "report.json")
	defer os.Remove(out)
	defer os.Remove(out + ".drift.json")
	args = append([]string{"score", "--config", config, "--model", model, "--in", in, "--out", out, "--report", report, "--quiet"}, args...)
	cmd := exec.CommandContext(ctx, self, args...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, 0, fmt.Errorf("score %s: %w\n%s", filepath.Base(in), err, b)
	}
	data, err := os.ReadFile(report)
	if err != nil {
		return nil, 0, err
	}
	rep := &scoreReport{}
	if err := json.Unmarshal(data, rep); err != nil {
		return nil, 0, fmt.Errorf("cannot read the score report: %w", err)
	}
	return rep, rep.PeakRSS, nil
}

// writeRandomTable writes rows rows of standard normal FP32 values, one
// column per name, as Parquet.
func writeRandomTable(path string, rows int, names []string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("cannot write %s: %w", path, err)
	}
	defer f.Close()
	bw := bufio.NewWriterSize(f, 1<<20)
	cols := make([]table.Column, len(names))
	for i, n := range names {
		cols[i] = table.Column{Name: n, Kind: table.Float32}
	}
	w, err := table.NewWriter(bw, table.Parquet, cols, table.WriteOptions{CreatedBy: "infergate bench"})
	if err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(1, 2))
	row := make([]table.Value, len(names))
	for range rows {
		for i := range row {
			row[i] = table.Float32Value(float32(rng.NormFloat64()))
		}
		if err := w.WriteRow(row); err != nil {
			return err
		}
	}
	if err := w.Close(); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	return f.Close()
}
