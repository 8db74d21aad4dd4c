package bench

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

func sampleResults() []*Result {
	var out []*Result
	for i, rate := range []float64{1000, 2000, 4000, 8000} {
		r := &Result{Name: "sweep | demo", Mode: "open", Connections: 64, Rate: rate, RowsPerRequest: 1, Seconds: 10,
			OK: int64(rate) * 10, Requests: int64(rate) * 10, OKPerSec: rate * 0.99, RowsPerSec: rate * 0.99}
		r.Latency = Latency{Count: uint64(r.OK), P50: Millis(time.Duration(i+1) * time.Millisecond),
			P90: Millis(time.Duration(i+2) * time.Millisecond), P99: Millis(time.Duration(4<<i) * time.Millisecond),
			P999: Millis(time.Duration(8<<i) * time.Millisecond), Max: Millis(time.Second)}
		out = append(out, r)
	}
	last := out[len(out)-1]
	last.Errors = map[string]int64{"503": 12, "timeout": 1}
	last.ErrorLatency = &Latency{Count: 12, P99: Millis(300 * time.Microsecond)}
	return out
}

func TestMarkdownTables(t *testing.T) {
	rep := &Report{Command: "infergate bench --rates 1000,2000", Date: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
		Machine: Machine{CPU: "Test CPU", Cores: 2, OS: "linux", Arch: "amd64", Go: "go1.26"}, Runs: sampleResults(),
		Compute: &ComputeResult{Model: "heavy", Version: "1", Concurrency: 1, Points: []ComputePoint{
			{Batch: 1, Runs: 10, RowsPerSec: 100}, {Batch: 2, Runs: 8, RowsPerSec: 160}}, Best: ComputePoint{Batch: 2, RowsPerSec: 160}}}
	var b bytes.Buffer
	if err := rep.WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	md := b.String()
	for _, want := range []string{"- machine: Test CPU, 2 cores", "2025-01-02T03:04:05Z", "`infergate bench --rates 1000,2000`",
		"503: 12 (p99 0.3ms), timeout: 1", "**160**", `sweep \| demo`} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	// Every row of a table has as many cells as its header.
	var cells int
	for line := range strings.Lines(md) {
		if !strings.HasPrefix(line, "|") {
			cells = 0
			continue
		}
		n := strings.Count(strings.ReplaceAll(line, `\|`, ""), "|")
		if cells == 0 {
			cells = n
		} else if n != cells {
			t.Errorf("row has %d separators, its header %d: %s", n, cells, line)
		}
	}
}

func TestJSONReport(t *testing.T) {
	rep := &Report{Command: "x", Runs: sampleResults()}
	var b bytes.Buffer
	if err := WriteJSON(&b, rep); err != nil {
		t.Fatal(err)
	}
	var back struct {
		Runs []struct {
			Name    string           `json:"name"`
			OKPerS  float64          `json:"ok_per_s"`
			Errors  map[string]int64 `json:"errors"`
			Latency struct {
				P99 float64 `json:"p99_ms"`
			} `json:"latency"`
		} `json:"runs"`
	}
	if err := json.Unmarshal(b.Bytes(), &back); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, b.Bytes())
	}
	if len(back.Runs) != 4 || back.Runs[1].Latency.P99 != 8 || back.Runs[3].Errors["503"] != 12 || back.Runs[0].OKPerS != 990 {
		t.Fatalf("report did not round-trip: %+v", back)
	}
	var full Report
	if err := json.Unmarshal(b.Bytes(), &full); err != nil || full.Runs[2].Latency.P999 != Millis(32*time.Millisecond) {
		t.Fatalf("report did not decode back into a Report: %v, %+v", err, full.Runs[2].Latency)
	}
}

func TestLatencyCurveSVG(t *testing.T) {
	f := func(results []*Result, wantCircles int) {
		t.Helper()
		var b bytes.Buffer
		if err := WriteLatencyCurve(&b, "demo <open loop> & more", results); err != nil {
			t.Fatal(err)
		}
		counts := map[string]int{}
		dec := xml.NewDecoder(&b)
		var root string
		for {
			tok, err := dec.Token()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("SVG is not well-formed XML: %v\n%s", err, b.String())
			}
			if el, ok := tok.(xml.StartElement); ok {
				if root == "" {
					root = el.Name.Local
					if el.Name.Space != "http://www.w3.org/2000/svg" {
						t.Errorf("root element in namespace %q, want SVG's", el.Name.Space)
					}
				}
				counts[el.Name.Local]++
			}
		}
		if root != "svg" || counts["polyline"] != 2 || counts["circle"] != wantCircles {
			t.Errorf("got root %q, %d polylines, %d circles; want svg, 2, %d", root, counts["polyline"], counts["circle"], wantCircles)
		}
	}
	f(sampleResults(), 8)
	f(nil, 0)
	failed := &Result{Name: "all failed", Errors: map[string]int64{"connect": 3}}
	f(append(sampleResults()[:1], failed), 2)
}

func TestNiceTicks(t *testing.T) {
	f := func(top float64, want ...float64) {
		t.Helper()
		got := niceTicks(top)
		if len(got) != len(want) {
			t.Fatalf("niceTicks(%g) = %v, want %v", top, got, want)
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("niceTicks(%g) = %v, want %v", top, got, want)
			}
		}
	}
	f(10, 0, 2, 4, 6, 8, 10)
	f(8400, 0, 2000, 4000, 6000, 8000, 10000)
	f(1.05, 0, 0.25, 0.5, 0.75, 1, 1.25)
}

func TestThisMachine(t *testing.T) {
	m := ThisMachine()
	if m.Cores < 1 || m.CPU == "" || m.Go == "" {
		t.Errorf("ThisMachine() = %+v", m)
	}
	rss, err := ProcessRSS()
	if err != nil || rss < 1<<20 {
		t.Errorf("ProcessRSS() = %d, %v; want at least a MiB", rss, err)
	}
}
