package gateway

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// classOutput is one output of a V2 response whose data are strings.
type classOutput struct {
	Name, Datatype string
	Shape          []int
	Data           []string
}

// demoProbabilities returns the demo model's raw [2,2] answer to demoRequest.
func demoProbabilities(t *testing.T, url string) []float32 {
	t.Helper()
	code, _, body := call(t, "POST", url+"/v2/models/demo/infer", []byte(demoRequest))
	if code != 200 {
		t.Fatalf("status %d: %s", code, body)
	}
	var resp struct{ Outputs []struct{ Data []float32 } }
	if err := json.Unmarshal(body, &resp); err != nil || len(resp.Outputs) != 1 || len(resp.Outputs[0].Data) != 4 {
		t.Fatalf("raw answer %s: %v", body, err)
	}
	return resp.Outputs[0].Data
}

// wantClasses returns the top k elements of each row of the [rows, 2]
// scores p, as "<score>:<index>[:<label>]".
func wantClasses(p []float32, k int, labels []string) []string {
	var out []string
	for row := 0; row < len(p); row += 2 {
		order := []int{0, 1}
		if p[row+1] > p[row] {
			order = []int{1, 0}
		}
		for _, j := range order[:k] {
			s := strconv.FormatFloat(float64(p[row+j]), 'g', -1, 32) + ":" + strconv.Itoa(j)
			if labels != nil {
				s += ":" + labels[j]
			}
			out = append(out, s)
		}
	}
	return out
}

// classify asks url's demo model for the top k classes of demoRequest's
// rows, in JSON, and returns the output.
func classify(t *testing.T, url string, k int) classOutput {
	t.Helper()
	req := strings.Replace(demoRequest, `"inputs"`, `"outputs":[{"name":"output","parameters":{"classification":`+strconv.Itoa(k)+`}}],"inputs"`, 1)
	code, _, body := call(t, "POST", url+"/v2/models/demo/infer", []byte(req))
	if code != 200 {
		t.Fatalf("classification %d: status %d: %s", k, code, body)
	}
	var resp struct{ Outputs []classOutput }
	if err := json.Unmarshal(body, &resp); err != nil || len(resp.Outputs) != 1 {
		t.Fatalf("classification %d: %s: %v", k, body, err)
	}
	return resp.Outputs[0]
}

func TestClassification(t *testing.T) {
	labels := []string{"stays", "churns"}
	for _, labelled := range []bool{false, true} {
		cfg := testConfig(t)
		var want []string
		if labelled {
			want = labels
			if err := os.WriteFile(filepath.Join(cfg.Repository, "demo", "1", "labels.txt"), []byte("stays\r\nchurns\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		_, url := startServer(t, cfg)
		p := demoProbabilities(t, url)
		for _, k := range []int{1, 2} {
			out := classify(t, url, k)
			if out.Name != "output" || out.Datatype != "BYTES" || len(out.Shape) != 2 || out.Shape[0] != 2 || out.Shape[1] != k ||
				strings.Join(out.Data, " ") != strings.Join(wantClasses(p, k, want), " ") {
				t.Fatalf("labels %v, classification %d: got %+v, want BYTES [2,%d] %q", labelled, k, out, k, wantClasses(p, k, want))
			}
		}

		// binary_data: the strings follow the JSON, each after its
		// 4-byte little-endian length.
		req := strings.Replace(demoRequest, `"inputs"`, `"outputs":[{"name":"output","parameters":{"classification":2,"binary_data":true}}],"inputs"`, 1)
		code, hdr, body := call(t, "POST", url+"/v2/models/demo/infer", []byte(req))
		if code != 200 {
			t.Fatalf("binary: status %d: %s", code, body)
		}
		n := atoi(t, hdr.Get("Inference-Header-Content-Length"))
		var resp struct {
			Outputs []struct {
				Datatype   string
				Shape      []int
				Parameters map[string]int
			}
		}
		if err := json.Unmarshal(body[:n], &resp); err != nil {
			t.Fatalf("binary header %q: %v", body[:n], err)
		}
		bin := body[n:]
		if o := resp.Outputs[0]; o.Datatype != "BYTES" || len(o.Shape) != 2 || o.Shape[1] != 2 || o.Parameters["binary_data_size"] != len(bin) {
			t.Fatalf("binary header %s for %d bytes", body[:n], len(bin))
		}
		var got []string
		for len(bin) >= 4 {
			l := int(binary.LittleEndian.Uint32(bin))
			got = append(got, string(bin[4:4+l]))
			bin = bin[4+l:]
		}
		if len(bin) != 0 || strings.Join(got, " ") != strings.Join(wantClasses(p, 2, want), " ") {
			t.Fatalf("binary elements %q (%d bytes left), want %q", got, len(bin), wantClasses(p, 2, want))
		}
	}
}

func TestClassificationErrors(t *testing.T) {
	_, url := startServer(t, testConfig(t))
	f := func(model, outputs, want string) {
		t.Helper()
		req := strings.Replace(demoRequest, `"inputs"`, `"outputs":`+outputs+`,"inputs"`, 1)
		if model != "demo" {
			req = `{"inputs":[{"name":"input","shape":[1,4],"datatype":"INT32","data":[1,2,3,4]}],"outputs":` + outputs + `}`
		}
		code, _, body := call(t, "POST", url+"/v2/models/"+model+"/infer", []byte(req))
		if code != 400 || !bytes.Contains(body, []byte(want)) {
			t.Fatalf("%s: status %d %s, want 400 with %q", outputs, code, body, want)
		}
	}
	f("demo", `[{"name":"output","parameters":{"classification":3}}]`, `output \"output\": parameters.classification asks for 3 classes but the output has 2`)
	f("demo", `[{"name":"output","parameters":{"classification":0}}]`, `want an integer of at least 1, got 0`)
	f("demo", `[{"name":"output","parameters":{"classification":true}}]`, `want an integer of at least 1, got boolean`)
	f("demo", `[{"name":"output","parameters":{"shared_memory_region":"r"}}]`, `output \"output\": unsupported parameter \"shared_memory_region\"`)
	f("echo_int32", `[{"name":"output","parameters":{"classification":1}}]`, `needs a [batch, classes] FP32 or FP64 output, not INT32`)
	// Unknown request parameters pass, as Triton lets them.
	req := strings.Replace(demoRequest, `"inputs"`, `"parameters":{"sequence_id":7},"inputs"`, 1)
	if code, _, body := call(t, "POST", url+"/v2/models/demo/infer", []byte(req)); code != 200 {
		t.Fatalf("unknown request parameter: status %d %s", code, body)
	}
	// The server says it speaks the extension.
	if _, _, body := call(t, "GET", url+"/v2", nil); !bytes.Contains(body, []byte(`"classification"`)) {
		t.Fatalf("server metadata %s", body)
	}
}

// TestBadLabelsStopLoad: a malformed labels.txt keeps its version from
// loading, with the reason.
func TestBadLabelsStopLoad(t *testing.T) {
	f := func(labels, want string) {
		t.Helper()
		cfg := testConfig(t)
		if err := os.WriteFile(filepath.Join(cfg.Repository, "demo", "1", "labels.txt"), []byte(labels), 0o644); err != nil {
			t.Fatal(err)
		}
		srv, err := New(Options{Config: cfg, Env: testEnv, Log: quiet, Engine: testEngine(t, cfg.StateDir).Conn})
		if err == nil {
			srv.Shutdown(context.Background())
			t.Fatalf("%q: loaded", labels)
		}
		if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), `model "demo" version 1`) {
			t.Fatalf("%q: got %v, want %q", labels, err, want)
		}
	}
	f("stays\n\nchurns\n", "labels.txt: line 2 is empty")
	f("stays\nchurns\nmaybe\n", `labels.txt has 3 labels, the output "output" has 2 classes`)
	f("stays\n\xff\n", "labels.txt is not UTF-8 text")
}

// TestClassificationCached: the response cache holds the model's scores,
// so that a classification and a plain request of the same inputs, in
// either order, each get their own answer.
func TestClassificationCached(t *testing.T) {
	cfg := testConfig(t)
	mc := cfg.Models["demo"]
	mc.Cache.Entries = 16
	cfg.Models["demo"] = mc
	_, url := startServer(t, cfg)
	first := classify(t, url, 1)
	p := demoProbabilities(t, url) // from the cache
	if again := classify(t, url, 2); strings.Join(again.Data, " ") != strings.Join(wantClasses(p, 2, nil), " ") ||
		strings.Join(first.Data, " ") != strings.Join(wantClasses(p, 1, nil), " ") {
		t.Fatalf("classification 1 %q and 2 %q around scores %v", first.Data, again.Data, p)
	}
	if code, _, body := call(t, "GET", url+"/metrics", nil); code != 200 || !bytes.Contains(body, []byte(`cache_hits_total{model="demo",version="1"} 2`)) {
		t.Fatalf("metrics: want 2 cache hits of demo: %s", grepLines(body, "cache_hits"))
	}
}

// grepLines returns the lines of body that hold s.
func grepLines(body []byte, s string) string {
	var out []string
	for _, line := range strings.Split(string(body), "\n") {
		if strings.Contains(line, s) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}
