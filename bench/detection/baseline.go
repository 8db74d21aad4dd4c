package detection

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
)

// baselineScript is scipy_baseline.py, run from its embedded copy.
//
//go:embed scipy_baseline.py
var baselineScript []byte

// baselineWriter writes the input of scipy_baseline.py as the windows are
// drawn, so that they need not all be held: references first, then
// windows, each a base64 string of little-endian float32 columns.
type baselineWriter struct {
	dir      string
	f        *os.File
	w        *bufio.Writer
	features int
	refs     int  // references written
	windows  bool // whether a window was written
	buf      []byte
}

// newBaselineWriter starts the input file for windows of features features.
func newBaselineWriter(features int) (*baselineWriter, error) {
	dir, err := os.MkdirTemp("", "infergate-detection-")
	if err != nil {
		return nil, fmt.Errorf("cannot write the scipy baseline's input: %w", err)
	}
	f, err := os.Create(filepath.Join(dir, "in.json"))
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("cannot write the scipy baseline's input: %w", err)
	}
	b := &baselineWriter{dir: dir, f: f, w: bufio.NewWriterSize(f, 1<<20), features: features}
	fmt.Fprintf(b.w, `{"features":%d,"references":[`, features)
	return b, nil
}

// remove deletes the files.
func (b *baselineWriter) remove() {
	b.f.Close()
	os.RemoveAll(b.dir)
}

// columns appends rows, column by column, as base64 float32 to the file.
func (b *baselineWriter) columns(rows [][]float64) {
	b.buf = b.buf[:0]
	for j := range b.features {
		for _, row := range rows {
			b.buf = binary.LittleEndian.AppendUint32(b.buf, math.Float32bits(float32(row[j])))
		}
	}
	b.w.WriteByte('"')
	enc := base64.NewEncoder(base64.StdEncoding, b.w)
	enc.Write(b.buf)
	enc.Close()
	b.w.WriteByte('"')
}

// addReference writes the rows of the next reference; every reference
// comes before the first window. A failed write shows when run flushes.
func (b *baselineWriter) addReference(rows [][]float64) {
	if b.windows {
		panic("BUG: a reference after a window")
	}
	if b.refs > 0 {
		b.w.WriteByte(',')
	}
	fmt.Fprintf(b.w, `{"rows":%d,"columns":`, len(rows))
	b.columns(rows)
	b.w.WriteByte('}')
	b.refs++
}

// addWindow writes a window judged against reference ref. A failed write
// shows when run flushes.
func (b *baselineWriter) addWindow(ref int, rows [][]float64) {
	if !b.windows {
		b.w.WriteString(`],"windows":[`)
		b.windows = true
	} else {
		b.w.WriteByte(',')
	}
	fmt.Fprintf(b.w, `{"reference":%d,"rows":%d,"columns":`, ref, len(rows))
	b.columns(rows)
	b.w.WriteByte('}')
}

// run finishes the input, runs the baseline on it with python and returns
// the p-values, per window per feature.
func (b *baselineWriter) run(ctx context.Context, python string) ([][]float64, error) {
	if !b.windows {
		b.w.WriteString(`],"windows":[`)
	}
	b.w.WriteString("]}")
	if err := b.w.Flush(); err != nil {
		return nil, fmt.Errorf("cannot write the scipy baseline's input: %w", err)
	}
	if err := b.f.Close(); err != nil {
		return nil, fmt.Errorf("cannot write the scipy baseline's input: %w", err)
	}
	out := filepath.Join(b.dir, "out.json")
	cmd := exec.CommandContext(ctx, python, "-", filepath.Join(b.dir, "in.json"), out)
	cmd.Stdin = bytes.NewReader(baselineScript)
	if msg, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("%s scipy_baseline.py: %w: %s", python, err, bytes.TrimSpace(msg))
	}
	data, err := os.ReadFile(out)
	if err != nil {
		return nil, fmt.Errorf("cannot read the scipy baseline's output: %w", err)
	}
	var res struct {
		PValues [][]float64 `json:"p_values"`
	}
	if err := json.Unmarshal(data, &res); err != nil {
		return nil, fmt.Errorf("cannot read the scipy baseline's output: %w", err)
	}
	return res.PValues, nil
}
