package gateway

import "github.com/infergate/infergate/gateway/v2codec"

// jsonScanner checks a JSON document strictly and counts its values
// (v2codec.Scanner), for the bodies the gateway decodes with encoding/json.
// It is not safe for concurrent use.
type jsonScanner struct {
	// foldKeys makes keys that differ only in case duplicates, for a
	// reader that matches keys so (encoding/json).
	foldKeys bool
	s        v2codec.Scanner
}

// scan checks doc and returns its number of values; more than maxValues is
// an error wrapping errTooManyValues.
func (s *jsonScanner) scan(doc []byte, maxValues int) (int, error) {
	s.s.FoldKeys = s.foldKeys
	return s.s.Scan(doc, maxValues)
}
