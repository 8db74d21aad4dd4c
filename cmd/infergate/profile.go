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
	bins := fs.Int("bins", 10, "equal-mass bins per numeric feature")
	sampleSize := fs.Int("sample", 1000, "reference sample kept per feature")
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
	o := drift.ProfileOptions{Bins: *bins, SampleSize: *sampleSize}
	ref := &drift.Reference{Rows: len(columns[0])}
	for i, name := range names {
		kind := drift.Numeric
		if slices.Contains(isCategorical, name) {
			kind = drift.Categorical
		}
		o.Seed = uint64(i)
		ref.Features = append(ref.Features, drift.BuildProfile(name, kind, columns[i], o))
	}
	if *predictions {
		outs, err := predict(mv, columns)
		if err != nil {
			return err
		}
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
	fmt.Printf("wrote %s: %d rows, %d features, %d predictions\n", *out, ref.Rows, len(ref.Features), len(ref.Predictions))
	return nil
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
