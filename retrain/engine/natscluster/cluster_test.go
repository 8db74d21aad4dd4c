package natscluster_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/infergate/infergate/retrain/engine"
	"github.com/infergate/infergate/retrain/engine/natscluster"
)

// The fleet state of the kill tests: a KV bucket as routing is kept, a
// stream as events are.
const (
	bucket  = "fleet_routing"
	stream  = "FLEET_EVENTS"
	kvKey   = "model-a"
	subject = "fleet.events"
)

// TestStartFormsCluster: three servers form one cluster with a meta leader
// that every server knows, within a few seconds.
func TestStartFormsCluster(t *testing.T) {
	start := time.Now()
	c := natscluster.Start(t, 3)
	t.Logf("3 servers healthy in %s", time.Since(start).Round(time.Millisecond))
	leaders := map[string]bool{}
	for i := range c.N() {
		info, err := c.JetStream(i)
		if err != nil {
			t.Fatal(err)
		}
		if info.Meta == nil || info.Meta.Leader == "" || info.Meta.Size != 3 {
			t.Fatalf("server %s: meta cluster %+v, want a leader and 3 peers", c.Name(i), info.Meta)
		}
		leaders[info.Meta.Leader] = true
	}
	if len(leaders) != 1 {
		t.Errorf("servers disagree on the meta leader: %v", leaders)
	}
	if got := strings.Count(c.URLs(), ","); got != 2 {
		t.Errorf("URLs() = %q, want 3 URLs", c.URLs())
	}
}

// TestRejectsClientsWithoutToken: the servers take only clients that
// present the token.
func TestRejectsClientsWithoutToken(t *testing.T) {
	c := natscluster.Start(t, 1)
	nc, err := nats.Connect(c.URL(0), nats.Token("wrong"), nats.NoReconnect())
	if err == nil {
		nc.Close()
		t.Fatal("connected with a wrong token")
	}
	if !errors.Is(err, nats.ErrAuthorization) {
		t.Errorf("wrong token: %v, want an authorization error", err)
	}
	nc, err = nats.Connect(c.URL(0), nats.Token(c.Token()), nats.NoReconnect())
	if err != nil {
		t.Fatalf("cannot connect with the token: %v", err)
	}
	nc.Close()
}

// writeStats is what the writer of the kill test saw.
type writeStats struct {
	mu sync.Mutex
	// durations of every completed write (KV put and stream publish, each
	// retried until done), in order.
	durations []time.Duration
	// failed is the error of the write that failed within its budget, and
	// ended the writer.
	failed error
	// retried counts attempts that failed and were tried again, by error.
	retried map[string]int
}

// done returns how many writes are done, failing t when one failed.
func (s *writeStats) done(t *testing.T) int {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failed != nil {
		t.Fatalf("after %d writes: %v", len(s.durations), s.failed)
	}
	return len(s.durations)
}

// TestWritesSurviveKill proves the harness against the loss of one server
// of three under continuous writes to an R3 bucket and an R3 stream: no
// write fails within its budget (each attempt bounded by attemptTimeout
// and retried, a stream publish with its message id so that a retry is
// not stored twice), the survivors hold every write, and the lost server,
// restarted, catches up. Each case logs how long writes stalled.
//
// The budgets are what the cluster and engine.Connect's settings allow:
//   - SIGKILL of the client's server: the write in flight is lost and
//     retried on the reconnected connection, within 2 s (a single 2 s
//     attempt fails).
//   - SIGKILL of a server that also leads the bucket and the stream:
//     writes wait for an election, and nats-server's raft waits 4 to 9 s
//     (not configurable) before a follower campaigns.
//   - SIGTERM of that server: it hands its leadership over as it stops,
//     within 2 s.
//   - SIGSTOP of the client's server: only pings notice a server that
//     hangs with the connection open, after up to (MaxPingsOutstanding+1)
//     ping intervals: 15 s with Connect's 5 s and 2.
func TestWritesSurviveKill(t *testing.T) {
	kill := func(c *natscluster.Cluster, i int) { c.Kill(i) }
	term := func(c *natscluster.Cluster, i int) { c.Term(i) }
	hang := func(c *natscluster.Cluster, i int) { c.Stop(i) }
	f := func(name string, lose func(*natscluster.Cluster, int), leads bool, budget time.Duration) {
		t.Run(name, func(t *testing.T) { testWritesSurvive(t, lose, leads, budget) })
	}
	f("SIGKILL client's server", kill, false, 2*time.Second)
	f("SIGKILL client's server and leader", kill, true, 30*time.Second)
	f("SIGTERM client's server and leader", term, true, 2*time.Second)
	f("SIGSTOP client's server", hang, false, 30*time.Second)
}

// testWritesSurvive writes continuously to a cluster of three, loses the
// server the writer is connected to (leader of the bucket and the stream
// when leads, else neither) by lose, restarts it, and checks every write
// (each within budget) and the catch-up.
func testWritesSurvive(t *testing.T, lose func(*natscluster.Cluster, int), leads bool, budget time.Duration) {
	c := natscluster.Start(t, 3)
	conn, err := engine.Connect(c.EngineConfig(t), "", "fleet-test", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := context.Background()
	// Creating is idempotent, and tried again: once in a few dozen new
	// clusters here, the answer to a create got lost although the bucket
	// had its leader at once.
	var kv jetstream.KeyValue
	eventually(t, "creating the bucket", func() (err error) {
		kv, err = conn.JS.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucket, Replicas: conn.Replicas, History: 1})
		return err
	})
	eventually(t, "creating the stream", func() error {
		_, err := conn.JS.CreateStream(ctx, jetstream.StreamConfig{Name: stream, Subjects: []string{subject}, Replicas: conn.Replicas, Duplicates: time.Minute})
		return err
	})
	victim := c.Index(conn.NC.ConnectedServerName())
	if victim < 0 {
		t.Fatalf("connected to %q, not a server of the cluster", conn.NC.ConnectedServerName())
	}
	leader := victim
	if !leads {
		leader = (victim + 1) % c.N()
	}
	for _, s := range []string{"KV_" + bucket, stream} {
		moveLeader(t, conn, s, c.Name(leader))
	}

	stats := &writeStats{retried: map[string]int{}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { write(conn.JS, kv, budget, stats, stop) })
	stopWriter := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopWriter()

	waitFor(t, "100 writes before the loss", func() bool { return stats.done(t) >= 100 })
	before := stats.done(t)
	lost := time.Now()
	lose(c, victim)
	waitFor(t, "200 writes after the loss", func() bool { return stats.done(t) >= before+200 })
	recovered := time.Since(lost)

	// The survivors serve every write done so far, in order, once each,
	// and the last in the bucket, while the writes go on.
	k := stats.done(t)
	eventually(t, "reading the stream from the survivors", func() error { return checkStream(conn.JS, k, false) })
	eventually(t, "reading the bucket from the survivors", func() error { return checkBucket(kv, k, false) })

	restartStart := time.Now()
	c.Restart(victim)
	restartTook := time.Since(restartStart)
	restarted := stats.done(t)
	waitFor(t, "100 writes after the restart", func() bool { return stats.done(t) >= restarted+100 })
	stopWriter()
	n := stats.done(t)

	sorted := slices.Clone(stats.durations)
	slices.Sort(sorted)
	quantile := func(q float64) time.Duration { return sorted[min(len(sorted)-1, int(q*float64(len(sorted))))] }
	t.Logf("%d writes (a stream publish and a KV put each, budget %s); lost %s (leader of both: %v) after write %d; 200 more done %s later; restarted healthy in %s",
		n, budget, c.Name(victim), leads, before, recovered.Round(time.Millisecond), restartTook.Round(time.Millisecond))
	slow := len(sorted) - sort.Search(len(sorted), func(i int) bool { return sorted[i] > 100*time.Millisecond })
	t.Logf("write duration p50 %s, p99 %s, p99.9 %s, max %s; %d writes over 100ms; attempts retried, by error: %v",
		quantile(0.5).Round(10*time.Microsecond), quantile(0.99).Round(10*time.Microsecond),
		quantile(0.999).Round(time.Millisecond), sorted[len(sorted)-1].Round(time.Millisecond), slow, stats.retried)

	// With the writer stopped: exactly every write, and the restarted
	// server's own copies caught up with the leaders'.
	eventually(t, "reading the stream", func() error { return checkStream(conn.JS, n, true) })
	eventually(t, "reading the bucket", func() error { return checkBucket(kv, n, true) })
	for _, s := range []string{stream, "KV_" + bucket} {
		var want uint64
		eventually(t, "the last sequence of "+s, func() error {
			info, err := conn.JS.Stream(ctx, s)
			if err == nil {
				want = info.CachedInfo().State.LastSeq
			}
			return err
		})
		waitFor(t, c.Name(victim)+" catching up on "+s, func() bool {
			state, ok, err := c.StreamState(victim, s)
			return err == nil && ok && state.LastSeq == want
		})
	}
}

// attemptTimeout bounds one attempt of a write: a request sent to a server
// that then dies is answered by nobody, so it is sent again.
const attemptTimeout = 500 * time.Millisecond

// write writes 1, 2, ... until stop or a failure: each write publishes its
// number to the stream (message id "w-<number>") and puts it in the
// bucket, each retried until done or budget is spent.
func write(js jetstream.JetStream, kv jetstream.KeyValue, budget time.Duration, stats *writeStats, stop <-chan struct{}) {
	for i := 1; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		val := strconv.Itoa(i)
		start := time.Now()
		deadline := start.Add(budget)
		err := retry(deadline, stats, func(ctx context.Context) error {
			_, err := js.PublishMsg(ctx, &nats.Msg{Subject: subject, Data: []byte(val)}, jetstream.WithMsgID("w-"+val))
			return err
		})
		if err == nil {
			err = retry(deadline, stats, func(ctx context.Context) error {
				_, err := kv.Put(ctx, kvKey, []byte(val))
				return err
			})
		}
		stats.mu.Lock()
		if err != nil {
			stats.failed = fmt.Errorf("write %d failed within %s: %w", i, budget, err)
		} else {
			stats.durations = append(stats.durations, time.Since(start))
		}
		stats.mu.Unlock()
		if err != nil {
			return // the stream would miss a number: stop here
		}
	}
}

// retry calls attempt, each with attemptTimeout, until it succeeds or
// deadline passes.
func retry(deadline time.Time, stats *writeStats, attempt func(context.Context) error) error {
	for {
		ctx, cancel := context.WithTimeout(context.Background(), min(time.Until(deadline), attemptTimeout))
		err := attempt(ctx)
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		stats.mu.Lock()
		stats.retried[errorKind(err)]++
		stats.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
}

func errorKind(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return "timeout"
	case errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, nats.ErrNoResponders):
		return "no responders"
	case errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrConnectionReconnecting), errors.Is(err, nats.ErrDisconnected):
		return "disconnected"
	}
	return err.Error()
}

// moveLeader asks stream's leader to hand over to the server named to,
// again until it has: the election that a step-down starts may pick
// another server than the preferred one.
func moveLeader(t *testing.T, conn *engine.Conn, name, to string) {
	t.Helper()
	ctx := context.Background()
	s, err := conn.JS.Stream(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := json.Marshal(map[string]any{"placement": map[string]string{"preferred": to}})
	var asked time.Time
	waitFor(t, "leader of "+name+" on "+to, func() bool {
		info, err := s.Info(ctx)
		if err != nil || info.Cluster == nil || info.Cluster.Leader == "" {
			return false
		}
		if info.Cluster.Leader == to {
			return true
		}
		if time.Since(asked) < time.Second {
			return false
		}
		asked = time.Now()
		resp, err := conn.NC.Request("$JS.API.STREAM.LEADER.STEPDOWN."+name, req, 5*time.Second)
		if err != nil {
			t.Logf("moving the leader of %s to %s: %v", name, to, err)
		} else if !strings.Contains(string(resp.Data), `"success":true`) {
			t.Logf("moving the leader of %s to %s: %s", name, to, resp.Data)
		}
		return false
	})
}

// checkStream reads the stream and checks that it starts with 1..n in
// order, each once, and when exact holds nothing more.
func checkStream(js jetstream.JetStream, n int, exact bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return err
	}
	if msgs := st.CachedInfo().State.Msgs; msgs < uint64(n) || exact && msgs != uint64(n) {
		return fmt.Errorf("stream holds %d messages, want %d (one per write)", msgs, n)
	}
	// A plain ephemeral consumer, not an ordered one: an ordered one
	// recreates itself on every fetch, retrying without end while the
	// cluster has no place for it.
	cons, err := st.CreateConsumer(ctx, jetstream.ConsumerConfig{AckPolicy: jetstream.AckNonePolicy, InactiveThreshold: 10 * time.Second})
	if err != nil {
		return fmt.Errorf("cannot create a consumer: %w", err)
	}
	defer st.DeleteConsumer(context.Background(), cons.CachedInfo().Name)
	for want := 1; want <= n; {
		batch, err := cons.Fetch(min(n-want+1, 500), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return err
		}
		got := 0
		for msg := range batch.Messages() {
			got++
			if string(msg.Data()) != strconv.Itoa(want) {
				return fmt.Errorf("stream message %d is %q, want %d", want, msg.Data(), want)
			}
			want++
		}
		if err := batch.Error(); err != nil {
			return err
		}
		if got == 0 {
			return fmt.Errorf("stream ends after %d of %d messages", want-1, n)
		}
	}
	return nil
}

// checkBucket checks that the bucket's key holds write n (exact) or a
// later one.
func checkBucket(kv jetstream.KeyValue, n int, exact bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	entry, err := kv.Get(ctx, kvKey)
	if err != nil {
		return err
	}
	got, err := strconv.Atoi(string(entry.Value()))
	if err != nil || got < n || exact && got != n {
		return fmt.Errorf("%s = %q, want the last write %d", kvKey, entry.Value(), n)
	}
	return nil
}

// eventually calls read until it succeeds, failing t after 30 s; a read
// through JetStream may fail while a group elects or interest spreads over
// new routes, so each failure is logged.
func eventually(t *testing.T, what string, read func() error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := read()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		t.Logf("%s: %v; trying again", what, err)
		time.Sleep(100 * time.Millisecond)
	}
}

// waitFor polls cond until it holds, failing t after a minute.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// fatalRecorder is a testing.TB whose Fatalf records its message and ends
// the goroutine, as t.Fatalf would, without failing the real test.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// startFailure runs natscluster.Start on a fatalRecorder and returns what
// it failed with ("" when it did not fail).
func startFailure(t *testing.T) string {
	r := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		natscluster.Start(r, 1)
	}()
	<-done
	return r.msg
}

// TestMissingBinaryFails: without the binary, or with one of another
// version than go.mod pins, Start fails and says to run make nats-server.
func TestMissingBinaryFails(t *testing.T) {
	t.Setenv(natscluster.BinaryEnv, "")
	// The package's folder is retrain/engine/natscluster of the module.
	real, err := filepath.Abs(filepath.Join("..", "..", "..", natscluster.BinaryPath))
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	t.Chdir(root)
	goMod := func(version string) {
		t.Helper()
		text := "module example.com/m\n\nrequire (\n\tgithub.com/nats-io/nats-server/v2 " + version + "\n)\n"
		if err := os.WriteFile(filepath.Join(root, "go.mod"), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	goMod("v2.15.3")
	if msg := startFailure(t); !strings.Contains(msg, "make nats-server") || !strings.Contains(msg, filepath.Join(root, natscluster.BinaryPath)) {
		t.Errorf("no binary: Start failed with %q, want the path and `make nats-server`", msg)
	}

	// The real binary, linked from the module's .cache, against a go.mod
	// that pins another version.
	if err := os.MkdirAll(filepath.Join(root, ".cache", "bin"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(real, filepath.Join(root, natscluster.BinaryPath)); err != nil {
		t.Fatal(err)
	}
	goMod("v2.99.0")
	if msg := startFailure(t); !strings.Contains(msg, "go.mod pins v2.99.0") || !strings.Contains(msg, "make nats-server") {
		t.Errorf("stale binary: Start failed with %q, want the pinned version and `make nats-server`", msg)
	}

	t.Setenv(natscluster.BinaryEnv, filepath.Join(root, "missing"))
	if msg := startFailure(t); !strings.Contains(msg, natscluster.BinaryEnv) || !strings.Contains(msg, "missing") {
		t.Errorf("$%s names a missing file: Start failed with %q, want the variable and the path", natscluster.BinaryEnv, msg)
	}
}
