package main

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// gatewayBinary builds infergate without the race detector, as users run
// it, so that a child's memory is what theirs would be; once per test run.
var gatewayBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "infergate-bin-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "infergate")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("cannot build infergate: %v\n%s", err, out)
	}
	return bin, nil
})

// gatewayChild is an infergate serve process started by startGateway.
type gatewayChild struct {
	addr string
	pid  int
	logs *syncBuffer
	// exited is closed once the process has ended.
	exited chan struct{}
}

// running reports whether the process still runs.
func (c *gatewayChild) running() bool {
	select {
	case <-c.exited:
		return false
	default:
		return true
	}
}

// startGateway serves the demo model with extra config lines from a child
// process run through sh with shellPrefix (such as "ulimit -n 256;").
func startGateway(t *testing.T, shellPrefix, extra string) *gatewayChild {
	t.Helper()
	bin, err := gatewayBinary()
	if err != nil {
		t.Fatal(err)
	}
	model, err := os.ReadFile("../../configs/models/demo/1/model.onnx")
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "models", "demo", "1"), 0o755)
	os.WriteFile(filepath.Join(root, "models", "demo", "1", "model.onnx"), model, 0o644)
	addr := freeAddr(t)
	cfg := filepath.Join(root, "config.yaml")
	os.WriteFile(cfg, []byte("listen: "+addr+"\nrepository: models\nstate_dir: \"\"\n"+
		"models:\n  demo:\n    batching: {max_batch_size: 64}\n"+extra), 0o644)
	lib, _ := filepath.Abs("../../.cache/onnxruntime/libonnxruntime.so.1")
	cmd := exec.Command("sh", "-c", shellPrefix+` exec "$0" serve --config "$1"`, bin, cfg)
	cmd.Env = append(os.Environ(), "ONNXRUNTIME_LIB="+lib)
	child := &gatewayChild{addr: addr, logs: &syncBuffer{}, exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = child.logs, child.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	child.pid = cmd.Process.Pid
	go func() {
		cmd.Wait()
		close(child.exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-child.exited
	})
	waitReady(t, "http://"+addr, child.logs)
	return child
}

// readRSS reads a process's resident set size from /proc.
func readRSS(pid int) (int64, error) {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(status)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// rssBytes is readRSS, failing t on an error.
func rssBytes(t *testing.T, pid int) int64 {
	t.Helper()
	rss, err := readRSS(pid)
	if err != nil {
		t.Fatal(err)
	}
	return rss
}

// The memory bomb's bounds, as configs/README.md states them under
// max_inflight_memory: while 50 bombs land at once the gateway's RSS stays
// within three times the default max_inflight_memory (256 MiB: what is
// charged, what finished requests left for the collector, and the
// collector's slack) and 64 MiB of its baseline, and 10 s after they were
// answered it is back within 64 MiB.
const (
	bombPeakBound   = 3*256<<20 + 64<<20
	bombSettleBound = 64 << 20
	bombSettleAfter = 10 * time.Second
)

// TestMemoryBombIsBounded sends 50 bodies at once, each holding nearly 16
// MiB of "0," in the data of a [1,8] tensor: first as gzip (16 KiB each),
// then as they are. Each is refused (413 for too many values, or 503 while
// the memory budget is spent), the process's RSS stays bounded, and it
// comes back once they are answered.
func TestMemoryBombIsBounded(t *testing.T) {
	child := startGateway(t, "", "")
	url := "http://" + child.addr + "/v2/models/demo/infer"
	ok := []byte(`{"inputs":[{"name":"input","shape":[1,8],"datatype":"FP32","data":[1,2,3,4,5,6,7,8]}]}`)
	for range 20 {
		resp, err := http.Post(url, "application/json", bytes.NewReader(ok))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	baseline := rssBytes(t, child.pid)

	var plain bytes.Buffer
	plain.WriteString(`{"inputs":[{"name":"input","shape":[1,8],"datatype":"FP32","data":[`)
	for plain.Len() < 16<<20-1024 {
		plain.WriteString("0,")
	}
	plain.WriteString(`0]}]}`)
	var zipped bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&zipped, gzip.BestCompression)
	zw.Write(plain.Bytes())
	zw.Close()
	t.Logf("bomb: %d bytes of gzip, %d of JSON", zipped.Len(), plain.Len())

	for _, bomb := range []struct {
		name, encoding string
		body           []byte
	}{{"gzip", "gzip", zipped.Bytes()}, {"plain", "", plain.Bytes()}} {
		peak := sendAtOnce(t, child.pid, 50, bomb.encoding == "", func() int {
			req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(bomb.body))
			req.Header.Set("Content-Type", "application/json")
			if bomb.encoding != "" {
				req.Header.Set("Content-Encoding", bomb.encoding)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return 0
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return resp.StatusCode
		}, child.logs)
		t.Logf("%s: RSS baseline %d MiB, peak %d MiB", bomb.name, baseline>>20, peak>>20)
		if peak-baseline > bombPeakBound {
			t.Fatalf("%s: RSS grew by %d MiB under the bombs, more than the %d MiB bound", bomb.name, (peak-baseline)>>20, bombPeakBound>>20)
		}
		deadline := time.Now().Add(bombSettleAfter)
		for {
			rss := rssBytes(t, child.pid)
			if rss-baseline <= bombSettleBound {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: RSS %d MiB %v after the bombs, more than %d MiB over the baseline %d MiB",
					bomb.name, rss>>20, bombSettleAfter, bombSettleBound>>20, baseline>>20)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	resp, err := http.Post(url, "application/json", bytes.NewReader(ok))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("after the bombs: %v %v", resp, err)
	}
	resp.Body.Close()
}

// sendAtOnce runs send n times at once, sampling the RSS of process pid
// meanwhile; every answer must be 413 or 503, some 413, or with closed the
// connection closed (0): a body refused before it was read is not drained
// past 256 KiB, so its client may see the connection closed while it still
// sends. It returns the peak RSS.
func sendAtOnce(t *testing.T, pid, n int, closed bool, send func() int, logs fmt.Stringer) int64 {
	t.Helper()
	var peak int64
	var sampleErr error
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			rss, err := readRSS(pid)
			if err != nil {
				sampleErr = err
				return
			}
			peak = max(peak, rss)
			select {
			case <-stopSampling:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	codes := make(chan int, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() { codes <- send() })
	}
	wg.Wait()
	close(stopSampling)
	<-sampled
	if sampleErr != nil {
		t.Fatalf("cannot sample the gateway's RSS (did it exit?): %v\n%s", sampleErr, logs)
	}
	close(codes)
	count := map[int]int{}
	for code := range codes {
		count[code]++
	}
	t.Logf("answers %v", count)
	if refused := count[413] + count[503]; refused != n && (!closed || refused+count[0] != n) || count[413] == 0 {
		t.Fatalf("bombs answered %v, want each 413 or 503, some 413\n%s", count, logs)
	}
	return peak
}

// TestDescriptorExhaustion runs the gateway under ulimit -n 256 and opens
// 400 idle connections to it from 127.0.0.1. With the limits derived from
// the descriptor limit, a client on the same address and one on another are
// still served, while the hog is held to its share; with a connection limit
// above the descriptors, accept fails for want of them and the gateway
// keeps running, serving again once the idle connections go.
func TestDescriptorExhaustion(t *testing.T) {
	hog := func(t *testing.T, addr string) func() {
		t.Helper()
		var conns []net.Conn
		for range 400 {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err != nil {
				break // the backlog is full: that is exhaustion too
			}
			conns = append(conns, c)
		}
		return func() {
			for _, c := range conns {
				c.Close()
			}
		}
	}
	// get sends a request from local address ip.
	get := func(addr string, ip net.IP) (int, error) {
		client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}}).DialContext,
		}}
		defer client.CloseIdleConnections()
		resp, err := client.Get("http://" + addr + "/v2/health/ready")
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}

	t.Run("derived limits", func(t *testing.T) {
		child := startGateway(t, "ulimit -n 256;", "")
		release := hog(t, child.addr)
		defer release()
		for _, ip := range []net.IP{net.IPv4(127, 0, 0, 1), net.IPv4(127, 0, 0, 2)} {
			if code, err := get(child.addr, ip); code != 200 {
				t.Fatalf("a client on %s got %d, %v with 400 idle connections open from 127.0.0.1\n%s", ip, code, err, child.logs)
			}
		}
		if !strings.Contains(child.logs.String(), "max_connections=192") {
			t.Errorf("logs do not show the derived limit 192 of 256 descriptors:\n%s", child.logs)
		}
		if !child.running() {
			t.Fatalf("the gateway exited\n%s", child.logs)
		}
	})
	t.Run("limit above the descriptors", func(t *testing.T) {
		child := startGateway(t, "ulimit -n 256;", "max_connections: 100000\nmax_connections_per_ip: 100000\n")
		release := hog(t, child.addr)
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(child.logs.String(), "cannot accept connection") && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		release()
		var code int
		var err error
		for time.Now().Before(deadline) {
			if code, err = get(child.addr, net.IPv4(127, 0, 0, 1)); code == 200 {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if code != 200 {
			t.Fatalf("after the idle connections closed: %d, %v\n%s", code, err, child.logs)
		}
		if !child.running() {
			t.Fatalf("the gateway exited\n%s", child.logs)
		}
		if !strings.Contains(child.logs.String(), "cannot accept connection") {
			t.Errorf("logs do not show the accept error being survived:\n%s", child.logs)
		}
	})
}
