package batchjob

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/parquet-go/parquet-go"

	"github.com/infergate/infergate/drift"
	"github.com/infergate/infergate/retrain/table"
	"github.com/infergate/infergate/retrain/trainer"
	"github.com/infergate/infergate/runtime"
)

const demoDir = "../../configs/models/demo/1"

// demoJob returns a job scoring in with the demo model (two instances)
// into out, judged against its reference.
func demoJob(t *testing.T, in, out string) Job {
	t.Helper()
	mv, err := testEnv.LoadModelVersion(demoDir, "demo", 1, runtime.ModelConfig{Instances: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mv.Close)
	ref, err := drift.LoadReference(filepath.Join(demoDir, drift.ReferenceFile))
	if err != nil {
		t.Fatal(err)
	}
	return Job{Model: "demo", Version: "1", Run: mv, Features: mv.Features(), Carry: []string{"id"}, Reference: ref,
		BatchSize: 64, In: in, Out: out, GroupRows: 5000, Log: io.Discard}
}

// readOutput reads every column of the table at path as values.
func readOutput(t *testing.T, path string) ([]string, [][]table.Value) {
	t.Helper()
	names, rows, err := table.ReadAll(path)
	if err != nil {
		t.Fatal(err)
	}
	return names, rows
}

// runOne runs one row through mv alone and returns its first output.
func runOne(t *testing.T, mv *runtime.ModelVersion, x []float32) []float32 {
	t.Helper()
	in := runtime.Tensor{DataType: runtime.FP32, Shape: []int64{1, int64(len(x))}, Data: unsafe.Slice((*byte)(unsafe.Pointer(&x[0])), len(x)*4)}
	outs := make([]runtime.Tensor, len(mv.Outputs()))
	if err := mv.Run(context.Background(), []runtime.Tensor{in}, outs); err != nil {
		t.Fatal(err)
	}
	y := make([]float32, len(outs[0].Data)/4)
	for i := range y {
		y[i] = math.Float32frombits(binary.LittleEndian.Uint32(outs[0].Data[i*4:]))
	}
	return y
}

// TestScoreEqualsRowByRow scores 20,000 rows of each format and compares
// every row's outputs with the model run on that row alone: equal within
// 1e-6 relative, in the input's order, with the id carried and the
// version named. The file drew like the reference, so it did not drift.
func TestScoreEqualsRowByRow(t *testing.T) {
	const rows = 20000
	d := trainer.Synthetic(3, rows)
	for _, ext := range []string{".parquet", ".csv", ".jsonl"} {
		t.Run(ext, func(t *testing.T) {
			dir := t.TempDir()
			in, out := filepath.Join(dir, "in"+ext), filepath.Join(dir, "out"+ext)
			if err := trainer.WriteSyntheticTable(in, rows, 3, false); err != nil {
				t.Fatal(err)
			}
			job := demoJob(t, in, out)
			rep, err := Run(context.Background(), job)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Rows != rows || rep.Scored != rows || rep.Rejected != 0 || rep.GroupsResumed != 0 {
				t.Fatalf("report %+v", rep)
			}
			v := rep.Validation
			if !v.Judged() || v.FileDrifted || v.Windows != rows/1000 || len(v.Features) != 8 {
				t.Fatalf("validation of an unshifted file: %+v", v)
			}
			names, got := readOutput(t, out)
			if strings.Join(names, ",") != "id,output_0,output_1,version" {
				t.Fatalf("output columns %v", names)
			}
			if len(got) != rows {
				t.Fatalf("%d output rows, want %d", len(got), rows)
			}
			for i := 0; i < rows; i += 97 {
				want := runOne(t, job.Run, d.X[i])
				row := got[i]
				if string(row[0].ByteArray()) != "c"+strconv.Itoa(i) || string(row[3].ByteArray()) != "1" {
					t.Fatalf("row %d: id %q version %q", i, row[0].ByteArray(), row[3].ByteArray())
				}
				for j, w := range want {
					g := number(t, row[1+j])
					if math.Abs(g-float64(w)) > 1e-6*math.Abs(float64(w))+1e-12 {
						t.Fatalf("row %d output %d: %v scored, %v alone", i, j, g, w)
					}
				}
			}
			if _, err := os.Stat(out + ".checkpoint"); !os.IsNotExist(err) {
				t.Fatalf("the checkpoint was left behind: %v", err)
			}
			if _, err := os.Stat(out + ".drift.json"); err != nil {
				t.Fatalf("no drift report: %v", err)
			}
		})
	}
}

// number reads a value of a CSV or JSON-lines output (text) or a Parquet
// one (FLOAT) as a float64.
func number(t *testing.T, v table.Value) float64 {
	t.Helper()
	if v.Kind() != parquet.ByteArray {
		return float64(v.Float())
	}
	x, err := strconv.ParseFloat(string(v.ByteArray()), 64)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// writeCSV writes a CSV file of the demo's features (and an id) from
// lines of values, after the header.
func writeCSV(t *testing.T, path string, header string, lines ...string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(header+"\n"+strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

const demoHeader = "id,age,income,tenure_months,balance,num_products,credit_score,late_payments,utilization"

// TestRejects: a null or NaN feature fails the job with its row and
// column, writing nothing; with Rejects, such rows go there with the
// reason and the rest are scored.
func TestRejects(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "in.csv")
	writeCSV(t, in, demoHeader,
		"a,40,50000,12,1000,2,700,0,0.3",
		"b,41,,12,1000,2,700,0,0.3",
		"c,42,50000,12,1000,2,NaN,0,0.3",
		"d,43,50000,12,1000,2,700,0,0.3")
	out := filepath.Join(dir, "out.parquet")
	job := demoJob(t, in, out)
	job.Reference = nil
	_, err := Run(context.Background(), job)
	if err == nil || !strings.Contains(err.Error(), `row 2, column "income": null (pass --rejects FILE`) {
		t.Fatalf("a null without rejects: %v", err)
	}
	assertNothingWritten(t, out)

	job.Rejects = filepath.Join(dir, "rejects.csv")
	rep, err := Run(context.Background(), job)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Rows != 4 || rep.Scored != 2 || rep.Rejected != 2 || rep.Validation.Judged() {
		t.Fatalf("report %+v", rep)
	}
	_, rows := readOutput(t, out)
	if len(rows) != 2 || string(rows[0][0].ByteArray()) != "a" || string(rows[1][0].ByteArray()) != "d" {
		t.Fatalf("scored rows %v", rows)
	}
	rejects, _ := os.ReadFile(job.Rejects)
	if want := "row,column,reason,id\n2,income,null,b\n3,credit_score,NaN,c\n"; string(rejects) != want {
		t.Fatalf("rejects:\n%s\nwant\n%s", rejects, want)
	}
}

// assertNothingWritten fails unless out, its checkpoint and its drift
// report are all absent.
func assertNothingWritten(t *testing.T, out string) {
	t.Helper()
	for _, p := range []string{out, out + ".checkpoint", out + ".drift.json"} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Fatalf("a refused job wrote %s (%v)", p, err)
		}
	}
}

// TestRefusedFiles: a file with a missing feature, an extra column, text
// where a number belongs (in a CSV cell or a Parquet column) or no rows
// is refused with an error naming what is wrong, and nothing is written.
func TestRefusedFiles(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out.parquet")
	csv := func(name, header string, lines ...string) string {
		p := filepath.Join(dir, name)
		writeCSV(t, p, header, lines...)
		return p
	}
	textParquet := filepath.Join(dir, "text.parquet")
	f, _ := os.Create(textParquet)
	cols := []table.Column{{Name: "id", Kind: table.String}}
	for _, name := range strings.Split(demoHeader, ",")[1:] {
		kind := table.Float32
		if name == "balance" {
			kind = table.String
		}
		cols = append(cols, table.Column{Name: name, Kind: kind})
	}
	w, _ := table.NewWriter(f, table.Parquet, cols, table.WriteOptions{})
	w.Close()
	f.Close()
	for _, tc := range []struct {
		in, want   string
		allowExtra bool
	}{
		{csv("missing.csv", "id,age,income,tenure_months,balance,num_products,credit_score,late_payments", "a,1,2,3,4,5,6,7"),
			`has no column for feature "utilization" of model "demo"`, false},
		{csv("extra.csv", demoHeader+",note", "a,40,50000,12,1000,2,700,0,0.3,x"),
			`column "note" is neither a feature of model "demo" nor carried; carry it (--carry), or pass --allow-extra`, false},
		{csv("text.csv", demoHeader, "a,40,50000,12,1000,2,700,0,0.3", "b,40,lots,12,1000,2,700,0,0.3"),
			`row 2, column "income": "lots" is not a number`, false},
		{textParquet, `feature columns must hold numbers (integers, floats, decimals or booleans), but "balance" holds text (Parquet BYTE_ARRAY, STRING) values`, false},
		{csv("empty.csv", demoHeader), `it holds no rows`, false},
		{csv("sparse.jsonl", `{"id":"a","age":40,"tenure_months":12,"balance":1000,"num_products":2,"credit_score":700,"late_payments":0,"utilization":0.3}`,
			`{"id":"b","age":40,"income":50000,"tenure_months":12,"balance":1000,"num_products":2,"credit_score":700,"late_payments":0,"utilization":0.3}`),
			`it has no column for feature "income" of model "demo" (its columns, the keys of its first object: id, age,`, false},
		{csv("cases.csv", strings.Replace(demoHeader, "age", "Age,AGE", 1), "a,40,40,50000,12,1000,2,700,0,0.3"),
			`no column is named as model "demo"'s feature "age" (columns "Age" and "AGE" differ from it only in case): name one with --map feature=column`, false},
		{csv("semicolon.csv", strings.ReplaceAll(demoHeader, ",", ";"), "a;40;50000;12;1000;2;700;0;0.3"), `this file seems separated by ";"`, false},
		{csv("ragged.csv", demoHeader, "a,40,50000,12,1000,2,700,0,0.3", "b,40,50000,12,1000,2,700,0"), `row 2: line 3 has 8 fields, the header names 9`, false},
		{csv("nothing.jsonl", ""), `the file is empty`, false},
		{out, `it is also named as an output`, false},
	} {
		job := demoJob(t, tc.in, out)
		job.AllowExtra = tc.allowExtra
		_, err := Run(context.Background(), job)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", filepath.Base(tc.in), err, tc.want)
		}
		assertNothingWritten(t, out)
	}

	// A column another feature reads by its exact name (here through
	// --map) is never taken for a feature whose name differs only in case.
	job := demoJob(t, csv("taken.csv", "id,Age,tenure_months,balance,num_products,credit_score,late_payments,utilization", "a,40,12,1000,2,700,0,0.3"), out)
	job.Map = map[string]string{"income": "Age"}
	if _, err := Run(context.Background(), job); err == nil || !strings.Contains(err.Error(), `has no column for feature "age" of model "demo"`) {
		t.Errorf("a feature's column that differs only in case from another's: %v", err)
	}
	assertNothingWritten(t, out)

	// With AllowExtra, the extra column is left out.
	job = demoJob(t, filepath.Join(dir, "extra.csv"), out)
	job.AllowExtra, job.Reference = true, nil
	if _, err := Run(context.Background(), job); err != nil {
		t.Fatal(err)
	}
	if names, _ := readOutput(t, out); strings.Join(names, ",") != "id,output_0,output_1,version" {
		t.Fatalf("columns %v", names)
	}
}

// TestDriftedFile: a file of the demo's shifted customers drifts, in most
// windows and by its effect sizes; FailOnDrift stops the job before it
// scores, writing only the drift report.
func TestDriftedFile(t *testing.T) {
	dir := t.TempDir()
	in, out := filepath.Join(dir, "shifted.parquet"), filepath.Join(dir, "out.parquet")
	if err := trainer.WriteSyntheticTable(in, 10000, 5, true); err != nil {
		t.Fatal(err)
	}
	job := demoJob(t, in, out)
	job.FailOnDrift = true
	var log strings.Builder
	job.Log = &log
	rep, err := Run(context.Background(), job)
	if !errors.Is(err, ErrDrifted) {
		t.Fatalf("a shifted file with FailOnDrift: %v", err)
	}
	v := rep.Validation
	if !v.FileDrifted || v.Drifted < v.Windows*9/10 || v.WindowsPValue > 1e-6 {
		t.Fatalf("validation of a shifted file: %d of %d windows drifted (p %g), drifted %v", v.Drifted, v.Windows, v.WindowsPValue, v.FileDrifted)
	}
	drifted := map[string]bool{}
	for _, f := range v.Features {
		drifted[f.Name] = f.Drifted
	}
	for _, name := range []string{"age", "credit_score", "utilization"} {
		if !drifted[name] {
			t.Errorf("feature %s, which the shift moves, is not drifted by its effect sizes: %+v", name, v.Features)
		}
	}
	if !strings.Contains(log.String(), "the file DRIFTED") {
		t.Errorf("the printed report does not say the file drifted:\n%s", log.String())
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatalf("a job stopped on drift wrote its output (%v)", err)
	}
	if _, err := os.Stat(out + ".checkpoint"); !os.IsNotExist(err) {
		t.Fatalf("a job stopped on drift left a checkpoint (%v)", err)
	}
	if _, err := os.Stat(out + ".drift.json"); err != nil {
		t.Fatalf("no drift report: %v", err)
	}
}

// TestLabelsNameColumns: with class labels, an output's columns are named
// by them.
func TestLabelsNameColumns(t *testing.T) {
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in.jsonl"), filepath.Join(dir, "out.csv")
	if err := trainer.WriteSyntheticTable(in, 10, 1, false); err != nil {
		t.Fatal(err)
	}
	job := demoJob(t, in, out)
	job.Labels = [][]string{{"repays", "defaults"}}
	if _, err := Run(context.Background(), job); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(out)
	if !strings.HasPrefix(string(data), "id,output_repays,output_defaults,version\n") {
		t.Fatalf("output:\n%s", data)
	}
}

// TestResume interrupts a job once its first row groups are done, runs it
// again and compares the output with an uninterrupted run's: the same
// rows, and the rerun says it resumed.
func TestResume(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "in.parquet")
	const rows = 300000
	if err := trainer.WriteSyntheticTable(in, rows, 9, false); err != nil {
		t.Fatal(err)
	}
	whole := filepath.Join(dir, "whole.parquet")
	if _, err := Run(context.Background(), demoJob(t, in, whole)); err != nil {
		t.Fatal(err)
	}

	out := filepath.Join(dir, "out.parquet")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			if _, err := os.Stat(filepath.Join(out+".checkpoint", "part-000000.parquet")); err == nil {
				cancel()
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	_, err := Run(ctx, demoJob(t, in, out))
	cancel()
	<-done
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("the interrupted run: %v", err)
	}
	var log strings.Builder
	job := demoJob(t, in, out)
	job.Log = &log
	job.BatchSize = 128 // the checkpoint's 64 is taken
	rep, err := Run(context.Background(), job)
	if err != nil {
		t.Fatal(err)
	}
	if rep.GroupsResumed == 0 || rep.RowsResumed == 0 || rep.Scored != rows {
		t.Fatalf("the rerun: %+v", rep)
	}
	for _, want := range []string{"resuming with the checkpoint's batch size 64", "validation: passed before", "row groups", "were scored before"} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("the rerun did not say %q:\n%s", want, log.String())
		}
	}
	_, a := readOutput(t, whole)
	_, b := readOutput(t, out)
	if len(a) != len(b) {
		t.Fatalf("%d rows resumed, %d uninterrupted", len(b), len(a))
	}
	for i := range a {
		for k := range a[i] {
			if !parquet.Equal(a[i][k], b[i][k]) {
				t.Fatalf("row %d column %d: %v resumed, %v uninterrupted", i, k, b[i][k], a[i][k])
			}
		}
	}
}

// TestParquetNullWhileScoring: a Parquet file with nothing to judge is not
// read twice; a null feature found while scoring fails the job with its
// row and column, and leaves no checkpoint or output.
func TestParquetNullWhileScoring(t *testing.T) {
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in.parquet"), filepath.Join(dir, "out.parquet")
	f, err := os.Create(in)
	if err != nil {
		t.Fatal(err)
	}
	cols := []table.Column{{Name: "id", Kind: table.String}}
	for _, name := range strings.Split(demoHeader, ",")[1:] {
		cols = append(cols, table.Column{Name: name, Kind: table.Float64, Optional: true})
	}
	w, err := table.NewWriter(f, table.Parquet, cols, table.WriteOptions{RowGroupRows: 1000})
	if err != nil {
		t.Fatal(err)
	}
	row := make([]table.Value, len(cols))
	for i := range 3000 {
		row[0] = table.TextValue([]byte(strconv.Itoa(i)))
		for k := 1; k < len(cols); k++ {
			row[k] = table.Float64Value(float64(k))
		}
		if i == 2500 {
			row[6] = table.NullValue() // credit_score
		}
		if err := w.WriteRow(row); err != nil {
			t.Fatal(err)
		}
	}
	w.Close()
	f.Close()
	job := demoJob(t, in, out)
	job.Reference = nil
	rep, err := Run(context.Background(), job)
	if err == nil || !strings.Contains(err.Error(), `row 2501, column "credit_score": null (pass --rejects FILE`) {
		t.Fatalf("a null found while scoring: %v", err)
	}
	if rep == nil || rep.Validation == nil || rep.Validation.Rows != 3000 { // a validation's error comes with no report
		t.Fatalf("the file was validated first: %+v", rep)
	}
	assertNothingWritten(t, out)
}

// TestJSONLinesCarriedAsText: a JSON-lines column of numbers, carried
// into Parquet, is written as the text it was (the column's values may
// change type from line to line), as are its nulls.
func TestJSONLinesCarriedAsText(t *testing.T) {
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in.jsonl"), filepath.Join(dir, "out.parquet")
	row := `"age":40,"income":50000,"tenure_months":12,"balance":1000,"num_products":2,"credit_score":700,"late_payments":0,"utilization":0.3`
	os.WriteFile(in, []byte(`{"n":1000,"flag":true,`+row+"}\n"+`{"n":null,"flag":"yes",`+row+"}\n"), 0o644)
	job := demoJob(t, in, out)
	job.Carry, job.Reference = []string{"n", "flag"}, nil
	if _, err := Run(context.Background(), job); err != nil {
		t.Fatal(err)
	}
	_, rows := readOutput(t, out)
	if len(rows) != 2 || rows[0][0].String() != "1000" || rows[0][1].String() != "true" || !rows[1][0].IsNull() || rows[1][1].String() != "yes" {
		t.Fatalf("carried values %v", rows)
	}
}
