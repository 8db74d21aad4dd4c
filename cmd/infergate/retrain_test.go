package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/infergate/infergate/retrain/outbox"
)

// TestRetrainServe runs `infergate retrain` on a copy of the demo
// repository, sends it a signed drift event (its run fails: nothing was
// captured), stops it with SIGTERM and lists the runs from the store.
func TestRetrainServe(t *testing.T) {
	dir := t.TempDir()
	v1 := filepath.Join(dir, "models", "demo", "1")
	os.MkdirAll(v1, 0o755)
	onnx, err := os.ReadFile("../../configs/models/demo/1/model.onnx")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(v1, "model.onnx"), onnx, 0o644)
	addr := freeAddr(t)
	config := filepath.Join(dir, "retrain.yaml")
	os.WriteFile(config, []byte(fmt.Sprintf(`listen: %s
secret_env: TEST_RETRAIN_SECRET
models:
  demo: {training_data: builtin:demo, min_rows: 10, label_wait: 1ms}
`, addr)), 0o644)

	cmd := exec.Command(os.Args[0], "retrain", "--config", config)
	cmd.Env = append(os.Environ(), "INFERGATE_TEST_MAIN=1", "TEST_RETRAIN_SECRET=s3cret")
	var logs bytes.Buffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	base := "http://" + addr
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if resp, err := http.Get(base + "/runs"); err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not serving after 30s:\n%s", logs.String())
		}
	}

	ev, _ := outbox.NewEvent("/infergate/gateway", outbox.TypeDriftDetected, "demo/1", map[string]string{"model": "demo"})
	body, _ := json.Marshal(ev)
	req, _ := http.NewRequest(http.MethodPost, base+"/webhook", bytes.NewReader(body))
	req.Header.Set(outbox.SignatureHeader, outbox.Sign([]byte("s3cret"), time.Now(), body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("webhook: %s", resp.Status)
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
	for _, want := range []string{"retrain service listening", "retrain run failed", "retrain service stopped"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("logs lack %q:\n%s", want, logs.String())
		}
	}
	table := runsOutput(t, "--config", config)
	if !strings.Contains(table, "RUN") || !strings.Contains(table, "demo") || !strings.Contains(table, "not enough labeled data: 0 labeled captured rows") {
		t.Fatalf("retrain runs:\n%s", table)
	}
	if out := runsOutput(t, "--config", config, "--model", "iris"); !strings.HasPrefix(out, "no runs in ") {
		t.Fatalf("retrain runs --model iris:\n%s", out)
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
