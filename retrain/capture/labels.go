package capture

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

// ErrInvalidLabel is returned (wrapped) for a label without a request id or
// whose value is not JSON; the feedback endpoint answers it with 400.
var ErrInvalidLabel = errors.New("capture: invalid label")

const (
	labelPrefix, labelSuffix = "labels-", ".jsonl"
	// maxCommit bounds the requests written and fsynced together.
	maxCommit = 256
)

// Label is the ground truth of one captured request: a line of a label
// file. Label is any JSON value: a scalar or object for the whole request,
// or an array with one entry per row (see Examples).
type Label struct {
	ID    string          `json:"id"`
	Time  time.Time       `json:"time"`
	Label json.RawMessage `json:"label"`
}

// Labels stores the labels of every model under one state_dir. It is safe
// for concurrent use. Each model's labels are appended to its current
// labels-<unix nanos>.jsonl file (a new one each time the store opens, and
// whenever one reaches FileSize); requests that arrive while a write is in
// progress are written together and share one fsync (group commit).
type Labels struct {
	dir string // <state_dir>/capture
	cfg LabelsConfig
	o   Options
	m   labelMetrics

	reqs      chan *labelRequest
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error // set by run before done is closed

	// The fields below are owned by the run goroutine.
	files    map[string]*labelFile // by model
	failing  map[string]bool       // by model: an error was logged and no write has succeeded since
	lastName int64
}

type labelFile struct {
	f    *os.File
	path string
	size int64 // bytes written
}

type labelRequest struct {
	model string
	data  []byte // the encoded lines
	n     int
	done  chan error
}

type labelMetrics struct {
	labels, commits, errors *metrics.Counter
}

// OpenLabels starts a Labels store under <dir>/capture/, where dir is the
// gateway's state_dir. Close stops it.
func OpenLabels(dir string, cfg LabelsConfig, o Options) (*Labels, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate("feedback"); err != nil {
		return nil, fmt.Errorf("cannot open label store: %w", err)
	}
	o = o.withDefaults()
	l := &Labels{
		dir: filepath.Join(dir, "capture"), cfg: cfg, o: o,
		m: labelMetrics{
			labels:  o.Metrics.NewCounter("infergate_capture_labels_total"),
			commits: o.Metrics.NewCounter("infergate_capture_label_commits_total"),
			errors:  o.Metrics.NewCounter("infergate_capture_label_errors_total"),
		},
		reqs: make(chan *labelRequest, maxCommit), stop: make(chan struct{}), done: make(chan struct{}),
		files: make(map[string]*labelFile), failing: make(map[string]bool),
	}
	go l.run()
	return l, nil
}

// RecordLabel records label as the ground truth of request id of model,
// observed at t (zero means now). It returns once the label is durable.
func (l *Labels) RecordLabel(model, id string, label json.RawMessage, t time.Time) error {
	return l.RecordLabels(model, []Label{{ID: id, Time: t, Label: label}})
}

// RecordLabels records labels of model, all or none, and returns once they
// are durable (written and fsynced). A zero Time means now. It blocks while
// the store's bounded queue is full; it fails with ErrInvalidLabel for a bad
// label and ErrClosed after Close.
func (l *Labels) RecordLabels(model string, labels []Label) error {
	if err := checkModel(model); err != nil {
		return fmt.Errorf("cannot record labels of model %q: %w: %w", model, ErrInvalidLabel, err)
	}
	var data []byte
	now := l.o.Now()
	for i := range labels {
		lb := labels[i]
		if lb.ID == "" || !json.Valid(lb.Label) {
			return fmt.Errorf("cannot record labels of model %q: %w: label %d needs a request id and a JSON value", model, ErrInvalidLabel, i)
		}
		if lb.Time.IsZero() {
			lb.Time = now
		}
		lb.Time = lb.Time.UTC()
		line, err := json.Marshal(lb) // compacts the label, so it is one line
		if err != nil {
			return fmt.Errorf("cannot record labels of model %q: %w: %w", model, ErrInvalidLabel, err)
		}
		data = append(append(data, line...), '\n')
	}
	if len(labels) == 0 {
		return nil
	}
	r := &labelRequest{model: model, data: data, n: len(labels), done: make(chan error, 1)}
	select {
	case l.reqs <- r:
	case <-l.stop:
		return ErrClosed
	}
	select {
	case err := <-r.done:
		return err
	case <-l.done:
		select { // run may have answered just before it stopped
		case err := <-r.done:
			return err
		default:
			return ErrClosed
		}
	}
}

// Close writes the queued labels, closes the files and stops the store's
// goroutine. Later calls return the same error.
func (l *Labels) Close() error {
	l.closeOnce.Do(func() { close(l.stop) })
	<-l.done
	return l.closeErr
}

func (l *Labels) run() {
	defer close(l.done)
	batch := make([]*labelRequest, 0, maxCommit)
	for {
		select {
		case r := <-l.reqs:
			batch = append(batch[:0], r)
		collect:
			for len(batch) < maxCommit {
				select {
				case r := <-l.reqs:
					batch = append(batch, r)
				default:
					break collect
				}
			}
			l.commit(batch)
		case <-l.stop:
			for n := len(l.reqs); n > 0; n-- {
				l.commit([]*labelRequest{<-l.reqs})
			}
			for model, lf := range l.files {
				if err := lf.f.Close(); err != nil && l.closeErr == nil {
					l.closeErr = fmt.Errorf("cannot close label file of model %q: %w", model, err)
				}
			}
			return
		}
	}
}

// commit writes the batch's lines to their models' files, fsyncs each file
// written once, then answers every request.
func (l *Labels) commit(batch []*labelRequest) {
	failed := make(map[string]error)
	written := make(map[string]*labelFile)
	for _, r := range batch {
		if failed[r.model] != nil {
			continue
		}
		lf, err := l.file(r.model)
		if err == nil {
			var n int
			n, err = lf.f.Write(r.data)
			lf.size += int64(n)
		}
		if err != nil {
			failed[r.model] = err
			l.abandon(r.model)
			continue
		}
		written[r.model] = lf
	}
	for model, lf := range written {
		if failed[model] != nil {
			continue
		}
		if err := lf.f.Sync(); err != nil {
			failed[model] = err
			l.abandon(model)
		}
	}
	for model, err := range failed {
		if !l.failing[model] {
			l.o.Log.Warn("cannot record labels", "model", model, "err", err)
			l.failing[model] = true
		}
	}
	l.m.commits.Inc()
	for _, r := range batch {
		if err := failed[r.model]; err != nil {
			l.m.errors.Inc()
			r.done <- fmt.Errorf("cannot record labels of model %q: %w", r.model, err)
			continue
		}
		l.m.labels.Add(r.n)
		delete(l.failing, r.model)
		r.done <- nil
	}
	for model, lf := range l.files {
		if lf.size >= int64(l.cfg.FileSize) {
			delete(l.files, model)
			if err := lf.f.Close(); err != nil {
				l.o.Log.Warn("cannot close label file", "model", model, "err", err)
			}
		}
	}
}

// file returns model's current label file, creating one (and applying
// retention to the older ones) when there is none.
func (l *Labels) file(model string) (*labelFile, error) {
	if lf := l.files[model]; lf != nil {
		return lf, nil
	}
	dir := filepath.Join(l.dir, model)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("cannot create capture folder: %w", err)
	}
	f, path, n, err := createNamed(dir, labelPrefix, labelSuffix, max(l.o.Now().UnixNano(), l.lastName+1))
	if err != nil {
		return nil, err
	}
	syncDir(dir) // so the file's name survives a crash like its contents
	l.lastName = n
	lf := &labelFile{f: f, path: path}
	l.files[model] = lf
	l.prune(dir, path)
	return lf, nil
}

// abandon closes model's file after an error, so that a torn line can only
// be the last of a file, which readers skip, and removes it when nothing
// was written to it, so that failures (a full disk) leave no empty files.
func (l *Labels) abandon(model string) {
	if lf := l.files[model]; lf != nil {
		lf.f.Close()
		if lf.size == 0 {
			os.Remove(lf.path)
		}
		delete(l.files, model)
	}
}

// prune deletes the label files of dir, other than current, whose labels
// are all older than MaxAge: those whose successor began before then.
func (l *Labels) prune(dir, current string) {
	files, err := listFiles(dir, labelPrefix, labelSuffix)
	if err != nil {
		l.o.Log.Warn("cannot apply label retention", "dir", dir, "err", err)
		return
	}
	cutoff := l.o.Now().Add(-l.cfg.MaxAge)
	for i := 0; i+1 < len(files) && files[i+1].start.Before(cutoff); i++ {
		if path := filepath.Join(dir, files[i].name); path != current {
			os.Remove(path)
		}
	}
}
