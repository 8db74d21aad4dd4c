package capture

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

func mustOpenLabels(t *testing.T, dir string, cfg LabelsConfig, o Options) *Labels {
	t.Helper()
	l, err := OpenLabels(dir, cfg, o)
	if err != nil {
		t.Fatalf("cannot open labels: %s", err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func mustLabel(t *testing.T, l *Labels, id, label string) {
	t.Helper()
	if err := l.RecordLabel("demo", id, json.RawMessage(label), time.Time{}); err != nil {
		t.Fatalf("cannot record label of %s: %s", id, err)
	}
}

func TestLabelsJoin(t *testing.T) {
	dir := t.TempDir()
	clk := newClock()
	w := mustOpen(t, dir, Config{Sample: 1}, Options{Now: clk.Now})
	for _, r := range []Record{testRecord("one", 1), testRecord("three", 3), testRecord("two", 2), testRecord("unlabeled", 1), testRecord("vector", 1)} {
		mustWrite(t, w, r)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	l := mustOpenLabels(t, dir, LabelsConfig{}, Options{Now: clk.Now})
	mustLabel(t, l, "one", "0")
	mustLabel(t, l, "one", "1") // the same time: the later recorded wins
	if err := l.RecordLabels("demo", []Label{
		{ID: "three", Label: json.RawMessage("[1, 0, 1]")},
		{ID: "two", Label: json.RawMessage(`"cat"`)},
		{ID: "vector", Label: json.RawMessage("[0.2, 0.8]")},
		{ID: "never-captured", Label: json.RawMessage("1")},
	}); err != nil {
		t.Fatal(err)
	}
	// An earlier label recorded later loses.
	if err := l.RecordLabel("demo", "two", json.RawMessage(`"dog"`), clk.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}

	examples, err := ReadLabeled(dir, "demo", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		id, label string
		row, rows int
		x, y      []float64
	}
	var got []row
	for _, ex := range examples {
		got = append(got, row{ex.ID, string(ex.Label), ex.Row, ex.Rows, ex.Inputs["x"], ex.Outputs["y"]})
		if ex.Version != "1" || ex.Time.IsZero() || ex.LabelTime.IsZero() {
			t.Fatalf("unexpected example %+v", ex)
		}
	}
	y := func(i int) float64 { return float64(i) / 10 } // float32 written at its shortest
	want := []row{
		{"one", "1", 0, 1, []float64{0, 0.5}, []float64{0}},
		{"three", "1", 0, 3, []float64{0, 0.5}, []float64{0}},
		{"three", "0", 1, 3, []float64{1, 1.5}, []float64{y(1)}},
		{"three", "1", 2, 3, []float64{2, 2.5}, []float64{y(2)}},
		{"two", `"cat"`, 0, 2, []float64{0, 0.5}, []float64{0}},
		{"two", `"cat"`, 1, 2, []float64{1, 1.5}, []float64{y(1)}},
		{"vector", "[0.2,0.8]", 0, 1, []float64{0, 0.5}, []float64{0}},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d examples, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.id != w.id || g.label != w.label || g.row != w.row || g.rows != w.rows || !slices.Equal(g.x, w.x) || !slices.Equal(g.y, w.y) {
			t.Fatalf("example %d: got %+v, want %+v", i, g, w)
		}
	}

	// since leaves out records taken before it.
	examples, err = ReadLabeled(dir, "demo", clk.Now().Add(time.Nanosecond))
	if err != nil || len(examples) != 0 {
		t.Fatalf("since after every record: %d examples, %v", len(examples), err)
	}
}

func TestLabelsDurable(t *testing.T) {
	dir := t.TempDir()
	l := mustOpenLabels(t, dir, LabelsConfig{}, Options{})
	mustLabel(t, l, "a", "1")
	mustLabel(t, l, "b", `{"class": 2}`)
	// Acknowledged labels are in the file before Close.
	files, _ := filepath.Glob(filepath.Join(dir, "capture", "demo", "labels-*.jsonl"))
	if len(files) != 1 || len(scanLines(t, files[0])) != 2 {
		t.Fatalf("want one file of two lines, got %v", files)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	// A crash in the middle of a write leaves a torn last line, never acknowledged.
	f, err := os.OpenFile(files[0], os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"id":"torn","label":`)
	f.Close()

	l2 := mustOpenLabels(t, dir, LabelsConfig{}, Options{})
	mustLabel(t, l2, "a", "3")
	if err := l2.Close(); err != nil {
		t.Fatal(err)
	}
	labels, err := readLabels(dir, "demo")
	if err != nil {
		t.Fatal(err)
	}
	if len(labels) != 2 || string(labels["a"].Label) != "3" || string(labels["b"].Label) != `{"class":2}` {
		t.Fatalf("got %v", labels)
	}
}

func TestLabelsConcurrent(t *testing.T) {
	dir := t.TempDir()
	l := mustOpenLabels(t, dir, LabelsConfig{}, Options{})
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for i := range 50 {
		wg.Go(func() {
			errs <- l.RecordLabel("demo", fmt.Sprint(i), json.RawMessage(fmt.Sprint(i%2)), time.Time{})
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	labels, err := readLabels(dir, "demo")
	if err != nil || len(labels) != 50 {
		t.Fatalf("read %d labels, %v", len(labels), err)
	}
	if l.m.labels.Get() != 50 || l.m.commits.Get() > 50 {
		t.Fatalf("labels %d, commits %d", l.m.labels.Get(), l.m.commits.Get())
	}
}

func TestLabelsRotationAndRetention(t *testing.T) {
	dir := t.TempDir()
	clk := newClock()
	cfg := LabelsConfig{FileSize: 100, MaxAge: 24 * time.Hour}
	l := mustOpenLabels(t, dir, cfg, Options{Now: clk.Now})
	for _, id := range []string{"1", "2", "3"} {
		mustLabel(t, l, id, "0") // a line is about 60 bytes: two a file
	}
	files, _ := filepath.Glob(filepath.Join(dir, "capture", "demo", "labels-*.jsonl"))
	if len(files) != 2 {
		t.Fatalf("want 2 label files, got %v", files)
	}
	clk.Add(48 * time.Hour)
	// The first file's successor began before the cutoff: it goes when the
	// next file is begun, after "4" fills the second.
	mustLabel(t, l, "4", "0")
	mustLabel(t, l, "5", "0")
	labels, err := readLabels(dir, "demo")
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for id := range labels {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	if !slices.Equal(ids, []string{"3", "4", "5"}) {
		t.Fatalf("kept labels %v", ids)
	}
}

func TestLabelsInvalid(t *testing.T) {
	l := mustOpenLabels(t, t.TempDir(), LabelsConfig{}, Options{})
	f := func(model, id, label string) {
		t.Helper()
		if err := l.RecordLabel(model, id, json.RawMessage(label), time.Time{}); !errors.Is(err, ErrInvalidLabel) {
			t.Fatalf("%q %q %q: want ErrInvalidLabel, got %v", model, id, label, err)
		}
	}
	f("demo", "", "1")
	f("demo", "a", "")
	f("demo", "a", "{not json")
	f("../etc", "a", "1")
	f("a/b", "a", "1")
	if l.m.labels.Get() != 0 {
		t.Fatalf("recorded %d invalid labels", l.m.labels.Get())
	}
}
