package pipeline

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/infergate/infergate/retrain/trainer"
)

// train trains the candidate into st.work/output/model.onnx, with the
// built-in trainer or the configured command.
func (st *runState) train(ctx context.Context) error {
	var err error
	if st.work, err = os.MkdirTemp("", "infergate-retrain-"+st.run.Model+"-"); err != nil {
		return fmt.Errorf("cannot create a work folder: %w", err)
	}
	out := filepath.Join(st.work, "output")
	if err := os.Mkdir(out, 0o755); err != nil {
		return fmt.Errorf("cannot create a work folder: %w", err)
	}
	st.candidate = filepath.Join(out, "model.onnx")
	if b := st.cfg.Train.Builtin; b != nil {
		return st.trainBuiltin(ctx, *b)
	}
	return st.trainCommand(ctx, out)
}

// trainBuiltin fits trainer's MLP. It cannot be interrupted, but takes
// seconds at most on the data sizes of a run.
func (st *runState) trainBuiltin(ctx context.Context, b BuiltinConfig) error {
	d := trainer.Dataset{Features: st.spec.features, X: st.data.train.X, Y: st.data.train.Y, Classes: st.spec.classes}
	o := trainer.Options{Hidden: b.Hidden, Epochs: b.Epochs, LearningRate: b.LearningRate, BatchSize: b.BatchSize, Seed: st.cfg.Seed, L2: b.L2}
	start := time.Now()
	var bar *progressbar.ProgressBar
	if w := st.s.progress; w != nil {
		bar = progressbar.NewOptions(cmp.Or(b.Epochs, 30), progressbar.OptionSetWriter(w), progressbar.OptionSetWidth(30),
			progressbar.OptionSetDescription(fmt.Sprintf("training %s: MLP %v on %d rows, epoch", st.run.Model, b.Hidden, d.Len())),
			progressbar.OptionShowCount(), progressbar.OptionClearOnFinish())
		o.Progress = func(done, _ int) { bar.Set(done) }
	}
	m, acc, err := trainer.TrainMLP(d, o)
	if bar != nil {
		bar.Finish()
	}
	if err != nil {
		return err
	}
	m.InputName, m.OutputName = st.spec.input, st.spec.output
	onnx, err := m.Marshal()
	if err != nil {
		return err
	}
	if err := os.WriteFile(st.candidate, onnx, 0o644); err != nil {
		return fmt.Errorf("cannot write the candidate: %w", err)
	}
	st.logf("trained an MLP with hidden layers %v on %d rows in %s: accuracy %.4f on them", b.Hidden, d.Len(), time.Since(start).Round(time.Millisecond), acc)
	return ctx.Err()
}

// trainCommand runs the configured command with the data in
// INFERGATE_DATA_DIR and expects model.onnx in out, INFERGATE_OUTPUT_DIR.
func (st *runState) trainCommand(ctx context.Context, out string) error {
	dataDir := filepath.Join(st.work, "data")
	if err := os.Mkdir(dataDir, 0o755); err != nil {
		return fmt.Errorf("cannot create a work folder: %w", err)
	}
	sp, d := st.spec, st.data
	if err := writeCSV(filepath.Join(dataDir, "train.csv"), sp.features, st.cfg.Label, d.train); err != nil {
		return err
	}
	if err := writeCSV(filepath.Join(dataDir, "holdout.csv"), sp.features, st.cfg.Label, d.recentHoldout, d.trainingHoldout); err != nil {
		return err
	}
	argv, timeout := st.cfg.Train.Command, st.cfg.Train.Timeout
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = st.s.cfg.baseDir
	cmd.Env = append(os.Environ(),
		"INFERGATE_DATA_DIR="+dataDir, "INFERGATE_OUTPUT_DIR="+out, "INFERGATE_MODEL="+st.run.Model,
		"INFERGATE_FEATURES="+strings.Join(sp.features, ","), "INFERGATE_LABEL="+st.cfg.Label,
		"INFERGATE_SEED="+strconv.FormatUint(st.cfg.Seed, 10))
	killGroup(cmd)
	cmd.WaitDelay = 5 * time.Second // for children that keep the output open
	lw := &lineWriter{st: st}
	cmd.Stdout, cmd.Stderr = lw, lw
	st.logf("running %q with %d training rows in %s", argv, d.train.Len(), dataDir)
	start := time.Now()
	stop := st.spinner(fmt.Sprintf("training %s: %s", st.run.Model, filepath.Base(argv[0])))
	err := cmd.Run()
	stop()
	lw.flush()
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return fmt.Errorf("the training command ran out of its %s timeout", timeout)
	case err != nil:
		return fmt.Errorf("the training command failed: %w", err)
	}
	if _, err := os.Stat(st.candidate); err != nil {
		return fmt.Errorf("the training command wrote no model.onnx into INFERGATE_OUTPUT_DIR: %w", err)
	}
	st.logf("the training command finished in %s", time.Since(start).Round(time.Millisecond))
	return nil
}
