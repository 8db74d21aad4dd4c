package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/infergate/infergate/retrain/table"
	"github.com/infergate/infergate/retrain/trainer"
)

// scoreArgs are the arguments of `infergate score` with the demo model
// from in into out, at a fixed batch size (no compute curve measured).
func scoreArgs(in, out string) []string {
	return []string{"score", "--config", "../../configs/demo.yaml", "--model", "demo", "--in", in, "--out", out, "--carry", "id", "--batch", "64", "--quiet"}
}

// readTable reads every row of the table at path as text cells.
func readTable(t *testing.T, path string) ([]string, [][]string) {
	t.Helper()
	names, values, err := table.ReadAll(path)
	if err != nil {
		t.Fatal(err)
	}
	rows := make([][]string, len(values))
	for i, row := range values {
		for _, v := range row {
			rows[i] = append(rows[i], v.String())
		}
	}
	return names, rows
}

// TestScoreKilledResumes kills `infergate score` with SIGKILL once it has
// completed a row group, runs it again with the same arguments, and
// compares the output with an uninterrupted run's: the same rows, and the
// rerun's log says which row groups it skipped.
func TestScoreKilledResumes(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "customers.parquet")
	const rows = 1000000 // 8 row groups of 131072 rows
	if err := trainer.WriteSyntheticTable(in, rows, 11, false); err != nil {
		t.Fatal(err)
	}
	run := func(out string) (string, error) {
		cmd := infergateCommand(scoreArgs(in, out)...)
		b, err := cmd.CombinedOutput()
		return string(b), err
	}
	whole := filepath.Join(dir, "whole.parquet")
	if log, err := run(whole); err != nil {
		t.Fatalf("uninterrupted run: %v\n%s", err, log)
	}

	out := filepath.Join(dir, "scores.parquet")
	cmd := infergateCommand(scoreArgs(in, out)...)
	var logs bytes.Buffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	first := filepath.Join(out+".checkpoint", "part-000000.parquet")
	deadline := time.Now().Add(time.Minute)
	for {
		if _, err := os.Stat(first); err == nil {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("no row group completed within a minute:\n%s", logs.String())
		}
		time.Sleep(2 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	if _, err := os.Stat(out); err == nil {
		t.Fatalf("the job finished before SIGKILL; the test needs a longer file:\n%s", logs.String())
	}

	log, err := run(out)
	if err != nil {
		t.Fatalf("the rerun: %v\n%s", err, log)
	}
	t.Logf("the rerun printed:\n%s", log)
	if !strings.Contains(log, "validation: passed before") || !strings.Contains(log, "row groups (") || !strings.Contains(log, "were scored before; starting at row group") {
		t.Fatalf("the rerun does not say it resumed:\n%s", log)
	}
	names, a := readTable(t, whole)
	_, b := readTable(t, out)
	if strings.Join(names, ",") != "id,output_0,output_1,version" || len(a) != rows || len(b) != rows {
		t.Fatalf("columns %v, %d rows uninterrupted, %d resumed", names, len(a), len(b))
	}
	for i := range a {
		if strings.Join(a[i], ",") != strings.Join(b[i], ",") {
			t.Fatalf("row %d: %v resumed, %v uninterrupted", i, b[i], a[i])
		}
	}
	if _, err := os.Stat(out + ".checkpoint"); !os.IsNotExist(err) {
		t.Fatalf("the checkpoint is left after the rerun: %v", err)
	}
}

// TestScoreMatchesOnlineAPI scores a file, then sends a sample of its rows
// one by one to a gateway serving the same version: the answers equal the
// scored outputs within 1e-6 relative.
func TestScoreMatchesOnlineAPI(t *testing.T) {
	dir := t.TempDir()
	in, out := filepath.Join(dir, "customers.csv"), filepath.Join(dir, "scores.jsonl")
	const rows = 5000
	if err := trainer.WriteSyntheticTable(in, rows, 13, false); err != nil {
		t.Fatal(err)
	}
	cmd := infergateCommand(scoreArgs(in, out)...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("score: %v\n%s", err, b)
	}
	scored := map[string][2]float64{}
	lines, _ := os.ReadFile(out)
	for _, line := range strings.Split(strings.TrimSpace(string(lines)), "\n") {
		var row struct {
			ID      string  `json:"id"`
			O0      float64 `json:"output_0"`
			O1      float64 `json:"output_1"`
			Version string  `json:"version"`
		}
		if err := json.Unmarshal([]byte(line), &row); err != nil || row.Version != "1" {
			t.Fatalf("output line %q: %v", line, err)
		}
		scored[row.ID] = [2]float64{row.O0, row.O1}
	}
	if len(scored) != rows {
		t.Fatalf("%d scored rows, want %d", len(scored), rows)
	}

	addr := freeAddr(t)
	config := filepath.Join(dir, "gateway.yaml")
	repo, _ := filepath.Abs("../../configs/models")
	os.WriteFile(config, fmt.Appendf(nil, "listen: %s\nrepository: %s\nstate_dir: %s\nmodels:\n  demo:\n    cache: {entries: 0}\n", addr, repo, filepath.Join(dir, "state")), 0o644)
	srv := infergateCommand("serve", "--config", config)
	var logs bytes.Buffer
	srv.Stderr = &logs
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		srv.Process.Signal(syscall.SIGTERM)
		srv.Wait()
	}()
	waitReady(t, "http://"+addr, &logs)

	_, cells := readTable(t, in)
	for i := 0; i < rows; i += 50 {
		features := make([]float64, 8)
		for f := range features {
			features[f], _ = strconv.ParseFloat(cells[i][1+f], 64)
		}
		body, _ := json.Marshal(map[string]any{"inputs": []any{map[string]any{"name": "input", "shape": []int{1, 8}, "datatype": "FP32", "data": features}}})
		resp, err := http.Post("http://"+addr+"/v2/models/demo/infer", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		var answer struct {
			ModelVersion string `json:"model_version"`
			Outputs      []struct {
				Data []float64 `json:"data"`
			} `json:"outputs"`
		}
		err = json.NewDecoder(resp.Body).Decode(&answer)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || answer.ModelVersion != "1" || len(answer.Outputs) == 0 || len(answer.Outputs[0].Data) != 2 {
			t.Fatalf("row %d: %d %+v (%v)", i, resp.StatusCode, answer, err)
		}
		got := scored[cells[i][0]]
		for j, want := range answer.Outputs[0].Data {
			if math.Abs(got[j]-want) > 1e-6*math.Abs(want)+1e-12 {
				t.Fatalf("row %d (%s) output %d: scored %v, the online API answers %v", i, cells[i][0], j, got[j], want)
			}
		}
	}
}

// duckDB runs SQL queries with DuckDB through Node.js and returns each
// query's rows.
func duckDB(t *testing.T, queries ...string) [][]map[string]any {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node is not installed: DuckDB runs through npm's @duckdb/node-api; install Node.js, then run `make duckdb`")
	}
	script, _ := filepath.Abs("testdata/duckdb_query.cjs")
	cmd := exec.Command(node, append([]string{script, duckDBDir}, queries...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("DuckDB: %v\n%s", err, stderr.String())
	}
	var rows [][]map[string]any
	if err := json.Unmarshal(out, &rows); err != nil {
		t.Fatalf("cannot decode what DuckDB printed: %v\n%s", err, out)
	}
	return rows
}

// TestScoreOutsideParquet scores a Parquet file that DuckDB wrote, as a
// warehouse export would come: features as INTEGER, BIGINT, SMALLINT,
// TINYINT, DOUBLE and FLOAT, nulls in one of them, several row groups,
// a text id and a BOOLEAN carried. DuckDB then reads the output: one row
// per scored row with the carried values and types kept, the rejected
// rows in the rejects file, and the outputs equal to those of the same
// rows given as FP32 CSV.
func TestScoreOutsideParquet(t *testing.T) {
	dir := t.TempDir()
	in, out, rejects := filepath.Join(dir, "export.parquet"), filepath.Join(dir, "scores.parquet"), filepath.Join(dir, "rejects.jsonl")
	duckDB(t, fmt.Sprintf(`COPY (SELECT 'cust-' || i::VARCHAR AS customer_id, (30 + i %% 40)::INTEGER AS age,
		(20000 + (i * 37) %% 80000)::DOUBLE AS income, (i %% 120)::BIGINT AS tenure_months, ((i * 13) %% 20000)::DOUBLE AS balance,
		(1 + i %% 3)::TINYINT AS num_products, CASE WHEN i %% 1000 = 7 THEN NULL ELSE (550 + i %% 300)::SMALLINT END AS credit_score,
		(i %% 5)::INTEGER AS late_payments, ((i %% 100) / 100.0)::DECIMAL(4, 2) AS utilization, (i %% 2 = 0) AS vip,
		TIMESTAMP_NS '2024-05-01 12:00:00.123456789' AS seen
		FROM range(30000) t(i)) TO '%s' (FORMAT PARQUET, ROW_GROUP_SIZE 10000)`, in))
	args := []string{"score", "--config", "../../configs/demo.yaml", "--model", "demo", "--in", in, "--out", out,
		"--carry", "customer_id,vip,seen", "--rejects", rejects, "--batch", "32", "--quiet"}
	cmd := infergateCommand(args...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("score: %v\n%s", err, b)
	}
	got := duckDB(t,
		fmt.Sprintf(`SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM '%s')`, out),
		fmt.Sprintf(`SELECT count(*) AS n, count(DISTINCT customer_id) AS ids, sum(vip::INTEGER) AS vips, min(version) AS v FROM '%s'`, out),
		fmt.Sprintf(`SELECT count(*) AS n, min("column") AS col, min(reason) AS reason FROM read_json_auto('%s')`, rejects),
		fmt.Sprintf(`SELECT customer_id, output_0, output_1 FROM '%s' WHERE customer_id IN ('cust-0', 'cust-12345', 'cust-29999') ORDER BY customer_id`, out))
	var types []string
	for _, c := range got[0] {
		types = append(types, fmt.Sprint(c["column_name"], " ", c["column_type"]))
	}
	if strings.Join(types, ", ") != "customer_id VARCHAR, vip BOOLEAN, seen TIMESTAMP_NS, output_0 FLOAT, output_1 FLOAT, version VARCHAR" {
		t.Fatalf("DuckDB reads the output's columns as %v", types)
	}
	if c := got[1][0]; fmt.Sprintf("%v %v %v %v", c["n"], c["ids"], c["vips"], c["v"]) != "29970 29970 15000 1" {
		t.Fatalf("DuckDB counts %v", c)
	}
	if c := got[2][0]; fmt.Sprintf("%v %v %v", c["n"], c["col"], c["reason"]) != "30 credit_score null" {
		t.Fatalf("the rejects: %v", c)
	}

	// Carried into CSV, the nanosecond timestamp is written in its unit.
	csvScores := filepath.Join(dir, "scores.csv")
	cmd = infergateCommand("score", "--config", "../../configs/demo.yaml", "--model", "demo", "--in", in, "--out", csvScores,
		"--carry", "customer_id,seen", "--rejects", rejects+".csv", "--allow-extra", "--batch", "32", "--quiet")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("score: %v\n%s", err, b)
	}
	if scores, _ := os.ReadFile(csvScores); !strings.HasPrefix(string(scores), "customer_id,seen,output_0,output_1,version\ncust-0,2024-05-01T12:00:00.123456789Z,") {
		t.Fatalf("the CSV output begins:\n%.200s", scores)
	}

	// The same rows as an FP32 CSV score alike.
	csv := filepath.Join(dir, "same.csv")
	var b strings.Builder
	b.WriteString("customer_id,age,income,tenure_months,balance,num_products,credit_score,late_payments,utilization\n")
	for _, i := range []int{0, 12345, 29999} {
		fmt.Fprintf(&b, "cust-%d,%d,%d,%d,%d,%d,%d,%d,%v\n", i, 30+i%40, 20000+(i*37)%80000, i%120, (i*13)%20000, 1+i%3, 550+i%300, i%5, float32(i%100)/100)
	}
	os.WriteFile(csv, []byte(b.String()), 0o644)
	csvOut := filepath.Join(dir, "same.jsonl")
	cmd = infergateCommand("score", "--config", "../../configs/demo.yaml", "--model", "demo", "--in", csv, "--out", csvOut, "--carry", "customer_id", "--batch", "32", "--quiet")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("score: %v\n%s", err, b)
	}
	lines, _ := os.ReadFile(csvOut)
	for k, line := range strings.Split(strings.TrimSpace(string(lines)), "\n") {
		var row map[string]any
		json.Unmarshal([]byte(line), &row)
		want := got[3][k]
		for _, o := range []string{"output_0", "output_1"} {
			a, b := row[o].(float64), want[o].(float64)
			if row["customer_id"] != want["customer_id"] || math.Abs(a-b) > 1e-6*math.Abs(b)+1e-12 {
				t.Fatalf("%v from the CSV, %v from DuckDB's Parquet", row, want)
			}
		}
	}
}
