package table

import (
	"bytes"
	"errors"
	"io"
	"math"
	"math/big"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"
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
		{file("semicolon.csv", "id;x\na;1\n"), `the header row "id;x" is one column: CSV is read separated by commas, and this file seems separated by ";"`},
		{file("tab.csv", "id\tx\na\t1\n"), `this file seems separated by "\t"`},
		{file("ragged.csv", "id,x\na,1\nb,2,3\n"), `row 2: line 3 has 3 fields, the header names 2`},
		{file("short.csv", "id,x\r\na,1\r\nb\r\n"), `row 2: line 3 has 1 fields, the header names 2`},
		{file("twice.jsonl", `{"x": 1, "id": "a", "x": 2}`+"\n"), `line 1, whose keys name the columns, has key "x" twice`},
		{file("object.jsonl", `{"x": 1}`+"\n"+`{"x": {"v": 1}}`+"\n"), `row 2, column "x": {"v":1} is not a number`},
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

// TestTextAsWritten reads CSV and JSON-lines files as editors, exporters
// and hands write them, each to the same numbers: a byte order mark,
// quoted or padded header names, CRLF line ends, blank and unterminated
// last lines, scientific notation, the spellings of null, keys in any
// order and numbers in JSON strings.
func TestTextAsWritten(t *testing.T) {
	dir := t.TempDir()
	// null marks a cell that must read as a null (a NaN number flagged
	// null), apart from NaN, which must read as a NaN that is not.
	null := math.Float64frombits(0x7ff8_0000_dead_beef)
	isNullMark := func(x float64) bool { return math.Float64bits(x) == math.Float64bits(null) }
	f := func(name, content string, want ...float64) {
		t.Helper()
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		r, err := Open(path, ReadOptions{GroupRows: 2})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		defer r.Close()
		if err := r.Select([]string{"x"}, []string{"id"}); err != nil {
			t.Fatalf("%s: %v (columns %+v)", name, err, r.Columns())
		}
		var got []float64
		var nulls []bool
		var c Chunk
		for {
			err := r.Next(&c, 10)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			for i := range c.Rows {
				if c.Nulls[0][i] && !math.IsNaN(c.Numbers[0][i]) {
					t.Fatalf("%s: row %d is null %v, its number %v", name, c.Start+int64(i)+1, c.Nulls[0][i], c.Numbers[0][i])
				}
			}
			got = append(got, c.Numbers[0]...)
			nulls = append(nulls, c.Nulls[0][:c.Rows]...)
		}
		if len(got) != len(want) {
			t.Fatalf("%s: read %v, want %v", name, got, want)
		}
		for i := range want {
			switch {
			case isNullMark(want[i]) != nulls[i]:
				t.Fatalf("%s: row %d read as null %v, want null %v", name, i+1, nulls[i], isNullMark(want[i]))
			case isNullMark(want[i]):
			case got[i] != want[i] && !(math.IsNaN(got[i]) && math.IsNaN(want[i])):
				t.Fatalf("%s: read %v, want %v", name, got, want)
			}
		}
	}
	f("excel.csv", "\ufeff\"id\",\"x\"\r\na,1.5\r\nb,2E3\r\n", 1.5, 2000)
	f("bom.csv", "\ufeffx,id\nNaN,a\n-inf,b\n1e-3,c\n", math.NaN(), math.Inf(-1), 0.001)
	f("padded.csv", "id, x \na, 7\nb,\t8\n\n", 7, 8)
	f("nulls.csv", "id,x\na,NULL\nb,NA\nc,N/A\nd,\\N\ne,\nf,None\ng,null\nh,<NA>\ni,#N/A\nj,9", null, null, null, null, null, null, null, null, null, 9)
	f("unterminated.csv", "id,x\na,1\nb,2", 1, 2)
	f("pandas.jsonl", "\ufeff{\"id\":\"a\",\"x\":1}\r\n\r\n{\"x\":\"2.5\",\"id\":\"b\"}\n{\"id\":\"c\",\"x\":\"\"}\n{\"id\":\"d\",\"x\":null}\n{\"id\":\"e\"}\n\n", 1, 2.5, null, null, null)
	f("bigquery.jsonl", `{"x":"20000","id":"a"}`+"\n"+`{"id":"b","x":"-1.5e2","extra":{"nested":[1]}}`+"\n"+`{"x":"NaN","id":"c"}`, 20000, -150, math.NaN())
	f("unicode.jsonl", `{"id":"é","名前":"x","x":3}`, 3)
}

// TestLogicalTypes writes a Parquet file of the logical types a warehouse
// exports (UINT_32 and UINT_64 past the signed range, DECIMAL(38, 3) in a
// fixed-length byte array, DECIMAL(9, 2) in an INT32, DATE, TIME and UUID)
// and reads it back: the numeric ones as their numbers, and each written
// into CSV and JSON lines as DuckDB prints it.
func TestLogicalTypes(t *testing.T) {
	amount, _ := new(big.Int).SetString("-12345678901234567890125", 10) // DECIMAL(38, 3)
	amountBytes := make([]byte, 16)
	new(big.Int).Add(amount, new(big.Int).Lsh(big.NewInt(1), 128)).FillBytes(amountBytes) // two's complement
	uid := []byte{0x5f, 0x0c, 0x7a, 0x1e, 0x3b, 0x9d, 0x4c, 0x2a, 0x8e, 0x61, 0x0d, 0x9a, 0x3c, 0x7b, 0x2f, 0x14}
	day := time.Date(2024, 2, 29, 0, 0, 0, 0, time.UTC).Unix() / 86400
	cols := []Column{
		{Name: "u32", node: parquet.Uint(32)},
		{Name: "u64", node: parquet.Uint(64)},
		{Name: "d38", node: parquet.Decimal(3, 38, parquet.FixedLenByteArrayType(16))},
		{Name: "d9", node: parquet.Decimal(2, 9, parquet.Int32Type)},
		{Name: "day", node: parquet.Date()},
		{Name: "at", node: parquet.Time(parquet.Microsecond)},
		{Name: "uid", node: parquet.UUID()},
	}
	row := []Value{
		parquet.Int32Value(int32(3_000_000_000 - 1<<32)), parquet.Int64Value(-1), parquet.FixedLenByteArrayValue(amountBytes),
		parquet.Int32Value(-1250), parquet.Int32Value(int32(day)), parquet.Int64Value(86398_500000), parquet.FixedLenByteArrayValue(uid),
	}
	path := filepath.Join(t.TempDir(), "types.parquet")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w, err := NewWriter(f, Parquet, cols, WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteRow(row); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	f.Close()

	r, err := Open(path, ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	names := []string{"u32", "u64", "d38", "d9", "day", "at", "uid"}
	// A DATE is days, a TIME ticks, in integers, but not numbers to score.
	for _, name := range []string{"day", "at"} {
		if err := r.Select([]string{name}, nil); err == nil || !strings.Contains(err.Error(), "values, not numbers") {
			t.Errorf("Select of %s as numbers: %v", name, err)
		}
	}
	if err := r.Select(names[:4], names); err != nil {
		t.Fatal(err)
	}
	var c Chunk
	if err := r.Next(&c, 10); err != nil || c.Rows != 1 {
		t.Fatalf("%d rows: %v", c.Rows, err)
	}
	for i, want := range []float64{3e9, 18446744073709551615, -12345678901234567890.125, -12.5} {
		if got := c.Numbers[i][0]; got != want {
			t.Errorf("column %s reads as %v, want %v", names[i], got, want)
		}
	}
	values := make([]Value, len(names))
	for i := range names {
		values[i] = c.Values[i][0]
	}
	for format, want := range map[Format]string{
		CSV:   "3000000000,18446744073709551615,-12345678901234567890.125,-12.50,2024-02-29,23:59:58.5,5f0c7a1e-3b9d-4c2a-8e61-0d9a3c7b2f14\n",
		JSONL: `{"u32":3000000000,"u64":18446744073709551615,"d38":-12345678901234567890.125,"d9":-12.50,"day":"2024-02-29","at":"23:59:58.5","uid":"5f0c7a1e-3b9d-4c2a-8e61-0d9a3c7b2f14"}` + "\n",
	} {
		var b bytes.Buffer
		tw, err := NewWriter(&b, format, r.Columns(), WriteOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := tw.WriteRow(values); err != nil {
			t.Fatal(err)
		}
		if err := tw.Close(); err != nil {
			t.Fatal(err)
		}
		got := b.String()
		if format == CSV {
			_, got, _ = strings.Cut(got, "\n")
		}
		if got != want {
			t.Errorf("%s:\n%s\nwant\n%s", format, got, want)
		}
	}
}

// TestDecimalText: a DECIMAL's integer and scale as text.
func TestDecimalText(t *testing.T) {
	f := func(unscaled int64, digits int, want string) {
		t.Helper()
		if got := decimalText(big.NewInt(unscaled), digits); got != want {
			t.Errorf("decimalText(%d, %d) = %q, want %q", unscaled, digits, got, want)
		}
	}
	f(12345, 2, "123.45")
	f(5, 2, "0.05")
	f(-5, 2, "-0.05")
	f(-120, 2, "-1.20")
	f(0, 3, "0.000")
	f(42, 0, "42")
	f(-42, 0, "-42")
}

// FuzzTextTable reads arbitrary bytes as a CSV and a JSON-lines table,
// the first column as numbers and every column as values: an error or
// rows, never a panic, and a null always NaN.
func FuzzTextTable(f *testing.F) {
	f.Add([]byte("\ufeff\"id\",\"x\"\r\na,1.5\r\nb,NULL\r\n"))
	f.Add([]byte("x;y\n1;2\n"))
	f.Add([]byte("x,y\n1\n2,3,4\n"))
	f.Add([]byte(`{"x":"20000","id":"a"}` + "\n\n" + `{"x":{"v":1}}`))
	f.Add([]byte(`{"x":1,"x":2}`))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, ext := range []string{".csv", ".jsonl"} {
			path := filepath.Join(dir, "fuzz"+ext)
			if err := os.WriteFile(path, data, 0o644); err != nil {
				t.Fatal(err)
			}
			r, err := Open(path, ReadOptions{GroupRows: 3})
			if err != nil {
				continue
			}
			var names []string
			for _, c := range r.Columns() {
				names = append(names, c.Name)
			}
			if len(names) == 0 { // `{}`
				r.Close()
				continue
			}
			if err := r.Select(names[:1], names); err != nil {
				r.Close()
				continue
			}
			var c Chunk
			for r.Next(&c, 2) == nil {
				for i := range c.Rows {
					if c.Nulls[0][i] && !math.IsNaN(c.Numbers[0][i]) {
						t.Fatalf("%s: row %d is null, its number %v", ext, c.Start+int64(i)+1, c.Numbers[0][i])
					}
				}
			}
			r.Close()
		}
	})
}

// TestSmallDecimal: the byte arrays of DECIMALs within ±2^53, of any
// width, read as bigDecimal reads them; the others are left to it.
func TestSmallDecimal(t *testing.T) {
	limit := new(big.Int).Lsh(big.NewInt(1), 53)
	// The edges: ±2^53 and one past, in 16 bytes; 2^64-1, whose last 8
	// bytes alone read as -1.
	edges := [][]byte{}
	for _, x := range []*big.Int{limit, new(big.Int).Add(limit, big.NewInt(1)), new(big.Int).Neg(limit),
		new(big.Int).Sub(new(big.Int).Neg(limit), big.NewInt(1)), new(big.Int).SetUint64(math.MaxUint64)} {
		b := make([]byte, 16)
		if x.Sign() < 0 {
			x = new(big.Int).Add(x, new(big.Int).Lsh(big.NewInt(1), 128))
		}
		edges = append(edges, x.FillBytes(b))
	}
	rng := rand.New(rand.NewPCG(7, 11))
	for i := range 200000 {
		b := make([]byte, 1+rng.IntN(16))
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		if i < len(edges) {
			b = edges[i]
		}
		// Mostly sign extension in front, as warehouses write small numbers.
		if k := rng.IntN(len(b) + 1); k > 0 && rng.IntN(4) > 0 {
			fill := byte(0)
			if rng.IntN(2) == 0 {
				fill = 0xff
			}
			for i := range k {
				b[i] = fill
			}
		}
		want := bigDecimal(b)
		n, ok := smallDecimal(b)
		fits := want.CmpAbs(limit) <= 0
		if ok != fits || ok && big.NewInt(n).Cmp(want) != 0 {
			t.Fatalf("% x: smallDecimal %d, %v; the integer is %s", b, n, ok, want)
		}
	}
}

// TestCopyParquet: parts copied in order give every row once, in order,
// after a row written before them; parts the size of a row group stay row
// groups of their own, and many small parts (more than copyFiles) are
// packed into few row groups, none over RowGroupRows.
func TestCopyParquet(t *testing.T) {
	dir := t.TempDir()
	o := WriteOptions{RowGroupRows: 100}
	row := func(i int) []Value {
		return []Value{TextValue([]byte("r" + itoa(i+1))), Float32Value(float32(i) / 2), Float64Value(float64(i)), Int64Value(int64(i)), BoolValue(i%2 == 0)}
	}
	write := func(path string, from, n int) {
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		w, err := NewWriter(f, Parquet, testColumns, o)
		if err != nil {
			t.Fatal(err)
		}
		for i := from; i < from+n; i++ {
			if err := w.WriteRow(row(i)); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	sizes := []int{100, 100}
	for range 3 * copyFiles {
		sizes = append(sizes, 1)
	}
	sizes = append(sizes, 0, 100, 7)
	var paths []string
	total := 0
	for k, n := range sizes {
		paths = append(paths, filepath.Join(dir, "part"+itoa(k)+".parquet"))
		write(paths[k], total, n)
		total += n
	}

	out := filepath.Join(dir, "out.parquet")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	w, err := NewWriter(f, Parquet, testColumns, o)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteRow(row(-1)); err != nil {
		t.Fatal(err)
	}
	if err := w.CopyParquet(paths); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if w.Rows() != int64(total+1) {
		t.Fatalf("Rows() = %d, want %d", w.Rows(), total+1)
	}

	r, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	st, _ := r.Stat()
	pf, err := parquet.OpenFile(r, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	var groups []int64
	for _, rg := range pf.RowGroups() {
		groups = append(groups, rg.NumRows())
		if rg.NumRows() > o.RowGroupRows {
			t.Fatalf("a row group of %d rows, over RowGroupRows %d", rg.NumRows(), o.RowGroupRows)
		}
	}
	// The row before, the two whole parts, the 192 one-row parts in a
	// few groups, the empty part in none, the last two parts.
	if len(groups) > 10 {
		t.Fatalf("%d row groups %v for %d rows: the small parts were not packed", len(groups), groups, total+1)
	}
	got := readAll(t, out)
	if len(got) != total+1 {
		t.Fatalf("read %d rows, want %d", len(got), total+1)
	}
	for i, n := range got {
		if n != int64(i-1) {
			t.Fatalf("row %d holds n %d, want %d", i, n, i-1)
		}
	}
}

// readAll returns the n column of the table at path, in order.
func readAll(t *testing.T, path string) []int64 {
	t.Helper()
	r, err := Open(path, ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := r.Select([]string{"n"}, nil); err != nil {
		t.Fatal(err)
	}
	var out []int64
	var c Chunk
	for {
		err := r.Next(&c, 64)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range c.Numbers[0][:c.Rows] {
			out = append(out, int64(x))
		}
	}
}
