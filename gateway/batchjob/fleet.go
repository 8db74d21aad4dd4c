package batchjob

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/infergate/infergate/retrain/engine"
)

// The fleet's batch jobs: `infergate score --fleet` publishes the rows of
// its file, a chunk a message, on a work-queue stream; every replica with
// cluster.batch_jobs pulls them through one shared consumer, runs them
// through its batcher below every online request, and puts the outputs in
// an object store, where the job that published the chunk reads them.
// A chunk whose replica dies before it acknowledged the message is
// delivered again, to another, after ChunkAckWait; its result is an
// object named by the job and chunk, so a chunk scored twice is one
// result, read once.
const (
	// ChunkStream is the work-queue stream of the chunks of every job.
	ChunkStream = "infergate_batch_chunks"
	// chunkSubjects are its subjects: chunkSubjectPrefix + job.
	chunkSubjects      = "infergate.batch.chunks.>"
	chunkSubjectPrefix = "infergate.batch.chunks."
	// ChunkConsumer is the replicas' shared durable pull consumer.
	ChunkConsumer = "batch_workers"
	// ResultBucket is the object store of the chunks' outputs, each the
	// object ResultName(job, chunk).
	ResultBucket = "infergate_batch_results"
	// ChunkAckWait is how long a chunk is a replica's before it is
	// delivered again: a replica scoring it says it is in progress every
	// ChunkAckWait/4.
	ChunkAckWait = 8 * time.Second
	// MaxChunkBytes bounds a chunk's input rows.
	MaxChunkBytes = 512 << 10
	// retention is how long a chunk or a result outlives a job that did
	// not clean up after itself (one killed).
	retention = 24 * time.Hour
)

// The headers of a chunk message.
const (
	HeaderRun     = "Infergate-Run"
	HeaderChunk   = "Infergate-Chunk"
	HeaderModel   = "Infergate-Model"
	HeaderVersion = "Infergate-Version"
	HeaderRows    = "Infergate-Rows"
	// HeaderReplica and HeaderDelivery are the result's: the replica that
	// scored the chunk, and which delivery of the chunk it scored (1 the
	// first; more when a replica died holding it). HeaderError, on an
	// empty result, is why the replica cannot score the chunk at all.
	HeaderReplica  = "Infergate-Replica"
	HeaderDelivery = "Infergate-Delivery"
	HeaderError    = "Infergate-Error"
)

// ResultName names the result object of chunk k of a job's run.
func ResultName(run string, k int64) string { return run + "/" + strconv.FormatInt(k, 10) }

// Chunk is a chunk message taken apart: Rows rows of the model's one
// input, row-major in its type, as Data. Run is the run of the job that
// published it (a job resumed after a kill is a new run).
type Chunk struct {
	Run, Model, Version string
	Index               int64
	Rows                int
	Data                []byte
}

// ParseChunk reads the chunk of msg.
func ParseChunk(msg jetstream.Msg) (Chunk, error) {
	h := msg.Headers()
	c := Chunk{Run: h.Get(HeaderRun), Model: h.Get(HeaderModel), Version: h.Get(HeaderVersion), Data: msg.Data()}
	var err1, err2 error
	c.Index, err1 = strconv.ParseInt(h.Get(HeaderChunk), 10, 64)
	c.Rows, err2 = strconv.Atoi(h.Get(HeaderRows))
	if c.Run == "" || c.Model == "" || c.Version == "" || err1 != nil || err2 != nil || c.Rows < 1 {
		return Chunk{}, fmt.Errorf("cannot read chunk message %s: headers %v", msg.Subject(), h)
	}
	return c, nil
}

// OpenChunks returns the chunk stream and the result bucket, creating
// them when they are missing.
func OpenChunks(ctx context.Context, conn *engine.Conn) (jetstream.Stream, jetstream.ObjectStore, error) {
	st, err := engine.Stream(ctx, conn.JS, jetstream.StreamConfig{
		Name: ChunkStream, Subjects: []string{chunkSubjects}, Retention: jetstream.WorkQueuePolicy,
		Storage: jetstream.FileStorage, Replicas: conn.Replicas, MaxAge: retention,
		MaxMsgSize: MaxChunkBytes + 64<<10, Duplicates: 2 * time.Minute,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("cannot open stream %s: %w", ChunkStream, err)
	}
	obs, err := engine.ObjectStore(ctx, conn.JS, jetstream.ObjectStoreConfig{
		Bucket: ResultBucket, Storage: jetstream.FileStorage, Replicas: conn.Replicas, TTL: retention,
		Description: "outputs of the chunks of batch-scoring jobs",
	})
	if err != nil {
		return nil, nil, fmt.Errorf("cannot open object store %s: %w", ResultBucket, err)
	}
	return st, obs, nil
}

// ChunkConsumerConfig is the replicas' shared consumer of the chunks.
func ChunkConsumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable: ChunkConsumer, AckPolicy: jetstream.AckExplicitPolicy, AckWait: ChunkAckWait,
		MaxAckPending: 1024, Description: "replicas with cluster.batch_jobs scoring chunks of batch jobs",
	}
}

// Fleet scores a job's rows on the replicas of a fleet instead of local
// sessions: Job.Run then only describes the model.
type Fleet struct {
	Conn *engine.Conn
	// InFlight is the chunks published and not yet read back (default 8).
	InFlight int
	// ChunkTimeout bounds the wait for one chunk's result (default 10m):
	// past it, no replica with cluster.batch_jobs serves the version.
	ChunkTimeout time.Duration
}

// inFlight returns f.InFlight or its default.
func (f *Fleet) inFlight() int {
	if f.InFlight > 0 {
		return f.InFlight
	}
	return 8
}

// fleetRun is a Fleet at work on one job.
type fleetRun struct {
	f   *Fleet
	job *Job
	// id is the job's, kept by its checkpoint; run is this run's, which
	// names its chunks and results: a resumed job numbers its chunks from
	// 0 again, and must not take a result of the run before for its own.
	id, runID string
	stream    jetstream.Stream
	results   jetstream.ObjectStore
	watcher   jetstream.ObjectWatcher
	mu        sync.Mutex
	waiting   map[string]chan struct{}
	next      int64 // the next chunk's index
	rowBytes  int   // an input row's bytes
	outBytes  []int // each output's bytes per row
	// scoredBy counts the chunks each replica scored; redelivered those
	// scored on a later delivery.
	scoredBy    map[string]int
	redelivered int
}

// ChunkRows returns the rows of a chunk for a model whose row takes
// inBytes of input and outBytes of outputs: a chunk's rows hold at most
// MaxChunkBytes of either.
func ChunkRows(inBytes, outBytes int) int { return max(1, MaxChunkBytes/max(inBytes, outBytes, 1)) }

// fleetJobFile holds, in a checkpoint, the id of the job on the fleet.
const fleetJobFile = "fleet-job"

// start opens the stream and bucket and watches the results of job. A job
// resumed from cp keeps the id it had, and first removes what the run
// before it left on the stream and in the bucket.
func (f *Fleet) start(ctx context.Context, job *Job, p *plan, cp *checkpoint) (*fleetRun, error) {
	st, obs, err := OpenChunks(ctx, f.Conn)
	if err != nil {
		return nil, err
	}
	r := &fleetRun{f: f, job: job, stream: st, results: obs, waiting: map[string]chan struct{}{}, scoredBy: map[string]int{}}
	idFile := filepath.Join(cp.dir, fleetJobFile)
	if data, err := os.ReadFile(idFile); err == nil && len(data) > 0 {
		r.id = string(data)
		r.clean(ctx)
	} else {
		id := make([]byte, 8)
		rand.Read(id)
		r.id = "job-" + hex.EncodeToString(id)
		if err := os.WriteFile(idFile, []byte(r.id), 0o644); err != nil {
			return nil, fmt.Errorf("cannot write the checkpoint %s: %w", idFile, err)
		}
	}
	nonce := make([]byte, 4)
	rand.Read(nonce)
	r.runID = r.id + "-" + hex.EncodeToString(nonce)
	r.rowBytes = p.width * p.input.DataType.Size()
	for _, o := range p.outputs {
		r.outBytes = append(r.outBytes, o.perRow*o.info.DataType.Size())
	}
	// The watch starts before any chunk is published, so no result can
	// land unseen.
	if r.watcher, err = obs.Watch(ctx, jetstream.UpdatesOnly(), jetstream.IgnoreDeletes()); err != nil {
		return nil, fmt.Errorf("cannot watch object store %s: %w", ResultBucket, err)
	}
	go r.dispatch()
	return r, nil
}

// dispatch wakes the waiter of each result put, until the watch stops.
func (r *fleetRun) dispatch() {
	for info := range r.watcher.Updates() {
		if info == nil {
			continue // the end of the (empty) initial values
		}
		r.mu.Lock()
		if ch, ok := r.waiting[info.Name]; ok {
			close(ch)
			delete(r.waiting, info.Name)
		}
		r.mu.Unlock()
	}
}

// stop ends the watch and removes what the job left on the stream (chunks
// not taken, after an error) and in the bucket.
func (r *fleetRun) stop() {
	r.watcher.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r.clean(ctx)
}

// clean removes the job's chunks from the stream and its results from
// the bucket.
func (r *fleetRun) clean(ctx context.Context) {
	r.stream.Purge(ctx, jetstream.WithPurgeSubject(chunkSubjectPrefix+r.id))
	if names, err := r.results.List(ctx); err == nil {
		for _, o := range names {
			if strings.HasPrefix(o.Name, r.id+"-") {
				r.results.Delete(ctx, o.Name)
			}
		}
	}
}

// run scores the valid rows start to end of b's slot, one chunk, on the
// fleet and copies their outputs into the slot.
func (r *fleetRun) run(ctx context.Context, in []byte, b batch) error {
	r.mu.Lock()
	k := r.next
	r.next++
	name := ResultName(r.runID, k)
	done := make(chan struct{})
	r.waiting[name] = done
	r.mu.Unlock()
	n := b.end - b.start
	msg := nats.NewMsg(chunkSubjectPrefix + r.id)
	msg.Header.Set(HeaderRun, r.runID)
	msg.Header.Set(HeaderChunk, strconv.FormatInt(k, 10))
	msg.Header.Set(HeaderModel, r.job.Model)
	msg.Header.Set(HeaderVersion, r.job.Version)
	msg.Header.Set(HeaderRows, strconv.Itoa(n))
	msg.Header.Set(jetstream.MsgIDHeader, name)
	msg.Data = in
	if err := r.publish(ctx, msg); err != nil {
		return fmt.Errorf("cannot publish chunk %d to stream %s: %w", k, ChunkStream, err)
	}
	timeout := r.f.ChunkTimeout
	if timeout == 0 {
		timeout = 10 * time.Minute
	}
	wait := time.NewTimer(timeout)
	defer wait.Stop()
	select {
	case <-done:
	case <-ctx.Done():
		return ctx.Err()
	case <-wait.C:
		return fmt.Errorf("cannot score chunk %d of job %s: no result after %s; is a replica with cluster.batch_jobs: true serving version %s of model %q?",
			k, r.id, timeout, r.job.Version, r.job.Model)
	}
	// A replica whose ack was lost may put the result again while it is
	// read: the read is tried again.
	var replica string
	var delivery int
	var err error
	for try := 0; try < 3; try++ {
		if replica, delivery, err = r.read(ctx, name, n, b); err == nil || errors.Is(err, errChunkFailed) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("cannot read the result of chunk %d: %w", k, err)
	}
	r.mu.Lock()
	r.scoredBy[replica]++
	if delivery > 1 {
		r.redelivered++
	}
	r.mu.Unlock()
	// Best effort: stop removes what is left.
	r.results.Delete(ctx, name)
	return nil
}

// publish publishes msg, trying again for 10s while the stream does not
// answer: its message id makes a second publish of a stored one a
// duplicate, which the stream does not store again.
func (r *fleetRun) publish(ctx context.Context, msg *nats.Msg) error {
	deadline := time.Now().Add(10 * time.Second)
	for try, wait := 0, 50*time.Millisecond; ; try, wait = try+1, min(2*wait, time.Second) {
		ack, err := r.f.Conn.JS.PublishMsg(ctx, msg)
		if err == nil {
			if ack.Duplicate && try == 0 {
				// Only a try after one that may have been stored is
				// a duplicate of ours.
				return fmt.Errorf("the stream holds a message of id %s already", msg.Header.Get(jetstream.MsgIDHeader))
			}
			return nil
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return err
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// errChunkFailed is the error of a result that says the replica cannot
// score the chunk.
var errChunkFailed = errors.New("the replica cannot score it")

// read copies result name, of n rows, into b's slot and returns the
// replica that scored it and on which delivery.
func (r *fleetRun) read(ctx context.Context, name string, n int, b batch) (string, int, error) {
	obj, err := r.get(ctx, name)
	if err != nil {
		return "", 0, err
	}
	defer obj.Close()
	info, err := obj.Info()
	if err != nil {
		return "", 0, err
	}
	replica := info.Headers.Get(HeaderReplica)
	if why := info.Headers.Get(HeaderError); why != "" {
		return replica, 0, fmt.Errorf("%w: replica %s: %s", errChunkFailed, replica, why)
	}
	want := 0
	for _, ob := range r.outBytes {
		want += n * ob
	}
	if info.Size != uint64(want) {
		return replica, 0, fmt.Errorf("it holds %d bytes, want %d for %d rows", info.Size, want, n)
	}
	for i, ob := range r.outBytes {
		if _, err := io.ReadFull(obj, b.s.out[i][b.start*ob:b.end*ob]); err != nil {
			return replica, 0, err
		}
	}
	// Reading to the end checks the object's digest.
	if _, err := io.Copy(io.Discard, obj); err != nil {
		return replica, 0, err
	}
	delivery, _ := strconv.Atoi(info.Headers.Get(HeaderDelivery))
	return replica, delivery, nil
}

// FleetReport is what a job scored on a fleet did there.
type FleetReport struct {
	Job string `json:"job"`
	// Chunks counts the chunks read back; ScoredBy them by the replica
	// that scored each; Redelivered those scored on a later delivery than
	// the first (their replica died or handed them back).
	Chunks      int            `json:"chunks"`
	ScoredBy    map[string]int `json:"scored_by"`
	Redelivered int            `json:"redelivered"`
}

// report returns what r did so far.
func (r *fleetRun) report() *FleetReport {
	r.mu.Lock()
	defer r.mu.Unlock()
	rep := &FleetReport{Job: r.id, ScoredBy: maps.Clone(r.scoredBy), Redelivered: r.redelivered}
	for _, n := range r.scoredBy {
		rep.Chunks += n
	}
	return rep
}

// get opens the result object name, which the watch saw put. A bucket's
// reads may be served by a server that has not stored the put yet, so a
// missing object is asked for again, for up to 5s.
func (r *fleetRun) get(ctx context.Context, name string) (jetstream.ObjectResult, error) {
	for wait := 5 * time.Millisecond; ; wait *= 2 {
		obj, err := r.results.Get(ctx, name)
		if !errors.Is(err, jetstream.ErrObjectNotFound) || wait > 2*time.Second {
			return obj, err
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}
