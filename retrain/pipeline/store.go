package pipeline

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/infergate/infergate/retrain/statefile"
)

// StoreFile is the name of the bbolt file under state_dir.
const StoreFile = "retrain.db"

// The outcomes of a run.
const (
	Queued    = "queued"
	Running   = "running"
	Succeeded = "succeeded"
	Failed    = "failed"
)

// ErrNoRun is returned for a run id the store does not hold.
var ErrNoRun = errors.New("pipeline: no such run")

// The buckets of the store. Runs are keyed by their sequence number, big
// endian, and hold a Run as JSON; seen event ids map to a seenEvent as JSON.
var (
	runsBucket = []byte("pipeline.runs")
	seenBucket = []byte("pipeline.seen")
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
	RecentRows          int `json:"recent_rows"`
	TrainRows           int `json:"train_rows"`
	RecentHoldoutRows   int `json:"recent_holdout_rows"`
	TrainingHoldoutRows int `json:"training_holdout_rows"`
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

func runKey(id string) ([]byte, error) {
	n, err := strconv.ParseUint(id, 10, 64)
	if err != nil || n == 0 {
		return nil, fmt.Errorf("%w: %q is not a run id", ErrNoRun, id)
	}
	return binary.BigEndian.AppendUint64(nil, n), nil
}

// openStore opens (creating) the bbolt file under dir and its buckets. A
// damaged file is refused (see statefile.Open).
func openStore(dir string) (*bbolt.DB, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("cannot create state_dir: %w", err)
	}
	path := filepath.Join(dir, StoreFile)
	db, err := statefile.Open(path, bbolt.Options{Timeout: time.Second})
	if err != nil {
		return nil, err
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		for _, b := range [][]byte{runsBucket, seenBucket} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("cannot create the buckets of run store %q: %w", path, err)
	}
	return db, nil
}

func putRun(tx *bbolt.Tx, r *Run) error {
	key, err := runKey(r.ID)
	if err != nil {
		return err
	}
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("cannot encode run %s: %w", r.ID, err)
	}
	return tx.Bucket(runsBucket).Put(key, b)
}

func getRun(tx *bbolt.Tx, id string) (Run, error) {
	key, err := runKey(id)
	if err != nil {
		return Run{}, err
	}
	b := tx.Bucket(runsBucket).Get(key)
	if b == nil {
		return Run{}, fmt.Errorf("%w: %s", ErrNoRun, id)
	}
	var r Run
	if err := json.Unmarshal(b, &r); err != nil {
		return Run{}, fmt.Errorf("cannot decode run %s: %w", id, err)
	}
	return r, nil
}

// newRun stores a queued run of model with the next id.
func newRun(tx *bbolt.Tx, r *Run) error {
	seq, err := tx.Bucket(runsBucket).NextSequence()
	if err != nil {
		return err
	}
	r.ID = strconv.FormatUint(seq, 10)
	return putRun(tx, r)
}

// listRuns returns the runs of model (every model when empty), newest
// first, at most limit of them (all when limit is not positive).
func listRuns(tx *bbolt.Tx, model string, limit int) ([]Run, error) {
	runs := []Run{}
	c := tx.Bucket(runsBucket).Cursor()
	for k, v := c.Last(); k != nil && (limit <= 0 || len(runs) < limit); k, v = c.Prev() {
		var r Run
		if err := json.Unmarshal(v, &r); err != nil {
			return nil, fmt.Errorf("cannot decode run %d: %w", binary.BigEndian.Uint64(k), err)
		}
		if model == "" || r.Model == model {
			runs = append(runs, r)
		}
	}
	return runs, nil
}

// prune deletes the oldest runs beyond keepRuns, other than queued and
// running ones, and the event ids seen before now-keepSeen.
func prune(tx *bbolt.Tx, now time.Time) error {
	// Keys are collected first: a cursor's Next after its Delete may skip one.
	var old [][]byte
	runs := tx.Bucket(runsBucket)
	excess := runs.Stats().KeyN - keepRuns
	c := runs.Cursor()
	for k, v := c.First(); k != nil && len(old) < excess; k, v = c.Next() {
		var r Run
		if json.Unmarshal(v, &r) == nil && (r.Outcome == Queued || r.Outcome == Running) {
			continue
		}
		old = append(old, bytes.Clone(k))
	}
	for _, k := range old {
		if err := runs.Delete(k); err != nil {
			return err
		}
	}
	seen := tx.Bucket(seenBucket)
	old = old[:0]
	seen.ForEach(func(k, v []byte) error {
		if e, err := decodeSeen(v); err != nil || now.Sub(e.At) > keepSeen {
			old = append(old, bytes.Clone(k))
		}
		return nil
	})
	for _, k := range old {
		if err := seen.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// ListRuns returns the runs kept in the store under stateDir, newest
// first; none when there is no store yet. It opens the store read-only, so
// it fails while a Service holds it: ask that one (GET /runs) instead.
func ListRuns(stateDir string) ([]Run, error) {
	path := filepath.Join(stateDir, StoreFile)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return []Run{}, nil
	}
	db, err := statefile.Open(path, bbolt.Options{ReadOnly: true, Timeout: time.Second})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("cannot list runs (a running retrain service holds its store: ask it with --url): %w", err)
	}
	if err != nil {
		return nil, err
	}
	defer db.Close()
	var runs []Run
	err = db.View(func(tx *bbolt.Tx) error {
		if tx.Bucket(runsBucket) == nil {
			runs = []Run{}
			return nil
		}
		var err error
		runs, err = listRuns(tx, "", 0)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("cannot list runs: %w", err)
	}
	return runs, nil
}

// seenEvent is what the store keeps of an accepted event: when it arrived
// and the body of the answer, which a re-delivery gets again.
type seenEvent struct {
	At     time.Time `json:"at"`
	Answer string    `json:"answer"`
}

// legacyAnswer is the answer to a re-delivery of an event accepted before
// the store kept answers, when the value was the arrival time alone.
const legacyAnswer = `{"status": "accepted"}` + "\n"

func decodeSeen(v []byte) (seenEvent, error) {
	var e seenEvent
	if json.Unmarshal(v, &e) == nil {
		return e, nil
	}
	t, err := time.Parse(time.RFC3339Nano, string(v))
	if err != nil {
		return seenEvent{}, fmt.Errorf("cannot decode a seen event: %q", v)
	}
	return seenEvent{At: t, Answer: legacyAnswer}, nil
}

// getSeen returns what the store keeps of event id, if it was accepted.
func getSeen(tx *bbolt.Tx, id string) (seenEvent, bool, error) {
	v := tx.Bucket(seenBucket).Get([]byte(id))
	if v == nil {
		return seenEvent{}, false, nil
	}
	e, err := decodeSeen(v)
	return e, err == nil, err
}

func putSeen(tx *bbolt.Tx, id string, e seenEvent) error {
	b, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("cannot encode seen event %q: %w", id, err)
	}
	return tx.Bucket(seenBucket).Put([]byte(id), b)
}
