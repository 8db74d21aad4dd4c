package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/infergate/infergate/bench"
	"github.com/infergate/infergate/retrain/engine"
	"github.com/infergate/infergate/router"
)

// stateWriters is how many writers the concurrent runs of state writes
// have, each updating its own key.
const stateWriters = 8

// stateSync is one way the embedded engine syncs its store: always (what
// `infergate serve` runs), or every interval.
type stateSync struct {
	name     string
	interval time.Duration
}

// stateSyncs are the engines state writes are measured on: sync always,
// and NATS's default of a sync every 2 minutes.
var stateSyncs = []stateSync{{"always", 0}, {"every 2m (NATS default)", 2 * time.Minute}}

// stateStore is an embedded engine started for state writes, with its
// connection and its bucket.
type stateStore struct {
	sync     stateSync
	dir      string
	embedded *engine.Embedded
	conn     *engine.Conn
	kv       jetstream.KeyValue
}

// stateRecord returns a routing record as the control bucket keeps one
// per model (gateway/store.go): the split, and a canary at its first step.
func stateRecord() []byte {
	at := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	rec := struct {
		Base    router.Config  `json:"base"`
		Admin   bool           `json:"admin"`
		Canary  *router.Canary `json:"canary"`
		Replica string         `json:"replica"`
		Leader  string         `json:"leader"`
	}{
		Base:  router.Config{Split: map[string]int{"1": 1}},
		Admin: true,
		Canary: &router.Canary{Config: router.CanaryConfig{Version: "2", StepWeight: 10, MaxWeight: 50, Interval: time.Minute},
			Phase: router.PhaseProgressing, Weight: 10, StartedAt: at, LastEvaluation: at, LastTransition: at,
			Reason: "canary 2 started"},
		Replica: "a",
		Leader:  "a",
	}
	data, err := json.Marshal(rec)
	if err != nil {
		panic("BUG: cannot encode the state writes' record: " + err.Error())
	}
	return data
}

// stateWrites measures KV updates by revision on an embedded engine that
// syncs every write and on one that syncs every 2 minutes: one writer,
// then stateWriters writers, each for a quarter of the suite's duration.
func (s *suite) stateWrites(ctx context.Context) (err error) {
	// Beside the results, on the disk the project (and its state_dir) is
	// on: a temporary folder may be in memory, where a sync costs nothing.
	base := filepath.Dir(s.opts.out)
	var engines []*stateStore
	defer func() {
		for _, e := range engines {
			e.conn.Close()
			if e.embedded != nil {
				e.embedded.Shutdown()
			}
			if rerr := os.RemoveAll(e.dir); err == nil && rerr != nil {
				err = fmt.Errorf("cannot remove the state writes' store: %w", rerr)
			}
		}
	}()
	for _, mode := range stateSyncs {
		e := &stateStore{sync: mode}
		if e.dir, err = os.MkdirTemp(base, ".state-writes-"); err != nil {
			return fmt.Errorf("cannot create a store for state writes: %w", err)
		}
		engines = append(engines, e)
		if e.embedded, err = engine.StartEmbeddedWith(e.dir, engine.EmbeddedOptions{Log: s.log, SyncInterval: mode.interval}); err != nil {
			return err
		}
		if e.conn, err = engine.Connect(engine.Config{}, e.dir, "infergate bench state writes", s.log); err != nil {
			return err
		}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		e.kv, err = e.conn.JS.CreateKeyValue(cctx, jetstream.KeyValueConfig{Bucket: "bench_state", History: 1,
			Storage: jetstream.FileStorage, Replicas: e.conn.Replicas})
		cancel()
		if err != nil {
			return fmt.Errorf("cannot create the state writes' bucket: %w", err)
		}
	}
	value := stateRecord()
	var md strings.Builder
	md.WriteString("| run | engine sync | writers (keys) | writes/s | p50 | p90 | p99 | p99.9 | max | errors | writes/s vs sync always |\n")
	md.WriteString("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |\n")
	for _, writers := range []int{1, stateWriters} {
		var always float64
		for i, e := range engines {
			name := fmt.Sprintf("state writes: sync %s, %d writer%s", e.sync.name, writers, plural(writers))
			res := s.kvWrites(ctx, name, e.kv, value, writers)
			if i == 0 {
				always = res.OKPerSec
			}
			vs := "—"
			if always > 0 {
				vs = fmt.Sprintf("%.2f x", res.OKPerSec/always)
			}
			l := res.Latency
			fmt.Fprintf(&md, "| %s | %s | %d | %.0f | %s | %s | %s | %s | %s | %s | %s |\n", name, e.sync.name, writers,
				res.OKPerSec, l.P50, l.P90, l.P99, l.P999, l.Max, errorCounts(res), vs)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	fmt.Fprintf(&s.md, "## State writes on the embedded engine\n\n"+
		"Updates by revision (compare-and-set, as the control plane writes routing, canary steps and the lease) of a "+
		"%d-byte routing record in a KV bucket (history 1, file storage) of an embedded JetStream engine in this process, "+
		"its store in a temporary folder beside the results, on the disk a state_dir would be on. Each writer updates "+
		"its own key and sends the next update once the last is acknowledged; %d writers share one connection. Sync "+
		"always is what `infergate serve` runs: a write is on disk before it is acknowledged; every 2m is NATS's default, "+
		"where a crash of the machine loses up to two minutes of acknowledged writes. Each run warms up for %s, then "+
		"measures for %s; latency is from the update's send to its acknowledgment.\n\n%s\n",
		len(value), stateWriters, s.stateWarmup(), s.opts.duration/4, md.String())
	return nil
}

// stateWarmup is how long a run of state writes writes before it measures.
func (s *suite) stateWarmup() time.Duration { return s.opts.warmup / 4 }

// kvWrites runs writers writers, each updating its own key of kv by
// revision with value as fast as it is acknowledged, records the run and
// says how it went on stderr.
func (s *suite) kvWrites(ctx context.Context, name string, kv jetstream.KeyValue, value []byte, writers int) *bench.Result {
	var (
		h          bench.Histogram
		ok, failed atomic.Int64
		firstOnce  sync.Once
		firstErr   string
		wg         sync.WaitGroup
	)
	d := s.opts.duration / 4
	measureFrom := time.Now().Add(s.stateWarmup())
	end := measureFrom.Add(d)
	fail := func(err error) {
		failed.Add(1)
		firstOnce.Do(func() { firstErr = err.Error() })
	}
	for w := range writers {
		key := fmt.Sprintf("model_%d", w)
		wg.Go(func() {
			rev, err := kv.Put(ctx, key, value)
			if err != nil {
				fail(err)
				return
			}
			for ctx.Err() == nil {
				start := time.Now()
				if !start.Before(end) {
					return
				}
				next, err := kv.Update(ctx, key, value, rev)
				took := time.Since(start)
				measured := !start.Before(measureFrom)
				if err != nil {
					if measured {
						fail(err)
					}
					// Start again from the stored revision.
					if entry, gerr := kv.Get(ctx, key); gerr == nil {
						rev = entry.Revision()
					} else if !errors.Is(gerr, context.Canceled) {
						time.Sleep(10 * time.Millisecond)
					}
					continue
				}
				rev = next
				if measured {
					h.Record(took)
					ok.Add(1)
				}
			}
		})
	}
	wg.Wait()
	res := &bench.Result{Name: name, Mode: "closed", Connections: writers, RowsPerRequest: 1, Seconds: d.Seconds(),
		Requests: ok.Load() + failed.Load(), OK: ok.Load(), Latency: h.Summary()}
	res.OKPerSec = float64(res.OK) / d.Seconds()
	res.RowsPerSec, res.AnsweredPerSec = res.OKPerSec, float64(res.Requests)/d.Seconds()
	if n := failed.Load(); n > 0 {
		res.Errors = map[string]int64{"update failed": n}
		res.FirstError = firstErr
	}
	s.rep.Runs = append(s.rep.Runs, res)
	fmt.Fprintf(os.Stderr, "%-44s %8.0f writes/s  p50 %-9s p99 %-9s max %-9s errors %d\n",
		name, res.OKPerSec, res.Latency.P50, res.Latency.P99, res.Latency.Max, failed.Load())
	return res
}

// errorCounts says how many of a run's writes failed, and the first error.
func errorCounts(r *bench.Result) string {
	n := r.ErrorCount()
	if n == 0 {
		return "none"
	}
	return fmt.Sprintf("%d (first: %s)", n, strings.ReplaceAll(r.FirstError, "|", "\\|"))
}

// plural returns "s" unless n is 1.
func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
