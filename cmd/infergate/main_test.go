package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/infergate/infergate/retrain/engine"
)

// TestMain lets the test binary act as infergate itself when asked, so the
// tests below run the real command in a child process.
func TestMain(m *testing.M) {
	if os.Getenv("INFERGATE_TEST_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	goleak.VerifyTestMain(m, fasthttpBackground...)
}

// fasthttpBackground are the goroutines fasthttp keeps on its own: idle
// clients' and worker pools' cleaners, which end a few seconds after their
// last use, and its process-wide date and DNS caches.
var fasthttpBackground = []goleak.Option{
	goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"),
	goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*HostClient).connsCleaner"),
	goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*Client).mCleaner"),
	goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"),
	goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*TCPDialer).tcpAddrsClean"),
}

// readmeCurlBody returns the JSON body of the curl request README.md shows.
func readmeCurlBody(t *testing.T) string {
	t.Helper()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?s)curl -s (http://127\.0\.0\.1:8080/v2/models/demo/infer).*?-d '(.*?)'`).FindSubmatch(readme)
	if m == nil {
		t.Fatal("README.md shows no curl infer request for the demo model")
	}
	return string(m[2])
}

// TestServeDemo serves configs/demo.yaml as `make serve` does, sends README's
// infergateCommand returns `infergate args...` as the test binary runs it
// (its TestMain runs main when INFERGATE_TEST_MAIN is set).
func infergateCommand(args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "INFERGATE_TEST_MAIN=1")
	return cmd
}

// curl request, then SIGTERM: the process drains and exits 0.
func TestServeDemo(t *testing.T) {
	addr := freeAddr(t)
	cmd := infergateCommand("serve", "--config", "../../configs/demo.yaml", "--listen", addr)
	var logs bytes.Buffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	waitReady(t, "http://"+addr, &logs)

	resp, err := http.Post("http://"+addr+"/v2/models/demo/infer", "application/json", strings.NewReader(readmeCurlBody(t)))
	if err != nil {
		t.Fatal(err)
	}
	var out struct {
		ID      string
		Outputs []struct{ Data []float64 }
	}
	json.NewDecoder(resp.Body).Decode(&out)
	resp.Body.Close()
	if resp.StatusCode != 200 || out.ID != "42" || len(out.Outputs) != 1 || len(out.Outputs[0].Data) != 2 {
		t.Fatalf("README request: status %d, %+v", resp.StatusCode, out)
	}
	if sum := out.Outputs[0].Data[0] + out.Outputs[0].Data[1]; math.Abs(sum-1) > 1e-5 {
		t.Fatalf("probabilities sum to %v", sum)
	}

	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("after SIGTERM: %v\n%s", err, logs.String())
	}
	for _, want := range []string{"falling back to CPU", "model version loaded", "shutting down", "stopped"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("logs lack %q:\n%s", want, logs.String())
		}
	}
}

func TestServeBadConfig(t *testing.T) {
	bad := t.TempDir() + "/bad.yaml"
	os.WriteFile(bad, []byte("listen: 127.0.0.1:0\nmodels:\n  demo:\n    batching: {instnces: 2}\n"), 0o644)
	cmd := infergateCommand("serve", "--config", bad)
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), `line 4: models.demo.batching.instnces: unknown key (did you mean "instances"?)`) {
		t.Fatalf("a bad config must stop start-up naming the key and line; got %v:\n%s", err, out)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func waitReady(t *testing.T, url string, logs fmt.Stringer) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(url + "/v2/health/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("not ready after 30s:\n%s", logs)
}

// TestStartRetried: a start that fails for want of an answer from the
// engine is made again until it succeeds or the start timeout passes; any
// other failure ends it at once.
func TestStartRetried(t *testing.T) {
	quietLog := slog.New(slog.DiscardHandler)
	calls := 0
	err := startRetried(engine.Config{ConnectTimeout: 10 * time.Second}, nil, quietLog, "test", func() error {
		if calls++; calls < 3 {
			return fmt.Errorf("cannot watch the control bucket: %w", engine.ErrNoAnswer)
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("%d calls, %v; want 3 and success", calls, err)
	}
	calls = 0
	bad := errors.New("a bad config")
	if err := startRetried(engine.Config{ConnectTimeout: 10 * time.Second}, nil, quietLog, "test", func() error { calls++; return bad }); err != bad || calls != 1 {
		t.Fatalf("%d calls, %v; want one, failing", calls, err)
	}
	calls = 0
	start := time.Now()
	err = startRetried(engine.Config{ConnectTimeout: 1500 * time.Millisecond}, nil, quietLog, "test", func() error { calls++; return engine.ErrNoAnswer })
	if !errors.Is(err, engine.ErrNoAnswer) || calls < 2 || time.Since(start) > 5*time.Second {
		t.Fatalf("%d calls over %s, %v; want a few, then the error", calls, time.Since(start), err)
	}
}
