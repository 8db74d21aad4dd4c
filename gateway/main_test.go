package gateway

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/infergate/infergate/batcher"
	"github.com/infergate/infergate/retrain/engine/enginetest"
	"github.com/infergate/infergate/router"
	"github.com/infergate/infergate/runtime"

	"go.uber.org/goleak"
)

// testEnv is the process's ONNX Runtime environment for these tests.
var testEnv *runtime.Environment

var quiet = slog.New(slog.NewTextHandler(testLogSink(), nil))

func testLogSink() io.Writer {
	if os.Getenv("INFERGATE_TEST_LOG") != "" {
		return os.Stderr
	}
	return io.Discard
}

// testTokenEnv holds testToken for every test.
const testTokenEnv = "INFERGATE_TEST_ADMIN_TOKEN"

func TestMain(m *testing.M) {
	os.Setenv(testTokenEnv, testToken)
	env, err := runtime.NewEnvironment(runtime.Config{Providers: []string{runtime.ProviderCPU}, IntraOpThreads: 1}, quiet)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	testEnv = env
	code := m.Run()
	env.Close()
	if err := goleak.Find(fasthttpBackground...); code == 0 && err != nil {
		fmt.Fprintln(os.Stderr, err)
		code = 1
	}
	os.Exit(code)
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

// testRepository builds a model repository in a temporary folder from the
// demo model and the committed test models.
func testRepository(t testing.TB) string {
	t.Helper()
	root := t.TempDir()
	link := func(src, dst string) {
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		os.MkdirAll(filepath.Dir(dst), 0o755)
		if err := os.WriteFile(dst, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	link("../configs/models/demo/1/model.onnx", root+"/demo/1/model.onnx")
	link("../configs/models/demo/1/reference.json", root+"/demo/1/reference.json")
	for _, m := range []string{"pair", "echo_fp32", "echo_fp64", "echo_fp16", "echo_int32", "echo_int64", "echo_int8", "echo_uint8", "echo_bool"} {
		link("../testdata/models/"+m+"/1/model.onnx", root+"/"+m+"/1/model.onnx")
	}
	for _, v := range []string{"1", "2", "3"} {
		link("../testdata/models/versioned/"+v+"/model.onnx", root+"/versioned/"+v+"/model.onnx")
	}
	return root
}

// testEngines are the embedded engines of the state_dirs of the test
// running: a server restarted on the same state_dir finds its engine, as
// it would on the same machine.
var testEngines = struct {
	sync.Mutex
	byDir map[string]*enginetest.Engine
}{byDir: map[string]*enginetest.Engine{}}

// testEngine returns the embedded engine of state_dir dir, started for t
// when it is the first to ask.
func testEngine(t testing.TB, dir string) *enginetest.Engine {
	t.Helper()
	testEngines.Lock()
	defer testEngines.Unlock()
	if e := testEngines.byDir[dir]; e != nil {
		return e
	}
	e := enginetest.StartIn(t, dir)
	testEngines.byDir[dir] = e
	t.Cleanup(func() {
		testEngines.Lock()
		delete(testEngines.byDir, dir)
		testEngines.Unlock()
	})
	return e
}

// testConfig is the configuration the gateway tests serve with.
func testConfig(t testing.TB) Config {
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.Repository = testRepository(t)
	cfg.MaxBodySize = 1 << 20
	cfg.CompressMinSize = 0
	cfg.StateDir = t.TempDir()
	cfg.Models = map[string]ModelConfig{
		"versioned": {ModelConfig: runtime.ModelConfig{VersionPolicy: runtime.VersionPolicy{All: true}}},
		"demo":      {Batching: batcher.Config{MaxBatchSize: 16, Instances: 2}},
	}
	return cfg
}

// startServer serves cfg on a loopback port and returns its base URL.
func startServer(t testing.TB, cfg Config) (*Server, string) {
	t.Helper()
	return startServerWith(t, Options{Config: cfg})
}

// startServerWith serves o, with the test environment, on a loopback port
// and returns its base URL.
func startServerWith(t testing.TB, o Options) (*Server, string) {
	t.Helper()
	o.Env, o.Log, o.Version = testEnv, quiet, "test"
	if o.Engine == nil && o.Config.StateDir != "" {
		o.Engine = testEngine(t, o.Config.StateDir).Conn
	}
	srv, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", o.Config.Listen)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Shutdown(context.Background())
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return srv, "http://" + ln.Addr().String()
}

// testClock is a control plane's clock that moves only when a test says.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func newTestClock() *testClock {
	return &testClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
}

// Now returns the clock's time.
func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock on by d and returns the new time.
func (c *testClock) Advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	return c.now
}

// driveCanary runs model ab's canary on srv's test clock: until done
// reports true, it advances the clock by interval and waits for the
// analysis due then (or for the canary's end), at most 50 times.
func driveCanary(t *testing.T, srv *Server, clock *testClock, interval time.Duration, done func() bool) {
	t.Helper()
	for range 50 {
		if done() {
			return
		}
		at := clock.Advance(interval)
		deadline := time.Now().Add(10 * time.Second)
		for {
			srv.cp.mu.Lock()
			c := srv.cp.routes["ab"].report().Canary
			srv.cp.mu.Unlock()
			if c == nil || c.Phase != router.PhaseProgressing || !c.LastEvaluation.Before(at) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no canary analysis at %s: %+v", at, c)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	t.Fatal("the canary did not get there in 50 analyses")
}
