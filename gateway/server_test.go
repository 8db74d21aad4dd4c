package gateway

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/infergate/infergate/bench"
)

// call sends one request and returns the status, headers and body.
func call(t *testing.T, method, url string, body []byte, headers ...string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultTransport.RoundTrip(req) // no transparent decompression
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

func decodeJSON(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("invalid JSON %q: %v", b, err)
	}
	return m
}

const demoRequest = `{"id":"req-1","inputs":[{"name":"input","shape":[2,8],"datatype":"FP32",
 "data":[[35,52000,24,1200,2,680,0,0.3],[61,18000,3,9000,1,540,4,0.95]]}]}`

func TestHealthAndMetadata(t *testing.T) {
	_, url := startServer(t, testConfig(t))
	f := func(method, path string, wantCode int, wantBody ...string) {
		t.Helper()
		code, _, body := call(t, method, url+path, nil)
		if code != wantCode {
			t.Fatalf("%s %s: status %d %s, want %d", method, path, code, body, wantCode)
		}
		for _, w := range wantBody {
			if !strings.Contains(string(body), w) {
				t.Fatalf("%s %s: body %s lacks %s", method, path, body, w)
			}
		}
	}
	f("GET", "/v2/health/live", 200)
	f("GET", "/v2/health/ready", 200)
	f("GET", "/v2", 200, `"name":"infergate"`, `"version":"test"`, `"binary_tensor_data"`)
	f("GET", "/v2/models/demo", 200, `"platform":"onnx_onnxv1"`, `"versions":["1"]`, `"datatype":"FP32"`, `"shape":[-1,8]`)
	f("GET", "/v2/models/versioned", 200, `"versions":["1","2","3"]`)
	f("GET", "/v2/models/versioned/versions/2", 200, `"versions":["2"]`)
	f("GET", "/v2/models/pair", 200, `"name":"a"`, `"name":"b"`, `"datatype":"INT64"`, `"name":"a_sum"`)
	f("GET", "/v2/models/demo/ready", 200)
	f("GET", "/v2/models/versioned/versions/1/ready", 200)
	f("GET", "/v2/models/versioned/versions/9/ready", 404, `unknown version \"9\" of model \"versioned\"`)
	f("GET", "/v2/models/nope", 404, `unknown model \"nope\"`)
	f("GET", "/v2/models/nope/ready", 404)
	f("GET", "/v2/models/demo/explain", 404, `no such endpoint`)
	f("GET", "/v3", 404)
	f("POST", "/v2/health/live", 405)
	f("GET", "/v2/models/demo/infer", 405, "use POST")
	f("GET", "/metrics", 200, "go_goroutines", "process_resident_memory_bytes", `infergate_model_version_loaded{model="demo",version="1"} 1`)
}

func TestInferDemo(t *testing.T) {
	_, url := startServer(t, testConfig(t))
	code, hdr, body := call(t, "POST", url+"/v2/models/demo/infer", []byte(demoRequest), "Content-Type", "application/json")
	if code != 200 {
		t.Fatalf("status %d: %s", code, body)
	}
	if hdr.Get("infergate-model-version") != "1" {
		t.Fatalf("infergate-model-version = %q", hdr.Get("infergate-model-version"))
	}
	m := decodeJSON(t, body)
	if m["model_name"] != "demo" || m["model_version"] != "1" || m["id"] != "req-1" {
		t.Fatalf("response header fields wrong: %s", body)
	}
	var resp struct {
		Outputs []struct {
			Name, Datatype string
			Shape          []int
			Data           []float64
		}
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		t.Fatal(err)
	}
	out := resp.Outputs[0]
	if out.Datatype != "FP32" || len(out.Shape) != 2 || out.Shape[0] != 2 || out.Shape[1] != 2 || len(out.Data) != 4 {
		t.Fatalf("output %+v, want FP32 [2,2]", out)
	}
	for row := range 2 {
		if sum := out.Data[2*row] + out.Data[2*row+1]; math.Abs(sum-1) > 1e-5 {
			t.Fatalf("row %d probabilities sum to %v", row, sum)
		}
	}
	// The same rows sent flat give the same answer.
	flat := strings.NewReplacer("[[", "[", "],[", ",", "]]", "]").Replace(demoRequest)
	_, _, body2 := call(t, "POST", url+"/v2/models/demo/infer", []byte(flat))
	if !bytes.Equal(body, body2) {
		t.Fatalf("flat data answered\n%s\nnested answered\n%s", body2, body)
	}
}

func TestPinnedVersionsAndOutputSelection(t *testing.T) {
	_, url := startServer(t, testConfig(t))
	req := `{"inputs":[{"name":"input","shape":[1,2],"datatype":"FP32","data":[1.5,-2]}]}`
	for _, v := range []string{"1", "2", "3"} {
		code, hdr, body := call(t, "POST", url+"/v2/models/versioned/versions/"+v+"/infer", []byte(req))
		if code != 200 || hdr.Get("infergate-model-version") != v || !strings.Contains(string(body), `"model_version":"`+v+`"`) {
			t.Fatalf("version %s: %d %s %s", v, code, hdr.Get("infergate-model-version"), body)
		}
	}
	if _, hdr, _ := call(t, "POST", url+"/v2/models/versioned/infer", []byte(req)); hdr.Get("infergate-model-version") != "3" {
		t.Fatalf("unpinned request answered by %q, want the newest version 3", hdr.Get("infergate-model-version"))
	}
	if code, _, body := call(t, "POST", url+"/v2/models/versioned/versions/4/infer", []byte(req)); code != 404 {
		t.Fatalf("unknown version: %d %s", code, body)
	}

	pair := `{"inputs":[{"name":"b","shape":[1,2],"datatype":"INT64","data":[7,-9]},
		{"name":"a","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],
		"outputs":[{"name":"b_out"}]}`
	code, _, body := call(t, "POST", url+"/v2/models/pair/infer", []byte(pair))
	if code != 200 || strings.Contains(string(body), "a_sum") || !strings.Contains(string(body), `"data":[7,-9]`) {
		t.Fatalf("output selection: %d %s", code, body)
	}
	code, _, body = call(t, "POST", url+"/v2/models/pair/infer", []byte(strings.Replace(pair, `,
		"outputs":[{"name":"b_out"}]`, "", 1)))
	if code != 200 || !strings.Contains(string(body), `"name":"a_sum","datatype":"FP32","shape":[1,1],"data":[10]`) {
		t.Fatalf("all outputs: %d %s", code, body)
	}
}

func TestEveryDataTypeOverHTTP(t *testing.T) {
	_, url := startServer(t, testConfig(t))
	f := func(model, datatype, data string) {
		t.Helper()
		req := `{"inputs":[{"name":"input","shape":[1,4],"datatype":"` + datatype + `","data":` + data + `}]}`
		code, _, body := call(t, "POST", url+"/v2/models/"+model+"/infer", []byte(req))
		if code != 200 || !strings.Contains(string(body), `"datatype":"`+datatype+`","shape":[1,4],"data":`+data) {
			t.Fatalf("%s: %d %s", model, code, body)
		}
	}
	f("echo_fp32", "FP32", "[1.5,-2,0,3.25]")
	f("echo_fp64", "FP64", "[1.5,-2,0,1e+100]")
	f("echo_fp16", "FP16", "[1.5,-2,0,65504]")
	f("echo_int32", "INT32", "[1,-2,2147483647,-2147483648]")
	f("echo_int64", "INT64", "[1,-2,9007199254740993,-9223372036854775808]")
	f("echo_int8", "INT8", "[1,-2,127,-128]")
	f("echo_uint8", "UINT8", "[1,2,255,0]")
	f("echo_bool", "BOOL", "[true,false,false,true]")
}

func TestBinaryTensorData(t *testing.T) {
	_, url := startServer(t, testConfig(t))
	header := []byte(`{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":16}}],
		"outputs":[{"name":"output","parameters":{"binary_data":true}}]}`)
	body := bytes.Clone(header)
	for _, v := range []float32{1, 2, 3, 4} {
		body = binary.LittleEndian.AppendUint32(body, math.Float32bits(v))
	}
	code, hdr, resp := call(t, "POST", url+"/v2/models/echo_fp32/infer", body,
		"Inference-Header-Content-Length", strconv.Itoa(len(header)))
	if code != 200 {
		t.Fatalf("status %d: %s", code, resp)
	}
	n := atoi(t, hdr.Get("Inference-Header-Content-Length"))
	if !strings.Contains(string(resp[:n]), `"binary_data_size":16`) || !bytes.Equal(resp[n:], body[len(header):]) {
		t.Fatalf("binary response: header %q, tensor bytes %v", resp[:n], resp[n:])
	}
}

// TestBenchPayloadsAgree: the binary request infergate bench generates
// from the demo model's metadata is answered like its JSON twin.
func TestBenchPayloadsAgree(t *testing.T) {
	_, url := startServer(t, testConfig(t))
	_, _, doc := call(t, "GET", url+"/v2/models/demo", nil)
	inputs, err := bench.ParseMetadata(doc)
	if err != nil {
		t.Fatal(err)
	}
	answer := func(binary bool) []byte {
		p, err := bench.GenerateRequest(inputs, 3, 9, binary)
		if err != nil {
			t.Fatal(err)
		}
		var r bench.Request
		p.Into(&r)
		headers := []string{"Content-Type", cmp.Or(r.ContentType, "application/json")}
		for name, value := range r.Header {
			headers = append(headers, name, value)
		}
		code, _, resp := call(t, "POST", url+"/v2/models/demo/infer", p.Body, headers...)
		if code != 200 {
			t.Fatalf("binary %v: status %d: %s", binary, code, resp)
		}
		return resp
	}
	if asJSON, asBinary := answer(false), answer(true); !bytes.Equal(asJSON, asBinary) {
		t.Fatalf("JSON request answered %s, binary one %s", asJSON, asBinary)
	}
}

func TestCompression(t *testing.T) {
	_, url := startServer(t, testConfig(t))
	_, _, plain := call(t, "POST", url+"/v2/models/demo/infer", []byte(demoRequest))

	var gz bytes.Buffer
	w := gzip.NewWriter(&gz)
	w.Write([]byte(demoRequest))
	w.Close()
	enc, _ := zstd.NewWriter(nil)
	zs := enc.EncodeAll([]byte(demoRequest), nil)
	dec, _ := zstd.NewReader(nil)

	f := func(body []byte, contentEncoding, acceptEncoding, wantEncoding string) {
		t.Helper()
		code, hdr, resp := call(t, "POST", url+"/v2/models/demo/infer", body,
			"Content-Encoding", contentEncoding, "Accept-Encoding", acceptEncoding)
		if code != 200 {
			t.Fatalf("%s body: %d %s", contentEncoding, code, resp)
		}
		if got := hdr.Get("Content-Encoding"); got != wantEncoding {
			t.Fatalf("Accept-Encoding %q answered with Content-Encoding %q, want %q", acceptEncoding, got, wantEncoding)
		}
		switch wantEncoding {
		case "zstd":
			resp, _ = dec.DecodeAll(resp, nil)
		case "gzip":
			r, err := gzip.NewReader(bytes.NewReader(resp))
			if err != nil {
				t.Fatal(err)
			}
			resp, _ = io.ReadAll(r)
		}
		if !bytes.Equal(resp, plain) {
			t.Fatalf("%s/%s answered %s, want %s", contentEncoding, acceptEncoding, resp, plain)
		}
	}
	f(gz.Bytes(), "gzip", "", "")
	f(zs, "zstd", "gzip", "gzip")
	f([]byte(demoRequest), "identity", "zstd", "zstd")
	f(gz.Bytes(), "gzip", "gzip, zstd;q=0", "gzip")
	f(zs, "zstd", "br", "")
}

func TestRequestErrors(t *testing.T) {
	cfg := testConfig(t)
	_, url := startServer(t, cfg)
	f := func(body []byte, wantCode int, wantMsg string, headers ...string) {
		t.Helper()
		code, _, resp := call(t, "POST", url+"/v2/models/demo/infer", body, headers...)
		if code != wantCode || !strings.Contains(decodeJSON(t, resp)["error"].(string), wantMsg) {
			t.Fatalf("got %d %s, want %d with %q", code, resp, wantCode, wantMsg)
		}
	}
	f([]byte(`{"inputs":[`), 400, "")
	f([]byte(`{"inputs":[{"name":"input","shape":[1,8],"datatype":"FP64","data":[1,2,3,4,5,6,7,8]}]}`), 400, `input "input"`)
	f([]byte(`{"inputs":[{"name":"x","shape":[1,8],"datatype":"FP32","data":[1,2,3,4,5,6,7,8]}]}`), 400, `"x"`)
	f([]byte(`{"inputs":[{"name":"input","shape":[1,8],"datatype":"FP32","data":[1,2,3]}]}`), 400, `input "input"`)
	f([]byte(demoRequest), 415, "unsupported Content-Encoding", "Content-Encoding", "br")
	f([]byte(demoRequest), 400, "gzip", "Content-Encoding", "gzip")

	var bomb bytes.Buffer // 4 MiB of zeros compress to a few KiB but exceed the 1 MiB limit
	w := gzip.NewWriter(&bomb)
	w.Write(make([]byte, 4<<20))
	w.Close()
	f(bomb.Bytes(), 413, "once decompressed", "Content-Encoding", "gzip")
	enc, _ := zstd.NewWriter(nil)
	f(enc.EncodeAll(make([]byte, 4<<20), nil), 413, "once decompressed", "Content-Encoding", "zstd")

	// A body over the limit is refused from its Content-Length, before more
	// than its first 8 KiB is read (sent raw: a client still writing would
	// see its connection reset).
	conn, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /v2/models/demo/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", 2<<20, make([]byte, 8<<10))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 413 || !strings.Contains(string(body), "max_body_size") {
		t.Fatalf("oversized body: %d %s", resp.StatusCode, body)
	}

	// The server still serves after all of that.
	if code, _, body := call(t, "POST", url+"/v2/models/demo/infer", []byte(demoRequest)); code != 200 {
		t.Fatalf("after errors: %d %s", code, body)
	}
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("not a number: %q", s)
	}
	return n
}
