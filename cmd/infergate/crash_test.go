package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/infergate/infergate/retrain/capture"
	"github.com/infergate/infergate/retrain/engine/enginetest"
	"github.com/infergate/infergate/retrain/outbox"
)

// syncBuffer collects a child's output while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// crashConfig serves model ab (versions 1 and 2) with a canary of 2, whose
// canary.started event goes to the webhook at hookURL.
const crashConfig = `listen: %s
repository: models
state_dir: state
admin: {token_env: INFERGATE_TEST_CRASH_TOKEN}
webhooks:
  - {name: hook, url: "%s", secret_env: INFERGATE_TEST_CRASH_SECRET, backoff_base: 50ms, backoff_max: 200ms, max_attempts: 1000}
models:
  ab:
    version_policy: {all: true}
    routing:
      split: {"1": 1}
      canary: {version: "2", interval: 1h}
`

// TestKillNineLosesNoEvent starts the gateway as a process whose webhook
// receiver is down, waits until its canary.started event is stored in the
// outbox, kills it with SIGKILL, and starts it again with the receiver up:
// the event arrives, with the id it was stored under, signed. Then it rolls
// the canary back through the admin API and kills the process as soon as
// the answer arrives: after a restart, canary.rolledback arrives too.
func TestKillNineLosesNoEvent(t *testing.T) {
	model, err := os.ReadFile("../../configs/models/demo/1/model.onnx")
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	for _, v := range []string{"1", "2"} {
		os.MkdirAll(filepath.Join(root, "models", "ab", v), 0o755)
		os.WriteFile(filepath.Join(root, "models", "ab", v, "model.onnx"), model, 0o644)
	}
	var mu sync.Mutex
	var received []outbox.Event
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e, code, err := outbox.Receive(r, []byte("crash-secret"), time.Now(), time.Minute, 1<<20)
		if err != nil {
			http.Error(w, err.Error(), code)
			return
		}
		mu.Lock()
		received = append(received, e)
		mu.Unlock()
	}))
	defer receiver.Close()

	start := func(hookURL string) (*exec.Cmd, *syncBuffer, string) {
		t.Helper()
		addr := freeAddr(t)
		cfg := filepath.Join(root, "infergate.yaml")
		os.WriteFile(cfg, fmt.Appendf(nil, crashConfig, addr, hookURL), 0o644)
		cmd := exec.Command(os.Args[0], "serve", "--config", cfg)
		cmd.Env = append(os.Environ(), "INFERGATE_TEST_MAIN=1", "INFERGATE_TEST_CRASH_TOKEN=t0ken", "INFERGATE_TEST_CRASH_SECRET=crash-secret")
		logs := new(syncBuffer)
		cmd.Stderr = logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		waitReady(t, "http://"+addr, logs)
		return cmd, logs, addr
	}

	// A port nothing listens on: every delivery fails and is retried.
	down := "http://" + freeAddr(t) + "/hook"
	first, logs, _ := start(down)
	emitted := regexp.MustCompile(`msg="event emitted" (?:replica=\S+ )?type=canary.started model=ab version=2 id=(\S+)`)
	var id string
	deadline := time.Now().Add(30 * time.Second)
	for id == "" {
		if m := emitted.FindStringSubmatch(logs.String()); m != nil {
			id = m[1]
		} else if time.Now().After(deadline) {
			t.Fatalf("canary.started was never emitted:\n%s", logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := first.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	first.Wait()

	// delivered waits until an event that match accepts has arrived.
	delivered := func(what string, match func(outbox.Event) bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			mu.Lock()
			got := append([]outbox.Event(nil), received...)
			mu.Unlock()
			for _, e := range got {
				if match(e) {
					return
				}
			}
			if time.Now().After(deadline) {
				var seen []string
				for _, e := range got {
					seen = append(seen, e.Type+" "+e.Subject)
				}
				t.Fatalf("%s was not delivered after the restart; got %q", what, seen)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	second, _, addr := start(receiver.URL + "/hook")
	delivered("canary.started, stored before the SIGKILL,", func(e outbox.Event) bool {
		if e.ID == id && (e.Type != outbox.TypeCanaryStarted || e.Subject != "ab/2") {
			t.Fatalf("delivered %s about %s, want canary.started about ab/2", e.Type, e.Subject)
		}
		return e.ID == id
	})

	// A step the admin API answered is stored with its event: a SIGKILL
	// the moment the answer arrives loses neither.
	req, _ := http.NewRequest("POST", "http://"+addr+"/admin/models/ab/canary/rollback", nil)
	req.Header.Set("Authorization", "Bearer t0ken")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if err := second.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	second.Wait()
	if resp.StatusCode != 200 {
		t.Fatalf("rollback: status %d", resp.StatusCode)
	}
	start(receiver.URL + "/hook")
	delivered("canary.rolledback, answered before the SIGKILL,", func(e outbox.Event) bool {
		return e.Type == outbox.TypeCanaryRolledBack && e.Subject == "ab/2"
	})
}

// labelConfig serves model ab with feedback open to anyone.
const labelConfig = `listen: %s
repository: models
state_dir: state
models:
  ab:
    auth: {open_feedback: true}
`

// TestKillNineKeepsAcknowledgedLabels posts labels from eight clients at
// once and kills the gateway with SIGKILL the moment the 200th answer 200
// arrives: every label answered 200 is in the model's label stream when
// the engine starts again on the gateway's store.
func TestKillNineKeepsAcknowledgedLabels(t *testing.T) {
	model, err := os.ReadFile("../../configs/models/demo/1/model.onnx")
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "models", "ab", "1"), 0o755)
	os.WriteFile(filepath.Join(root, "models", "ab", "1", "model.onnx"), model, 0o644)
	addr := freeAddr(t)
	cfg := filepath.Join(root, "infergate.yaml")
	os.WriteFile(cfg, fmt.Appendf(nil, labelConfig, addr), 0o644)
	cmd := exec.Command(os.Args[0], "serve", "--config", cfg)
	cmd.Env = append(os.Environ(), "INFERGATE_TEST_MAIN=1")
	logs := new(syncBuffer)
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	waitReady(t, "http://"+addr, logs)

	var (
		mu     sync.Mutex
		acked  []string
		killed = make(chan struct{})
		once   sync.Once
		wg     sync.WaitGroup
	)
	client := &http.Client{Timeout: 10 * time.Second}
	for c := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				id := fmt.Sprintf("c%d-%d", c, i)
				body := fmt.Sprintf(`[{"id": %q, "label": 1}, {"id": "%s-b", "label": [0, 1]}]`, id, id)
				resp, err := client.Post("http://"+addr+"/v2/models/ab/feedback", "application/json", strings.NewReader(body))
				if err != nil {
					return // killed
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					select {
					case <-killed:
					default:
						t.Errorf("feedback %s: status %d", id, resp.StatusCode)
					}
					return
				}
				mu.Lock()
				acked = append(acked, id, id+"-b")
				if len(acked) >= 400 {
					once.Do(func() {
						cmd.Process.Kill() // SIGKILL, at once
						close(killed)
					})
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	cmd.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(acked) < 400 {
		t.Fatalf("only %d labels were answered 200:\n%s", len(acked), logs)
	}

	state := filepath.Join(root, "state")
	e := enginetest.StartIn(t, state)
	labels, err := capture.ReadLabels(context.Background(), e.Conn, "ab", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	var missing []string
	for _, id := range acked {
		if _, ok := labels[id]; !ok {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		t.Fatalf("%d of %d labels answered 200 are not in the stream after SIGKILL: %v", len(missing), len(acked), missing)
	}
	t.Logf("%d labels answered 200 before SIGKILL, all in the stream (%d there)", len(acked), len(labels))
}
