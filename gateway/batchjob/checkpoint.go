package batchjob

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/infergate/infergate/retrain/table"
)

// checkpoint is the folder beside a job's output that holds what a run
// of the job has done: the job's identity, its validation, and a part
// file of output (and of rejects) for each complete row group.
type checkpoint struct {
	dir string
	// ext is the parts' extension, the output's; done counts the complete
	// row groups, whose parts exist.
	ext  string
	done int
	job  *Job
	// id is the job's identity, written when the checkpoint starts;
	// started says whether it has (by this run or an earlier one).
	id      identity
	started bool
}

// identity is what makes a rerun the same job: the same input file
// (size and modification time), version, columns and outputs.
type identity struct {
	In        string            `json:"in"`
	Size      int64             `json:"size"`
	Modified  time.Time         `json:"modified"`
	Model     string            `json:"model"`
	Version   string            `json:"version"`
	Features  []string          `json:"features"`
	Map       map[string]string `json:"map,omitempty"`
	Carry     []string          `json:"carry,omitempty"`
	Out       string            `json:"out"`
	Rejects   string            `json:"rejects,omitempty"`
	GroupRows int               `json:"group_rows,omitempty"`
	// BatchSize is kept, not compared: a rerun takes the first run's, so
	// that its batches are the same.
	BatchSize int `json:"batch_size"`
}

const identityFile = "job.json"

// openCheckpoint opens the checkpoint of job, if an earlier run started
// one (start starts it). A checkpoint of another job (another input,
// version or columns) is an error: the user removes it or names another
// output.
func openCheckpoint(job *Job, p *plan) (*checkpoint, error) {
	st, err := os.Stat(job.In)
	if err != nil {
		return nil, fmt.Errorf("cannot score: %w", err)
	}
	in, _ := filepath.Abs(job.In)
	out, _ := filepath.Abs(job.Out)
	id := identity{In: in, Size: st.Size(), Modified: st.ModTime().UTC(), Model: job.Model, Version: job.Version, Features: p.features,
		Map: job.Map, Carry: job.Carry, Out: out, Rejects: job.Rejects, GroupRows: job.GroupRows, BatchSize: job.BatchSize}
	cp := &checkpoint{dir: job.Out + ".checkpoint", ext: filepath.Ext(job.Out), job: job, id: id}
	data, err := os.ReadFile(filepath.Join(cp.dir, identityFile))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return cp, nil
	case err != nil:
		return nil, fmt.Errorf("cannot read the checkpoint: %w", err)
	}
	var was identity
	if err := json.Unmarshal(data, &was); err != nil {
		return nil, fmt.Errorf("cannot read the checkpoint %s: %w", cp.dir, err)
	}
	batch := was.BatchSize
	was.BatchSize = id.BatchSize
	a, _ := json.Marshal(was)
	b, _ := json.Marshal(id) // an empty map and none encode alike
	if !bytes.Equal(a, b) {
		return nil, fmt.Errorf("cannot score: %s holds the checkpoint of another job (another input file, version or columns); remove it to start afresh", cp.dir)
	}
	if batch != job.BatchSize {
		fmt.Fprintf(job.Log, "resuming with the checkpoint's batch size %d (not %d), so that every batch is the same as in an uninterrupted run\n", batch, job.BatchSize)
		job.BatchSize = batch
	}
	cp.started = true
	for {
		if _, err := os.Stat(cp.part("part", cp.done)); err != nil {
			break
		}
		cp.done++
	}
	return cp, nil
}

// part returns the path of the part file of kind ("part" or "rejects")
// of row group g.
func (cp *checkpoint) part(kind string, g int) string {
	ext := cp.ext
	if kind == "rejects" {
		ext = filepath.Ext(cp.job.Rejects)
	}
	return filepath.Join(cp.dir, fmt.Sprintf("%s-%06d%s", kind, g, ext))
}

const validationFile = "validation.json"

// validation returns the validation a previous run saved, or nil.
func (cp *checkpoint) validation() (*Validation, error) {
	if !cp.started {
		return nil, nil
	}
	data, err := os.ReadFile(filepath.Join(cp.dir, validationFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cannot read the checkpoint: %w", err)
	}
	var v Validation
	if err := json.Unmarshal(data, &v); err != nil {
		return nil, fmt.Errorf("cannot read the checkpoint's validation: %w", err)
	}
	return &v, nil
}

// start starts the checkpoint with the job's identity and validation v.
func (cp *checkpoint) start(v *Validation) error {
	if err := os.MkdirAll(cp.dir, 0o755); err != nil {
		return fmt.Errorf("cannot start a checkpoint: %w", err)
	}
	if err := writeJSON(filepath.Join(cp.dir, validationFile), v); err != nil {
		return err
	}
	cp.started = true
	return writeJSON(filepath.Join(cp.dir, identityFile), cp.id)
}

// partWriter writes the output (or rejects) of one row group into its
// part file, under a temporary name until it is complete.
type partWriter struct {
	path string
	f    *os.File
	bw   *bufio.Writer
	w    *table.Writer
}

func (cp *checkpoint) newPart(kind string, g int, cols []table.Column) (*partWriter, error) {
	pw := &partWriter{path: cp.part(kind, g)}
	format, err := table.FormatOf(pw.path)
	if err != nil {
		return nil, err
	}
	if pw.f, err = os.Create(pw.path + ".tmp"); err != nil {
		return nil, fmt.Errorf("cannot write the checkpoint: %w", err)
	}
	pw.bw = bufio.NewWriterSize(pw.f, 256<<10)
	if pw.w, err = table.NewWriter(pw.bw, format, cols, table.WriteOptions{CreatedBy: "infergate score"}); err != nil {
		pw.f.Close()
		return nil, err
	}
	return pw, nil
}

// finish completes the part: written out, synced, renamed into place.
func (pw *partWriter) finish() error {
	err := pw.w.Close()
	if err == nil {
		err = pw.bw.Flush()
	}
	if err == nil {
		err = pw.f.Sync()
	}
	if cerr := pw.f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(pw.path+".tmp", pw.path)
	}
	if err != nil {
		return fmt.Errorf("cannot write the checkpoint: %w", err)
	}
	return nil
}

// abandon removes an incomplete part.
func (pw *partWriter) abandon() {
	pw.f.Close()
	os.Remove(pw.path + ".tmp")
}

// assemble joins the parts of the output, and of the rejects, into their
// files, each written under a temporary name, then renamed.
func (cp *checkpoint) assemble(format table.Format, p *plan) error {
	if err := cp.join("part", cp.job.Out, format, p.columns); err != nil {
		return err
	}
	if cp.job.Rejects != "" {
		rf, _ := table.FormatOf(cp.job.Rejects)
		return cp.join("rejects", cp.job.Rejects, rf, p.rejects)
	}
	return nil
}

// join writes the parts of kind, in order, into path: Parquet parts'
// row groups through table.Writer.CopyParquet; CSV and JSON lines copied
// (a CSV part's header only from the first).
func (cp *checkpoint) join(kind, path string, format table.Format, cols []table.Column) error {
	f, err := os.Create(path + ".tmp")
	if err != nil {
		return fmt.Errorf("cannot write %q: %w", path, err)
	}
	defer os.Remove(path + ".tmp")
	defer f.Close()
	bw := bufio.NewWriterSize(f, 256<<10)
	if format == table.Parquet {
		var w *table.Writer
		if w, err = table.NewWriter(bw, format, cols, table.WriteOptions{CreatedBy: "infergate score"}); err != nil {
			return err
		}
		parts := make([]string, cp.done)
		for g := range parts {
			parts[g] = cp.part(kind, g)
		}
		if err = w.CopyParquet(parts); err == nil {
			err = w.Close()
		}
	} else {
		for g := 0; g < cp.done && err == nil; g++ {
			err = copyText(cp.part(kind, g), bw, format == table.CSV && g > 0)
		}
	}
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = os.Rename(path+".tmp", path)
	}
	if err != nil {
		return fmt.Errorf("cannot write %q: %w", path, err)
	}
	return nil
}

// copyText copies the bytes of the CSV or JSON-lines part at path to bw,
// without its first line when skipHeader.
func copyText(path string, bw *bufio.Writer, skipHeader bool) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 256<<10)
	if skipHeader {
		if _, err := br.ReadString('\n'); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
	}
	_, err = io.Copy(bw, br)
	return err
}
