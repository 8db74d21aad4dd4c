package pipeline

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/infergate/infergate/retrain/engine"
)

// The engine's buckets that hold the retrain service's state (its outbox
// is the stream and bucket of outbox.Open's Name "retrain").
const (
	// RunsBucket holds the runs, each as JSON under its id ("1", "2", …),
	// and under the key "sequence" the last id handed out.
	RunsBucket = "infergate_retrain_runs"
	// SeenBucket holds what the service keeps of each accepted event
	// (see seenKey); an entry expires keepSeen after it was written.
	SeenBucket = "infergate_retrain_seen"
)

// sequenceKey is the key of RunsBucket that holds the last run id handed
// out, so that an id is never handed out twice, whatever was pruned.
const sequenceKey = "sequence"

// storeTimeout bounds one request to the engine.
const storeTimeout = 10 * time.Second

// maxUnsure bounds the writes of a run whose answers were lost that a put
// looks for in place (see store.put).
const maxUnsure = 8

// The outcomes of a run.
const (
	Queued    = "queued"
	Running   = "running"
	Succeeded = "succeeded"
	Failed    = "failed"
)

var (
	// ErrNoRun is returned for a run id the store does not hold.
	ErrNoRun = errors.New("pipeline: no such run")
	// ErrDamaged is wrapped by the error about a record of RunsBucket or
	// SeenBucket that cannot be decoded; the error names the bucket and
	// the key and says how to recover.
	ErrDamaged = errors.New("pipeline: damaged record")
	// errConflict is wrapped by the error of a write that found the record
	// changed by someone else since it was read.
	errConflict = errors.New("changed by another writer since it was read")
)

// Bounds of what the store keeps.
const (
	keepRuns = 1000
	// keepSeen is how long an event id is remembered: longer than an
	// outbox retries a delivery, since a redelivery is signed afresh.
	keepSeen = 30 * 24 * time.Hour
)

// Run is one run of the pipeline for a model, as stored and as GET /runs
// lists it. A Run is plain data.
type Run struct {
	ID    string `json:"id"`
	Model string `json:"model"`
	// Trigger is the id of the drift event that queued the run, and
	// Coalesced those of the events that arrived while it was queued.
	Trigger   string   `json:"trigger"`
	Coalesced []string `json:"coalesced,omitempty"`
	// RetryOf is the run a crash interrupted, which this one does again.
	RetryOf string `json:"retry_of,omitempty"`
	// DriftVersion is the version that drifted; Since is when the traffic
	// the run reads begins: the drifted window's start less lookback, or a
	// concept drift's decision time.
	DriftVersion string    `json:"drift_version,omitempty"`
	Since        time.Time `json:"since,omitzero"`
	QueuedAt     time.Time `json:"queued"`
	Started      time.Time `json:"started,omitzero"`
	Finished     time.Time `json:"finished,omitzero"`
	// Outcome is Queued, Running, Succeeded or Failed; Reason says why a
	// run failed, and Transient that the reason may pass on its own (see
	// transient).
	Outcome   string `json:"outcome"`
	Reason    string `json:"reason,omitempty"`
	Transient bool   `json:"transient,omitempty"`
	// Candidate is the version the run published, or one published before
	// and never canaried whose canary it starts instead: then ResumedFrom
	// is the last run that failed to start it (see resume).
	Candidate   string `json:"candidate_version,omitempty"`
	ResumedFrom string `json:"resumed_from,omitempty"`
	// CanaryStarted is when the gateway acknowledged the start of the
	// candidate's canary: a 2xx to POST /admin/models/{m}/canary, or, its
	// answer lost, the gateway's routing showing that canary. The canary
	// of a candidate whose run records it is never started again.
	CanaryStarted time.Time `json:"canary_started,omitzero"`
	Metrics       *Metrics  `json:"metrics,omitempty"`
	Steps         []Step    `json:"steps"`
	// EventID is the id of the event that tells the outcome; Notified is
	// set once that event is in the outbox.
	EventID  string `json:"event_id,omitempty"`
	Notified bool   `json:"notified"`

	// rev is the revision of the record this Run was read from or last
	// written as, 0 for a run not yet stored: the next write replaces
	// that revision or fails (see store.put).
	rev uint64
	// unsure holds the records of the writes since rev whose answers were
	// lost: the engine may hold one of them (see store.put).
	unsure [][]byte
}

// Step is one step of a run: data, train, validate, publish or canary.
type Step struct {
	Name     string    `json:"name"`
	Start    time.Time `json:"start"`
	Duration Duration  `json:"duration"`
	Log      []string  `json:"log"`
	Error    string    `json:"error,omitempty"`
}

// Metrics are a candidate's validation results, also written to its
// metrics.json. Accuracies are shares of rows whose top class is the label.
type Metrics struct {
	// BaseVersion is the newest version in the repository when the run
	// began, the one the candidate is compared with.
	BaseVersion string `json:"base_version"`
	// RecentRows are the labeled captured rows read, TrainRows the rows
	// trained on (recent and training-time ones mixed), and the holdouts
	// the rows of each kind kept out of training.
	RecentRows int `json:"recent_rows"`
	// RecentRowsByReplica counts the recent rows by the gateway replica
	// that captured them.
	RecentRowsByReplica map[string]int `json:"recent_rows_by_replica,omitempty"`
	TrainRows           int            `json:"train_rows"`
	RecentHoldoutRows   int            `json:"recent_holdout_rows"`
	TrainingHoldoutRows int            `json:"training_holdout_rows"`
	// RecentAccuracy is on the recent holdout, HoldoutAccuracy on the
	// training-time holdout; the Base ones are the current version's.
	RecentAccuracy      float64 `json:"recent_accuracy"`
	BaseRecentAccuracy  float64 `json:"base_recent_accuracy"`
	HoldoutAccuracy     float64 `json:"holdout_accuracy"`
	BaseHoldoutAccuracy float64 `json:"base_holdout_accuracy"`
	// LatencyP50 and LatencyP99 are of single-row runs in process.
	LatencyP50 Duration `json:"latency_p50"`
	LatencyP99 Duration `json:"latency_p99"`
}

// Duration is a time.Duration that reads and writes as Go writes one
// ("1.5s"). It is a plain value.
type Duration time.Duration

// MarshalText writes d as time.Duration's String does.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText reads what MarshalText writes.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	*d = Duration(v)
	return err
}

// String formats d as time.Duration does.
func (d Duration) String() string { return time.Duration(d).String() }

// store is the run store: the buckets of runs and of seen events. Its
// methods are safe for concurrent use; two writes of one run are
// serialized by its owner (see Service).
type store struct {
	js   jetstream.JetStream
	runs jetstream.KeyValue
	seen jetstream.KeyValue
	// queues is LeaseBucket, which holds the models' queues (and leases).
	queues jetstream.KeyValue
	// maxRecord is the largest record the engine takes: its max_payload,
	// less room for the headers.
	maxRecord int
}

// openStore creates (or updates the replicas of) the buckets of the run
// store on the engine: file storage, conn.Replicas copies.
func openStore(conn *engine.Conn) (*store, error) {
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	st := &store{js: conn.JS, maxRecord: maxRecord(conn)}
	var err error
	st.runs, err = engine.KeyValue(ctx, conn.JS, jetstream.KeyValueConfig{Bucket: RunsBucket,
		Description: "infergate retrain runs, by id", Storage: jetstream.FileStorage, Replicas: conn.Replicas, Compression: true})
	if err != nil {
		return nil, fmt.Errorf("cannot create the run store's bucket %s: %w", RunsBucket, err)
	}
	st.seen, err = engine.KeyValue(ctx, conn.JS, jetstream.KeyValueConfig{Bucket: SeenBucket,
		Description: "infergate retrain: the events accepted and their answers", Storage: jetstream.FileStorage,
		Replicas: conn.Replicas, TTL: keepSeen})
	if err != nil {
		return nil, fmt.Errorf("cannot create the run store's bucket %s: %w", SeenBucket, err)
	}
	if st.queues, err = openLeases(conn.JS, conn.Replicas); err != nil {
		return nil, fmt.Errorf("cannot create the run store's buckets: %w", err)
	}
	return st, nil
}

// maxRecord is the largest record that conn's servers take.
func maxRecord(conn *engine.Conn) int {
	return max(int(conn.NC.MaxPayload())-4<<10, 64<<10)
}

// damaged returns the error about the record key of bucket, which cannot
// be decoded.
func damaged(bucket, key string, err error) error {
	return fmt.Errorf("%w: record %q of bucket %s: %v; see it with `nats kv get %s %s`, then put a repaired record back, "+
		"or delete it with `nats kv del %s %s` to go on without it", ErrDamaged, key, bucket, err, bucket, key, bucket, key)
}

// runKey returns the key of run id, or an error wrapping ErrNoRun when id
// is not a run id.
func runKey(id string) (string, error) {
	n, err := strconv.ParseUint(id, 10, 64)
	if err != nil || n == 0 {
		return "", fmt.Errorf("%w: %q is not a run id", ErrNoRun, id)
	}
	return strconv.FormatUint(n, 10), nil
}

// decodeRun decodes the record of key, which must be the run's id.
func decodeRun(key string, value []byte, rev uint64) (Run, error) {
	var r Run
	if err := json.Unmarshal(value, &r); err != nil {
		return Run{}, damaged(RunsBucket, key, err)
	}
	if r.ID != key {
		return Run{}, damaged(RunsBucket, key, fmt.Errorf("it holds run %q", r.ID))
	}
	r.rev = rev
	return r, nil
}

// get returns the run with id; the error wraps ErrNoRun when there is none.
func (st *store) get(id string) (Run, error) {
	key, err := runKey(id)
	if err != nil {
		return Run{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	e, err := st.runs.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Run{}, fmt.Errorf("%w: %s", ErrNoRun, id)
	}
	if err != nil {
		return Run{}, fmt.Errorf("cannot read run %s: %w", id, err)
	}
	return decodeRun(key, e.Value(), e.Revision())
}

// put stores r: a new record when r was never stored, else in place of
// the revision r was read from or last written as, so that a write made
// meanwhile by another writer is never overwritten. A write whose answer
// was lost may have landed: the next put finds it in place and goes on.
func (st *store) put(r *Run) error {
	key, err := runKey(r.ID)
	if err != nil {
		return err
	}
	b, err := st.encode(r)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	rev, err := st.write(ctx, key, b, r.rev)
	if errors.Is(err, errConflict) && len(r.unsure) > 0 {
		// An earlier write's answer was lost: if it landed, it is the
		// record in place, and this write replaces it.
		e, gerr := st.runs.Get(ctx, key)
		if gerr == nil && slices.ContainsFunc(r.unsure, func(u []byte) bool { return bytes.Equal(u, e.Value()) }) {
			rev, err = st.write(ctx, key, b, e.Revision())
		}
	}
	switch {
	case errors.Is(err, errConflict):
		return fmt.Errorf("cannot record run %s: its record was %w", r.ID, err)
	case err != nil:
		if len(r.unsure) == maxUnsure {
			r.unsure = r.unsure[1:]
		}
		r.unsure = append(r.unsure, b)
		return fmt.Errorf("cannot record run %s: %w", r.ID, err)
	}
	r.rev, r.unsure = rev, nil
	return nil
}

// write creates key when rev is 0, else replaces its revision rev. The
// error wraps errConflict when the record is not (or no longer) so.
func (st *store) write(ctx context.Context, key string, b []byte, rev uint64) (uint64, error) {
	var err error
	if rev == 0 {
		rev, err = st.runs.Create(ctx, key, b)
	} else {
		rev, err = st.runs.Update(ctx, key, b, rev)
	}
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return 0, fmt.Errorf("%w: %w", errConflict, err)
	}
	return rev, err
}

// encode returns r's record. A record beyond what the engine takes loses
// the middle of its longest step logs, which a note replaces.
func (st *store) encode(r *Run) ([]byte, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("cannot encode run %s: %w", r.ID, err)
	}
	if len(b) <= st.maxRecord {
		return b, nil
	}
	cut := *r
	cut.Steps = slices.Clone(r.Steps)
	for len(b) > st.maxRecord {
		i := 0
		for j := range cut.Steps {
			if len(cut.Steps[j].Log) > len(cut.Steps[i].Log) {
				i = j
			}
		}
		lines := cut.Steps[i].Log
		if len(lines) < 2 {
			return nil, fmt.Errorf("cannot record run %s: its record takes %d bytes, more than the %d the engine takes", r.ID, len(b), st.maxRecord)
		}
		keep := len(lines) / 4
		cut.Steps[i].Log = slices.Concat(lines[:keep],
			[]string{fmt.Sprintf("(%d lines left out: the run's record must fit the engine's max_payload)", len(lines)-2*keep)},
			lines[len(lines)-keep:])
		if b, err = json.Marshal(&cut); err != nil {
			return nil, fmt.Errorf("cannot encode run %s: %w", r.ID, err)
		}
	}
	return b, nil
}

// newRun stores r, queued, under the next id. Processes sharing the
// engine hand out ids by revision: one that finds the last id changed
// meanwhile reads it again.
func (st *store) newRun(r *Run) error {
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	for {
		last, rev, err := st.lastID(ctx)
		if err != nil {
			return err
		}
		_, err = st.write(ctx, sequenceKey, strconv.AppendUint(nil, last+1, 10), rev)
		if errors.Is(err, errConflict) && ctx.Err() == nil {
			continue
		}
		if err != nil {
			return fmt.Errorf("cannot hand out run id %d: %w", last+1, err)
		}
		r.ID, r.rev, r.unsure = strconv.FormatUint(last+1, 10), 0, nil
		return st.put(r)
	}
}

// remove deletes run r, unless it changed since it was read or written as
// r. It is for a queued run that nobody but its writer knows of yet.
func (st *store) remove(r *Run) error {
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	if err := st.runs.Delete(ctx, r.ID, jetstream.LastRevision(r.rev)); err != nil {
		return fmt.Errorf("cannot delete run %s: %w", r.ID, err)
	}
	return nil
}

// queue is a model's queue, as the key "<model>.queue" of LeaseBucket
// holds it: the run queued, which further events are coalesced into, and
// the run running, which the holder of the model's lease runs. Either is
// "" for none. Every change is made in place of the revision read, so that
// the services of several processes change it in turn.
type queue struct {
	Queued  string `json:"queued,omitempty"`
	Running string `json:"running,omitempty"`

	rev uint64 // the revision read, 0 when the key was never written
}

// queueKey returns the key of model's queue.
func queueKey(model string) string { return engine.Token(model) + ".queue" }

// getQueue returns model's queue.
func (st *store) getQueue(model string) (queue, error) {
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	key := queueKey(model)
	e, err := st.queues.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return queue{}, nil
	}
	if err != nil {
		return queue{}, fmt.Errorf("cannot read the queue of model %q: %w", model, err)
	}
	var q queue
	if err := json.Unmarshal(e.Value(), &q); err != nil {
		return queue{}, damaged(LeaseBucket, key, err)
	}
	q.rev = e.Revision()
	return q, nil
}

// putQueue writes model's queue in place of the revision q was read at.
// The error wraps errConflict when another writer changed it meanwhile.
func (st *store) putQueue(model string, q *queue) error {
	b, err := json.Marshal(q)
	if err != nil {
		return fmt.Errorf("cannot encode the queue of model %q: %w", model, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	var rev uint64
	if q.rev == 0 {
		rev, err = st.queues.Create(ctx, queueKey(model), b)
	} else {
		rev, err = st.queues.Update(ctx, queueKey(model), b, q.rev)
	}
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return fmt.Errorf("cannot write the queue of model %q: %w: %w", model, errConflict, err)
	}
	if err != nil {
		return fmt.Errorf("cannot write the queue of model %q: %w", model, err)
	}
	q.rev = rev
	return nil
}

// lastID returns the last run id handed out and the revision of its key;
// where the key was never written (rev 0), the highest stored id, or 0.
func (st *store) lastID(ctx context.Context) (last, rev uint64, err error) {
	e, err := st.runs.Get(ctx, sequenceKey)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		ids, err := st.ids(ctx)
		if err != nil || len(ids) == 0 {
			return 0, 0, err
		}
		return ids[0], 0, nil
	case err != nil:
		return 0, 0, fmt.Errorf("cannot read the last run id: %w", err)
	}
	if last, err = strconv.ParseUint(string(e.Value()), 10, 64); err != nil {
		return 0, 0, damaged(RunsBucket, sequenceKey, fmt.Errorf("%q is not a run id", e.Value()))
	}
	return last, e.Revision(), nil
}

// ids returns the ids of the stored runs, highest first.
func (st *store) ids(ctx context.Context) ([]uint64, error) {
	ids, err := runIDs(ctx, st.js)
	slices.Reverse(ids)
	return ids, err
}

// newest calls fn with the stored runs, newest first, until fn returns
// false.
func (st *store) newest(fn func(Run) bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	ids, err := st.ids(ctx)
	cancel()
	if err != nil {
		return err
	}
	for _, id := range ids {
		r, err := st.get(strconv.FormatUint(id, 10))
		if errors.Is(err, ErrNoRun) {
			continue // pruned since
		}
		if err != nil {
			return err
		}
		if !fn(r) {
			return nil
		}
	}
	return nil
}

// all returns every stored run, oldest first, read in one pass.
func (st *store) all() ([]Run, error) {
	return allRuns(st.js, st.runs)
}

func allRuns(js jetstream.JetStream, kv jetstream.KeyValue) ([]Run, error) {
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	ids, err := runIDs(ctx, js)
	if err != nil {
		return nil, err
	}
	runs := []Run{}
	for _, id := range ids {
		key := strconv.FormatUint(id, 10)
		e, err := kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // pruned meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("cannot read run %s: %w", key, err)
		}
		r, err := decodeRun(key, e.Value(), e.Revision())
		if err != nil {
			return nil, err
		}
		runs = append(runs, r)
	}
	return runs, nil
}

// runIDs lists the ids of the runs in RunsBucket, oldest first, from its
// stream's own list of subjects: a watch of the bucket (as its Keys and
// WatchAll read it) may miss a key written while it reads, and a run is
// written again at every step. A deleted run's id may be among them.
func runIDs(ctx context.Context, js jetstream.JetStream) ([]uint64, error) {
	stream, err := js.Stream(ctx, "KV_"+RunsBucket)
	if err != nil {
		return nil, fmt.Errorf("cannot list the runs: %w", err)
	}
	prefix := "$KV." + RunsBucket + "."
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter(prefix+">"))
	if err != nil {
		return nil, fmt.Errorf("cannot list the runs: %w", err)
	}
	ids := make([]uint64, 0, len(info.State.Subjects))
	for subject := range info.State.Subjects {
		key := strings.TrimPrefix(subject, prefix)
		if key == sequenceKey {
			continue
		}
		if !isRunKey(key) {
			return nil, damaged(RunsBucket, key, errors.New("the key is not a run id"))
		}
		ids = append(ids, runNumber(key))
	}
	slices.Sort(ids)
	return ids, nil
}

// isRunKey says whether key is a run's key: a run id as runKey writes it.
func isRunKey(key string) bool {
	k, err := runKey(key)
	return err == nil && k == key
}

// runNumber is the number of a stored run's id.
func runNumber(id string) uint64 {
	n, _ := strconv.ParseUint(id, 10, 64)
	return n
}

// prune deletes the oldest of runs (every stored run, oldest first) beyond
// keep (keepRuns), other than queued and running ones and those whose outcome may
// not have been emitted, and the markers of the runs deleted by earlier
// prunes; it returns the runs kept. Seen events expire on their own.
func (st *store) prune(runs []Run, keep int) ([]Run, error) {
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	excess := len(runs) - keep
	kept := runs[:0]
	for _, r := range runs {
		if excess <= 0 || r.Outcome == Queued || r.Outcome == Running || !r.Notified {
			kept = append(kept, r)
			continue
		}
		err := st.runs.Delete(ctx, r.ID, jetstream.LastRevision(r.rev))
		if err != nil && !engine.IsWrongSequence(err) { // else another process pruned it, or changed it
			return nil, fmt.Errorf("cannot prune run %s: %w", r.ID, err)
		}
		excess--
	}
	if err := st.runs.PurgeDeletes(ctx); err != nil {
		return nil, fmt.Errorf("cannot prune the markers of runs deleted: %w", err)
	}
	return kept, nil
}

// ListRuns returns the runs that the engine conn holds, newest first; none
// when no retrain service has stored any yet. It reads while a service
// runs, and changes nothing.
func ListRuns(conn *engine.Conn) ([]Run, error) {
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	kv, err := conn.JS.KeyValue(ctx, RunsBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return []Run{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cannot list runs: %w", err)
	}
	runs, err := allRuns(conn.JS, kv)
	if err != nil {
		return nil, fmt.Errorf("cannot list runs: %w", err)
	}
	slices.Reverse(runs)
	return runs, nil
}

// seenEvent is what the store keeps of an accepted event: its id, when it
// arrived and the body of the answer, which a re-delivery gets again.
type seenEvent struct {
	ID     string    `json:"id,omitempty"`
	At     time.Time `json:"at"`
	Answer string    `json:"answer"`
}

// legacyAnswer is the answer to a re-delivery of an event accepted before
// the store kept answers, when the value was the arrival time alone (as a
// record imported from such a store holds).
const legacyAnswer = `{"status": "accepted"}` + "\n"

// plainKey matches the event ids that are their own key in SeenBucket.
var plainKey = regexp.MustCompile(`^[-_a-zA-Z0-9]{1,128}$`)

// seenKey returns the key of event id in SeenBucket: the id itself when it
// is made of letters, digits, '-' and '_' (as the UUIDs of outbox.NewEvent
// are), else '=' and its SHA-256 in URL-safe base64.
func seenKey(id string) string {
	if plainKey.MatchString(id) {
		return id
	}
	sum := sha256.Sum256([]byte(id))
	return "=" + base64.RawURLEncoding.EncodeToString(sum[:])
}

func decodeSeen(key string, v []byte) (seenEvent, error) {
	var e seenEvent
	if json.Unmarshal(v, &e) == nil {
		return e, nil
	}
	t, err := time.Parse(time.RFC3339Nano, string(v))
	if err != nil {
		return seenEvent{}, damaged(SeenBucket, key, fmt.Errorf("%q is neither an accepted event nor a time", v))
	}
	return seenEvent{At: t, Answer: legacyAnswer}, nil
}

// getSeen returns what the store keeps of event id, if it was accepted.
func (st *store) getSeen(id string) (seenEvent, bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	key := seenKey(id)
	e, err := st.seen.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return seenEvent{}, false, nil
	}
	if err != nil {
		return seenEvent{}, false, fmt.Errorf("cannot look up event %q: %w", id, err)
	}
	se, err := decodeSeen(key, e.Value())
	return se, err == nil, err
}

// putSeen records that event id was accepted, unless it is recorded
// already: the first answer stays.
func (st *store) putSeen(id string, e seenEvent) error {
	e.ID = id
	b, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("cannot encode seen event %q: %w", id, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	if _, err := st.seen.Create(ctx, seenKey(id), b); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("cannot record event %q as seen: %w", id, err)
	}
	return nil
}
