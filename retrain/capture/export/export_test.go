package export

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"

	"github.com/infergate/infergate/retrain/capture"
)

// demoFeatures are the demo model's feature names, as its reference lists
// them.
var demoFeatures = []string{"age", "income", "tenure_months", "balance", "num_products", "credit_score", "late_payments", "utilization"}

// demoRecord is a record of the demo model's tensors: 8 FP32 features in,
// 2 FP32 probabilities out.
func demoRecord() *capture.Record {
	return &capture.Record{
		Inputs:  map[string]capture.Tensor{"input": {Datatype: "FP32", Shape: []int64{1, 8}}},
		Outputs: map[string]capture.Tensor{"output": {Datatype: "FP32", Shape: []int64{1, 2}}},
	}
}

// demoRow returns row i of a demo export: features and probabilities
// that are not round in binary, a label on even rows.
func demoRow(i int) capture.Example {
	in := make([]float64, 8)
	for j := range in {
		in[j] = float64(float32(float64(i)*0.1 + float64(j)/3))
	}
	p := float64(float32(float64(i%10) / 10.3))
	ex := capture.Example{
		ID: fmt.Sprint("req-", i), Rows: 1, Time: time.Date(2026, 12, 1, 10, 0, i, 123456789, time.FixedZone("x", 3600)),
		Version: fmt.Sprint(1 + i%2), Replica: "gw-1",
		Inputs:  map[string][]float64{"input": in},
		Outputs: map[string][]float64{"output": {1 - p, p}},
	}
	if i%2 == 0 {
		ex.Label = json.RawMessage(fmt.Sprintf(" %d ", i%3))
	}
	return ex
}

func TestNewLayout(t *testing.T) {
	tensor := func(dt string, width int) capture.Tensor {
		return capture.Tensor{Datatype: dt, Shape: []int64{1, int64(width)}}
	}
	f := func(in, out map[string]capture.Tensor, features []string, want []string, kinds ...Kind) {
		t.Helper()
		rec := &capture.Record{Inputs: in, Outputs: out}
		ex := &capture.Example{Inputs: map[string][]float64{}, Outputs: map[string][]float64{}}
		for name, t := range in {
			ex.Inputs[name] = make([]float64, t.Shape[1])
		}
		for name, t := range out {
			ex.Outputs[name] = make([]float64, t.Shape[1])
		}
		l, err := NewLayout(rec, ex, features)
		if err != nil {
			t.Fatal(err)
		}
		if got := l.Columns(); !slices.Equal(got, want) {
			t.Fatalf("columns %q, want %q", got, want)
		}
		var got []Kind
		for _, ts := range [][]Tensor{l.Inputs, l.Outputs} {
			for _, t := range ts {
				got = append(got, t.Kind)
			}
		}
		if !slices.Equal(got, kinds) {
			t.Fatalf("kinds %v, want %v", got, kinds)
		}
	}
	fixed := func(cols ...string) []string {
		return append(append([]string{"id", "time", "version", "replica"}, cols...), "label")
	}
	one := map[string]capture.Tensor{"p": tensor("FP64", 1)}
	// Named by the reference, in order; a one-value output is one column.
	f(map[string]capture.Tensor{"x": tensor("FP32", 3)}, one, []string{"a", "b", "c"}, fixed("a", "b", "c", "p"), Float, Double)
	// No reference; a wider output has a column per value.
	f(map[string]capture.Tensor{"x": tensor("INT64", 2)}, map[string]capture.Tensor{"y": tensor("FP16", 2)}, nil,
		fixed("x_0", "x_1", "y_0", "y_1"), Int64, Float)
	// Positional names of a model without feature names keep <input>_<i>.
	f(map[string]capture.Tensor{"x": tensor("FP32", 2)}, one, []string{"x[0]", "b"}, fixed("x_0", "b", "p"), Float, Double)
	// The reference names the one input of its width; two such: neither.
	f(map[string]capture.Tensor{"a": tensor("UINT8", 1), "b": tensor("BOOL", 2)}, one, []string{"u", "v"},
		fixed("a_0", "u", "v", "p"), Int64, Bool, Double)
	f(map[string]capture.Tensor{"a": tensor("FP32", 2), "b": tensor("FP32", 2)}, one, []string{"u", "v"},
		fixed("a_0", "a_1", "b_0", "b_1", "p"), Float, Float, Double)
	// A name taken by a fixed column or an earlier one gets a suffix.
	f(map[string]capture.Tensor{"x": tensor("FP32", 3)}, map[string]capture.Tensor{"label": tensor("FP32", 1)}, []string{"id", "a", "a"},
		fixed("id_2", "a", "a_2", "label_2"), Float, Float)

	rec := &capture.Record{Inputs: map[string]capture.Tensor{"x": tensor("STRING", 1)}}
	ex := &capture.Example{Inputs: map[string][]float64{"x": {1}}}
	if _, err := NewLayout(rec, ex, nil); err == nil || !strings.Contains(err.Error(), `input "x": datatype "STRING"`) {
		t.Fatalf("a STRING input: %v", err)
	}
	ex.Inputs = map[string][]float64{"y": {1}}
	if _, err := NewLayout(rec, ex, nil); err == nil || !strings.Contains(err.Error(), `input "y": its record has no such tensor`) {
		t.Fatalf("a row of another record: %v", err)
	}
}

// writeRows writes n demo rows in format f and returns the bytes.
func writeRows(t *testing.T, f Format, n int, o Options) []byte {
	t.Helper()
	first := demoRow(0)
	l, err := NewLayout(demoRecord(), &first, demoFeatures)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	w, err := NewWriter(&buf, f, l, o)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		ex := demoRow(i)
		if err := w.Write(&ex); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if w.Rows() != int64(n) {
		t.Fatalf("wrote %d rows, want %d", w.Rows(), n)
	}
	return buf.Bytes()
}

// TestParquet writes demo rows and reads them back with parquet-go: the
// columns in order with their types, every value exact, row groups of at
// most RowGroupRows rows.
func TestParquet(t *testing.T) {
	const n = 35
	data := writeRows(t, Parquet, n, Options{RowGroupRows: 10})
	f, err := parquet.OpenFile(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	var names, types []string
	for _, c := range f.Schema().Fields() {
		names = append(names, c.Name())
		typ := c.Type().String()
		if c.Optional() {
			typ = "optional " + typ
		}
		types = append(types, typ)
	}
	wantNames := append(append([]string{"id", "time", "version", "replica"}, demoFeatures...), "output_0", "output_1", "label")
	if !slices.Equal(names, wantNames) {
		t.Fatalf("columns %q, want %q", names, wantNames)
	}
	wantTypes := []string{"STRING", "TIMESTAMP(isAdjustedToUTC=true,unit=MICROS)", "STRING", "STRING"}
	for range 10 {
		wantTypes = append(wantTypes, "FLOAT")
	}
	if wantTypes = append(wantTypes, "optional STRING"); !slices.Equal(types, wantTypes) {
		t.Fatalf("types %q, want %q", types, wantTypes)
	}
	if groups := len(f.RowGroups()); groups != 4 || f.NumRows() != n {
		t.Fatalf("%d rows in %d row groups, want %d in 4", f.NumRows(), groups, n)
	}
	if codec := f.Metadata().RowGroups[0].Columns[4].MetaData.Codec.String(); codec != "ZSTD" {
		t.Fatalf("compressed with %s, want ZSTD", codec)
	}

	r := parquet.NewReader(bytes.NewReader(data))
	defer r.Close()
	rows := make([]parquet.Row, n+1)
	got := 0
	for {
		k, err := r.ReadRows(rows[got:])
		got += k
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if got != n {
		t.Fatalf("read %d rows, want %d", got, n)
	}
	for i, row := range rows[:n] {
		ex := demoRow(i)
		if row[0].String() != ex.ID || row[1].Int64() != ex.Time.UnixMicro() || row[2].String() != ex.Version || row[3].String() != ex.Replica {
			t.Fatalf("row %d: %v, want %+v", i, row[:4], ex)
		}
		values := append(slices.Clone(ex.Inputs["input"]), ex.Outputs["output"]...)
		for j, v := range values {
			if got := row[4+j].Float(); got != float32(v) {
				t.Fatalf("row %d column %s: %v, want %v", i, wantNames[4+j], got, float32(v))
			}
		}
		label := row[len(row)-1]
		if want := strings.TrimSpace(string(ex.Label)); label.IsNull() != (want == "") || !label.IsNull() && label.String() != want {
			t.Fatalf("row %d: label %v, want %q", i, label, want)
		}
	}
}

// TestJSONL writes demo rows as JSON lines: the keys of the Parquet
// columns in order, FP32 values at their shortest float32 form, the label
// as JSON, null when none.
func TestJSONL(t *testing.T) {
	lines := strings.Split(strings.TrimSuffix(string(writeRows(t, JSONL, 3, Options{})), "\n"), "\n")
	want := []string{
		`{"id":"req-0","time":"2026-12-01T09:00:00.123456Z","version":"1","replica":"gw-1","age":0,"income":0.33333334,"tenure_months":0.6666667,"balance":1,"num_products":1.3333334,"credit_score":1.6666666,"late_payments":2,"utilization":2.3333333,"output_0":1,"output_1":0,"label":0}`,
		`{"id":"req-1","time":"2026-12-01T09:00:01.123456Z","version":"2","replica":"gw-1","age":0.1,"income":0.43333334,"tenure_months":0.76666665,"balance":1.1,"num_products":1.4333333,"credit_score":1.7666667,"late_payments":2.1,"utilization":2.4333334,"output_0":0.9029126,"output_1":0.097087376,"label":null}`,
		`{"id":"req-2","time":"2026-12-01T09:00:02.123456Z","version":"1","replica":"gw-1","age":0.2,"income":0.53333336,"tenure_months":0.8666667,"balance":1.2,"num_products":1.5333333,"credit_score":1.8666667,"late_payments":2.2,"utilization":2.5333333,"output_0":0.80582523,"output_1":0.19417475,"label":2}`,
	}
	if !slices.Equal(lines, want) {
		t.Fatalf("wrote\n%s\nwant\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}

	f := func(k Kind, v float64, want string) {
		t.Helper()
		if got := string(appendValue(nil, k, v)); got != want {
			t.Fatalf("%s %v: %s, want %s", k, v, got, want)
		}
	}
	f(Float, math.NaN(), "null")
	f(Double, math.Inf(1), "null")
	f(Double, 0.1, "0.1")
	f(Float, 1e20, "1e+20")
	f(Int64, -3, "-3")
	f(Bool, 1, "true")
}

// TestWriteRefusesAnotherLayout refuses a row whose tensors are not the
// layout's, and a missing value in an integer column.
func TestWriteRefusesAnotherLayout(t *testing.T) {
	first := demoRow(0)
	l, err := NewLayout(demoRecord(), &first, nil)
	if err != nil {
		t.Fatal(err)
	}
	w, err := NewWriter(io.Discard, Parquet, l, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	ex := demoRow(1)
	ex.Inputs["input"] = ex.Inputs["input"][:7]
	if err := w.Write(&ex); err == nil || !strings.Contains(err.Error(), `request "req-1" (version 2) does not fit`) ||
		!strings.Contains(err.Error(), `input "input" has 7 values, the export has 8 columns`) {
		t.Fatalf("a narrower row: %v", err)
	}
	ex = demoRow(1)
	ex.Outputs["extra"] = []float64{1}
	if err := w.Write(&ex); err == nil || !strings.Contains(err.Error(), "2 outputs, the export has columns for 1") {
		t.Fatalf("a row with another output: %v", err)
	}

	rec := demoRecord()
	rec.Inputs["input"] = capture.Tensor{Datatype: "INT32"}
	l, _ = NewLayout(rec, &first, nil)
	w, _ = NewWriter(io.Discard, Parquet, l, Options{})
	defer w.Close()
	ex = demoRow(1)
	ex.Inputs["input"][3] = math.NaN()
	if err := w.Write(&ex); err == nil || !strings.Contains(err.Error(), "INT64 column cannot hold a missing value") {
		t.Fatalf("NaN in an integer column: %v", err)
	}
	if _, err := NewWriter(io.Discard, "csv", l, Options{}); err == nil {
		t.Fatal("format csv accepted")
	}
	if _, err := ParseFormat("csv"); err == nil || !strings.Contains(err.Error(), "want parquet or jsonl") {
		t.Fatalf("ParseFormat(csv): %v", err)
	}
}

// TestFile writes through path.tmp: nothing at path until Commit renames
// it there; Abort leaves nothing.
func TestFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "out.parquet")
	first := demoRow(0)
	l, err := NewLayout(demoRecord(), &first, demoFeatures)
	if err != nil {
		t.Fatal(err)
	}
	f := func(commit bool) {
		t.Helper()
		os.Remove(path)
		file, err := Create(path, Parquet, l, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if err := file.Write(&first); err != nil {
			t.Fatal(err)
		}
		if tmp, _ := filepath.Glob(path + ".*.tmp"); len(tmp) != 1 {
			t.Fatalf("temporary files while writing: %v, want one", tmp)
		}
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s exists while writing: %v", path, err)
		}
		if commit {
			if err := file.Commit(); err != nil {
				t.Fatal(err)
			}
		}
		file.Abort() // after Commit: nothing
		entries, _ := os.ReadDir(dir)
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		want := []string{}
		if commit {
			want = []string{"out.parquet"}
		}
		if !slices.Equal(names, want) && !(len(names) == 0 && len(want) == 0) {
			t.Fatalf("commit %v left %q, want %q", commit, names, want)
		}
	}
	f(false)
	f(true)
	data, _ := os.ReadFile(path)
	if pf, err := parquet.OpenFile(bytes.NewReader(data), int64(len(data))); err != nil || pf.NumRows() != 1 {
		t.Fatalf("the committed file: %v", err)
	}
	if _, err := Create(filepath.Join(dir, "missing", "out.parquet"), Parquet, l, Options{}); err == nil {
		t.Fatal("an export into a missing folder was created")
	}
}

// TestParquetMemoryBounded writes many rows and checks that the heap in
// use stays bounded by the row group size, not the rows written.
func TestParquetMemoryBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 600000 rows")
	}
	first := demoRow(0)
	l, err := NewLayout(demoRecord(), &first, demoFeatures)
	if err != nil {
		t.Fatal(err)
	}
	var out countingWriter
	w, err := NewWriter(&out, Parquet, l, Options{RowGroupBytes: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	var ms goruntime.MemStats
	var peak uint64
	ex := demoRow(1)
	for i := range 600_000 {
		ex.ID = fmt.Sprint("req-", i)
		ex.Inputs["input"][0] = float64(i)
		if err := w.Write(&ex); err != nil {
			t.Fatal(err)
		}
		if i%50_000 == 49_999 {
			goruntime.GC()
			goruntime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("600000 rows (about 66MB of values), %d bytes of parquet; heap in use at most %.1f MiB", out, float64(peak)/(1<<20))
	if peak > 48<<20 {
		t.Fatalf("heap in use reached %.1f MiB writing 4MiB row groups", float64(peak)/(1<<20))
	}
}

// countingWriter counts the bytes written to it.
type countingWriter int64

func (c *countingWriter) Write(p []byte) (int, error) {
	*c += countingWriter(len(p))
	return len(p), nil
}
