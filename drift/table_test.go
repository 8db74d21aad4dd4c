package drift

import (
	"fmt"
	"math"
	"strings"
	"testing"
)

func TestReadTable(t *testing.T) {
	nan := math.NaN()
	f := func(format, data string, names []string, want [][]float64) {
		t.Helper()
		got, err := ReadTable(strings.NewReader(data), format, names)
		if err != nil {
			t.Fatalf("%s %q: %s", format, data, err)
		}
		// %v prints NaN as NaN, so equal text is equal values, NaN included.
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%s %q, columns %v:\ngot  %v\nwant %v", format, data, names, got, want)
		}
	}
	csv := "a,b,c\n1,2,3\n,NA,true\n4.5,nan,false\n -2 , null ,1e3\n"
	// Chosen columns in the chosen order; empty, NA, nan and null are
	// missing; true and false are 1 and 0; spaces around numbers are trimmed.
	f("csv", csv, []string{"c", "a"}, [][]float64{{3, 1, 0, 1000}, {1, nan, 4.5, -2}})
	f("csv", csv, []string{"b"}, [][]float64{{2, nan, nan, nan}})
	f("csv", csv, []string{"a", "a"}, [][]float64{{1, nan, 4.5, -2}, {1, nan, 4.5, -2}})
	f("csv", "a,b\n", []string{"b"}, [][]float64{nil})
	f("csv", "a,b\r\n1,\"2\"\r\n", []string{"b", "a"}, [][]float64{{2}, {1}})

	jsonl := `{"a": 1, "b": null, "c": "x"}` + "\n\n" +
		`{"a": "2.5", "b": true}` + "\n   \n" +
		`{"b": "NA", "a": -3e2}` + "\n" +
		`{"a": false, "b": ""}`
	// Numbers, strings holding numbers, null, booleans; blank lines are
	// skipped and keys not asked for are ignored.
	f("jsonl", jsonl, []string{"a", "b"}, [][]float64{{1, 2.5, -300, 0}, {nan, 1, nan, nan}})
	f("jsonl", jsonl, []string{"b"}, [][]float64{{nan, 1, nan, nan}})
	f("jsonl", "", []string{"a"}, [][]float64{nil})
}

func TestReadTableErrors(t *testing.T) {
	f := func(format, data string, names []string, want ...string) {
		t.Helper()
		got, err := ReadTable(strings.NewReader(data), format, names)
		if err == nil {
			t.Fatalf("%s %q: got %v, want an error", format, data, got)
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Fatalf("%s %q: error %q does not contain %q", format, data, err, w)
			}
		}
	}
	f("parquet", "", []string{"a"}, `unknown format "parquet"`)
	f("csv", "", []string{"a"}, "cannot read CSV header")
	f("csv", "a,b\n1,2\n", []string{"b", "z"}, `no column "z" in the header [a b]`)
	// The header is line 1, so the third data row is line 4.
	f("csv", "a,b\n1,2\n3,4\n5,x\n", []string{"a", "b"}, `cannot read CSV line 4, column "b"`, `"x" is not a number`)
	f("csv", "a,b\n1,2\n1e999,4\n", []string{"a"}, "line 3", `column "a"`, `"1e999" is not a number`)
	f("csv", "a,b\n1,2\n3\n", []string{"a"}, "cannot read CSV", "wrong number of fields")

	f("jsonl", `{"a": 1, "b": 2}`+"\n"+`{"a": 3}`, []string{"a", "b"}, `cannot read JSON line 2, key "b": missing`)
	// Blank lines count: the bad object is on line 3.
	f("jsonl", `{"a": 1}`+"\n\n"+`{"a": oops}`+"\n", []string{"a"}, "cannot read JSON line 3")
	f("jsonl", `{"a": 1}`+"\n"+`{"a": [1]}`, []string{"a"}, `line 2, key "a"`, "array is not a number")
	f("jsonl", `{"a": "twelve"}`, []string{"a"}, `line 1, key "a"`, `"twelve" is not a number`)
	f("jsonl", `[1, 2]`, []string{"a"}, `line 1, key "a": missing`)
}
