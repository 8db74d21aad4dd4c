package table

import (
	"bytes"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the suite when a test leaves goroutines behind.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var testColumns = []Column{
	{Name: "id", Kind: String},
	{Name: "x", Kind: Float32},
	{Name: "y", Kind: Float64, Optional: true},
	{Name: "n", Kind: Int64},
	{Name: "ok", Kind: Bool},
}

// writeTestTable writes rows rows of testColumns to path: id "r<i>", x i/2,
// y null every 7th row else -i, n i, ok i even.
func writeTestTable(t *testing.T, path string, rows int, o WriteOptions) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	format, err := FormatOf(path)
	if err != nil {
		t.Fatal(err)
	}
	w, err := NewWriter(f, format, testColumns, o)
	if err != nil {
		t.Fatal(err)
	}
	for i := range rows {
		y := Float64Value(-float64(i))
		if i%7 == 0 {
			y = NullValue()
		}
		row := []Value{TextValue([]byte("r" + itoa(i))), Float32Value(float32(i) / 2), y, Int64Value(int64(i)), BoolValue(i%2 == 0)}
		if err := w.WriteRow(row); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

func itoa(i int) string { return string(appendInt(nil, i)) }

func appendInt(b []byte, i int) []byte {
	if i >= 10 {
		b = appendInt(b, i/10)
	}
	return append(b, byte('0'+i%10))
}

// TestRoundTrip writes a table in each format and reads it back in chunks
// that never span row groups: the same values, nulls where they were, and
// SkipGroup passes over a group whole.
func TestRoundTrip(t *testing.T) {
	const rows = 1000
	for _, ext := range []string{".parquet", ".csv", ".jsonl"} {
		t.Run(ext, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "t"+ext)
			writeTestTable(t, path, rows, WriteOptions{RowGroupRows: 300})
			r, err := Open(path, ReadOptions{GroupRows: 300})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			var names []string
			for _, c := range r.Columns() {
				names = append(names, c.Name)
			}
			if strings.Join(names, ",") != "id,x,y,n,ok" {
				t.Fatalf("columns %v", names)
			}
			if ext == ".parquet" {
				if r.Rows() != rows || r.Columns()[1].Kind != Float32 || !r.Columns()[2].Optional || r.Columns()[4].Kind != Bool {
					t.Fatalf("parquet rows %d, columns %+v", r.Rows(), r.Columns())
				}
			}
			if err := r.Select([]string{"x", "y", "n", "ok"}, []string{"id"}); err != nil {
				t.Fatal(err)
			}
			var c Chunk
			seen, groups := 0, 0
			for {
				err := r.Next(&c, 128)
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				if c.Group != groups || c.Start != int64(seen) {
					t.Fatalf("chunk of group %d from row %d, want group %d from %d", c.Group, c.Start, groups, seen)
				}
				for k := range c.Rows {
					i := seen + k
					if got := string(c.Values[0][k].ByteArray()); got != "r"+itoa(i) {
						t.Fatalf("row %d: id %q", i, got)
					}
					if c.Numbers[0][k] != float64(float32(i)/2) || c.Numbers[2][k] != float64(i) || c.Numbers[3][k] != float64(1-i%2) {
						t.Fatalf("row %d: x %v, n %v, ok %v", i, c.Numbers[0][k], c.Numbers[2][k], c.Numbers[3][k])
					}
					if null := i%7 == 0; c.Nulls[1][k] != null || null != math.IsNaN(c.Numbers[1][k]) || !null && c.Numbers[1][k] != -float64(i) {
						t.Fatalf("row %d: y %v null %v", i, c.Numbers[1][k], c.Nulls[1][k])
					}
				}
				seen += c.Rows
				if (seen%300 == 0 || seen == rows) != c.GroupEnd {
					t.Fatalf("chunk ending at row %d: GroupEnd %v", seen, c.GroupEnd)
				}
				if c.GroupEnd {
					groups++
				}
			}
			if seen != rows || groups != 4 {
				t.Fatalf("read %d rows in %d groups, want %d in 4", seen, groups, rows)
			}

			// Skipping the first two groups starts the third at row 600.
			r2, err := Open(path, ReadOptions{GroupRows: 300})
			if err != nil {
				t.Fatal(err)
			}
			defer r2.Close()
			r2.Select([]string{"n"}, nil)
			for range 2 {
				if n, err := r2.SkipGroup(); err != nil || n != 300 {
					t.Fatalf("SkipGroup: %d, %v", n, err)
				}
			}
			if err := r2.Next(&c, 50); err != nil || c.Group != 2 || c.Start != 600 || c.Numbers[0][0] != 600 {
				t.Fatalf("after two skipped groups: group %d, start %d, n %v (%v)", c.Group, c.Start, c.Numbers[0][:1], err)
			}
		})
	}
}

// TestReadErrors: what a table may not be, each said with the row and
// column where it applies.
func TestReadErrors(t *testing.T) {
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(content), 0o644)
		return p
	}
	open := func(path string) error {
		r, err := Open(path, ReadOptions{})
		if err != nil {
			return err
		}
		defer r.Close()
		if err := r.Select([]string{"x"}, nil); err != nil {
			return err
		}
		var c Chunk
		for {
			if err := r.Next(&c, 10); err != nil {
				if errors.Is(err, io.EOF) {
					return nil
				}
				return err
			}
		}
	}
	for _, tc := range []struct{ path, want string }{
		{file("empty.csv", ""), "the file is empty: no header row"},
		{file("empty.jsonl", "\n\n"), "the file is empty: no JSON object"},
		{file("empty.parquet", ""), "the file is empty"},
		{file("notparquet.parquet", "x,y\n1,2\n"), "not a Parquet file"},
		{file("text.csv", "id,x\na,1\nb,2\nc,three\n"), `row 3, column "x": "three" is not a number`},
		{file("text.jsonl", `{"x": 1}`+"\n"+`{"x": "abc"}`+"\n"), `row 2, column "x": "abc" is text, not a number`},
		{file("bad.jsonl", `{"x": 1}`+"\n"+`{"x": 1,`+"\n"), `line 2 is not JSON`},
		{file("twice.csv", "x,x\n1,2\n"), `the header names column "x" twice`},
		{file("nox.csv", "y\n1\n"), `has no column "x"`},
		{file("data.txt", "x\n1\n"), "cannot tell the format"},
	} {
		err := open(tc.path)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", filepath.Base(tc.path), err, tc.want)
		}
	}

	// A text column of a Parquet file is refused by its type at Select.
	path := filepath.Join(dir, "t.parquet")
	writeTestTable(t, path, 3, WriteOptions{})
	r, err := Open(path, ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := r.Select([]string{"id"}, nil); err == nil || !strings.Contains(err.Error(), `column "id" of table`) || !strings.Contains(err.Error(), "holds text (Parquet BYTE_ARRAY, STRING) values, not numbers") {
		t.Fatalf("Select of a text column as numbers: %v", err)
	}
}

// TestTextFormats: CSV and JSON lines write nulls and non-finite numbers
// as empty cells and nulls, text quoted as each format quotes it.
func TestTextFormats(t *testing.T) {
	cols := []Column{{Name: "s", Kind: String, Optional: true}, {Name: "f", Kind: Float32}, {Name: "d", Kind: Float64}}
	rows := [][]Value{
		{TextValue([]byte(`a "quoted", text`)), Float32Value(0.1), Float64Value(math.NaN())},
		{NullValue(), Float32Value(float32(math.Inf(1))), Float64Value(2.5)},
	}
	for format, want := range map[Format]string{
		CSV:   "s,f,d\n\"a \"\"quoted\"\", text\",0.1,\n,,2.5\n",
		JSONL: `{"s":"a \"quoted\", text","f":0.1,"d":null}` + "\n" + `{"s":null,"f":null,"d":2.5}` + "\n",
	} {
		var b bytes.Buffer
		w, err := NewWriter(&b, format, cols, WriteOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, row := range rows {
			if err := w.WriteRow(row); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if b.String() != want {
			t.Errorf("%s:\n%s\nwant\n%s", format, b.String(), want)
		}
	}
}
