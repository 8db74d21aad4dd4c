package natscluster_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
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
// write fails within its budget (each is retried, a stream publish with
// its message id so that a retry is not stored twice), the survivors hold
// every write, and the lost server, restarted, catches up.
//
// Where the lost server leads the bucket and the stream, writes wait for
// an election: nats-server's raft waits 4 to 9 s (not configurable) before
// a follower campaigns, so a write's budget must outlast that. Where it
// only holds the client's connection, writes wait for the reconnection
// and a retry, well within 2 s. A graceful stop (SIGTERM) hands the
// leadership over first.
func TestWritesSurviveKill(t *testing.T) {
	kill := func(c *natscluster.Cluster, i int) { c.Kill(i) }
	term := func(c *natscluster.Cluster, i int) { c.Term(i) }
	t.Run("client's server", func(t *testing.T) { testWritesSurvive(t, kill, false, 2*time.Second) })
	t.Run("client's server and leader", func(t *testing.T) { testWritesSurvive(t, kill, true, 15*time.Second) })
	t.Run("client's server and leader, SIGTERM", func(t *testing.T) { testWritesSurvive(t, term, true, 2*time.Second) })
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
	kv, err := conn.JS.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucket, Replicas: conn.Replicas, History: 1})
	if err != nil {
		t.Fatal(err)
	}
	st, err := conn.JS.CreateStream(ctx, jetstream.StreamConfig{Name: stream, Subjects: []string{subject}, Replicas: conn.Replicas, Duplicates: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
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
	c.Restart(victim)
	restarted := stats.done(t)
	waitFor(t, "100 writes after the restart", func() bool { return stats.done(t) >= restarted+100 })
	stopWriter()
	n := stats.done(t)

	sorted := slices.Clone(stats.durations)
	slices.Sort(sorted)
	quantile := func(q float64) time.Duration { return sorted[min(len(sorted)-1, int(q*float64(len(sorted))))] }
	t.Logf("%d writes (a stream publish and a KV put each, budget %s); lost %s (leader of both: %v) after write %d; 200 more done %s later",
		n, budget, c.Name(victim), leads, before, recovered.Round(time.Millisecond))
	t.Logf("write duration p50 %s, p99 %s, p99.9 %s, max %s; attempts retried, by error: %v",
		quantile(0.5).Round(10*time.Microsecond), quantile(0.99).Round(10*time.Microsecond),
		quantile(0.999).Round(time.Millisecond), sorted[len(sorted)-1].Round(time.Millisecond), stats.retried)

	// Every write is in the stream once, in order, and the last in the
	// bucket.
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != uint64(n) {
		t.Errorf("stream holds %d messages, want %d (one per write)", info.State.Msgs, n)
	}
	checkStream(t, conn.JS, n)
	entry, err := kv.Get(ctx, kvKey)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(entry.Value()); got != strconv.Itoa(n) {
		t.Errorf("%s = %q, want the last write %d", kvKey, got, n)
	}

	// The restarted server's own copies catch up with the leaders'.
	for _, s := range []string{stream, "KV_" + bucket} {
		leaderInfo, err := conn.JS.Stream(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		want := leaderInfo.CachedInfo().State.LastSeq
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

// moveLeader asks stream's leader to hand over to the server named to, and
// waits until it has.
func moveLeader(t *testing.T, conn *engine.Conn, name, to string) {
	t.Helper()
	ctx := context.Background()
	s, err := conn.JS.Stream(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if s.CachedInfo().Cluster.Leader == to {
		return
	}
	req, _ := json.Marshal(map[string]any{"placement": map[string]string{"preferred": to}})
	resp, err := conn.NC.Request("$JS.API.STREAM.LEADER.STEPDOWN."+name, req, 5*time.Second)
	if err != nil {
		t.Fatalf("cannot move the leader of %s to %s: %v", name, to, err)
	}
	var r struct {
		Success bool `json:"success"`
		Error   *struct {
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(resp.Data, &r); err != nil || !r.Success {
		t.Fatalf("cannot move the leader of %s to %s: %s (%v)", name, to, resp.Data, err)
	}
	waitFor(t, "leader of "+name+" on "+to, func() bool {
		info, err := s.Info(ctx)
		return err == nil && info.Cluster != nil && info.Cluster.Leader == to
	})
}

// checkStream reads the whole stream and checks it holds 1..n in order.
func checkStream(t *testing.T, js jetstream.JetStream, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for want := 1; want <= n; {
		batch, err := cons.Fetch(min(n-want+1, 500), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for msg := range batch.Messages() {
			got++
			if string(msg.Data()) != strconv.Itoa(want) {
				t.Fatalf("stream message %d is %q, want %d", want, msg.Data(), want)
			}
			want++
		}
		if err := batch.Error(); err != nil {
			t.Fatal(err)
		}
		if got == 0 {
			t.Fatalf("stream ends after %d of %d messages", want-1, n)
		}
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
