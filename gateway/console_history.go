package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/infergate/infergate/retrain/engine"
)

// historyBucket is the engine's KV bucket of what the console looks back
// on: each model's canary steps, each version's judged drift windows and
// the gateway's recent events, each list under one key, bounded. It is
// apart from the control bucket, whose fenced writes expect no other
// writer.
const historyBucket = "infergate_history"

// The keys of historyBucket: canaryStepsPrefix+<model key>,
// driftWindowsPrefix+<model key>.<version> and eventsKey.
const (
	canaryStepsPrefix  = "canary."
	driftWindowsPrefix = "drift."
	eventsKey          = "events"
)

// maxHistoryBytes bounds one key's list as stored: the oldest items go
// first beyond it, whatever the configured count (a value must fit the
// engine's message size, 1 MiB by default).
const maxHistoryBytes = 768 << 10

// historyQueue bounds the items waiting to be written; one that finds it
// full is logged and dropped (the history only informs).
const historyQueue = 256

// historyItem is one entry of a history list: its sequence number in the
// list (1 for the first ever appended under its key), when it was
// appended, and the item itself.
type historyItem struct {
	Seq  uint64          `json:"seq"`
	Time time.Time       `json:"time"`
	ID   string          `json:"id,omitempty"`
	Data json.RawMessage `json:"data"`
}

// historyAppend is an item waiting to be appended to the list at key,
// which keeps the newest keep; an item whose id the list holds already
// is not appended again.
type historyAppend struct {
	key  string
	keep int
	item historyItem
}

// history keeps bounded lists of recent items, in the engine's
// historyBucket when the gateway has one (shared by the fleet: any
// replica reads what the others wrote), else in memory. Appends are
// queued and written by one goroutine, so that no caller waits on the
// engine. It is safe for concurrent use.
type history struct {
	kv jetstream.KeyValue // nil: in memory
	// limits are the console section the gateway started with: a reload
	// does not change them.
	limits ConsoleConfig
	log    *slog.Logger
	now    func() time.Time

	mu  sync.Mutex
	mem map[string][]historyItem // guarded by mu; without kv

	in   chan historyAppend
	stop chan struct{}
	done chan struct{}
}

// openHistory opens the history on conn (in memory when conn is nil) and
// starts its writer; close stops it.
func openHistory(conn *engine.Conn, limits ConsoleConfig, log *slog.Logger, now func() time.Time) (*history, error) {
	h := &history{limits: limits.withDefaults(), log: log, now: now, mem: map[string][]historyItem{},
		in: make(chan historyAppend, historyQueue), stop: make(chan struct{}), done: make(chan struct{})}
	if conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
		defer cancel()
		kv, err := engine.KeyValue(ctx, conn.JS, jetstream.KeyValueConfig{
			Bucket:      historyBucket,
			Description: "infergate's console history: canary steps, drift windows, recent events",
			History:     1,
			Storage:     jetstream.FileStorage,
			Replicas:    conn.Replicas,
		})
		if err != nil {
			return nil, fmt.Errorf("cannot open the history bucket %s at %s: %w", historyBucket, conn.URL, err)
		}
		h.kv = kv
	}
	go h.run()
	return h, nil
}

// close writes what is queued and stops the writer; a nil history has
// none.
func (h *history) close() {
	if h == nil {
		return
	}
	close(h.stop)
	<-h.done
}

// add queues v for the list at key, which keeps the newest keep items; id,
// when not empty, makes the append idempotent.
func (h *history) add(key string, keep int, id string, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		h.log.Error("cannot encode a history item", "key", key, "error", err)
		return
	}
	select {
	case h.in <- historyAppend{key: key, keep: keep, item: historyItem{Time: h.now().UTC(), ID: id, Data: data}}:
	default:
		h.log.Warn("history item dropped: its writer is not keeping up", "key", key)
	}
}

// historyFlush is how often a list is written to the engine at most: an
// item for a list not written for that long is written at once (a canary
// step, an event: as it happens, in order), and the items queued for a
// list written less than that ago wait for the next tick and go in one
// write. A version judging windows many times a second so costs the
// engine (and this process the list's encoding) a few writes a second,
// not one an item.
const historyFlush = 250 * time.Millisecond

func (h *history) run() {
	defer close(h.done)
	tick := time.NewTicker(historyFlush)
	defer tick.Stop()
	pending := map[string][]historyAppend{}
	written := map[string]time.Time{} // when each list was last written
	queued := 0
	flush := func(key string) {
		h.write(key, pending[key])
		queued -= len(pending[key])
		delete(pending, key)
		written[key] = time.Now()
	}
	for {
		select {
		case a := <-h.in:
			if h.kv == nil { // in memory: no write to spare
				h.write(a.key, []historyAppend{a})
				continue
			}
			pending[a.key] = append(pending[a.key], a)
			queued++
			if time.Since(written[a.key]) >= historyFlush || queued >= historyQueue {
				flush(a.key)
			}
		case <-tick.C:
			for key := range pending {
				flush(key)
			}
			for key, at := range written {
				if time.Since(at) > time.Minute {
					delete(written, key)
				}
			}
		case <-h.stop:
			for {
				select {
				case a := <-h.in:
					pending[a.key] = append(pending[a.key], a)
				default:
					for key := range pending {
						flush(key)
					}
					return
				}
			}
		}
	}
}

// write appends the items of as to the list at key, by revision in the
// engine (another replica may append to the same list), trying again on a
// conflict.
func (h *history) write(key string, as []historyAppend) {
	if h.kv == nil {
		h.mu.Lock()
		for _, a := range as {
			h.mem[key] = appendHistory(h.mem[key], a)
		}
		h.mu.Unlock()
		return
	}
	for range 5 {
		items, rev, err := h.readKV(key)
		if err == nil {
			for _, a := range as {
				items = appendHistory(items, a)
			}
			var data []byte
			if data, err = json.Marshal(items); err == nil {
				ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
				if rev == 0 {
					_, err = h.kv.Create(ctx, key, data)
				} else {
					_, err = h.kv.Update(ctx, key, data, rev)
				}
				cancel()
			}
		}
		if err == nil || !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			if err != nil {
				h.log.Warn("cannot store history items; they are dropped", "key", key, "items", len(as), "error", err)
			}
			return
		}
	}
	h.log.Warn("cannot store history items: other writers kept changing their list; they are dropped", "key", key, "items", len(as))
}

// appendHistory returns items with a's item appended under the next
// sequence number, at most a.keep of the newest and maxHistoryBytes, or
// items as they are when they hold its id.
func appendHistory(items []historyItem, a historyAppend) []historyItem {
	if a.item.ID != "" && slices.ContainsFunc(items, func(it historyItem) bool { return it.ID == a.item.ID }) {
		return items
	}
	it := a.item
	if n := len(items); n > 0 {
		it.Seq = items[n-1].Seq + 1
	} else {
		it.Seq = 1
	}
	items = append(items, it)
	if over := len(items) - max(a.keep, 1); over > 0 {
		items = slices.Delete(items, 0, over)
	}
	size := 0
	for i := len(items) - 1; i >= 0; i-- {
		if size += len(items[i].Data) + 128; size > maxHistoryBytes && i < len(items)-1 {
			items = slices.Delete(items, 0, i+1)
			break
		}
	}
	return items
}

// readKV returns the list at key and its revision (0 when absent).
func (h *history) readKV(key string) ([]historyItem, uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	e, err := h.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("cannot read %s of bucket %s: %w", key, historyBucket, err)
	}
	var items []historyItem
	if err := json.Unmarshal(e.Value(), &items); err != nil {
		return nil, 0, fmt.Errorf("cannot decode %s of bucket %s: %w; delete the key to start its history afresh", key, historyBucket, err)
	}
	return items, e.Revision(), nil
}

// page is a page of a history list, newest first: the items whose Seq
// is below before (all when before is 0), at most limit of them.
// NextBefore is the before of the next (older) page, 0 on the last.
type page[T any] struct {
	Items      []T    `json:"items"`
	NextBefore uint64 `json:"next_before,omitempty"`
}

// read returns a page of the list at key.
func (h *history) read(key string, limit int, before uint64) (page[historyItem], error) {
	var items []historyItem
	if h.kv == nil {
		h.mu.Lock()
		items = slices.Clone(h.mem[key])
		h.mu.Unlock()
	} else {
		var err error
		if items, _, err = h.readKV(key); err != nil {
			return page[historyItem]{}, err
		}
	}
	p := page[historyItem]{Items: []historyItem{}}
	for i := len(items) - 1; i >= 0; i-- {
		if before != 0 && items[i].Seq >= before {
			continue
		}
		if len(p.Items) == limit {
			p.NextBefore = p.Items[len(p.Items)-1].Seq
			break
		}
		p.Items = append(p.Items, items[i])
	}
	return p, nil
}

// pageArgs reads the paging arguments ?limit= (default def, at most max)
// and ?before= of a request's query; an error names the bad one.
func pageArgs(limitArg, beforeArg []byte, def, maxLimit int) (limit int, before uint64, err error) {
	limit = def
	if len(limitArg) > 0 {
		n, err := strconv.Atoi(string(limitArg))
		if err != nil || n <= 0 {
			return 0, 0, fmt.Errorf("limit %q is not a positive integer", limitArg)
		}
		limit = min(n, maxLimit)
	}
	if len(beforeArg) > 0 {
		if before, err = strconv.ParseUint(string(beforeArg), 10, 64); err != nil || before == 0 {
			return 0, 0, fmt.Errorf("before %q is not a positive integer (the next_before of the page read last)", beforeArg)
		}
	}
	return limit, before, nil
}
