package engine_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/infergate/infergate/retrain/engine"
)

// The store that the damage tests start from: stream OUTBOX (no limits but
// MaxBytes, which makes its blocks 32 kB: three of them) with consumer
// "hook", and bucket "routes", written and stopped cleanly.
const (
	outboxMsgs  = 600
	outboxAcked = 50
	routesKeys  = 10
	payloadLen  = 100
	// outboxRecord is the size of one OUTBOX message in its block: header
	// (22), subject "outbox.N", payload, checksum (8).
	outboxRecord = 22 + len("outbox.0") + payloadLen + 8
)

func payload(seq uint64) string { return fmt.Sprintf("%0*d", payloadLen, seq) }

// storeFixture writes the store that the damage tests start from into a
// new state_dir and returns it.
func storeFixture(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	withEngine(t, dir, func(js jetstream.JetStream) {
		ctx := context.Background()
		s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "OUTBOX", Subjects: []string{"outbox.>"}, MaxBytes: 120_000})
		if err != nil {
			t.Fatal(err)
		}
		publishOutbox(t, js, 1, outboxMsgs)
		ackFirst(t, s, "hook", outboxAcked)
		kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "routes"})
		if err != nil {
			t.Fatal(err)
		}
		for i := range routesKeys {
			if _, err := kv.Put(ctx, fmt.Sprintf("k%d", i), []byte(fmt.Sprintf("v%d", i))); err != nil {
				t.Fatal(err)
			}
		}
	})
	return dir
}

// publishOutbox publishes the payloads of sequence numbers from to to,
// both included, to the subjects of stream OUTBOX.
func publishOutbox(t *testing.T, js jetstream.JetStream, from, to uint64) {
	t.Helper()
	for seq := from; seq <= to; seq++ {
		if _, err := js.Publish(context.Background(), fmt.Sprintf("outbox.%d", seq%5), []byte(payload(seq))); err != nil {
			t.Fatal(err)
		}
	}
}

// ackFirst acknowledges the first n messages of s through a new durable
// consumer called durable.
func ackFirst(t *testing.T, s jetstream.Stream, durable string, n int) {
	t.Helper()
	ctx := context.Background()
	cons, err := s.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: durable, AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(n)
	if err != nil {
		t.Fatal(err)
	}
	for m := range batch.Messages() {
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// withEngine starts the embedded engine of dir, runs f with a connection
// to it, and stops both.
func withEngine(t *testing.T, dir string, f func(js jetstream.JetStream)) {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	emb, err := engine.StartEmbedded(dir, log)
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Shutdown()
	conn, err := engine.Connect(engine.Config{}, dir, "test", log)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	f(conn.JS)
}

// copyStore copies the state_dir src into a new one.
func copyStore(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
		t.Fatal(err)
	}
	return dst
}

// streamsDir is where the streams of the state_dir dir keep their files.
func streamsDir(dir string) string {
	return filepath.Join(dir, engine.StoreDir, "jetstream", "$G", "streams")
}

// Ways to damage a file.
func cutTo(size func(int64) int64) func(t *testing.T, path string) {
	return func(t *testing.T, path string) {
		info, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(path, size(info.Size())); err != nil {
			t.Fatal(err)
		}
	}
}

var (
	cutHalf  = cutTo(func(n int64) int64 { return n / 2 })
	cutEmpty = cutTo(func(int64) int64 { return 0 })
)

func zeroAll(t *testing.T, path string) {
	rewrite(t, path, func(b []byte) []byte { clear(b); return b })
}

// zeroPage zeroes the 4 KiB page in the middle of the file.
func zeroPage(t *testing.T, path string) {
	rewrite(t, path, func(b []byte) []byte {
		from := max(len(b)/2/4096*4096, 0)
		clear(b[from:min(from+4096, len(b))])
		return b
	})
}

func remove(t *testing.T, path string) {
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
}

func rewrite(t *testing.T, path string, f func([]byte) []byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, f(b), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestStartRefusesADamagedStore damages each kind of file of the store in
// each way that NATS does not repair without loss, and expects the start
// to fail, twice the same (the check runs before the server cuts a file),
// with an error that names the stream or consumer, the file, what is lost
// and the ways to recover. Then it accepts the damage as the error says,
// and expects a start with what is left intact, the stream's sequence
// going on where it was, and a start after that without the acceptance.
func TestStartRefusesADamagedStore(t *testing.T) {
	fixture := storeFixture(t)
	blk := func(n int) string { return fmt.Sprintf("OUTBOX/msgs/%d.blk", n) }
	for _, tc := range []struct {
		name   string
		file   string // under the streams directory
		damage func(*testing.T, string)
		want   []string
	}{
		{"stream meta cut", "OUTBOX/meta.inf", cutHalf, []string{`stream "OUTBOX"`, "meta.inf", "checksums do not match"}},
		{"stream meta zeroed", "OUTBOX/meta.inf", zeroAll, []string{`stream "OUTBOX"`, "checksums do not match"}},
		{"stream meta removed", "OUTBOX/meta.inf", remove, []string{`stream "OUTBOX"`, "Missing stream metafile"}},
		{"stream checksum zeroed", "OUTBOX/meta.sum", zeroAll, []string{`stream "OUTBOX"`, "checksums do not match"}},
		{"stream checksum removed", "OUTBOX/meta.sum", remove, []string{`stream "OUTBOX"`, "meta.sum"}},
		{"bucket meta cut", "KV_routes/meta.inf", cutEmpty, []string{`bucket "routes" (stream "KV_routes")`, "meta.inf"}},
		{"first block cut mid-record", blk(1), cutHalf, []string{"msgs/1.blk is zeroed or overwritten from byte 15870", "messages 116-231 in it are lost"}},
		{"first block cut to nothing", blk(1), cutEmpty, []string{"msgs/1.blk is empty", "messages 1-231 are lost"}},
		{"first block zeroed", blk(1), zeroAll, []string{"msgs/1.blk is zeroed or overwritten from byte 0 of", "messages 1-231"}},
		{"first block page zeroed", blk(1), zeroPage, []string{"msgs/1.blk is zeroed or overwritten from byte", "in it are lost"}},
		{"first block removed", blk(1), remove, []string{"msgs/1.blk is missing", "messages 1-231"}},
		{"middle block cut at a record", blk(2), cutTo(func(int64) int64 { return 100 * int64(outboxRecord) }), []string{"msgs/2.blk was cut short", "131 messages lost"}},
		{"middle block page zeroed", blk(2), zeroPage, []string{"msgs/2.blk is zeroed or overwritten from byte"}},
		{"middle block removed", blk(2), remove, []string{"msgs/2.blk is missing", "messages 232-462"}},
		{"last block cut at a record", blk(3), cutHalf, []string{"msgs/3.blk lost its last messages", "up to message 600", "now ends at message 531"}},
		{"last block cut mid-record", blk(3), cutTo(func(n int64) int64 { return n/2 + 50 }), []string{"msgs/3.blk lost its last messages", "unreadable from byte"}},
		{"last block cut to nothing", blk(3), cutEmpty, []string{"msgs/3.blk lost its last messages", "ends with none"}},
		{"last block zeroed", blk(3), zeroAll, []string{"msgs/3.blk lost its last messages", "unreadable from byte 0"}},
		{"last block page zeroed", blk(3), zeroPage, []string{"msgs/3.blk is zeroed or overwritten from byte", "in it are lost"}},
		{"last block removed", blk(3), remove, []string{"msgs/3.blk is missing", "messages 463-600"}},
		{"consumer meta cut", "OUTBOX/obs/hook/meta.inf", cutHalf, []string{`consumer "hook" of stream "OUTBOX"`, "Error unmarshalling consumer metafile"}},
		{"consumer meta removed", "OUTBOX/obs/hook/meta.inf", remove, []string{`consumer "hook"`, "Missing consumer metafile"}},
		{"consumer checksum removed", "OUTBOX/obs/hook/meta.sum", remove, []string{`consumer "hook"`, "Missing consumer checksum"}},
		{"consumer state cut", "OUTBOX/obs/hook/o.dat", cutHalf, []string{`consumer "hook"`, "corrupt state file", "o.dat"}},
		{"consumer state zeroed", "OUTBOX/obs/hook/o.dat", zeroAll, []string{`consumer "hook"`, "corrupt state file"}},
		{"consumer state emptied", "OUTBOX/obs/hook/o.dat", cutEmpty, []string{`consumer "hook"`, "o.dat is empty"}},
		{"consumer state removed", "OUTBOX/obs/hook/o.dat", remove, []string{`consumer "hook"`, "o.dat is missing"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := copyStore(t, fixture)
			tc.damage(t, filepath.Join(streamsDir(dir), tc.file))
			first := startDamaged(t, dir)
			store := filepath.Join(dir, engine.StoreDir)
			for _, want := range append(tc.want, "move "+store+" aside to start empty", "restore it from a backup", "create "+filepath.Join(store, engine.AcceptDamageFile)) {
				if !strings.Contains(first.Error(), want) {
					t.Errorf("error %q does not say %q", first, want)
				}
			}
			if again := startDamaged(t, dir); again.Error() != first.Error() {
				t.Errorf("the second start says\n%s\nthe first said\n%s", again, first)
			}
			acceptDamage(t, dir)
		})
	}
}

// acceptDamage creates AcceptDamageFile in the store of dir, starts, and
// does what infergate does at a start (create its stream, bucket and
// consumer, which recovers a stream whose configuration was lost), then
// checks what is left, and that the stream numbers its next message after
// all it ever had; then starts again, without the file.
func acceptDamage(t *testing.T, dir string) {
	t.Helper()
	accept := filepath.Join(dir, engine.StoreDir, engine.AcceptDamageFile)
	if err := os.WriteFile(accept, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	withEngine(t, dir, func(js jetstream.JetStream) {
		ctx := context.Background()
		s, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "OUTBOX", Subjects: []string{"outbox.>"}, MaxBytes: 120_000})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "hook", AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
			t.Fatal(err)
		}
		if _, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "routes"}); err != nil {
			t.Fatal(err)
		}
		if have := readOutbox(t, s); have == 0 {
			t.Error("no message is left")
		}
		ack, err := js.Publish(ctx, "outbox.0", []byte(payload(outboxMsgs+1)))
		if err != nil {
			t.Fatal(err)
		}
		if ack.Sequence != outboxMsgs+1 {
			t.Errorf("the next message is number %d, want %d: numbers of lost messages are given out again", ack.Sequence, outboxMsgs+1)
		}
	})
	if _, err := os.Stat(accept); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s is still there after the start (%v)", accept, err)
	}
	withEngine(t, dir, func(jetstream.JetStream) {})
}

// readOutbox reads every message of OUTBOX that is there, checks it reads
// as written, and counts them.
func readOutbox(t *testing.T, s jetstream.Stream) uint64 {
	t.Helper()
	var have uint64
	for seq := uint64(1); seq <= outboxMsgs; seq++ {
		m, err := s.GetMsg(context.Background(), seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatalf("message %d: %v", seq, err)
		}
		if string(m.Data) != payload(seq) {
			t.Fatalf("message %d reads %q", seq, m.Data)
		}
		have++
	}
	return have
}

// TestStartRefusesEveryDamage: two damaged things are both named, each
// with its own steps.
func TestStartRefusesEveryDamage(t *testing.T) {
	dir := copyStore(t, storeFixture(t))
	zeroPage(t, filepath.Join(streamsDir(dir), "OUTBOX/msgs/2.blk"))
	remove(t, filepath.Join(streamsDir(dir), "OUTBOX/obs/hook/o.dat"))
	err := startDamaged(t, dir)
	if len(err.Damage) != 2 {
		t.Fatalf("error %q names %d damages, want 2", err, len(err.Damage))
	}
	for _, want := range []string{"msgs/2.blk is zeroed", `consumer "hook"`, "o.dat is missing"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

// startDamaged starts the engine of dir, which must fail for damage.
func startDamaged(t *testing.T, dir string) *engine.StoreDamageError {
	t.Helper()
	emb, err := engine.StartEmbedded(dir, slog.New(slog.DiscardHandler))
	if err == nil {
		emb.Shutdown()
		t.Fatal("started on a damaged store")
	}
	var damaged *engine.StoreDamageError
	if !errors.As(err, &damaged) || !errors.Is(err, engine.ErrStoreDamaged) {
		t.Fatalf("error %v is not a StoreDamageError", err)
	}
	return damaged
}

// checkIntact starts the engine of dir and checks that OUTBOX has every
// message as written, that consumer "hook" kept its place and bucket
// "routes" its keys.
func checkIntact(t *testing.T, dir string) {
	t.Helper()
	withEngine(t, dir, func(js jetstream.JetStream) {
		ctx := context.Background()
		s, err := js.Stream(ctx, "OUTBOX")
		if err != nil {
			t.Fatal(err)
		}
		if have := readOutbox(t, s); have != outboxMsgs {
			t.Errorf("%d messages read back, want %d", have, outboxMsgs)
		}
		ci, err := js.Consumer(ctx, "OUTBOX", "hook")
		if err != nil {
			t.Fatal(err)
		}
		if info := ci.CachedInfo(); info.AckFloor.Stream != outboxAcked || info.Delivered.Stream != outboxAcked {
			t.Errorf("consumer hook: delivered %d, acknowledged %d, want %d and %d", info.Delivered.Stream, info.AckFloor.Stream, outboxAcked, outboxAcked)
		}
		kv, err := js.KeyValue(ctx, "routes")
		if err != nil {
			t.Fatal(err)
		}
		for i := range routesKeys {
			e, err := kv.Get(ctx, fmt.Sprintf("k%d", i))
			if err != nil || string(e.Value()) != fmt.Sprintf("v%d", i) {
				t.Fatalf("routes k%d: %v, %v", i, e, err)
			}
		}
	})
}

// TestStartAcceptsHarmlessDamage: damage that NATS repairs from what else
// it has (its index rebuilt from the blocks), or does not read, or that is
// what a crash leaves of a write that was never acknowledged, starts with
// every message, the consumer's place and the bucket intact.
func TestStartAcceptsHarmlessDamage(t *testing.T) {
	fixture := storeFixture(t)
	appendBytes := func(b []byte) func(*testing.T, string) {
		return func(t *testing.T, path string) {
			rewrite(t, path, func(old []byte) []byte { return append(old, b...) })
		}
	}
	// The first half of a record, as a crash leaves an unfinished write.
	torn := make([]byte, outboxRecord/2)
	torn[0] = byte(outboxRecord)
	for _, tc := range []struct {
		name   string
		file   string
		damage func(*testing.T, string)
	}{
		{"index cut", "OUTBOX/msgs/index.db", cutHalf},
		{"index emptied", "OUTBOX/msgs/index.db", cutEmpty},
		{"index zeroed", "OUTBOX/msgs/index.db", zeroAll},
		{"index removed", "OUTBOX/msgs/index.db", remove},
		{"bucket index zeroed", "KV_routes/msgs/index.db", zeroPage},
		{"consumer checksum zeroed", "OUTBOX/obs/hook/meta.sum", zeroAll},
		{"last block with zeros after its end", "OUTBOX/msgs/3.blk", appendBytes(make([]byte, 4096))},
		{"last block with half a record after its end", "OUTBOX/msgs/3.blk", appendBytes(torn)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := copyStore(t, fixture)
			tc.damage(t, filepath.Join(streamsDir(dir), tc.file))
			checkIntact(t, dir)
		})
	}
}

// TestStartAcceptsACrash: the files of a store as a crash leaves them
// (copied while the server runs, every write synced), after work that
// removes and rewrites blocks (limits, acknowledgements of a work queue,
// overwritten keys, a purge), since the last index.db, start.
func TestStartAcceptsACrash(t *testing.T) {
	dir := copyStore(t, storeFixture(t))
	var image string
	withEngine(t, dir, func(js jetstream.JetStream) {
		ctx := context.Background()
		publishOutbox(t, js, outboxMsgs+1, outboxMsgs+300)
		wq, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "WORK", Subjects: []string{"work.>"}, Retention: jetstream.WorkQueuePolicy, MaxBytes: 120_000})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 600 {
			if _, err := js.Publish(ctx, "work.1", []byte(payload(uint64(i)))); err != nil {
				t.Fatal(err)
			}
		}
		ackFirst(t, wq, "worker", 400)
		kv, err := js.KeyValue(ctx, "routes")
		if err != nil {
			t.Fatal(err)
		}
		for i := range 2000 {
			if _, err := kv.Put(ctx, fmt.Sprintf("k%d", i%routesKeys), []byte(fmt.Sprintf("v%d", i))); err != nil {
				t.Fatal(err)
			}
		}
		if err := kv.Delete(ctx, "k0"); err != nil {
			t.Fatal(err)
		}
		if err := wq.Purge(ctx, jetstream.WithPurgeSubject("work.none")); err != nil {
			t.Fatal(err)
		}
		// The stream removes acknowledged messages after it answers the
		// acknowledgement: wait until it has.
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			info, err := wq.Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if info.State.Msgs == 200 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("WORK still holds %d messages after 400 of 600 were acknowledged", info.State.Msgs)
			}
		}
		image = copyStore(t, dir)
	})
	withEngine(t, image, func(js jetstream.JetStream) {
		ctx := context.Background()
		s, err := js.Stream(ctx, "OUTBOX")
		if err != nil {
			t.Fatal(err)
		}
		if last := s.CachedInfo().State.LastSeq; last != outboxMsgs+300 {
			t.Errorf("OUTBOX ends at %d, want %d", last, outboxMsgs+300)
		}
		w, err := js.Stream(ctx, "WORK")
		if err != nil {
			t.Fatal(err)
		}
		if n := w.CachedInfo().State.Msgs; n != 200 {
			t.Errorf("WORK holds %d messages, want the 200 not acknowledged", n)
		}
		kv, err := js.KeyValue(ctx, "routes")
		if err != nil {
			t.Fatal(err)
		}
		if e, err := kv.Get(ctx, "k9"); err != nil || string(e.Value()) != "v1999" {
			t.Errorf("routes k9: %v, %v", e, err)
		}
		if _, err := kv.Get(ctx, "k0"); !errors.Is(err, jetstream.ErrKeyNotFound) {
			t.Errorf("routes k0 after its delete: %v", err)
		}
	})
}
