package gateway

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/valyala/fasthttp"

	"github.com/infergate/infergate/gateway/batchjob"
)

// A replica with cluster.batch_jobs scores a chunk of the demo model as
// the online API answers its rows; a chunk whose rows do not fit the
// model's input gets a result saying why and is not delivered again; one
// of a model the replica does not serve is handed back, unscored.
func TestBatchWorkerScoresChunks(t *testing.T) {
	cfg := testConfig(t)
	cfg.Cluster.BatchJobs = true
	_, url := startServer(t, cfg)
	conn := testEngine(t, cfg.StateDir).Conn
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stream, results, err := batchjob.OpenChunks(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	publish := func(k int64, model string, rows int, data []byte) string {
		t.Helper()
		msg := nats.NewMsg("infergate.batch.chunks.job-test")
		msg.Header.Set(batchjob.HeaderRun, "job-test-run")
		msg.Header.Set(batchjob.HeaderChunk, strconv.FormatInt(k, 10))
		msg.Header.Set(batchjob.HeaderModel, model)
		msg.Header.Set(batchjob.HeaderVersion, "1")
		msg.Header.Set(batchjob.HeaderRows, strconv.Itoa(rows))
		msg.Data = data
		if _, err := conn.JS.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
		return batchjob.ResultName("job-test-run", k)
	}
	result := func(name string) (*jetstream.ObjectInfo, []byte) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			data, err := results.GetBytes(ctx, name)
			if errors.Is(err, jetstream.ErrObjectNotFound) {
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			info, err := results.GetInfo(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			return info, data
		}
		t.Fatalf("no result %s after 10s", name)
		return nil, nil
	}

	// 40 rows, more than a piece (max_batch_size 16): the outputs are the
	// online API's for the same rows.
	const rows = 40
	features := make([]float32, rows*8)
	for i := range features {
		features[i] = float32(i%97) * 1.5
	}
	data := make([]byte, 4*len(features))
	for i, f := range features {
		binary.LittleEndian.PutUint32(data[4*i:], math.Float32bits(f))
	}
	info, out := result(publish(0, "demo", rows, data))
	if info.Headers.Get(batchjob.HeaderError) != "" || info.Headers.Get(batchjob.HeaderDelivery) != "1" {
		t.Fatalf("result headers %v", info.Headers)
	}
	var want []float64
	for from := 0; from < rows; from += 16 {
		n := min(16, rows-from)
		body, _ := json.Marshal(map[string]any{"inputs": []any{map[string]any{"name": "input", "shape": []int{n, 8}, "datatype": "FP32", "data": features[from*8 : (from+n)*8]}}})
		code, answer := post(&fasthttp.Client{}, url+"/v2/models/demo/infer", string(body))
		var online struct {
			Outputs []struct {
				Data []float64 `json:"data"`
			} `json:"outputs"`
		}
		if err := json.Unmarshal(answer, &online); err != nil || code != 200 || len(online.Outputs) != 1 {
			t.Fatalf("online answer %d %s", code, answer)
		}
		want = append(want, online.Outputs[0].Data...)
	}
	if len(out) != 4*len(want) {
		t.Fatalf("the result holds %d bytes, want %d for %d values", len(out), 4*len(want), len(want))
	}
	for i, w := range want {
		if g := float64(math.Float32frombits(binary.LittleEndian.Uint32(out[4*i:]))); math.Abs(g-w) > 1e-6*math.Abs(w)+1e-12 {
			t.Fatalf("value %d: the chunk's %v, the online API's %v", i, g, w)
		}
	}

	// Three rows announced, two rows' bytes sent: no replica can score it.
	info, out = result(publish(1, "demo", 3, data[:2*8*4]))
	if why := info.Headers.Get(batchjob.HeaderError); len(out) != 0 || !strings.Contains(why, "want 3 rows of 32") {
		t.Fatalf("the result of a malformed chunk: %d bytes, error %q", len(out), why)
	}

	// A model this replica does not serve: handed back, not scored.
	publish(2, "nosuch", 1, data[:32])
	returned := func() float64 {
		return metricValue(t, get(t, url+"/metrics"), `infergate_batch_chunks_total{outcome="returned"}`)
	}
	for deadline := time.Now().Add(10 * time.Second); returned() < 1; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the chunk of a model not served here was not handed back in 10s")
		}
	}
	metrics := get(t, url+"/metrics")
	for series, want := range map[string]float64{
		`infergate_batch_chunks_total{outcome="scored"}`:  1,
		`infergate_batch_chunks_total{outcome="refused"}`: 1,
		`infergate_batch_rows_total`:                      rows,
	} {
		if got := metricValue(t, metrics, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	// The malformed chunk is gone from the stream; the unserved one waits.
	si, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if si.State.Msgs != 1 {
		t.Errorf("the stream holds %d chunks, want 1 (the one of a model not served): %s", si.State.Msgs, fmt.Sprint(si.State))
	}
}
