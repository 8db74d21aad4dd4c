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

// TestScoreWarehouseParquet scores Parquet files that DuckDB wrote as
// warehouses export them: features as unsigned integers (UINT_8 to
// UINT_64), as DECIMAL(38, s) (fixed-length byte arrays) beside narrower
// decimals, and under upper-case names (Snowflake's); each scores as the
// same rows given as CSV. Carried into CSV and JSON lines, a DATE, TIME,
// UUID, UBIGINT, DECIMAL(38, 3) and TIMESTAMP are written as DuckDB
// prints them. A nested column carried, or a feature stored as VARCHAR, is
// refused before anything is written, naming the column and its type.
func TestScoreWarehouseParquet(t *testing.T) {
	dir := t.TempDir()
	path := func(name string) string { return filepath.Join(dir, name) }
	const rows = 3000
	rowsSQL := fmt.Sprintf(`SELECT 'c' || i::VARCHAR AS id, 30 + i %% 40 AS age, 20000 + (i * 37) %% 80000 AS income,
		i %% 120 AS tenure_months, (i * 13) %% 20000 AS balance, 1 + i %% 3 AS num_products, 550 + i %% 300 AS credit_score,
		i %% 5 AS late_payments, (i %% 100)::DECIMAL(4, 2) / 100 AS utilization FROM range(%d) t(i)`, rows)
	duckDB(t,
		fmt.Sprintf(`COPY (%s) TO '%s' (HEADER)`, rowsSQL, path("same.csv")),
		fmt.Sprintf(`COPY (SELECT id, age::UTINYINT AS age, income::UINTEGER AS income, tenure_months::USMALLINT AS tenure_months,
			balance::UBIGINT AS balance, num_products::UTINYINT AS num_products, credit_score::UINTEGER AS credit_score,
			late_payments::UBIGINT AS late_payments, utilization FROM (%s)) TO '%s' (FORMAT PARQUET, COMPRESSION snappy)`, rowsSQL, path("unsigned.parquet")),
		fmt.Sprintf(`COPY (SELECT id, age::DECIMAL(38, 0) AS age, income::DECIMAL(38, 2) AS income, tenure_months::DECIMAL(10, 2) AS tenure_months,
			balance::DECIMAL(38, 10) AS balance, num_products::DECIMAL(18, 3) AS num_products, credit_score::DECIMAL(20, 1) AS credit_score,
			late_payments::DECIMAL(4, 0) AS late_payments, utilization::DECIMAL(38, 6) AS utilization FROM (%s)) TO '%s' (FORMAT PARQUET, COMPRESSION gzip)`, rowsSQL, path("decimal.parquet")),
		fmt.Sprintf(`COPY (SELECT id AS ID, age AS AGE, income AS INCOME, tenure_months AS TENURE_MONTHS, balance AS BALANCE,
			num_products AS NUM_PRODUCTS, credit_score AS CREDIT_SCORE, late_payments AS LATE_PAYMENTS, utilization AS UTILIZATION
			FROM (%s)) TO '%s' (FORMAT PARQUET, COMPRESSION uncompressed, ROW_GROUP_SIZE 2048)`, rowsSQL, path("upper.parquet")),
		fmt.Sprintf(`COPY (SELECT *, DATE '2024-02-29' AS day, TIME '23:59:58.5' AS at, '5f0c7a1e-3b9d-4c2a-8e61-0d9a3c7b2f14'::UUID AS uid,
			18446744073709551615::UBIGINT AS big, -12345678901234567890.125::DECIMAL(38, 3) AS amount,
			TIMESTAMP '2024-05-01 12:00:00.25' AS seen, [i, i + 1] AS list, {'a': i} AS struct FROM (SELECT *, row_number() OVER () AS i FROM (%s)))
			TO '%s' (FORMAT PARQUET)`, rowsSQL, path("carried.parquet")),
		fmt.Sprintf(`COPY (SELECT * REPLACE (income::VARCHAR AS income) FROM (%s)) TO '%s' (FORMAT PARQUET)`, rowsSQL, path("varchar.parquet")))

	score := func(in, out string, args ...string) (string, error) {
		args = append([]string{"score", "--config", "../../configs/demo.yaml", "--model", "demo", "--in", in, "--out", out, "--batch", "32", "--quiet"}, args...)
		b, err := infergateCommand(args...).CombinedOutput()
		return string(b), err
	}
	// scores reads a JSON-lines output: each row's outputs by its id
	// column's value.
	scores := func(out, id string) map[string][2]float64 {
		lines, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string][2]float64{}
		for _, line := range strings.Split(strings.TrimSpace(string(lines)), "\n") {
			var row map[string]any
			if err := json.Unmarshal([]byte(line), &row); err != nil {
				t.Fatalf("output line %q: %v", line, err)
			}
			o0, _ := row["output_0"].(float64)
			o1, _ := row["output_1"].(float64)
			m[fmt.Sprint(row[id])] = [2]float64{o0, o1}
		}
		return m
	}
	if log, err := score(path("same.csv"), path("same.jsonl"), "--carry", "id"); err != nil {
		t.Fatalf("score the CSV: %v\n%s", err, log)
	}
	want := scores(path("same.jsonl"), "id")
	for _, tc := range []struct{ in, id string }{{"unsigned.parquet", "id"}, {"decimal.parquet", "id"}, {"upper.parquet", "ID"}} {
		out := path(tc.in + ".jsonl")
		log, err := score(path(tc.in), out, "--carry", tc.id)
		if err != nil {
			t.Fatalf("%s: %v\n%s", tc.in, err, log)
		}
		got := scores(out, tc.id)
		if len(got) != rows {
			t.Fatalf("%s: %d rows scored, want %d", tc.in, len(got), rows)
		}
		for id, w := range want {
			for j := range w {
				if g := got[id][j]; math.Abs(g-w[j]) > 1e-6*math.Abs(w[j])+1e-12 {
					t.Fatalf("%s, row %s, output %d: %v, and %v from the same row as CSV", tc.in, id, j, g, w[j])
				}
			}
		}
		if tc.in == "upper.parquet" && !strings.Contains(log, `feature "credit_score" is read from column "CREDIT_SCORE": their names differ only in case`) {
			t.Errorf("the job does not say which columns it matched regardless of case:\n%s", log)
		}
	}

	carry := []string{"--carry", "id,day,at,uid,big,amount,seen", "--allow-extra"}
	for ext, first := range map[string]string{
		".csv":   "c0,2024-02-29,23:59:58.5,5f0c7a1e-3b9d-4c2a-8e61-0d9a3c7b2f14,18446744073709551615,-12345678901234567890.125,2024-05-01T12:00:00.25Z,",
		".jsonl": `{"id":"c0","day":"2024-02-29","at":"23:59:58.5","uid":"5f0c7a1e-3b9d-4c2a-8e61-0d9a3c7b2f14","big":18446744073709551615,"amount":-12345678901234567890.125,"seen":"2024-05-01T12:00:00.25Z",`,
	} {
		out := path("carried" + ext)
		if log, err := score(path("carried.parquet"), out, carry...); err != nil {
			t.Fatalf("carried%s: %v\n%s", ext, err, log)
		}
		text, _ := os.ReadFile(out)
		lines := strings.Split(string(text), "\n")
		if ext == ".csv" {
			lines = lines[1:]
		}
		if !strings.HasPrefix(lines[0], first) {
			t.Errorf("the first row of carried%s is\n%s\nwant it to begin\n%s", ext, lines[0], first)
		}
	}
	// Carried into Parquet, DuckDB reads the same types and values back.
	if log, err := score(path("carried.parquet"), path("carried.parquet.out.parquet"), carry...); err != nil {
		t.Fatalf("carried.parquet: %v\n%s", err, log)
	}
	back := duckDB(t, fmt.Sprintf(`SELECT count(*) AS n FROM '%s' a JOIN '%s' b USING (id)
		WHERE a.day = b.day AND a.at = b.at AND a.uid = b.uid AND a.big = b.big AND a.amount = b.amount AND a.seen = b.seen`,
		path("carried.parquet"), path("carried.parquet.out.parquet")))
	if n := back[0][0]["n"]; fmt.Sprint(n) != strconv.Itoa(rows) {
		t.Errorf("DuckDB finds %v rows carried into Parquet unchanged, want %d", n, rows)
	}

	for _, tc := range []struct {
		in   string
		args []string
		want string
	}{
		{"carried.parquet", []string{"--carry", "id,list", "--allow-extra"}, `cannot carry column "list" of "` + path("carried.parquet") + `": it holds nested (Parquet LIST) values`},
		{"carried.parquet", []string{"--carry", "id,struct", "--allow-extra"}, `cannot carry column "struct"`},
		{"varchar.parquet", []string{"--carry", "id"}, `"income" holds text (Parquet BYTE_ARRAY, STRING) values`},
	} {
		out := path("refused.parquet")
		log, err := score(path(tc.in), out, tc.args...)
		if err == nil || !strings.Contains(log, tc.want) {
			t.Errorf("%s %v: %v, want an error saying %q:\n%s", tc.in, tc.args, err, tc.want, log)
		}
		for _, p := range []string{out, out + ".checkpoint", out + ".drift.json"} {
			if _, err := os.Stat(p); !os.IsNotExist(err) {
				t.Errorf("%s %v left %s behind", tc.in, tc.args, p)
			}
		}
	}
}
