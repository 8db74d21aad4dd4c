package capture

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/infergate/infergate/retrain/engine"
	"github.com/infergate/infergate/retrain/engine/enginetest"
)

func mustOpenLabels(t *testing.T, conn *engine.Conn, o Options) *Labels {
	t.Helper()
	l, err := OpenLabels(conn, LabelsConfig{}, o)
	if err != nil {
		t.Fatalf("cannot open labels: %s", err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func mustLabel(t *testing.T, l *Labels, id, label string) {
	t.Helper()
	if err := l.RecordLabel("demo", id, json.RawMessage(label), time.Time{}); err != nil {
		t.Fatal(err)
	}
}

func TestLabelsJoin(t *testing.T) {
	e := enginetest.Start(t)
	clk := newClock()
	w := mustOpen(t, e.Conn, Config{Sample: 1}, Options{Now: clk.Now})
	for _, r := range []Record{testRecord("one", 1), testRecord("three", 3), testRecord("two", 2), testRecord("unlabeled", 1), testRecord("vector", 1)} {
		mustWrite(t, w, r)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	l := mustOpenLabels(t, e.Conn, Options{Now: clk.Now, Replica: "b"})
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

	examples, err := ReadLabeled(context.Background(), e.Conn, "demo", time.Time{})
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

	// Unlabeled rows come too when asked for, with no label.
	var unlabeled []string
	for ex, err := range Examples(context.Background(), e.Conn, Query{Model: "demo", Unlabeled: true}) {
		if err != nil {
			t.Fatal(err)
		}
		if ex.Label == nil {
			unlabeled = append(unlabeled, ex.ID)
		}
	}
	if !slices.Equal(unlabeled, []string{"unlabeled"}) {
		t.Fatalf("unlabeled rows: %v", unlabeled)
	}

	// since leaves out records taken before it.
	examples, err = ReadLabeled(context.Background(), e.Conn, "demo", clk.Now().Add(time.Nanosecond))
	if err != nil || len(examples) != 0 {
		t.Fatalf("since after every record: %d examples, %v", len(examples), err)
	}
}

// TestLabelsDurable: a label acknowledged is in the stream, read by a
// store opened on a restarted engine.
func TestLabelsDurable(t *testing.T) {
	dir := t.TempDir()
	e := enginetest.StartIn(t, dir)
	l := mustOpenLabels(t, e.Conn, Options{})
	mustLabel(t, l, "a", "1")
	e.Stop()
	e = enginetest.StartIn(t, dir)
	labels, err := ReadLabels(context.Background(), e.Conn, "demo", time.Time{})
	if err != nil || string(labels["a"].Label) != "1" {
		t.Fatalf("after a restart: %v, %v", labels, err)
	}
}

// TestLabelsLargeBatch: a batch larger than one message is split, every
// label recorded.
func TestLabelsLargeBatch(t *testing.T) {
	e := enginetest.Start(t)
	l := mustOpenLabels(t, e.Conn, Options{})
	batch := make([]Label, 20000)
	for i := range batch {
		batch[i] = Label{ID: fmt.Sprintf("request-%06d", i), Label: json.RawMessage(`{"class": "a long enough label"}`)}
	}
	if err := l.RecordLabels("demo", batch); err != nil {
		t.Fatal(err)
	}
	labels, err := ReadLabels(context.Background(), e.Conn, "demo", time.Time{})
	if err != nil || len(labels) != len(batch) {
		t.Fatalf("read %d of %d labels: %v", len(labels), len(batch), err)
	}
	if l.m.messages.Get() < 2 {
		t.Fatalf("%d messages for %d labels", l.m.messages.Get(), len(batch))
	}
}

// TestLabelsConcurrent: many goroutines record at once; all are read.
func TestLabelsConcurrent(t *testing.T) {
	e := enginetest.Start(t)
	l := mustOpenLabels(t, e.Conn, Options{})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 50 {
				mustLabel(t, l, fmt.Sprintf("%d-%d", g, i), "1")
			}
		})
	}
	wg.Wait()
	labels, err := ReadLabels(context.Background(), e.Conn, "demo", time.Time{})
	if err != nil || len(labels) != 400 {
		t.Fatalf("read %d of 400 labels: %v", len(labels), err)
	}
}

// TestLabelsInvalid: a bad label records nothing; a closed store refuses;
// the engine down fails the call instead of answering it.
func TestLabelsInvalid(t *testing.T) {
	e := enginetest.Start(t)
	l := mustOpenLabels(t, e.Conn, Options{})
	for _, bad := range [][]Label{{{ID: "", Label: json.RawMessage("1")}}, {{ID: "ok", Label: json.RawMessage("1")}, {ID: "x", Label: json.RawMessage("{")}}} {
		if err := l.RecordLabels("demo", bad); !errors.Is(err, ErrInvalidLabel) {
			t.Fatalf("%v: got %v, want ErrInvalidLabel", bad, err)
		}
	}
	if labels, _ := ReadLabels(context.Background(), e.Conn, "demo", time.Time{}); len(labels) != 0 {
		t.Fatalf("an invalid batch recorded %v", labels)
	}
	if _, err := OpenLabels(nil, LabelsConfig{}, Options{}); err == nil || !strings.Contains(err.Error(), "engine") {
		t.Fatalf("no engine: %v", err)
	}
	mustLabel(t, l, "ok", "1")
	e.Embedded.Shutdown()
	for e.Connected() {
		time.Sleep(10 * time.Millisecond)
	}
	if err := l.RecordLabel("demo", "down", json.RawMessage("1"), time.Time{}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("engine down: %v", err)
	}
	l.Close()
	if err := l.RecordLabel("demo", "late", json.RawMessage("1"), time.Time{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("closed: %v", err)
	}
}

// TestLabelsTooLarge: one label larger than a message is refused as
// invalid, naming its request, and nothing is recorded.
func TestLabelsTooLarge(t *testing.T) {
	e := enginetest.Start(t)
	l := mustOpenLabels(t, e.Conn, Options{})
	huge := json.RawMessage(`"` + strings.Repeat("x", maxBlock) + `"`)
	err := l.RecordLabels("demo", []Label{{ID: "ok", Label: json.RawMessage("1")}, {ID: "huge", Label: huge}})
	if !errors.Is(err, ErrInvalidLabel) || !strings.Contains(err.Error(), `"huge"`) {
		t.Fatalf("a label of %d bytes: %v", len(huge), err)
	}
	if labels, _ := ReadLabels(context.Background(), e.Conn, "demo", time.Time{}); len(labels) != 0 {
		t.Fatalf("recorded %v", labels)
	}
}

// TestLabelsSince: reading the labels since a time leaves out those
// recorded well before it.
func TestLabelsSince(t *testing.T) {
	e := enginetest.Start(t)
	l := mustOpenLabels(t, e.Conn, Options{})
	mustLabel(t, l, "old", "1")
	time.Sleep(10 * time.Millisecond)
	since := time.Now()
	mustLabel(t, l, "new", "1")
	if labels, err := ReadLabels(context.Background(), e.Conn, "demo", time.Time{}); err != nil || len(labels) != 2 {
		t.Fatalf("all: %v %v", labels, err)
	}
	// clockSlack reaches back a minute: both are read; a time after both
	// reaches back to neither.
	if labels, err := ReadLabels(context.Background(), e.Conn, "demo", since.Add(clockSlack+time.Hour)); err != nil || len(labels) != 0 {
		t.Fatalf("since after both: %v %v", labels, err)
	}
}
