package v2codec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"
)

// Bounds of what Scanner accepts. A V2 request nests a tensor's rank
// plus three levels, and its objects hold a handful of keys; parameters
// passed through may hold more, but not thousands.
const (
	maxJSONDepth      = 64
	maxJSONObjectKeys = 64
)

// ErrTooManyValues is returned, wrapped, when a document holds more values
// than its reader allowed: the request is larger than any the model takes.
var ErrTooManyValues = errors.New("too many JSON values")

// Scanner checks a JSON document strictly (RFC 8259: no NaN, no leading
// zeros, no bad escapes or raw control characters, valid UTF-8, nothing
// after the value) and refuses duplicate keys, which parsers resolve
// differently. It counts the document's values as it goes and stops at a
// bound, before any of them costs memory: a reader that builds a tree
// takes about a hundred bytes a value, so a body of a million zeros must be
// refused first. Decode uses a Scanner to keep the key sets of the objects
// it walks and to check the values it does not read itself.
// It works in one pass without recursion and, once its stacks have grown,
// without allocating. A Scanner is not safe for concurrent use.
type Scanner struct {
	// open holds '{' or '[' for each container entered and not yet left.
	open []byte
	// keys are the keys of the objects in open, each object's from its
	// entry in firstKey on. A key's escapes are decoded once, into decoded,
	// so that comparing it with its siblings is a plain comparison.
	keys     []jsonKey
	firstKey []int
	decoded  []byte
	// FoldKeys makes keys that differ only in case duplicates, for a
	// reader that matches keys so (encoding/json).
	FoldKeys bool
}

// jsonKey is where a key's text is: in the document, between its quotes,
// or in Scanner.decoded when it had escapes.
type jsonKey struct {
	start, end int
	decoded    bool
}

// Scan checks doc and returns its number of values (containers, strings,
// numbers and literals; keys are not values). A document with more than
// maxValues values is refused with an error wrapping ErrTooManyValues.
func (s *Scanner) Scan(doc []byte, maxValues int) (int, error) {
	s.open, s.keys, s.firstKey, s.decoded = s.open[:0], s.keys[:0], s.firstKey[:0], s.decoded[:0]
	i, values, err := s.value(doc, skipSpace(doc, 0), 0, maxValues)
	if err != nil {
		return values, err
	}
	if i != len(doc) {
		return values, scanError(doc, i, "unexpected data after the document")
	}
	return values, nil
}

// skip checks the value at doc[i], which lies inside depth containers
// already open, and returns the index after it (and after the space that
// follows it) and its number of values. It leaves the scanner's key stacks
// as it found them, so that a decoder walking the enclosing objects with
// enter, key and leave can skip the values it does not read.
func (s *Scanner) skip(doc []byte, i, depth, maxValues int) (end, values int, err error) {
	s.open = s.open[:0]
	return s.value(doc, i, depth, maxValues)
}

// value checks one value at doc[i], nested inside depth containers, and
// returns the index after it and the space that follows it.
func (s *Scanner) value(doc []byte, i, depth, maxValues int) (int, int, error) {
	values := 0
	// Each turn reads one value, then what follows it up to the next value.
	for {
		if i >= len(doc) {
			return i, values, scanError(doc, i, "unexpected end of document")
		}
		values++
		if values > maxValues {
			return i, values, fmt.Errorf("%w: more than %d", ErrTooManyValues, maxValues)
		}
		var err error
		switch c := doc[i]; {
		case c == '{' || c == '[':
			if len(s.open)+depth >= maxJSONDepth {
				return i, values, scanError(doc, i, fmt.Sprintf("nested deeper than %d levels", maxJSONDepth))
			}
			s.open = append(s.open, c)
			i = skipSpace(doc, i+1)
			if c == '{' {
				s.enter()
				if i < len(doc) && doc[i] == '}' {
					break // the empty object is closed below
				}
				if i, err = s.key(doc, i); err != nil {
					return i, values, err
				}
				continue
			}
			if i < len(doc) && doc[i] == ']' {
				break
			}
			continue
		case c == '"':
			if i, err = scanString(doc, i); err != nil {
				return i, values, err
			}
		case c == '-' || c >= '0' && c <= '9':
			if i, err = scanNumber(doc, i); err != nil {
				return i, values, err
			}
		case c == 't' || c == 'f' || c == 'n':
			if i, err = scanLiteral(doc, i); err != nil {
				return i, values, err
			}
		default:
			return i, values, scanError(doc, i, fmt.Sprintf("unexpected %q where a value belongs", c))
		}

		// After a value: closing brackets, then a comma or the end.
		for {
			i = skipSpace(doc, i)
			if len(s.open) == 0 {
				return i, values, nil
			}
			if i >= len(doc) {
				return i, values, scanError(doc, i, "unexpected end of document")
			}
			top := s.open[len(s.open)-1]
			switch c := doc[i]; {
			case c == ',':
				i = skipSpace(doc, i+1)
				if top == '{' {
					if i, err = s.key(doc, i); err != nil {
						return i, values, err
					}
				}
			case c == '}' && top == '{':
				s.leave()
				s.open = s.open[:len(s.open)-1]
				i++
				continue
			case c == ']' && top == '[':
				s.open = s.open[:len(s.open)-1]
				i++
				continue
			default:
				return i, values, scanError(doc, i, fmt.Sprintf("unexpected %q after a value", c))
			}
			break
		}
	}
}

// enter starts the key set of an object just opened.
func (s *Scanner) enter() {
	s.firstKey = append(s.firstKey, len(s.keys))
}

// leave drops the key set of the object being closed.
func (s *Scanner) leave() {
	s.keys = s.keys[:s.firstKey[len(s.firstKey)-1]]
	s.firstKey = s.firstKey[:len(s.firstKey)-1]
}

// lastKey returns the decoded text of the key key last read.
func (s *Scanner) lastKey(doc []byte) []byte {
	return s.text(doc, s.keys[len(s.keys)-1])
}

// key reads an object's key and its colon at doc[i], refusing one the
// object already has, and returns where its value begins.
func (s *Scanner) key(doc []byte, i int) (int, error) {
	if i >= len(doc) || doc[i] != '"' {
		return i, scanError(doc, i, "want a quoted key")
	}
	end, err := scanString(doc, i)
	if err != nil {
		return i, err
	}
	siblings := s.keys[s.firstKey[len(s.firstKey)-1]:]
	if len(siblings) == maxJSONObjectKeys {
		return i, scanError(doc, i, fmt.Sprintf("an object with more than %d keys", maxJSONObjectKeys))
	}
	key := jsonKey{start: i + 1, end: end - 1}
	if bytes.IndexByte(doc[key.start:key.end], '\\') >= 0 {
		var text string
		json.Unmarshal(doc[i:end], &text) // scanString has checked it
		key = jsonKey{start: len(s.decoded), end: len(s.decoded) + len(text), decoded: true}
		s.decoded = append(s.decoded, text...)
	}
	name := s.text(doc, key)
	for _, k := range siblings {
		if other := s.text(doc, k); bytes.Equal(other, name) || s.FoldKeys && bytes.EqualFold(other, name) {
			return i, scanError(doc, i, fmt.Sprintf("duplicate key %s (parsers disagree on which one wins)", doc[i:end]))
		}
	}
	s.keys = append(s.keys, key)
	i = skipSpace(doc, end)
	if i >= len(doc) || doc[i] != ':' {
		return i, scanError(doc, i, "want ':' after a key")
	}
	return skipSpace(doc, i+1), nil
}

// text returns the decoded text of key k of doc.
func (s *Scanner) text(doc []byte, k jsonKey) []byte {
	if k.decoded {
		return s.decoded[k.start:k.end]
	}
	return doc[k.start:k.end]
}

func skipSpace(doc []byte, i int) int {
	for i < len(doc) && (doc[i] == ' ' || doc[i] == '\n' || doc[i] == '\r' || doc[i] == '\t') {
		i++
	}
	return i
}

// scanString checks the string that opens at doc[i] and returns the index
// after its closing quote.
func scanString(doc []byte, i int) (int, error) {
	start := i
	ascii := true
	for i++; i < len(doc); i++ {
		switch c := doc[i]; {
		case c == '"':
			if !ascii && !utf8.Valid(doc[start:i]) {
				return i, scanError(doc, start, "a string that is not valid UTF-8")
			}
			return i + 1, nil
		case c < 0x20:
			return i, scanError(doc, i, "a control character in a string (escape it)")
		case c >= 0x80:
			ascii = false
		case c == '\\':
			i++
			if i >= len(doc) {
				return i, scanError(doc, i, "unexpected end of document")
			}
			switch doc[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if i+4 >= len(doc) || !isHex(doc[i+1]) || !isHex(doc[i+2]) || !isHex(doc[i+3]) || !isHex(doc[i+4]) {
					return i, scanError(doc, i-1, `a \u escape without four hexadecimal digits`)
				}
				i += 4
			default:
				return i, scanError(doc, i-1, fmt.Sprintf(`the invalid escape \%c`, doc[i]))
			}
		}
	}
	return i, scanError(doc, i, "unexpected end of document in a string")
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// scanNumber checks the number at doc[i] against JSON's grammar,
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?, and returns the index after it.
func scanNumber(doc []byte, i int) (int, error) {
	start := i
	if doc[i] == '-' {
		i++
	}
	switch {
	case i < len(doc) && doc[i] == '0':
		i++
	case i < len(doc) && doc[i] >= '1' && doc[i] <= '9':
		i = skipDigits(doc, i)
	default:
		return i, scanError(doc, start, "a number without digits")
	}
	if i < len(doc) && doc[i] == '.' {
		if j := skipDigits(doc, i+1); j > i+1 {
			i = j
		} else {
			return i, scanError(doc, start, "a number without digits after its '.'")
		}
	}
	if i < len(doc) && (doc[i] == 'e' || doc[i] == 'E') {
		i++
		if i < len(doc) && (doc[i] == '+' || doc[i] == '-') {
			i++
		}
		if j := skipDigits(doc, i); j > i {
			i = j
		} else {
			return i, scanError(doc, start, "a number without digits in its exponent")
		}
	}
	if i < len(doc) && (doc[i] >= '0' && doc[i] <= '9' || doc[i] == '.' || doc[i] == 'x' || doc[i] == 'X') {
		return i, scanError(doc, start, "a malformed number (leading zeros and hexadecimal are not JSON)")
	}
	return i, nil
}

func skipDigits(doc []byte, i int) int {
	for i < len(doc) && doc[i] >= '0' && doc[i] <= '9' {
		i++
	}
	return i
}

// scanLiteral checks true, false or null at doc[i].
func scanLiteral(doc []byte, i int) (int, error) {
	for _, lit := range [...]string{"true", "false", "null"} {
		if string(doc[i:min(i+len(lit), len(doc))]) == lit {
			return i + len(lit), nil
		}
	}
	return i, scanError(doc, i, "an unknown literal (JSON has true, false and null; not NaN or Infinity)")
}

// scanError describes what is wrong at doc[i], showing a little of it.
func scanError(doc []byte, i int, what string) error {
	const shown = 16
	near := doc[i:min(i+shown, len(doc))]
	if len(near) == 0 {
		return fmt.Errorf("%s at offset %d", what, i)
	}
	return fmt.Errorf("%s at offset %d, near %q", what, i, near)
}
