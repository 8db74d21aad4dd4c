package pipeline

import (
	"cmp"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/infergate/infergate/drift"
	"github.com/infergate/infergate/retrain/capture"
	"github.com/infergate/infergate/retrain/modelstore"
	"github.com/infergate/infergate/retrain/trainer"
	"github.com/infergate/infergate/runtime"
)

// ErrNotEnoughData is returned (wrapped) by a run with fewer labeled
// captured rows than the model's min_rows.
var ErrNotEnoughData = errors.New("pipeline: not enough labeled data")

// spec is the shape of model the pipeline handles: one FP32 input [batch,
// features] and a first FP32 output [batch, classes] of class scores.
type spec struct {
	input, output string
	features      []string
	classes       int
}

func specOf(mv *runtime.ModelVersion) (spec, error) {
	ins, outs := mv.Inputs(), mv.Outputs()
	if len(ins) != 1 || ins[0].DataType != runtime.FP32 || len(ins[0].Shape) != 2 || ins[0].Shape[1] <= 0 ||
		(ins[0].Shape[0] != runtime.Dynamic && ins[0].Shape[0] != 1) {
		return spec{}, fmt.Errorf("the pipeline retrains models with one FP32 input [batch, features]; version %d has %v", mv.Version, ins)
	}
	if len(outs) == 0 || outs[0].DataType != runtime.FP32 || len(outs[0].Shape) != 2 || outs[0].Shape[1] < 2 {
		return spec{}, fmt.Errorf("the pipeline retrains classifiers whose first output is FP32 [batch, classes]; version %d has %v", mv.Version, outs)
	}
	sp := spec{input: ins[0].Name, output: outs[0].Name, features: mv.Features(), classes: int(outs[0].Shape[1])}
	if sp.features == nil {
		for i := range ins[0].Shape[1] {
			sp.features = append(sp.features, fmt.Sprintf("%s[%d]", sp.input, i))
		}
	}
	if len(sp.features) != int(ins[0].Shape[1]) {
		return spec{}, fmt.Errorf("version %d names %d features for %d columns", mv.Version, len(sp.features), ins[0].Shape[1])
	}
	return sp, nil
}

// table is labeled rows of features.
type table struct {
	X [][]float32
	Y []int
}

func (t *table) Len() int { return len(t.X) }

func (t *table) add(x []float32, y int) {
	t.X, t.Y = append(t.X, x), append(t.Y, y)
}

// slice returns rows [i, j) of t, sharing its rows.
func (t *table) slice(i, j int) table { return table{X: t.X[i:j:j], Y: t.Y[i:j:j]} }

func (t *table) shuffle(r *rand.Rand) {
	r.Shuffle(t.Len(), func(i, j int) {
		t.X[i], t.X[j] = t.X[j], t.X[i]
		t.Y[i], t.Y[j] = t.Y[j], t.Y[i]
	})
}

// splits are a run's data: the rows trained on, and the holdouts.
type splits struct {
	train, recentHoldout, trainingHoldout table
	recentTrain                           int   // rows of train that are recent
	recent                                table // every recent row: what the candidate will serve
}

// selectData loads the current version and splits the labeled captured
// rows since the drift began, and the training-time rows, into train and
// holdout sets; unless an earlier run left a version published and never
// canaried, which the run then canaries (see resume).
func (st *runState) selectData(ctx context.Context) error {
	model := st.run.Model
	if err := st.readRouting(ctx); err != nil {
		return err
	}
	if resumed, err := st.resume(ctx); resumed || err != nil {
		return err
	}
	models, err := st.s.modelStore(ctx)
	if err != nil {
		return err
	}
	version, err := newestVersion(ctx, models, model)
	if err != nil {
		return err
	}
	if version == 0 {
		return fmt.Errorf("cannot find a version of model %q in the model store %s (a gateway publishes the versions of its repository there when it starts)", model, modelstore.Bucket)
	}
	if st.fetched, err = os.MkdirTemp("", "infergate-retrain-base-"+model+"-"); err != nil {
		return fmt.Errorf("cannot fetch the current version: %w", err)
	}
	dir := filepath.Join(st.fetched, strconv.FormatInt(version, 10))
	if _, err := models.Fetch(ctx, model, version, dir); err != nil {
		return fmt.Errorf("cannot fetch the current version: %w", err)
	}
	if st.base, err = st.s.env.LoadModelVersion(dir, model, version, runtime.ModelConfig{Instances: 1}); err != nil {
		return fmt.Errorf("cannot load the current version: %w", err)
	}
	if st.spec, err = specOf(st.base); err != nil {
		return err
	}
	st.metrics.BaseVersion = st.base.VersionName
	st.logf("current version %d: %d features, %d classes", version, len(st.spec.features), st.spec.classes)

	since, sinceText := st.run.Since, "the first capture"
	if !since.IsZero() {
		sinceText = since.Format(time.RFC3339)
	}
	recent, byReplica, err := st.recentRows(ctx, since, sinceText)
	if err != nil {
		return err
	}
	st.metrics.RecentRows, st.metrics.RecentRowsByReplica = recent.Len(), byReplica
	if recent.Len() < st.cfg.MinRows {
		return fmt.Errorf("%w: %d labeled captured rows since %s after waiting %s (label_wait), min_rows is %d",
			ErrNotEnoughData, recent.Len(), sinceText, st.cfg.LabelWait, st.cfg.MinRows)
	}
	training, skipped, err := readTraining(st.cfg.TrainingData, st.cfg.Label, st.spec)
	if err != nil {
		return err
	}
	st.logf("read %d training-time rows from %s (%d left out)", training.Len(), st.cfg.TrainingData, skipped)
	if training.Len() < 2 {
		return fmt.Errorf("training_data %s has %d usable rows, want at least 2", st.cfg.TrainingData, training.Len())
	}

	rng := rand.New(rand.NewPCG(st.cfg.Seed, 0x5eed))
	recent.shuffle(rng)
	training.shuffle(rng)
	share := st.cfg.HoldoutShare
	nr := max(1, int(math.Round(share*float64(recent.Len()))))
	nt := max(1, int(math.Round(share*float64(training.Len()))))
	d := splits{recentHoldout: recent.slice(0, nr), trainingHoldout: training.slice(0, nt), recentTrain: recent.Len() - nr, recent: recent}
	ts := st.cfg.TrainingShare
	mix := min(training.Len()-nt, int(math.Round(float64(d.recentTrain)*ts/(1-ts))))
	d.train = table{X: slices.Concat(recent.X[nr:], training.X[nt:nt+mix]), Y: slices.Concat(recent.Y[nr:], training.Y[nt:nt+mix])}
	d.train.shuffle(rng)
	st.data = d
	st.metrics.TrainRows, st.metrics.RecentHoldoutRows, st.metrics.TrainingHoldoutRows = d.train.Len(), nr, nt
	st.logf("training on %d rows (%d recent, %d training-time); holding out %d recent and %d training-time rows",
		d.train.Len(), d.recentTrain, mix, nr, nt)
	return ctx.Err()
}

// labelPoll is how often a run waiting for labeled rows reads them again.
const labelPoll = time.Second

// recentRows reads the labeled captured rows since since, waiting up to
// label_wait for min_rows of them, and counts them by the gateway replica
// that captured them.
func (st *runState) recentRows(ctx context.Context, since time.Time, sinceText string) (table, map[string]int, error) {
	deadline := time.Now().Add(st.cfg.LabelWait)
	var logged time.Time
	for {
		examples, err := capture.ReadLabeled(ctx, st.s.conn, st.run.Model, since)
		if err != nil && (ctx.Err() != nil || !time.Now().Before(deadline)) {
			return table{}, nil, err
		}
		if err != nil && time.Since(logged) >= 30*time.Second {
			// The engine electing a stream's leader, a connection lost
			// and back: read again at the next poll.
			st.logf("cannot read the captured rows now, trying again until %s: %v", deadline.Format(time.TimeOnly), err)
			logged = time.Now()
		}
		var recent table
		byReplica := map[string]int{}
		skipped := 0
		for _, ex := range examples {
			if x, y, ok := st.spec.row(ex.Inputs[st.spec.input], ex.Label); ok {
				recent.add(x, y)
				byReplica[cmp.Or(ex.Replica, "unnamed")]++
			} else {
				skipped++
			}
		}
		if err == nil && recent.Len() >= st.cfg.MinRows || !time.Now().Before(deadline) {
			st.logf("read %d labeled captured rows since %s from replicas %s (%d left out: not %d finite features with a class index below %d as label)",
				recent.Len(), sinceText, replicaCounts(byReplica), skipped, len(st.spec.features), st.spec.classes)
			return recent, byReplica, nil
		}
		if time.Since(logged) >= 30*time.Second {
			st.logf("waiting for labeled captured rows: %d since %s, min_rows is %d; waiting up to %s", recent.Len(), sinceText, st.cfg.MinRows, time.Until(deadline).Round(time.Second))
			logged = time.Now()
		}
		select {
		case <-ctx.Done():
			return table{}, nil, ctx.Err()
		case <-time.After(min(labelPoll, time.Until(deadline))):
		}
	}
}

// row converts a captured input row and its label; ok is false when the
// row does not have one finite value per feature or the label is not a
// class index.
func (sp spec) row(values []float64, label json.RawMessage) (x []float32, y int, ok bool) {
	if len(values) != len(sp.features) {
		return nil, 0, false
	}
	x = make([]float32, len(values))
	for i, v := range values {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, 0, false
		}
		x[i] = float32(v)
	}
	var v any
	if json.Unmarshal(label, &v) != nil {
		return nil, 0, false
	}
	var f float64
	switch v := v.(type) {
	case float64:
		f = v
	case bool:
		if v {
			f = 1
		}
	case string:
		var err error
		if f, err = strconv.ParseFloat(strings.TrimSpace(v), 64); err != nil {
			return nil, 0, false
		}
	default:
		return nil, 0, false
	}
	return x, int(f), f == math.Trunc(f) && f >= 0 && f < float64(sp.classes)
}

// readTraining reads the training-time rows: the model's features and the
// label column of the file at path, or BuiltinDemo's rows. It returns the
// number of rows left out.
func readTraining(path, label string, sp spec) (table, int, error) {
	var t table
	skipped := 0
	if path == BuiltinDemo {
		d := trainer.Synthetic(1, 4000)
		index := make([]int, len(sp.features))
		for i, name := range sp.features {
			if index[i] = slices.Index(d.Features, name); index[i] < 0 {
				return t, 0, fmt.Errorf("cannot read %s: it has no feature %q (it has %s)", BuiltinDemo, name, strings.Join(d.Features, ", "))
			}
		}
		for r, row := range d.X {
			x := make([]float32, len(index))
			for i, j := range index {
				x[i] = row[j]
			}
			if d.Y[r] < sp.classes {
				t.add(x, d.Y[r])
			} else {
				skipped++
			}
		}
		return t, skipped, nil
	}
	format := "csv"
	if ext := strings.ToLower(filepath.Ext(path)); ext == ".jsonl" || ext == ".ndjson" {
		format = "jsonl"
	}
	f, err := os.Open(path)
	if err != nil {
		return t, 0, fmt.Errorf("cannot open training_data: %w", err)
	}
	defer f.Close()
	columns, err := drift.ReadTable(f, format, append(slices.Clone(sp.features), label))
	if err != nil {
		return t, 0, fmt.Errorf("cannot read training_data %q: %w", path, err)
	}
	labels := columns[len(sp.features)]
	values := make([]float64, len(sp.features))
	for r, y := range labels {
		for i := range values {
			values[i] = columns[i][r]
		}
		x, class, ok := sp.row(values, strconv.AppendFloat(nil, y, 'g', -1, 64))
		if !ok {
			skipped++
			continue
		}
		t.add(x, class)
	}
	return t, skipped, nil
}

// writeCSV writes rows of tables to path with a header of the features and
// the label column.
func writeCSV(path string, features []string, label string, tables ...table) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("cannot create training data file: %w", err)
	}
	w := csv.NewWriter(f)
	w.Write(append(slices.Clone(features), label))
	record := make([]string, len(features)+1)
	for _, t := range tables {
		for r, x := range t.X {
			for i, v := range x {
				record[i] = strconv.FormatFloat(float64(v), 'g', -1, 32)
			}
			record[len(features)] = strconv.Itoa(t.Y[r])
			w.Write(record)
		}
	}
	w.Flush()
	if err := errors.Join(w.Error(), f.Close()); err != nil {
		return fmt.Errorf("cannot write training data file %q: %w", path, err)
	}
	return nil
}

// replicaCounts writes rows by replica as "r1=310 r2=298", sorted by name.
func replicaCounts(byReplica map[string]int) string {
	var parts []string
	for _, name := range slices.Sorted(maps.Keys(byReplica)) {
		parts = append(parts, fmt.Sprintf("%s=%d", name, byReplica[name]))
	}
	if len(parts) == 0 {
		return "(none)"
	}
	return strings.Join(parts, " ")
}
