package outbox

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/infergate/infergate/retrain/engine"
	"github.com/infergate/infergate/retrain/engine/enginetest"
)

// crashTarget is the target of the helper process and of the parent that
// takes over its engine: same name, so the parent's consumer is the
// child's.
func crashTarget(url string) Target {
	return Target{Name: "sink", URL: url, Timeout: time.Second, MaxAttempts: 1_000_000,
		BackoffBase: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond}
}

// TestCrashLosesNoEvent runs TestHelperProcessEmit in a child process that
// runs the embedded engine of a state_dir and emits events into it as fast
// as it can, delivering them to a receiver that refuses connections and
// printing each id once Emit has returned; it kills the child, engine and
// all, with SIGKILL at an arbitrary moment, starts the engine again on the
// same state_dir and checks that an outbox opened there delivers every
// event the child acknowledged.
func TestCrashLosesNoEvent(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcessEmit$")
	cmd.Env = append(os.Environ(), "OUTBOX_HELPER_DIR="+dir, "OUTBOX_HELPER_URL="+closedURL(t))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	watchdog := time.AfterFunc(time.Minute, func() { cmd.Process.Kill() })
	defer watchdog.Stop()

	killAfter := 20 + rand.IntN(80)
	var acked []string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if id := sc.Text(); len(id) == 36 {
			acked = append(acked, id)
		}
		if len(acked) == killAfter {
			// Let the child run on into some Emit, then kill it there.
			time.Sleep(time.Duration(rand.IntN(5000)) * time.Microsecond)
			if err := cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The scanner read to EOF: also the ids printed just before the kill.
	cmd.Wait()
	if len(acked) < killAfter {
		t.Fatalf("the child acknowledged %d events, fewer than %d, before it ended:\n%s", len(acked), killAfter, stderr.Bytes())
	}

	e := enginetest.StartIn(t, dir)
	recv := newReceiver(t, always(http.StatusOK))
	ob := started(t, e, Options{Name: "crash", Targets: []Target{crashTarget(recv.URL)}})
	waitFor(t, "every acknowledged event", func() bool {
		seen := map[string]bool{}
		for _, id := range recv.ids(t) {
			seen[id] = true
		}
		for _, id := range acked {
			if !seen[id] {
				return false
			}
		}
		return true
	})
	waitFor(t, "the pending deliveries", pendingIs(t, ob, 0))
	t.Logf("killed the child after %d acknowledged events; %d deliveries after the restart", len(acked), len(recv.requests()))
}

// TestHelperProcessEmit is the child of TestCrashLosesNoEvent; it does
// nothing in a normal run.
func TestHelperProcessEmit(t *testing.T) {
	dir := os.Getenv("OUTBOX_HELPER_DIR")
	if dir == "" {
		t.Skip("the helper process of TestCrashLosesNoEvent")
	}
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	log := slog.New(slog.DiscardHandler)
	if _, err := engine.StartEmbedded(dir, log); err != nil {
		fail(err)
	}
	conn, err := engine.Connect(engine.Config{}, dir, "crash-child", log)
	if err != nil {
		fail(err)
	}
	ob, err := Open(Options{Conn: conn, Name: "crash", Targets: []Target{crashTarget(os.Getenv("OUTBOX_HELPER_URL"))}})
	if err != nil {
		fail(err)
	}
	if err := ob.Start(); err != nil {
		fail(err)
	}
	for i := 0; ; i++ {
		e, err := NewEvent("/infergate/crash-test", TypeDriftDetected, "iris/1", map[string]int{"i": i})
		if err != nil {
			fail(err)
		}
		if err := ob.Emit(context.Background(), e); err != nil {
			fail(err)
		}
		fmt.Fprintln(os.Stdout, e.ID) // one write, after the engine's acknowledgement
	}
}
