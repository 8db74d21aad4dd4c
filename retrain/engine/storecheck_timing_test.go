package engine

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// BenchmarkCheckStore measures the check of a stream of 16 MiB (1 KiB
// messages, 8 MB blocks) before a start, from the page cache.
func BenchmarkCheckStore(b *testing.B) {
	dir := b.TempDir()
	log := slog.New(slog.DiscardHandler)
	emb, err := StartEmbedded(dir, log)
	if err != nil {
		b.Fatal(err)
	}
	conn, err := Connect(Config{}, dir, "bench", log)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if _, err := conn.JS.CreateStream(ctx, jetstream.StreamConfig{Name: "CAPTURE", Subjects: []string{"capture.>"}}); err != nil {
		b.Fatal(err)
	}
	const size, msgLen = 16 << 20, 1 << 10
	msg := make([]byte, msgLen)
	for i := range size / msgLen {
		if _, err := conn.JS.PublishAsync(fmt.Sprintf("capture.%d", i%16), msg); err != nil {
			b.Fatal(err)
		}
		if i%1000 == 999 {
			<-conn.JS.PublishAsyncComplete()
		}
	}
	<-conn.JS.PublishAsyncComplete()
	conn.Close()
	emb.Shutdown()

	c := &storeCheck{storeDir: filepath.Join(dir, StoreDir), log: log}
	sdir := filepath.Join(c.streamsDir(), "CAPTURE")
	b.SetBytes(size)
	b.ResetTimer()
	for b.Loop() {
		damage, _, err := c.checkStream("CAPTURE", sdir, make(map[string]string))
		if err != nil || len(damage) > 0 {
			b.Fatal(err, damage)
		}
	}
}
