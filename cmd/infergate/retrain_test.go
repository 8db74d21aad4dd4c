package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/infergate/infergate/retrain/engine/enginetest"
	"github.com/infergate/infergate/retrain/modelstore"
	"github.com/infergate/infergate/retrain/outbox"
)

// retrainConfig starts an embedded engine in <dir>/state of a temporary
// folder, as a gateway with state_dir: state would, publishes version 1 of
// the demo model to its model store (as the gateway does at start), and
// writes next to it the config of a retrain service that joins it (its
// state_dir is the default, state). It returns the config's path and the
// address the service listens on.
func retrainConfig(t *testing.T) (config, addr string) {
	t.Helper()
	dir := t.TempDir()
	eng := enginetest.StartIn(t, filepath.Join(dir, "state"))
	v1 := filepath.Join(dir, "demo-1")
	if err := os.MkdirAll(v1, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"model.onnx", "reference.json"} {
		data, err := os.ReadFile(filepath.Join("../../configs/models/demo/1", name))
		if err == nil {
			err = os.WriteFile(filepath.Join(v1, name), data, 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	models, err := modelstore.Open(ctx, eng.Conn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := models.Publish(ctx, "demo", 1, v1); err != nil {
		t.Fatal(err)
	}
	addr = freeAddr(t)
	config = filepath.Join(dir, "retrain.yaml")
	err = os.WriteFile(config, []byte(fmt.Sprintf(`listen: %s
secret_env: TEST_RETRAIN_SECRET
models:
  demo: {training_data: builtin:demo, min_rows: 10, label_wait: 1ms}
`, addr)), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	return config, addr
}

// startRetrain starts `infergate retrain --config config` as a child
// process and waits until it serves at addr; the test kills it at the end.
func startRetrain(t *testing.T, config, addr string) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "retrain", "--config", config)
	cmd.Env = append(os.Environ(), "INFERGATE_TEST_MAIN=1", "TEST_RETRAIN_SECRET=s3cret")
	logs := new(syncBuffer)
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if resp, err := http.Get("http://" + addr + "/runs"); err == nil {
			resp.Body.Close()
			return cmd, logs
		}
		if time.Now().After(deadline) {
			t.Fatalf("not serving after 30s:\n%s", logs.String())
		}
	}
}

// postEvent posts a drift event of the demo model to the service at base,
// signed with secret at signedAt, and returns the status and the answer.
func postEvent(t *testing.T, base string, ev outbox.Event, secret string, signedAt time.Time) (int, string) {
	t.Helper()
	body, _ := json.Marshal(ev)
	req, _ := http.NewRequest(http.MethodPost, base+"/webhook", bytes.NewReader(body))
	req.Header.Set(outbox.SignatureHeader, outbox.Sign([]byte(secret), signedAt, body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(answer)
}

// TestRetrainServe runs `infergate retrain` on the engine of a gateway's
// state_dir holding version 1 of the demo model, sends it a signed drift event (its run fails: nothing was
// captured), stops it with SIGTERM and lists the runs from the store.
func TestRetrainServe(t *testing.T) {
	config, addr := retrainConfig(t)
	cmd, logs := startRetrain(t, config, addr)
	base := "http://" + addr
	ev, _ := outbox.NewEvent("/infergate/gateway", outbox.TypeDriftDetected, "demo/1", map[string]string{"model": "demo"})
	if code, answer := postEvent(t, base, ev, "s3cret", time.Now()); code != http.StatusAccepted {
		t.Fatalf("webhook: %d %s", code, answer)
	}
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(runsOutput(t, "--url", base), "failed"); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no finished run after 30s:\n%s", logs.String())
		}
	}

	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("after SIGTERM: %v\n%s", err, logs.String())
	}
	for _, want := range []string{"joined the embedded engine of another process", "retrain service listening", "retrain run failed", "retrain service stopped"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("logs lack %q:\n%s", want, logs.String())
		}
	}
	if strings.Contains(logs.String(), "none of the configured models has a version") {
		t.Errorf("the service warns of a model store it shares with the gateway:\n%s", logs.String())
	}
	table := runsOutput(t, "--config", config)
	if !strings.Contains(table, "RUN") || !strings.Contains(table, "demo") || !strings.Contains(table, "not enough labeled data: 0 labeled captured rows") {
		t.Fatalf("retrain runs:\n%s", table)
	}
	if out := runsOutput(t, "--config", config, "--model", "iris"); !strings.HasPrefix(out, "no runs in ") {
		t.Fatalf("retrain runs --model iris:\n%s", out)
	}
}

// TestRetrainReplayAfterKill kills `infergate retrain` with SIGKILL as soon
// as it has answered a drift event 202, as a sender that missed the answer
// would see it, and starts it again: the re-delivery is answered 200 with
// the first answer's body and queues nothing; a stale or badly signed one
// is still refused.
func TestRetrainReplayAfterKill(t *testing.T) {
	config, addr := retrainConfig(t)
	cmd, _ := startRetrain(t, config, addr)
	base := "http://" + addr
	ev, _ := outbox.NewEvent("/infergate/gateway", outbox.TypeDriftDetected, "demo/1", map[string]string{"model": "demo"})
	code, first := postEvent(t, base, ev, "s3cret", time.Now())
	if code != http.StatusAccepted {
		t.Fatalf("webhook: %d %s", code, first)
	}
	cmd.Process.Kill()
	cmd.Wait()

	startRetrain(t, config, addr)
	f := func(secret string, signedAt time.Time, wantCode int, wantAnswer string) {
		t.Helper()
		code, answer := postEvent(t, base, ev, secret, signedAt)
		if code != wantCode || wantAnswer != "" && answer != wantAnswer {
			t.Fatalf("again: %d %q, want %d %q", code, answer, wantCode, wantAnswer)
		}
	}
	f("s3cret", time.Now(), http.StatusOK, first)
	f("s3cret", time.Now().Add(-time.Hour), http.StatusUnauthorized, "")
	f("guess", time.Now(), http.StatusUnauthorized, "")
	f("s3cret", time.Now(), http.StatusOK, first)
	resp, err := http.Get(base + "/runs")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var runs []struct {
		Trigger string `json:"trigger"`
		RetryOf string `json:"retry_of"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&runs); err != nil {
		t.Fatal(err)
	}
	for i, r := range runs { // newest first: a retry of a run the kill interrupted, then the run
		if r.Trigger != ev.ID || (r.RetryOf == "") != (i == len(runs)-1) {
			t.Fatalf("runs %+v, want the one of the first delivery (and its retry, if the kill interrupted it)", runs)
		}
	}
}

// runsOutput runs `infergate retrain runs` with args and returns its output.
func runsOutput(t *testing.T, args ...string) string {
	t.Helper()
	var out bytes.Buffer
	if err := retrainRuns(args, &out); err != nil {
		t.Fatal(err)
	}
	return out.String()
}
