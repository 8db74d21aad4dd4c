package v2codec

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestJSONScannerAcceptsJSON(t *testing.T) {
	var s Scanner
	f := func(doc string, wantValues int) {
		t.Helper()
		n, err := s.Scan([]byte(doc), 1<<20)
		if err != nil || n != wantValues {
			t.Fatalf("scan(%s) = %d, %v; want %d values", doc, n, err, wantValues)
		}
	}
	f(`0`, 1)
	f(` {} `, 1)
	f(`[]`, 1)
	f(`{"a":[1,-2.5e+3,0.0,true,false,null,"x\"\\\/\b\f\n\r\t\u00e9"],"b":{}}`, 10)
	f(`{"a":{"a":1},"b":{"a":2}}`, 5) // the same key in sibling objects
	f("[\"h\u00e9llo \u4e16\u754c\"]", 2)
	f(`[[[[1]]]]`, 5)
}

func TestJSONScannerRefuses(t *testing.T) {
	var s Scanner
	f := func(doc, wantErr string) {
		t.Helper()
		_, err := s.Scan([]byte(doc), 1<<20)
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("scan(%q) = %v; want an error containing %q", doc, err, wantErr)
		}
	}
	f(``, "unexpected end")
	f(`{"a":1,"a":2}`, `duplicate key "a"`)
	f(`{"a":1,"\u0061":2}`, `duplicate key "\u0061"`)
	f(`{"x":{"a":1,"b":2,"a":3}}`, `duplicate key "a"`)
	f(`[NaN]`, "where a value belongs")
	f(`[Infinity]`, "where a value belongs")
	f(`[nan]`, "unknown literal")
	f(`[01]`, "malformed number")
	f(`[0x1]`, "malformed number")
	f(`[1.]`, "digits after its '.'")
	f(`[1e]`, "exponent")
	f(`[-]`, "without digits")
	f(`["\x"]`, `invalid escape \x`)
	f(`["\u12"]`, `\u escape`)
	f("[\"a\x01\"]", "control character")
	f("[\"\xff\"]", "UTF-8")
	f(`{"a":1,}`, "want a quoted key")
	f(`[1,]`, "where a value belongs")
	f(`{"a" 1}`, "want ':'")
	f(`[1] x`, "after the document")
	f(`[1}`, "after a value")
	f(`{"a":1]`, "after a value")
	f(`[tru]`, "unknown literal")
	f(strings.Repeat("[", maxJSONDepth+1)+strings.Repeat("]", maxJSONDepth+1), "nested deeper")
	var keys strings.Builder
	keys.WriteString("{")
	for i := range maxJSONObjectKeys + 1 {
		if i > 0 {
			keys.WriteString(",")
		}
		keys.WriteString(`"k` + strings.Repeat("x", i) + `":0`)
	}
	f(keys.String()+"}", "more than 64 keys")
}

func TestJSONScannerStopsAtItsBound(t *testing.T) {
	var s Scanner
	doc := []byte(`{"data":[` + strings.Repeat("0,", 1000) + `0]}`)
	if n, err := s.Scan(doc, 1003); err != nil || n != 1003 {
		t.Fatalf("scan at its bound = %d, %v; want 1003 values", n, err)
	}
	if _, err := s.Scan(doc, 1002); !errors.Is(err, ErrTooManyValues) {
		t.Fatalf("scan past its bound: %v; want ErrTooManyValues", err)
	}
}

// FuzzJSONScanner holds the scanner to encoding/json: it accepts what is
// valid JSON without duplicate keys (within its depth and key bounds) and
// nothing else.
func FuzzJSONScanner(f *testing.F) {
	for _, seed := range []string{`{"a":[1,2.5e3,"x"]}`, `[01]`, `{"a":1,"a":2}`, `"\ud800"`, `[1,]`, `nul`, `-0.0E+1`} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		var s Scanner
		_, err := s.Scan(doc, 1<<20)
		valid := json.Valid(doc)
		if err == nil && !valid {
			t.Fatalf("scanner accepted invalid JSON %q", doc)
		}
		if err != nil && valid && !strings.Contains(err.Error(), "duplicate key") &&
			!strings.Contains(err.Error(), "nested deeper") && !strings.Contains(err.Error(), "keys") && !strings.Contains(err.Error(), "UTF-8") {
			t.Fatalf("scanner refused valid JSON %q: %v", doc, err)
		}
	})
}
