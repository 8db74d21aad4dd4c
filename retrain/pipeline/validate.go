package pipeline

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/infergate/infergate/drift"
	"github.com/infergate/infergate/retrain/modelstore"
	"github.com/infergate/infergate/runtime"
)

// validate loads the candidate in ONNX Runtime and holds it to the bars:
// the current version's inputs and outputs, better accuracy on the recent
// holdout, little regression on the training-time one, and the latency
// budget. The metrics are kept whether it passes or not.
func (st *runState) validate(ctx context.Context) error {
	var err error
	if st.cand, err = st.s.env.LoadModelVersion(filepath.Dir(st.candidate), st.run.Model, st.base.Version+1, runtime.ModelConfig{Instances: 1}); err != nil {
		return fmt.Errorf("the candidate does not load in ONNX Runtime: %w", err)
	}
	if err := sameTensors("input", st.base.Inputs(), st.cand.Inputs()); err != nil {
		return err
	}
	if err := sameTensors("output", st.base.Outputs(), st.cand.Outputs()); err != nil {
		return err
	}
	m, v, base := &st.metrics, st.cfg.Validate, st.base.VersionName
	accuracies := []struct {
		of   *runtime.ModelVersion
		rows table
		dst  *float64
	}{
		{st.cand, st.data.recentHoldout, &m.RecentAccuracy}, {st.base, st.data.recentHoldout, &m.BaseRecentAccuracy},
		{st.cand, st.data.trainingHoldout, &m.HoldoutAccuracy}, {st.base, st.data.trainingHoldout, &m.BaseHoldoutAccuracy},
	}
	for _, a := range accuracies {
		if *a.dst, err = accuracy(ctx, a.of, a.rows); err != nil {
			return err
		}
	}
	st.logf("accuracy on %d recent rows: candidate %.4f, version %s %.4f", m.RecentHoldoutRows, m.RecentAccuracy, base, m.BaseRecentAccuracy)
	st.logf("accuracy on %d training-time rows: candidate %.4f, version %s %.4f", m.TrainingHoldoutRows, m.HoldoutAccuracy, base, m.BaseHoldoutAccuracy)
	p50, p99, err := latency(ctx, st.cand, st.data.recentHoldout.X, v.BenchmarkRuns)
	if err != nil {
		return err
	}
	m.LatencyP50, m.LatencyP99 = Duration(p50), Duration(p99)
	st.logf("latency of %d single-row runs: p50 %s, p99 %s", v.BenchmarkRuns, p50, p99)

	switch {
	case !(m.RecentAccuracy-m.BaseRecentAccuracy > v.MinImprovement):
		return fmt.Errorf("the candidate's accuracy on the recent holdout, %.4f, does not beat version %s's, %.4f, by more than min_improvement %g",
			m.RecentAccuracy, base, m.BaseRecentAccuracy, v.MinImprovement)
	case m.BaseHoldoutAccuracy-m.HoldoutAccuracy > v.MaxRegression:
		return fmt.Errorf("the candidate's accuracy on the training-time holdout, %.4f, is below version %s's, %.4f, by more than max_regression %g",
			m.HoldoutAccuracy, base, m.BaseHoldoutAccuracy, v.MaxRegression)
	case p99 > v.MaxLatencyP99:
		return fmt.Errorf("the candidate's p99 latency of a single-row run, %s, exceeds max_latency_p99 %s", p99, v.MaxLatencyP99)
	}
	st.logf("the candidate passes")
	return nil
}

// sameTensors reports the first difference of the candidate's inputs or
// outputs (kind says which) from the current version's.
func sameTensors(kind string, base, cand []runtime.TensorInfo) error {
	if len(base) != len(cand) {
		return fmt.Errorf("the candidate has %d %ss, the current version %d: %v against %v", len(cand), kind, len(base), cand, base)
	}
	for i, b := range base {
		if c := cand[i]; c.Name != b.Name || c.DataType != b.DataType || !slices.Equal(c.Shape, b.Shape) {
			return fmt.Errorf("the candidate's %s %d is %s, the current version's %s", kind, i, c, b)
		}
	}
	return nil
}

// predictBatch is the rows per run when scoring.
const predictBatch = 256

// predict runs mv's first output over rows and calls fn with each row's
// outputs.
func predict(ctx context.Context, mv *runtime.ModelVersion, rows [][]float32, fn func(row int, out []float32)) error {
	batch := predictBatch
	if mv.Inputs()[0].Shape[0] == 1 {
		batch = 1
	}
	outs := make([]runtime.Tensor, len(mv.Outputs()))
	var x []float32
	for start := 0; start < len(rows); start += batch {
		n := min(batch, len(rows)-start)
		x = x[:0]
		for _, row := range rows[start : start+n] {
			x = append(x, row...)
		}
		in := runtime.Tensor{DataType: runtime.FP32, Shape: []int64{int64(n), int64(len(rows[0]))}, Data: float32Bytes(x)}
		if err := mv.Run(ctx, []runtime.Tensor{in}, outs); err != nil {
			return fmt.Errorf("cannot run version %s: %w", mv.VersionName, err)
		}
		y := bytesFloat32(outs[0].Data)
		width := len(y) / n
		for r := range n {
			fn(start+r, y[r*width:(r+1)*width])
		}
	}
	return nil
}

// accuracy returns the share of t's rows whose largest output of mv is at
// the row's label.
func accuracy(ctx context.Context, mv *runtime.ModelVersion, t table) (float64, error) {
	correct := 0
	err := predict(ctx, mv, t.X, func(row int, out []float32) {
		best := 0
		for i, v := range out {
			if v > out[best] {
				best = i
			}
		}
		if best == t.Y[row] {
			correct++
		}
	})
	return float64(correct) / float64(max(t.Len(), 1)), err
}

// latency times runs single-row runs of mv on rows, after a few untimed
// ones, and returns the median and the 99th percentile.
func latency(ctx context.Context, mv *runtime.ModelVersion, rows [][]float32, runs int) (p50, p99 time.Duration, err error) {
	times := make([]time.Duration, 0, runs)
	for i := range runs + 10 {
		row := rows[i%len(rows)]
		in := runtime.Tensor{DataType: runtime.FP32, Shape: []int64{1, int64(len(row))}, Data: float32Bytes(row)}
		outs := make([]runtime.Tensor, len(mv.Outputs()))
		start := time.Now()
		if err := mv.Run(ctx, []runtime.Tensor{in}, outs); err != nil {
			return 0, 0, fmt.Errorf("cannot run the candidate: %w", err)
		}
		if i >= 10 {
			times = append(times, time.Since(start))
		}
	}
	slices.Sort(times)
	at := func(q float64) time.Duration { return times[int(math.Ceil(q*float64(len(times))))-1] }
	return at(0.5), at(0.99), nil
}

func float32Bytes(x []float32) []byte {
	b := make([]byte, 0, 4*len(x))
	for _, v := range x {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
	}
	return b
}

func bytesFloat32(b []byte) []float32 {
	x := make([]float32, len(b)/4)
	for i := range x {
		x[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return x
}

// publishTries bounds the numbers a publish tries: another publisher (an
// upload) may take the next number between reading it and publishing.
const publishTries = 3

// publish publishes the candidate as the model's next version to the
// engine's model store: model.onnx, reference.json and metrics.json, then
// the manifest, so that no gateway sees half a version; every gateway
// replica fetches it into its repository and loads it.
func (st *runState) publish(ctx context.Context) error {
	models, err := st.s.modelStore(ctx)
	if err != nil {
		return err
	}
	if err := st.pinPrimary(ctx, st.base.VersionName); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "infergate-publish-"+st.run.Model+"-")
	if err != nil {
		return fmt.Errorf("cannot write the candidate's files: %w", err)
	}
	defer os.RemoveAll(tmp)
	for try := 1; ; try++ {
		next, err := models.NextVersion(ctx, st.run.Model)
		if err != nil {
			return err
		}
		version := strconv.FormatInt(next, 10)
		dir := filepath.Join(tmp, version)
		if err := st.writeVersion(ctx, dir, version); err != nil {
			return err
		}
		m, err := models.Publish(ctx, st.run.Model, next, dir)
		if errors.Is(err, modelstore.ErrExists) && try < publishTries {
			st.logf("version %s was published meanwhile by another publisher; taking the next number", version)
			continue
		}
		if err != nil {
			return fmt.Errorf("cannot publish version %s: %w", version, err)
		}
		st.mu.Lock()
		st.run.Candidate = version
		st.mu.Unlock()
		st.logf("published version %s to the model store %s (%s)", version, modelstore.Bucket, m.Digests())
		return nil
	}
}

// writeVersion writes the files of the candidate's version folder tmp.
func (st *runState) writeVersion(ctx context.Context, tmp, version string) error {
	if err := os.Mkdir(tmp, 0o755); err != nil {
		return fmt.Errorf("cannot create %s: %w", tmp, err)
	}
	onnx, err := os.ReadFile(st.candidate)
	if err != nil {
		return fmt.Errorf("cannot read the candidate: %w", err)
	}
	ref, err := st.reference(ctx)
	if err != nil {
		return err
	}
	if err := ref.WriteFile(filepath.Join(tmp, drift.ReferenceFile)); err != nil {
		return err
	}
	metrics, err := json.MarshalIndent(struct {
		Model   string    `json:"model"`
		Version string    `json:"version"`
		Run     string    `json:"run"`
		Trigger string    `json:"trigger"`
		Created time.Time `json:"created"`
		Metrics
	}{st.run.Model, version, st.run.ID, st.run.Trigger, st.s.now().UTC(), st.metrics}, "", "  ")
	if err != nil {
		return fmt.Errorf("cannot encode metrics.json: %w", err)
	}
	for name, data := range map[string][]byte{"model.onnx": onnx, "metrics.json": append(metrics, '\n')} {
		if err := os.WriteFile(filepath.Join(tmp, name), data, 0o644); err != nil {
			return fmt.Errorf("cannot write the candidate's %s: %w", name, err)
		}
	}
	return nil
}

// reference profiles the rows trained on and the candidate's predictions
// on them: every output column, or only output[1] (the positive class's
// score) of a 2-class model.
// The profile is of the recent rows, the traffic the candidate will serve,
// so that its drift monitoring compares with today's inputs rather than
// with the mix it was trained on.
func (st *runState) reference(ctx context.Context) (*drift.Reference, error) {
	rows := st.data.recent
	if rows.Len() < st.cfg.MinRows {
		rows = st.data.train
	}
	ref := &drift.Reference{Rows: rows.Len()}
	columns := make([][]float64, len(st.spec.features))
	for j, name := range st.spec.features {
		columns[j] = make([]float64, rows.Len())
		for i, x := range rows.X {
			columns[j][i] = float64(x[j])
		}
		ref.Features = append(ref.Features, drift.BuildProfile(name, drift.Numeric, columns[j], drift.ProfileOptions{Seed: uint64(j)}))
	}
	ref.SampleRows = drift.SampleRowsOf(columns, 1000, uint64(len(columns)), false)
	var outs [][]float64
	err := predict(ctx, st.cand, rows.X, func(row int, out []float32) {
		if outs == nil {
			outs = make([][]float64, len(out))
		}
		for j, v := range out {
			outs[j] = append(outs[j], float64(v))
		}
	})
	if err != nil {
		return nil, err
	}
	for j, col := range outs {
		if len(outs) == 2 && j == 0 {
			continue
		}
		name := fmt.Sprintf("%s[%d]", st.spec.output, j)
		ref.Predictions = append(ref.Predictions, drift.BuildProfile(name, drift.Numeric, col, drift.ProfileOptions{Seed: uint64(len(st.spec.features) + j)}))
	}
	if err := ref.Validate(); err != nil {
		return nil, fmt.Errorf("cannot build the reference profile: %w", err)
	}
	return ref, nil
}
