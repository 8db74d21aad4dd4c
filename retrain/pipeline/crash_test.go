package pipeline

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/infergate/infergate/retrain/engine"
	"github.com/infergate/infergate/retrain/outbox"
)

// answerOf returns the body accept answers an event of run with.
func answerOf(t *testing.T, status, run string) string {
	t.Helper()
	b, err := encodeJSON(acceptance{Status: status, Run: run})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// redeliver posts ev again, signed now, and checks that it is answered
// 200 with want, its first answer.
func redeliver(t *testing.T, url string, ev outbox.Event, want string) {
	t.Helper()
	body, _ := json.Marshal(ev)
	if code, answer := post(t, url, body, outbox.Sign([]byte(testSecret), time.Now(), body)); code != http.StatusOK || answer != want {
		t.Fatalf("event %s again: %d %q, want 200 %q", ev.ID, code, answer, want)
	}
}

// TestAcceptanceRecoveredAfterCrash opens a store that a crash left with
// a queued run whose events were never recorded as seen (accept stores
// the run first, then the acceptance): their re-deliveries get the answers
// the first deliveries would have got, and queue nothing more.
func TestAcceptanceRecoveredAfterCrash(t *testing.T) {
	fx := newFixture(t)
	fx.seed(Run{Model: "demo", Trigger: "a", Coalesced: []string{"b"}, DriftVersion: "1", QueuedAt: time.Now().UTC(), Outcome: Queued, Steps: []Step{}})
	s, url := fx.open()
	drift := func(id string) outbox.Event {
		return outbox.Event{ID: id, Source: "/infergate/gateway", Type: outbox.TypeDriftDetected, Subject: "demo/1"}
	}
	redeliver(t, url, drift("a"), answerOf(t, "queued", "1"))
	redeliver(t, url, drift("b"), answerOf(t, "coalesced", "1"))
	if r := waitRun(t, s, "1", finished); r.Outcome != Failed || !slices.Equal(r.Coalesced, []string{"b"}) {
		t.Fatalf("run 1: %+v", r)
	}
	if runs, err := s.Runs("", 0); err != nil || len(runs) != 1 {
		t.Fatalf("runs %+v (%v), want the one queued before the crash", runs, err)
	}
}

// TestAcceptanceRecordedLater makes the engine refuse the record of an
// accepted event after its run is stored: the sender gets 500 and sends
// again, and the re-delivery gets the answer of the run already queued,
// recorded then, not a second run.
func TestAcceptanceRecordedLater(t *testing.T) {
	fx := newFixture(t)
	s, url := fx.open()
	ctx := context.Background()
	seen, err := fx.engine.JS.Stream(ctx, "KV_"+SeenBucket)
	if err != nil {
		t.Fatal(err)
	}
	sealed := seen.CachedInfo().Config
	sealed.Sealed = true // writes refused, reads answered
	if _, err := fx.engine.JS.UpdateStream(ctx, sealed); err != nil {
		t.Fatal(err)
	}
	ev := driftEvent(t, time.Time{})
	send(t, url, ev, http.StatusInternalServerError)
	r := waitRun(t, s, "1", finished)
	if r.Trigger != ev.ID {
		t.Fatalf("run 1: %+v, want the run of event %s", r, ev.ID)
	}
	// A sealed stream stays sealed: the bucket is made anew.
	if err := fx.engine.JS.DeleteKeyValue(ctx, SeenBucket); err != nil {
		t.Fatal(err)
	}
	fx.store()
	if a := send(t, url, ev, http.StatusAccepted); a.Status != "queued" || a.Run != "1" {
		t.Fatalf("event %s again: %+v, want the answer of run 1", ev.ID, a)
	}
	redeliver(t, url, ev, answerOf(t, "queued", "1"))
	if runs, err := s.Runs("", 0); err != nil || len(runs) != 1 {
		t.Fatalf("runs %+v (%v), want one", runs, err)
	}
}

// TestOutcomeToldAfterCrash opens a store that a crash left with a
// finished run whose event may not have gone out: before the emit, or
// after it and before the run recorded it. The event goes out once the
// service opens again, to the receiver exactly once: the engine drops a
// second copy of an event id.
func TestOutcomeToldAfterCrash(t *testing.T) {
	f := func(name string, emitted bool) {
		t.Run(name, func(t *testing.T) {
			fx := newFixture(t)
			r := Run{Model: "demo", Trigger: "x", DriftVersion: "1", QueuedAt: time.Now().UTC(), Started: time.Now().UTC(), Steps: []Step{}}
			r.finish(time.Now().UTC(), errors.New("the test failed it"))
			r = fx.seed(r)[0]
			if emitted {
				ob, err := outbox.Open(outbox.Options{Conn: fx.engine.Conn, Name: OutboxName, Targets: fx.cfg.Webhooks})
				if err != nil {
					t.Fatal(err)
				}
				ev, err := r.event()
				if err == nil {
					err = ob.Emit(context.Background(), ev)
				}
				if err != nil {
					t.Fatal(err)
				}
				ob.Close()
			}
			s, _ := fx.open()
			events := fx.events.wait(t, 1)
			if events[0].ID != r.EventID || events[0].Type != outbox.TypeRetrainFailed || !strings.Contains(string(events[0].Data), "the test failed it") {
				t.Fatalf("event %+v %s, want run 1's, %s", events[0], events[0].Data, r.EventID)
			}
			waitRun(t, s, "1", func(r Run) bool { return r.Notified })
			for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
				if n, err := s.outbox.Pending(); err == nil && n == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("deliveries still pending")
				}
			}
			if events := fx.events.wait(t, 1); len(events) != 1 {
				t.Fatalf("%d events, want one: %+v", len(events), events)
			}
		})
	}
	f("not emitted", false)
	f("emitted, not recorded", true)
}

// TestPrune keeps the newest runs and those that must stay: queued,
// running, and finished ones whose outcome may not have been told.
func TestPrune(t *testing.T) {
	fx := newFixture(t)
	done := Run{Model: "demo", Outcome: Succeeded, Notified: true, Steps: []Step{}}
	untold := Run{Model: "demo", Outcome: Failed, Steps: []Step{}}
	queued := Run{Model: "demo", Outcome: Queued, Steps: []Step{}}
	fx.seed(done, untold, queued, done, done, done)
	st := fx.store()
	runs, err := st.all()
	if err != nil {
		t.Fatal(err)
	}
	if runs, err = st.prune(runs, 3); err != nil {
		t.Fatal(err)
	}
	ids := func(runs []Run) (ids []string) {
		for _, r := range runs {
			ids = append(ids, r.ID)
		}
		return ids
	}
	if got := ids(runs); !slices.Equal(got, []string{"2", "3", "6"}) {
		t.Fatalf("kept %v, want 2 and 3 (they stay) and 6 (the newest)", got)
	}
	if stored, err := ListRuns(fx.engine.Conn); err != nil || !slices.Equal(ids(stored), []string{"6", "3", "2"}) {
		t.Fatalf("stored %v (%v)", ids(stored), err)
	}
	// Ids are not handed out again.
	if r := fx.seed(done)[0]; r.ID != "7" {
		t.Fatalf("new run %s, want 7", r.ID)
	}
}

// TestLongRecordIsCut stores a run whose logs exceed what the engine
// takes: its longest logs lose their middle, and a note says so.
func TestLongRecordIsCut(t *testing.T) {
	fx := newFixture(t)
	st := fx.store()
	st.maxRecord = 64 << 10
	long := make([]string, maxStepLog)
	for i := range long {
		long[i] = fmt.Sprintf("%03d %s", i, strings.Repeat("x", 400))
	}
	r := Run{Model: "demo", Outcome: Running, Steps: []Step{{Name: "data", Log: []string{"short"}}, {Name: "train", Log: long}}}
	if err := st.newRun(&r); err != nil {
		t.Fatal(err)
	}
	got, err := st.get(r.ID)
	if err != nil {
		t.Fatal(err)
	}
	lines := got.Steps[1].Log
	if b, _ := json.Marshal(got); len(b) > st.maxRecord || len(lines) >= maxStepLog || !strings.HasPrefix(lines[0], "000 ") ||
		!strings.HasPrefix(lines[len(lines)-1], "499 ") || !slices.ContainsFunc(lines, func(l string) bool { return strings.Contains(l, "lines left out") }) ||
		!slices.Equal(got.Steps[0].Log, []string{"short"}) || len(r.Steps[1].Log) != maxStepLog {
		t.Fatalf("stored %d bytes, %d train lines (%q … %q)", len(b), len(lines), lines[0][:8], lines[len(lines)-1][:8])
	}
	// The stored revision is the one the next write replaces.
	r.Outcome = Succeeded
	if err := st.put(&r); err != nil {
		t.Fatal(err)
	}
}

// TestCrashLosesNoAcceptedEvent runs the service in a child process
// (TestHelperProcessRetrain) on the test's engine, has it accept a drift
// event and train for it, and kills it with SIGKILL during the training,
// after more drift events acknowledged one by one until the kill. A
// service opened again on the engine, once the child's lease on the model
// has run out, records the run as interrupted and tells so; does it again
// when no other run is queued; runs the queued run holding every
// acknowledged event; answers each acknowledged event's re-delivery with
// its first answer; and delivers the outcome of every run, at least once.
func TestCrashLosesNoAcceptedEvent(t *testing.T) {
	f := func(name string, more int) {
		t.Run(name, func(t *testing.T) {
			fx := newFixture(t)
			gate := filepath.Join(t.TempDir(), "gate")
			fx.model(func(m *ModelConfig) { m.Train = TrainConfig{Command: gatedCommand(t, gate)} })
			since := time.Now().Add(-time.Hour)
			fx.captureShifted(31, 200, since)
			cmd, child := fx.startChild(time.Second)

			first := driftEvent(t, since)
			answers := map[string]string{} // acknowledged event id -> answer
			var acked []outbox.Event
			body, _ := json.Marshal(first)
			code, answer := post(t, child, body, outbox.Sign([]byte(testSecret), time.Now(), body))
			if code != http.StatusAccepted || answer != answerOf(t, "queued", "1") {
				t.Fatalf("first event: %d %s", code, answer)
			}
			answers[first.ID], acked = answer, append(acked, first)
			waitRunAt(t, child, "1", func(r Run) bool { return len(r.Steps) == 2 && r.Steps[1].Name == "train" })

			// Events are sent one after another until the kill, which
			// comes at some moment after the more-th acknowledgement.
			var mu sync.Mutex
			sent := make(chan struct{}, 1)
			stop := make(chan struct{})
			var senders sync.WaitGroup
			senders.Add(1)
			go func() {
				defer senders.Done()
				client := &http.Client{Timeout: 10 * time.Second}
				for n := 0; more > 0; {
					select {
					case <-stop:
						return
					default:
					}
					ev, _ := outbox.NewEvent("/infergate/gateway", outbox.TypeDriftDetected, "demo/1", map[string]any{"model": "demo"})
					body, _ := json.Marshal(ev)
					req, _ := http.NewRequest(http.MethodPost, child+"/webhook", bytes.NewReader(body))
					req.Header.Set(outbox.SignatureHeader, outbox.Sign([]byte(testSecret), time.Now(), body))
					resp, err := client.Do(req)
					if err != nil {
						time.Sleep(time.Millisecond)
						continue // the child is gone, or going
					}
					answer, err := io.ReadAll(resp.Body)
					resp.Body.Close()
					if err != nil || resp.StatusCode != http.StatusAccepted {
						continue
					}
					mu.Lock()
					answers[ev.ID], acked = string(answer), append(acked, ev)
					mu.Unlock()
					if n++; n == more {
						sent <- struct{}{}
					}
				}
			}()
			if more > 0 {
				<-sent
				time.Sleep(time.Duration(rand.IntN(20_000)) * time.Microsecond)
			}
			if err := cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			cmd.Wait()
			close(stop)
			senders.Wait()
			t.Logf("killed the child after %d acknowledged events", len(acked))

			s, url := fx.openWithTTL(time.Second)
			if err := os.WriteFile(gate, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			r := waitRun(t, s, "1", finished)
			if r.Outcome != Failed || r.Reason != "interrupted: the retrain service stopped during the train step" || r.Trigger != first.ID {
				t.Fatalf("run 1: %+v, want it interrupted in its train step", r)
			}
			r = waitRun(t, s, "2", finished)
			if more == 0 && (r.RetryOf != "1" || r.Trigger != first.ID) {
				t.Fatalf("run 2: %+v, want run 1 done again for event %s", r, first.ID)
			}
			if len(r.Steps) < 2 || r.Steps[1].Name != "train" || r.Steps[1].Error != "" {
				t.Fatalf("run 2 steps: %+v, want it trained", r.Steps)
			}
			for _, ev := range acked {
				var a acceptance
				json.Unmarshal([]byte(answers[ev.ID]), &a)
				run, err := s.Run(a.Run)
				if err != nil || run.Trigger != ev.ID && !slices.Contains(run.Coalesced, ev.ID) {
					t.Fatalf("acknowledged event %s (%s): not in run %+v (%v)", ev.ID, answers[ev.ID], run, err)
				}
				redeliver(t, url, ev, answers[ev.ID])
			}
			runs, err := s.Runs("", 0)
			if err != nil || len(runs) != 2 {
				t.Fatalf("runs %+v (%v), want runs 1 and 2", runs, err)
			}
			for _, r := range runs {
				waitRun(t, s, r.ID, func(r Run) bool { return r.Notified })
			}
			ids := map[string]bool{}
			for _, ev := range fx.events.wait(t, 2) {
				ids[ev.ID] = true
			}
			for _, r := range runs {
				if r, _ := s.Run(r.ID); !ids[r.EventID] {
					t.Fatalf("the outcome of run %s (event %s) was not delivered: %v", r.ID, r.EventID, ids)
				}
			}
		})
	}
	f("a run interrupted", 0)
	f("events acknowledged until the kill", 3+rand.IntN(10))
}

// TestKilledHoldersRunFinishedByAnother runs two services on one engine,
// one in a child process, which takes a drift event's run, and one in the
// test's, which gets the same event again while the child trains for it
// (and answers it as the child did, queuing nothing). The child is killed
// with SIGKILL: once its lease on the model runs out, the other service
// records the child's run as interrupted and does it again to the end. At
// no moment do two runs of the model run.
func TestKilledHoldersRunFinishedByAnother(t *testing.T) {
	fx := newFixture(t)
	gate := filepath.Join(t.TempDir(), "gate")
	fx.model(func(m *ModelConfig) { m.Train = TrainConfig{Command: gatedCommand(t, gate)} })
	since := time.Now().Add(-time.Hour)
	fx.captureShifted(37, 200, since)
	cmd, child := fx.startChild(testTTL)
	stop := runningMonitor(t, fx.engine.Conn)
	defer stop()

	ev := driftEvent(t, since)
	if a := send(t, child, ev, http.StatusAccepted); a.Status != "queued" || a.Run != "1" {
		t.Fatalf("event: %+v", a)
	}
	waitRunAt(t, child, "1", func(r Run) bool { return len(r.Steps) == 2 && r.Steps[1].Name == "train" })
	s, url := fx.openWithTTL(testTTL)
	redeliver(t, url, ev, answerOf(t, "queued", "1"))
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	cmd.Wait()
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	r := waitRun(t, s, "1", finished)
	if r.Outcome != Failed || r.Reason != "interrupted: the retrain service stopped during the train step" {
		t.Fatalf("run 1: %+v, want it interrupted in its train step", r)
	}
	t.Logf("the killed child's run was taken up %s after the kill", time.Since(killed).Round(time.Millisecond))
	r = waitRun(t, s, "2", finished)
	if r.RetryOf != "1" || r.Trigger != ev.ID || len(r.Steps) < 3 || r.Steps[1].Error != "" {
		t.Fatalf("run 2: %+v, want run 1 done again past its training", r)
	}
	if runs, err := s.Runs("", 0); err != nil || len(runs) != 2 {
		t.Fatalf("runs %+v (%v), want 1 and its retry", runs, err)
	}
	for _, id := range []string{"1", "2"} {
		waitRun(t, s, id, func(r Run) bool { return r.Notified })
	}
}

// waitRunAt waits until run id of the service at url satisfies done.
func waitRunAt(t *testing.T, url, id string, done func(Run) bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		var r Run
		resp, err := http.Get(url + "/runs/" + id)
		if err == nil {
			err = json.NewDecoder(resp.Body).Decode(&r)
			resp.Body.Close()
		}
		if err == nil && done(r) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("run %s: still %+v (%v)", id, r, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startChild starts TestHelperProcessRetrain in a child process: a
// service on f's config and engine whose leases last ttl. It returns the
// child and the URL of its API; the child is killed when the test ends.
func (f *fixture) startChild(ttl time.Duration) (*exec.Cmd, string) {
	t := f.t
	t.Helper()
	dir := t.TempDir()
	cfg, err := json.Marshal(f.cfg)
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, "config.json"), cfg, 0o600)
	}
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcessRetrain$")
	cmd.Env = append(os.Environ(), "PIPELINE_HELPER_DIR="+dir, "PIPELINE_HELPER_ENGINE="+f.engine.Dir, "PIPELINE_HELPER_LEASE_TTL="+ttl.String())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err == nil {
		err = cmd.Start()
	}
	if err != nil {
		t.Fatal(err)
	}
	watchdog := time.AfterFunc(2*time.Minute, func() { cmd.Process.Kill() })
	t.Cleanup(func() {
		watchdog.Stop()
		cmd.Process.Kill()
		cmd.Wait()
	})
	sc := bufio.NewScanner(stdout)
	if !sc.Scan() || !strings.HasPrefix(sc.Text(), "http://") {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("the child did not start: %q\n%s", sc.Text(), stderr.Bytes())
	}
	go io.Copy(io.Discard, stdout)
	return cmd, sc.Text()
}

// TestHelperProcessRetrain is the child of the tests that kill a service:
// it serves the service of the config in $PIPELINE_HELPER_DIR/config.json
// on the embedded engine started in $PIPELINE_HELPER_ENGINE, with leases
// of $PIPELINE_HELPER_LEASE_TTL, prints its URL and serves until killed.
// It does nothing in a normal run.
func TestHelperProcessRetrain(t *testing.T) {
	dir := os.Getenv("PIPELINE_HELPER_DIR")
	if dir == "" {
		t.Skip("the helper process of the tests that kill a service")
	}
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	var cfg Config
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err == nil {
		err = json.Unmarshal(b, &cfg)
	}
	if err != nil {
		fail(err)
	}
	ttl, err := time.ParseDuration(os.Getenv("PIPELINE_HELPER_LEASE_TTL"))
	if err != nil {
		fail(err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	conn, err := engine.Connect(engine.Config{}, os.Getenv("PIPELINE_HELPER_ENGINE"), "crash-child", log)
	if err != nil {
		fail(err)
	}
	s, err := Open(Options{Config: cfg, Engine: conn, Env: testEnv, Log: log, LeaseTTL: ttl})
	if err != nil {
		fail(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail(err)
	}
	fmt.Println("http://" + ln.Addr().String())
	fail(http.Serve(ln, s.Handler()))
}

// TestPutAfterLostAnswer writes a run whose last write landed while its
// answer was lost: the next write finds it in place and replaces it. A
// record that another writer changed is never overwritten.
func TestPutAfterLostAnswer(t *testing.T) {
	fx := newFixture(t)
	st := fx.store()
	r := Run{Model: "demo", Outcome: Running, Steps: []Step{{Name: "data"}}}
	if err := st.newRun(&r); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// What put does when a write's answer is lost: the record is in the
	// engine, the run knows only that it may be.
	landed := r
	landed.Steps = append(landed.Steps, Step{Name: "train"})
	b, err := st.encode(&landed)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.runs.Update(ctx, r.ID, b, r.rev); err != nil {
		t.Fatal(err)
	}
	r.unsure = [][]byte{[]byte("a write that never landed"), b}
	r.Steps = landed.Steps
	r.Outcome = Succeeded
	if err := st.put(&r); err != nil {
		t.Fatalf("after a lost answer: %v", err)
	}
	if got, err := st.get(r.ID); err != nil || got.Outcome != Succeeded || got.rev != r.rev || r.unsure != nil {
		t.Fatalf("stored %+v (%v), run at revision %d", got, err, r.rev)
	}

	other := r
	other.Reason = "another writer"
	if err := st.put(&other); err != nil {
		t.Fatal(err)
	}
	r.Reason = "this writer"
	r.unsure = [][]byte{[]byte("a write that never landed")}
	if err := st.put(&r); !errors.Is(err, errConflict) {
		t.Fatalf("over another writer's record: %v, want a conflict", err)
	}
	if got, _ := st.get(r.ID); got.Reason != "another writer" {
		t.Fatalf("stored %+v, want the other writer's record kept", got)
	}
}
