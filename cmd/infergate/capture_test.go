package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/infergate/infergate/retrain/capture"
	"github.com/infergate/infergate/retrain/engine"
	"github.com/infergate/infergate/retrain/engine/enginetest"
	"github.com/infergate/infergate/retrain/modelstore"
)

// duckDBDir is where `make duckdb` installs @duckdb/node-api.
const duckDBDir = "../../.cache/duckdb"

// TestCaptureExport captures the demo model's traffic through a real
// gateway (versions 1 and 2, one- and three-row requests, numeric, string
// and per-row labels, a label posted twice), exports it with `infergate
// capture export` to Parquet and JSON lines while the gateway runs, and
// reads the Parquet file with DuckDB: the same rows in the same order as
// the capture, with their ids, times, versions, features (FLOAT, exact),
// outputs and labels.
func TestCaptureExport(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node is not installed: DuckDB reads the export through npm's @duckdb/node-api; install Node.js, then run `make duckdb`")
	}
	if _, err := os.Stat(filepath.Join(duckDBDir, "node_modules", "@duckdb", "node-api", "package.json")); err != nil {
		t.Fatalf("@duckdb/node-api is not installed in %s: run `make duckdb` (%v)", duckDBDir, err)
	}
	dir := t.TempDir()
	config := writeCaptureConfig(t, dir)
	addr := strings.TrimSuffix(strings.TrimPrefix(config.listen, "listen: "), "\n")
	cmd := exec.Command(os.Args[0], "serve", "--config", config.path, "--listen", addr)
	cmd.Env = append(os.Environ(), "INFERGATE_TEST_MAIN=1")
	var logs bytes.Buffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()
	waitReady(t, "http://"+addr, &logs)
	sent := sendCapturedTraffic(t, "http://"+addr)

	// The capture as its reader joins it: what the export must hold.
	eng, err := openEngine(engine.Config{}, filepath.Join(dir, "state"), "capture export test", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer eng.close()
	want := waitCaptured(t, eng.connection(), sent)

	parquetPath := filepath.Join(dir, "demo.parquet")
	var out, progress bytes.Buffer
	if err := captureExport(context.Background(), []string{"--config", config.path, "--model", "demo", "--format", "parquet", "--out", parquetPath}, &out, &progress); err != nil {
		t.Fatal(err)
	}
	t.Logf("capture export printed: %s", out.String())
	t.Logf("progress: %q", progress.String())
	if !strings.Contains(progress.String(), "rows") {
		t.Errorf("no progress drawn: %q", progress.String())
	}
	checkDuckDB(t, node, parquetPath, want)

	jsonlPath := filepath.Join(dir, "demo.jsonl")
	if err := captureExport(context.Background(), []string{"--config", config.path, "--model", "demo", "--since", "1h", "--out", jsonlPath, "--quiet"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	checkJSONL(t, jsonlPath, want)

	v2 := filepath.Join(dir, "v2.parquet")
	if err := captureExport(context.Background(), []string{"--config", config.path, "--model", "demo", "--version", "2", "--out", v2, "--quiet"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	checkDuckDB(t, node, v2, slices.DeleteFunc(slices.Clone(want), func(ex capture.Example) bool { return ex.Version != "2" }))

	f := func(wantErr string, args ...string) {
		t.Helper()
		path := filepath.Join(dir, "failed.parquet")
		args = append([]string{"--config", config.path, "--out", path, "--quiet"}, args...)
		err := captureExport(context.Background(), args, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("capture export %q: %v, want an error saying %q", args, err, wantErr)
		}
		for _, p := range []string{path, path + ".tmp"} {
			if _, err := os.Stat(p); err == nil {
				t.Fatalf("a failed export left %s", p)
			}
		}
	}
	f(`no captured traffic of model "nope": the engine at`, "--model", "nope")
	f(`no captured rows of version 9 of model "demo" at any time`, "--model", "demo", "--version", "9")
	f(`no captured rows of model "demo" since 2099-01-01T00:00:00Z`, "--model", "demo", "--since", "2099-01-01T00:00:00Z")
	f(`invalid --since "yesterday": want an RFC 3339 time`, "--model", "demo", "--since", "yesterday")
	f(`invalid --format: unknown format "csv"`, "--model", "demo", "--format", "csv")
	f(`--model and --out are required`)
}

// captureConfig is the gateway config of the export test.
type captureConfig struct {
	path, listen string
}

// writeCaptureConfig writes a repository with the demo model as versions 1
// and 2 and a config that serves both, captures every request and takes
// labels without a key.
func writeCaptureConfig(t *testing.T, dir string) captureConfig {
	t.Helper()
	for _, v := range []string{"1", "2"} {
		for _, name := range []string{"model.onnx", "reference.json"} {
			data, err := os.ReadFile(filepath.Join("../../configs/models/demo/1", name))
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, "models", "demo", v, name)
			os.MkdirAll(filepath.Dir(path), 0o755)
			if err := os.WriteFile(path, data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	c := captureConfig{path: filepath.Join(dir, "gateway.yaml"), listen: "listen: " + freeAddr(t) + "\n"}
	yaml := c.listen + `repository: models
state_dir: state
runtime: {providers: [cpu], intra_op_threads: 1}
models:
  demo:
    version_policy: {latest: 2}
    capture: {sample: 1}
    auth: {open_feedback: true}
`
	if err := os.WriteFile(c.path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return c
}

// sentRow is a row the test sent: its request id, version and features,
// and its label as JSON ("" for none).
type sentRow struct {
	id, version string
	features    []float32
	label       string
}

// sendCapturedTraffic sends 40 one-row requests and 4 three-row ones,
// pinned to versions 1 and 2 in turn, then labels most of them: numbers,
// a string, per-row arrays, one id twice (the second label wins).
func sendCapturedTraffic(t *testing.T, base string) []sentRow {
	t.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	var sent []sentRow
	post := func(path string, body any) {
		t.Helper()
		data, _ := json.Marshal(body)
		resp, err := http.Post(base+path, "application/json", bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		msg, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("POST %s: %s: %s", path, resp.Status, msg)
		}
	}
	for i := range 44 {
		rows, id := 1, fmt.Sprintf("r-%d", i)
		if i >= 40 {
			rows, id = 3, fmt.Sprintf("m-%d", i)
		}
		version := strconv.Itoa(1 + i%2)
		var data []float32
		for range rows {
			// Values with no short decimal form: FP32 must survive exactly.
			f := []float32{18 + 60*rng.Float32(), 20000 + 1e5*rng.Float32(), 120 * rng.Float32(), 5e4 * rng.Float32(),
				float32(1 + rng.IntN(4)), 300 + 550*rng.Float32(), float32(rng.IntN(5)), rng.Float32()}
			data = append(data, f...)
			sent = append(sent, sentRow{id: id, version: version, features: f})
		}
		post("/v2/models/demo/versions/"+version+"/infer", map[string]any{
			"id":     id,
			"inputs": []map[string]any{{"name": "input", "shape": []int{rows, 8}, "datatype": "FP32", "data": data}},
		})
	}
	var labels []map[string]any
	for i, row := 0, 0; i < 44; i++ {
		switch {
		case i%7 == 6:
			row += 1 + 2*(i/40) // left unlabeled
		case i == 5:
			labels = append(labels, map[string]any{"id": "r-5", "label": "yes"})
			sent[row].label = `"yes"`
			row++
		case i >= 40:
			labels = append(labels, map[string]any{"id": fmt.Sprintf("m-%d", i), "label": []int{i % 2, 1, 0}})
			for _, l := range []int{i % 2, 1, 0} {
				sent[row].label = strconv.Itoa(l)
				row++
			}
		default:
			labels = append(labels, map[string]any{"id": fmt.Sprintf("r-%d", i), "label": i % 2})
			sent[row].label = strconv.Itoa(i % 2)
			row++
		}
	}
	post("/v2/models/demo/feedback", labels)
	post("/v2/models/demo/feedback", map[string]any{"id": "r-2", "label": 1}) // r-2 was 0
	sent[2].label = "1"
	return sent
}

// waitCaptured waits until the capture holds every row sent, labels
// joined, and returns its rows; they must be the rows sent, in order.
func waitCaptured(t *testing.T, conn *engine.Conn, sent []sentRow) []capture.Example {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var rows []capture.Example
		for ex, err := range capture.Examples(context.Background(), conn, capture.Query{Model: "demo", Unlabeled: true}) {
			if err != nil {
				t.Fatal(err)
			}
			rows = append(rows, ex)
		}
		labeled, wantLabeled := 0, 0
		for i := range sent {
			if i < len(rows) && rows[i].Label != nil {
				labeled++
			}
			if sent[i].label != "" {
				wantLabeled++
			}
		}
		if len(rows) == len(sent) && labeled == wantLabeled && string(rows[2].Label) == "1" {
			for i, ex := range rows {
				s := sent[i]
				if ex.ID != s.id || ex.Version != s.version || !slices.Equal(float32s(ex.Inputs["input"]), s.features) || string(ex.Label) != s.label {
					t.Fatalf("captured row %d is %s (version %s) %v label %s, sent %s (version %s) %v label %s",
						i, ex.ID, ex.Version, ex.Inputs["input"], ex.Label, s.id, s.version, s.features, s.label)
				}
			}
			return rows
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 30s the capture holds %d rows (%d labeled), want %d (%d labeled)", len(rows), labeled, len(sent), wantLabeled)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func float32s(v []float64) []float32 {
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = float32(x)
	}
	return out
}

// demoColumns are the columns of an export of the demo model, in order.
var demoColumns = []string{"id", "time", "version", "replica", "age", "income", "tenure_months", "balance", "num_products",
	"credit_score", "late_payments", "utilization", "output_0", "output_1", "label"}

// checkDuckDB reads the Parquet file at path with DuckDB and compares it
// with want, row by row.
func checkDuckDB(t *testing.T, node, path string, want []capture.Example) {
	t.Helper()
	script, _ := filepath.Abs("testdata/duckdb_read.cjs")
	cmd := exec.Command(node, script, duckDBDir, path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	if err != nil {
		t.Fatalf("DuckDB could not read %s: %v\n%s", path, err, stderr.String())
	}
	var got struct {
		Queries []string
		Columns []struct {
			Name string `json:"column_name"`
			Type string `json:"column_type"`
		}
		Rows []map[string]any
	}
	dec := json.NewDecoder(bytes.NewReader(stdout))
	dec.UseNumber()
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("cannot decode what DuckDB printed: %v\n%s", err, stdout)
	}
	t.Logf("DuckDB ran:\n  %s;\n  %s;", got.Queries[0], got.Queries[1])
	var names, types []string
	for _, c := range got.Columns {
		names = append(names, c.Name)
		types = append(types, c.Type)
	}
	t.Logf("DuckDB's DESCRIBE: %s", strings.Join(func() []string {
		var out []string
		for i := range names {
			out = append(out, names[i]+" "+types[i])
		}
		return out
	}(), ", "))
	if !slices.Equal(names, demoColumns) {
		t.Fatalf("DuckDB reads columns %q, want %q", names, demoColumns)
	}
	for i, typ := range types {
		var want string
		switch name := names[i]; {
		case name == "time":
			if typ != "TIMESTAMP WITH TIME ZONE" && typ != "TIMESTAMP" {
				t.Fatalf("time is %s in DuckDB, want a TIMESTAMP", typ)
			}
			continue
		case name == "id" || name == "version" || name == "replica" || name == "label":
			want = "VARCHAR"
		default:
			want = "FLOAT"
		}
		if typ != want {
			t.Fatalf("column %s is %s in DuckDB, want %s", names[i], typ, want)
		}
	}
	if len(got.Rows) != len(want) {
		t.Fatalf("DuckDB reads %d rows, want %d", len(got.Rows), len(want))
	}
	for i, row := range got.Rows {
		ex := want[i]
		if row["id"] != ex.ID || row["version"] != ex.Version || row["replica"] != ex.Replica || ex.Replica == "" {
			t.Fatalf("row %d: id %v version %v replica %v, want %s, %s, %s", i, row["id"], row["version"], row["replica"], ex.ID, ex.Version, ex.Replica)
		}
		if us := fmt.Sprint(row["time_us"]); us != strconv.FormatInt(ex.Time.UnixMicro(), 10) {
			t.Fatalf("row %d: time %s µs, want %d (%s)", i, us, ex.Time.UnixMicro(), ex.Time)
		}
		values := append(slices.Clone(ex.Inputs["input"]), ex.Outputs["output"]...)
		for j, v := range values {
			name := demoColumns[4+j]
			n, ok := row[name].(json.Number)
			f, err := n.Float64()
			// A FLOAT read back as a double is the float32 exactly.
			if !ok || err != nil || f != float64(float32(v)) {
				t.Fatalf("row %d (%s): %s is %v in DuckDB, want %v", i, ex.ID, name, row[name], float32(v))
			}
		}
		if label, wantLabel := row["label"], string(ex.Label); ex.Label == nil && label != nil || ex.Label != nil && label != wantLabel {
			t.Fatalf("row %d (%s): label %#v in DuckDB, want %#v", i, ex.ID, label, wantLabel)
		}
	}
}

// checkJSONL compares the JSON lines at path with want: the same keys in
// the same order as the Parquet columns, FP32 values at their shortest
// float32 form.
func checkJSONL(t *testing.T, path string, want []capture.Example) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	i := 0
	for ; sc.Scan(); i++ {
		if i >= len(want) {
			t.Fatalf("more than %d lines", len(want))
		}
		ex := want[i]
		dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		dec.UseNumber()
		var keys []string
		values := map[string]any{}
		dec.Token() // {
		for dec.More() {
			k, _ := dec.Token()
			var v any
			if err := dec.Decode(&v); err != nil {
				t.Fatalf("line %d: %v", i+1, err)
			}
			keys = append(keys, k.(string))
			values[k.(string)] = v
		}
		if !slices.Equal(keys, demoColumns) {
			t.Fatalf("line %d has keys %q, want %q", i+1, keys, demoColumns)
		}
		wantTime := ex.Time.UTC().Truncate(time.Microsecond).Format("2006-01-02T15:04:05.000000Z")
		if values["id"] != ex.ID || values["version"] != ex.Version || values["time"] != wantTime {
			t.Fatalf("line %d: %s", i+1, sc.Text())
		}
		for j, v := range append(slices.Clone(ex.Inputs["input"]), ex.Outputs["output"]...) {
			name := demoColumns[4+j]
			if got, want := fmt.Sprint(values[name]), strconv.FormatFloat(float64(float32(v)), 'g', -1, 32); got != want {
				t.Fatalf("line %d: %s is %s, want %s", i+1, name, got, want)
			}
		}
		label, _ := json.Marshal(values["label"])
		if wantLabel := cmpLabel(ex.Label); string(label) != wantLabel {
			t.Fatalf("line %d: label %s, want %s", i+1, label, wantLabel)
		}
	}
	if i != len(want) {
		t.Fatalf("%d lines, want %d", i, len(want))
	}
}

// cmpLabel is a label as JSON re-encodes it, "null" for none.
func cmpLabel(label json.RawMessage) string {
	if label == nil {
		return "null"
	}
	var v any
	json.Unmarshal(label, &v)
	out, _ := json.Marshal(v)
	return string(out)
}

// TestCaptureExportFeatures names the columns from the reference of the
// version in the engine's model store, else from the config's repository
// (a version the store does not hold), else nothing; and refuses to put
// versions whose references name their features differently in one file.
func TestCaptureExportFeatures(t *testing.T) {
	e := enginetest.Start(t)
	defer e.Stop()
	ctx := context.Background()
	store, err := modelstore.Open(ctx, e.Conn)
	if err != nil {
		t.Fatal(err)
	}
	reference := func(names ...string) []byte {
		var ref struct {
			Features []map[string]string `json:"features"`
		}
		for _, n := range names {
			ref.Features = append(ref.Features, map[string]string{"name": n, "kind": "numeric"})
		}
		data, _ := json.Marshal(ref)
		return data
	}
	version := func(root, v string, ref []byte) string {
		dir := filepath.Join(root, "demo", v)
		os.MkdirAll(dir, 0o755)
		os.WriteFile(filepath.Join(dir, "model.onnx"), []byte("not a model: only its reference is read"), 0o644)
		if ref != nil {
			os.WriteFile(filepath.Join(dir, "reference.json"), ref, 0o644)
		}
		return dir
	}
	published, repo := t.TempDir(), t.TempDir()
	for v, ref := range map[int64][]byte{1: reference("a", "b"), 2: reference("x", "y"), 5: nil} {
		if _, err := store.Publish(ctx, "demo", v, version(published, strconv.FormatInt(v, 10), ref)); err != nil {
			t.Fatal(err)
		}
	}
	version(repo, "1", reference("local", "names")) // the store's version 1 wins
	version(repo, "3", reference("c", "d"))
	version(repo, "5", reference("e", "f")) // the store's version 5 has none

	x := &exporter{conn: e.Conn, repo: repo, model: "demo", features: make(map[string][]string)}
	f := func(v string, want ...string) {
		t.Helper()
		got, err := x.featuresOf(ctx, v)
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("features of version %s: %q, %v; want %q", v, got, err, want)
		}
	}
	f("1", "a", "b")
	f("2", "x", "y")
	f("3", "c", "d")
	f("4")
	f("5")
	f("canary") // not a version number: no reference
	if err := x.sameFeatures(ctx, "1", []string{"a", "b"}, "5"); err != nil {
		t.Fatalf("a version without a reference fits any: %v", err)
	}
	err = x.sameFeatures(ctx, "1", []string{"a", "b"}, "2")
	if err == nil || !strings.Contains(err.Error(), `version 2 of model "demo" names its features ["x" "y"], version 1 ["a" "b"]: export one version at a time (--version)`) {
		t.Fatalf("versions naming their features differently: %v", err)
	}
}
