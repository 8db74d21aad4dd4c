package batchjob

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/infergate/infergate/drift"
	"github.com/infergate/infergate/retrain/table"
	"github.com/infergate/infergate/runtime"
)

// Job is one file to score.
type Job struct {
	// Model and Version name the version that scores; Run is it, loaded.
	Model, Version string
	Run            *runtime.ModelVersion
	// Features name the columns of the model's input, in order.
	Features []string
	// Map names the file's column for a feature whose column is named
	// otherwise; Carry the columns copied to the output unchanged, in
	// order. Columns that are neither are an error unless AllowExtra.
	Map        map[string]string
	Carry      []string
	AllowExtra bool
	// Labels are the class labels of each output (nil where none), which
	// name its columns.
	Labels [][]string
	// Reference is the version's drift reference (nil: the file is not
	// judged), judged under Drift. FailOnDrift stops a drifted file before
	// it is scored.
	Reference   *drift.Reference
	Drift       drift.Config
	FailOnDrift bool
	// BatchSize is the rows per run of the model; with Fleet, the rows of
	// a chunk (0: as many as MaxChunkBytes hold).
	BatchSize int
	// Fleet, when set, scores the rows on the replicas of a fleet rather
	// than on Run's sessions.
	Fleet *Fleet
	// In and Out are the table files read and written, in the formats
	// their extensions name; Rejects, when set, receives the rows with a
	// null or NaN feature (else such a row fails the job).
	In, Out, Rejects string
	// GroupRows is the rows of a row group of a CSV or JSON-lines input
	// (default table.DefaultGroupRows): the unit of a checkpoint.
	GroupRows int
	// Log receives what the job says; Progress, when set, a progress bar.
	Log      io.Writer
	Progress io.Writer
}

// Report is what a job did.
type Report struct {
	Rows     int64 `json:"rows"`
	Scored   int64 `json:"scored"`
	Rejected int64 `json:"rejected"`
	// GroupsResumed counts the row groups a checkpoint held already, and
	// RowsResumed their rows.
	GroupsResumed int   `json:"groups_resumed"`
	RowsResumed   int64 `json:"rows_resumed"`
	// Validation is the drift report of the file (nil without reference).
	Validation *Validation `json:"validation,omitempty"`
	// BatchSize is the rows per model run: the job's, or on resuming the
	// checkpoint's.
	BatchSize int `json:"batch_size"`
	// Fleet is, for a job scored on a fleet, its id and who scored what.
	Fleet *FleetReport `json:"fleet,omitempty"`
	// ValidateTime and ScoreTime are how long each pass took.
	ValidateTime time.Duration `json:"validate_ns"`
	ScoreTime    time.Duration `json:"score_ns"`
}

// ErrDrifted is the error of a job whose file drifted from the reference
// with FailOnDrift set.
var ErrDrifted = errors.New("the file drifted from the version's reference")

// Run runs job: it checks the file's columns, judges its drift, scores it
// (resuming from a checkpoint of the same job) and writes the output, the
// rejects and the drift report (Out + ".drift.json").
func Run(ctx context.Context, job Job) (*Report, error) {
	if job.Log == nil {
		job.Log = io.Discard
	}
	if job.BatchSize < 0 || job.BatchSize == 0 && job.Fleet == nil {
		return nil, fmt.Errorf("cannot score: batch size %d, want at least 1", job.BatchSize)
	}
	for _, p := range []string{job.Out, job.Rejects} {
		if a, b := absPath(p), absPath(job.In); p != "" && a == b {
			return nil, fmt.Errorf("cannot score %q: it is also named as an output; write elsewhere", job.In)
		}
	}
	outFormat, err := table.FormatOf(job.Out)
	if err != nil {
		return nil, fmt.Errorf("cannot write the output: %w", err)
	}
	if job.Rejects != "" {
		if _, err := table.FormatOf(job.Rejects); err != nil {
			return nil, fmt.Errorf("cannot write the rejects: %w", err)
		}
	}
	r, err := table.Open(job.In, table.ReadOptions{GroupRows: job.GroupRows})
	if err != nil {
		return nil, err
	}
	defer r.Close()
	plan, err := newPlan(&job, r)
	if err != nil {
		return nil, err
	}
	if job.Fleet != nil {
		most := ChunkRows(plan.width*plan.input.DataType.Size(), plan.outputBytes())
		switch {
		case job.BatchSize == 0:
			job.BatchSize = most
		case job.BatchSize > most:
			return nil, fmt.Errorf("cannot score on the fleet in chunks of %d rows: a chunk holds at most %d rows of model %q (512 KiB of its input or outputs)", job.BatchSize, most, job.Model)
		}
	}
	cp, err := openCheckpoint(&job, plan)
	if err != nil {
		return nil, err
	}
	rep := &Report{}

	// Validation reads the whole file once, before anything is written:
	// text where a number belongs, a null without --rejects, an empty file
	// and drift all stop the job here. A resumed job has passed it.
	start := time.Now()
	if rep.Validation, err = cp.validation(); err != nil {
		return nil, err
	}
	resumed := rep.Validation != nil
	switch {
	case resumed:
		fmt.Fprintf(job.Log, "validation: passed before, by the run that started %s\n", cp.dir)
	case job.Reference == nil && job.Rejects == "" && r.Format() == table.Parquet:
		// Nothing to judge, and the file's schema has typed its columns and
		// counted its rows: scoring finds a null itself, and removes the
		// checkpoint when it does.
		rep.Validation = &Validation{File: job.In, Model: job.Model, Version: job.Version, Rows: r.Rows()}
		if rep.Validation.Rows == 0 {
			return nil, fmt.Errorf("cannot score %q: it holds no rows", job.In)
		}
	default:
		if rep.Validation, err = validate(ctx, &job, plan); err != nil {
			return nil, err
		}
	}
	rep.ValidateTime = time.Since(start)
	rep.Rows = rep.Validation.Rows
	if v := rep.Validation; v.Judged() {
		if !resumed {
			printValidation(job.Log, v)
			if err := writeJSON(job.Out+".drift.json", v); err != nil {
				return nil, err
			}
		}
		if v.FileDrifted && job.FailOnDrift {
			return rep, fmt.Errorf("cannot score %q (--fail-on-drift): %w: %s", job.In, ErrDrifted, v.Reasons[0])
		}
	}
	if !resumed {
		if err := cp.start(rep.Validation); err != nil {
			return nil, err
		}
	}

	start = time.Now()
	if err := score(ctx, &job, plan, cp, rep); err != nil {
		if errors.Is(err, errBadRow) { // the same arguments would fail again
			os.RemoveAll(cp.dir)
		}
		return rep, err
	}
	if err := cp.assemble(outFormat, plan); err != nil {
		return rep, err
	}
	rep.Rejected = rep.Validation.Nulls
	rep.Scored = rep.Rows - rep.Rejected
	rep.BatchSize = job.BatchSize
	rep.ScoreTime = time.Since(start)
	return rep, os.RemoveAll(cp.dir)
}

// absPath returns path made absolute and clean (as given when it cannot
// be).
func absPath(path string) string {
	if a, err := filepath.Abs(path); err == nil {
		return a
	}
	return path
}

// CheckpointBatchSize returns the batch size of the checkpoint of a job
// writing out, if one was started: a resumed job runs at it, whatever
// Job.BatchSize says, so a caller need not measure one.
func CheckpointBatchSize(out string) (int, bool) {
	data, err := os.ReadFile(filepath.Join(out+".checkpoint", identityFile))
	var id identity
	if err != nil || json.Unmarshal(data, &id) != nil || id.BatchSize <= 0 {
		return 0, false
	}
	return id.BatchSize, true
}
