package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"unsafe"

	"github.com/schollz/progressbar/v3"

	"github.com/infergate/infergate/drift"
	"github.com/infergate/infergate/runtime"
)

// profileBatch is the rows per model run when profiling predictions.
const profileBatch = 256

// profile writes the drift reference profile of a model's training data.
func profile(args []string) error {
	fs := flag.NewFlagSet("profile", flag.ContinueOnError)
	modelPath := fs.String("model", "", "the model.onnx to profile for (its version folder receives reference.json by default)")
	dataPath := fs.String("data", "", "training data: a .csv with a header row, or .jsonl with one object per line")
	out := fs.String("out", "", "where to write the profile (default: reference.json beside the model)")
	categorical := fs.String("categorical", "", "comma-separated names of the categorical features")
	bins := fs.Int("bins", 10, "equal-mass bins per numeric feature; a warning says when a feature has fewer than "+
		fmt.Sprint(minRowsPerBin)+" values per bin")
	sampleSize := fs.Int("sample", drift.DefaultSampleSize, "reference sample kept per feature; a warning says when the data holds fewer rows")
	predictions := fs.Bool("predictions", true, "also profile the model's outputs, computed on the data")
	quiet := fs.Bool("quiet", false, "no progress bar")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *modelPath == "" || *dataPath == "" {
		return errors.New("--model and --data are required")
	}
	if *out == "" {
		*out = filepath.Join(filepath.Dir(*modelPath), drift.ReferenceFile)
	}
	format, err := tableFormat(*dataPath)
	if err != nil {
		return err
	}

	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	env, err := runtime.NewEnvironment(runtime.DefaultConfig(), log)
	if err != nil {
		return err
	}
	defer env.Close()
	mv, err := env.LoadModelVersion(filepath.Dir(*modelPath), "profile", 1, runtime.ModelConfig{Instances: 1})
	if err != nil {
		return err
	}
	defer mv.Close()
	in := mv.Inputs()[0]
	names := mv.Features()
	if len(in.Shape) != 2 || in.Shape[1] <= 0 {
		return fmt.Errorf("input %q has shape %s; a profile needs [batch, features]", in.Name, runtime.FormatShape(in.Shape))
	}
	if names == nil {
		for i := range in.Shape[1] {
			names = append(names, fmt.Sprintf("%s[%d]", in.Name, i))
		}
	}

	columns, err := readTableWithProgress(*dataPath, format, names, *quiet)
	if err != nil {
		return err
	}
	isCategorical := strings.Split(*categorical, ",")
	// An FP32 input holds the values rounded to float32, and the gateway
	// observes them so: the profile is built of the same values.
	o := drift.ProfileOptions{Bins: *bins, SampleSize: *sampleSize, Float32: in.DataType == runtime.FP32}
	ref := &drift.Reference{Rows: len(columns[0])}
	for i, name := range names {
		kind := drift.Numeric
		if slices.Contains(isCategorical, name) {
			kind = drift.Categorical
		}
		o.Seed = uint64(i)
		ref.Features = append(ref.Features, drift.BuildProfile(name, kind, columns[i], o))
	}
	ref.SampleRows = drift.SampleRowsOf(columns, *sampleSize, uint64(len(names)), o.Float32)
	if *predictions {
		outs, err := predict(mv, columns)
		if err != nil {
			return err
		}
		o.Float32 = true // predict reads an FP32 output
		for j, col := range outs {
			o.Seed = uint64(len(names) + j)
			ref.Predictions = append(ref.Predictions, drift.BuildProfile(fmt.Sprintf("%s[%d]", mv.Outputs()[0].Name, j), drift.Numeric, col, o))
		}
	}
	if err := ref.Validate(); err != nil {
		return fmt.Errorf("cannot profile %q: %w", *dataPath, err)
	}
	if err := ref.WriteFile(*out); err != nil {
		return err
	}
	for _, w := range referenceWarnings(ref, *bins, *sampleSize) {
		fmt.Fprintln(os.Stderr, "warning:", w)
	}
	fmt.Printf("wrote %s: %d rows, %d features, %d predictions\n", *out, ref.Rows, len(ref.Features), len(ref.Predictions))
	return nil
}

// minRowsPerBin is the fewest finite values per requested bin, on
// average, below which a numeric feature's profile draws a warning.
const minRowsPerBin = 5

// referenceWarnings says where ref, profiled with bins bins and a sample of
// sample values per feature, is too small to judge windows well: a numeric
// feature with fewer than minRowsPerBin finite values per bin, whose bin
// shares are then too noisy for the binned statistics (PSI,
// Jensen-Shannon, Hellinger), and data of fewer rows than sample, whose
// reference sample, then all of it, is smaller than asked: KS and
// Wasserstein compare every window with that one sample, whose own noise
// raises false alarms when it is not several times a window's reservoir
// (drift.reservoir, 1000 by default).
func referenceWarnings(ref *drift.Reference, bins, sample int) []string {
	var out []string
	if ref.Rows < sample {
		out = append(out, fmt.Sprintf("the data holds %d rows, fewer than the %d asked for the reference sample (--sample): KS and Wasserstein compare every window with the same %d values, whose own noise raises false alarms when they are not several times a window's reservoir (drift.reservoir, 1000 by default)",
			ref.Rows, sample, ref.Rows))
	}
	for _, group := range [][]drift.Profile{ref.Features, ref.Predictions} {
		for _, p := range group {
			if p.Kind == drift.Numeric && p.Count < int64(minRowsPerBin*bins) {
				out = append(out, fmt.Sprintf("%s has %d finite values for %d bins, fewer than %d a bin: its bins are noise (use fewer --bins or more rows, at least %d)",
					p.Name, p.Count, bins, minRowsPerBin, minRowsPerBin*bins))
			}
		}
	}
	return out
}

func tableFormat(path string) (string, error) {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".csv":
		return "csv", nil
	case ".jsonl", ".ndjson":
		return "jsonl", nil
	}
	return "", fmt.Errorf("cannot tell the format of %q: want a .csv or .jsonl file", path)
}

// readTableWithProgress reads the named columns of the table at path,
// drawing a progress bar of the bytes read.
func readTableWithProgress(path, format string, names []string, quiet bool) ([][]float64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cannot open training data: %w", err)
	}
	defer f.Close()
	var r io.Reader = f
	if st, err := f.Stat(); err == nil && !quiet {
		bar := progressbar.DefaultBytes(st.Size(), "reading "+filepath.Base(path))
		defer bar.Finish()
		pr := progressbar.NewReader(f, bar)
		r = &pr
	}
	columns, err := drift.ReadTable(r, format, names)
	if err != nil {
		return nil, fmt.Errorf("cannot read %q: %w", path, err)
	}
	if len(columns[0]) == 0 {
		return nil, fmt.Errorf("cannot profile %q: it holds no rows", path)
	}
	return columns, nil
}

// predict runs mv's first output over the rows of columns and returns its
// columns. Rows with a missing value are run with 0 in its place.
func predict(mv *runtime.ModelVersion, columns [][]float64) ([][]float64, error) {
	in, outInfo := mv.Inputs()[0], mv.Outputs()[0]
	if in.DataType != runtime.FP32 || outInfo.DataType != runtime.FP32 || len(mv.Inputs()) != 1 {
		return nil, fmt.Errorf("cannot profile predictions of a model with inputs %v: only one FP32 input and an FP32 output are supported (use --predictions=false)", mv.Inputs())
	}
	rows, width := len(columns[0]), len(columns)
	var outs [][]float64
	x := make([]float32, profileBatch*width)
	results := make([]runtime.Tensor, len(mv.Outputs()))
	for start := 0; start < rows; start += profileBatch {
		n := min(profileBatch, rows-start)
		for r := range n {
			for c := range width {
				v := columns[c][start+r]
				if math.IsNaN(v) {
					v = 0
				}
				x[r*width+c] = float32(v)
			}
		}
		input := runtime.Tensor{DataType: runtime.FP32, Shape: []int64{int64(n), int64(width)}, Data: float32Bytes(x[:n*width])}
		for i, info := range mv.Outputs() {
			results[i].DataType = info.DataType
		}
		if err := mv.Run(context.Background(), []runtime.Tensor{input}, results); err != nil {
			return nil, fmt.Errorf("cannot compute predictions: %w", err)
		}
		y := unsafe.Slice((*float32)(unsafe.Pointer(unsafe.SliceData(results[0].Data))), len(results[0].Data)/4)
		cols := len(y) / n
		if outs == nil {
			outs = make([][]float64, cols)
		}
		for r := range n {
			for c := range cols {
				outs[c] = append(outs[c], float64(y[r*cols+c]))
			}
		}
	}
	return outs, nil
}

func float32Bytes(x []float32) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(x))), len(x)*4)
}
