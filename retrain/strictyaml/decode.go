package strictyaml

import (
	"bytes"
	"encoding"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// maxProblems bounds how many problems one decode reports: enough to fix a
// config in one pass without burying the first mistake under its echoes.
const maxProblems = 10

// errEmpty is the problem with a document that holds nothing.
var errEmpty = errors.New("the document is empty (a file being rewritten may be, for a moment): write {} to take every default")

// Decode decodes the YAML document data into dst (a pointer to a struct
// whose fields carry `yaml:"name"` tags), strictly: an unknown key, a wrong
// type, a duplicate key, a null key, a second document or a document that
// holds nothing (no content, or only null) is an error that names the key's
// dotted path (for example `models[1].batching.max_queue_delay`) and its line;
// what names the document in errors ("cannot decode <what>: ...").
// Fields of dst not mentioned in data keep the values dst already held (so
// callers fill defaults first).
//
// Elements of a list and values of a map are decoded into zero values, as
// yaml.v3 does, so their defaults are filled after decoding. After an error
// dst may be partly written; callers decode into a fresh value and discard it.
func Decode(data []byte, dst any, what string) error {
	v := reflect.ValueOf(dst)
	if v.Kind() != reflect.Pointer || v.IsNil() {
		panic(fmt.Sprintf("BUG: strictyaml.Decode needs a non-nil pointer, got %T", dst))
	}
	doc, err := parseOneDocument(data)
	if err != nil {
		return fmt.Errorf("cannot decode %s: %w", what, err)
	}
	c := checker{seen: make(map[visit]bool)}
	c.walk(doc, v.Type().Elem(), "")
	if err := c.err(what); err != nil {
		return err
	}
	// The walk has checked every key and value, so this decode only fills
	// dst; yaml.v3's KnownFields stays on as a guard should the two ever
	// disagree (FuzzDecodeStrict checks that they do not).
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(dst); err != nil {
		return fmt.Errorf("cannot decode %s: %w", what, err)
	}
	return nil
}

// parseOneDocument returns the document node of data. A document that holds
// nothing is an error, so that a file emptied or cut short by accident does
// not silently mean "every default"; so is a second document, since ignoring
// it would drop half of a config that someone concatenated by mistake.
func parseOneDocument(data []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errEmpty
		}
		return nil, err
	}
	if len(doc.Content) == 0 || doc.Content[0].ShortTag() == "!!null" {
		return nil, errEmpty
	}
	var extra yaml.Node
	err := dec.Decode(&extra)
	switch {
	case errors.Is(err, io.EOF):
		return &doc, nil
	case err != nil:
		return nil, err
	}
	return nil, fmt.Errorf("line %d: a second YAML document is not allowed in a config", extra.Line)
}

// checker walks a YAML node tree alongside the Go type it will decode into
// and collects every problem, so one run reports all of them with their paths.
type checker struct {
	problems []string
	dropped  int // problems beyond maxProblems

	// seen holds the (node, type) pairs already checked. An alias re-visits
	// its anchor's nodes; checking each pair once keeps a "billion laughs"
	// document linear and an anchor that contains itself from looping.
	seen map[visit]bool
}

type visit struct {
	node *yaml.Node
	typ  reflect.Type
}

func (c *checker) walk(n *yaml.Node, t reflect.Type, path string) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, child := range n.Content {
			c.walk(child, t, path)
		}
		return
	case yaml.AliasNode:
		n = n.Alias
	}
	// yaml.v3 leaves a field alone for null (zeroing only pointers, maps and
	// slices) and never hands null to an unmarshaler, so null always fits.
	if n.Kind == 0 || n.ShortTag() == "!!null" {
		return
	}
	if c.seen[visit{n, t}] {
		return
	}
	c.seen[visit{n, t}] = true

	switch k := t.Kind(); {
	case decodesItself(t):
		c.checkValue(n, t, path)
	case k == reflect.Pointer:
		c.walk(n, t.Elem(), path)
	case k == reflect.Struct && n.Kind == yaml.MappingNode:
		c.walkStruct(n, t, path)
	case k == reflect.Map && n.Kind == yaml.MappingNode:
		c.walkMap(n, t, path)
	case (k == reflect.Slice || k == reflect.Array) && n.Kind == yaml.SequenceNode:
		c.walkSequence(n, t, path)
	default:
		c.checkValue(n, t, path)
	}
}

func (c *checker) walkStruct(n *yaml.Node, t reflect.Type, path string) {
	fields, rest := structFields(t)
	c.walkPairs(n, t, path, func(key, value *yaml.Node) {
		keyPath := joinPath(path, key.Value)
		if key.Kind != yaml.ScalarNode {
			c.add(key, path, fmt.Sprintf("a key must be a string, got %s", key.ShortTag()))
			return
		}
		if f, ok := findField(fields, key.Value); ok {
			c.walk(value, f.typ, keyPath)
			return
		}
		if rest != nil {
			c.walk(value, rest, keyPath)
			return
		}
		c.add(key, keyPath, "unknown key"+suggestion(key.Value, fields))
	})
}

func (c *checker) walkMap(n *yaml.Node, t reflect.Type, path string) {
	c.walkPairs(n, t, path, func(key, value *yaml.Node) {
		c.checkValue(key, t.Key(), path)
		c.walk(value, t.Elem(), joinPath(path, key.Value))
	})
}

// walkPairs calls visit for each key and value of the mapping n, after what
// struct and map mappings share: duplicate keys, null keys and merge keys,
// whose mappings are walked as type t too.
func (c *checker) walkPairs(n *yaml.Node, t reflect.Type, path string, visit func(key, value *yaml.Node)) {
	c.checkDuplicates(n, path)
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, value := n.Content[i], n.Content[i+1]
		switch {
		case isMerge(key):
			c.walkMerge(value, t, path)
		case key.ShortTag() == "!!null":
			// yaml.v3 drops such an entry without a word, which a strict
			// decoder must not.
			c.add(key, path, "a key must not be null")
		default:
			visit(key, value)
		}
	}
}

func (c *checker) walkSequence(n *yaml.Node, t reflect.Type, path string) {
	if t.Kind() == reflect.Array && len(n.Content) != t.Len() {
		c.add(n, path, fmt.Sprintf("want %d items, got %d", t.Len(), len(n.Content)))
		return
	}
	for i, item := range n.Content {
		c.walk(item, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
	}
}

// walkMerge checks the value of a merge key (<<: *defaults), whose keys land
// in the same struct or map as the keys beside it.
func (c *checker) walkMerge(value *yaml.Node, t reflect.Type, path string) {
	sources := []*yaml.Node{value}
	if value.Kind == yaml.SequenceNode {
		sources = value.Content
	}
	for _, src := range sources {
		resolved := src
		if src.Kind == yaml.AliasNode {
			resolved = src.Alias
		}
		if resolved.Kind != yaml.MappingNode {
			c.add(src, path, "a merge key (<<) needs a mapping or a list of mappings")
			continue
		}
		c.walk(src, t, path)
	}
}

// checkDuplicates reports a key given twice in one mapping; yaml.v3 rejects
// it too, but without saying where the mapping sits in the config.
func (c *checker) checkDuplicates(n *yaml.Node, path string) {
	firstLine := make(map[string]int)
	for i := 0; i < len(n.Content); i += 2 {
		key := n.Content[i]
		if key.Kind != yaml.ScalarNode || isMerge(key) {
			continue
		}
		if line, dup := firstLine[key.Value]; dup {
			c.add(key, joinPath(path, key.Value), fmt.Sprintf("duplicate key (first given at line %d)", line))
			continue
		}
		firstLine[key.Value] = key.Line
	}
}

// checkValue decodes n into a fresh value of type t, so that a value yaml.v3
// would reject is reported with its path rather than just its line.
func (c *checker) checkValue(n *yaml.Node, t reflect.Type, path string) {
	err := n.Decode(reflect.New(t).Interface())
	if err == nil {
		return
	}
	var typeErr *yaml.TypeError
	switch {
	case !errors.As(err, &typeErr):
		c.add(n, path, trimLine(err.Error(), n.Line))
	case decodesItself(t):
		// A custom unmarshaler words its own errors.
		for _, msg := range typeErr.Errors {
			c.add(n, path, trimLine(msg, n.Line))
		}
	case t == durationType && n.Kind == yaml.ScalarNode:
		c.add(n, path, fmt.Sprintf("invalid duration %q: want a Go duration such as 500us, 2s or 1m", n.Value))
	default:
		c.add(n, path, fmt.Sprintf("cannot unmarshal %s into %s", describe(n), t))
	}
}

func (c *checker) add(n *yaml.Node, path, msg string) {
	if len(c.problems) == maxProblems {
		c.dropped++
		return
	}
	if path != "" {
		msg = path + ": " + msg
	}
	c.problems = append(c.problems, fmt.Sprintf("line %d: %s", n.Line, msg))
}

// err joins the problems on one line, so that a refused reload logs as one
// slog record.
func (c *checker) err(what string) error {
	if len(c.problems) == 0 {
		return nil
	}
	msg := strings.Join(c.problems, "; ")
	if c.dropped > 0 {
		msg += fmt.Sprintf("; and %d more problems", c.dropped)
	}
	return errors.New("cannot decode " + what + ": " + msg)
}

type structField struct {
	name string
	typ  reflect.Type
}

// structFields lists the keys yaml.v3 accepts for struct type t, in field
// order, following its rules for tags, `yaml:"-"` and `yaml:",inline"`. rest
// is the value type of an inline map, which takes every other key, or nil.
func structFields(t reflect.Type) (fields []structField, rest reflect.Type) {
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() && !f.Anonymous {
			continue
		}
		tag := f.Tag.Get("yaml")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if !strings.Contains(","+opts+",", ",inline,") {
			if name == "" {
				name = strings.ToLower(f.Name)
			}
			fields = append(fields, structField{name, f.Type})
			continue
		}
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		switch {
		case ft.Kind() == reflect.Map:
			rest = ft.Elem()
		case ft.Kind() == reflect.Struct && !decodesItself(ft):
			// yaml.v3 lifts an inlined struct's fields but not its inline
			// map, so neither does this.
			inner, _ := structFields(ft)
			fields = append(fields, inner...)
		}
	}
	return fields, rest
}

func findField(fields []structField, name string) (structField, bool) {
	for _, f := range fields {
		if f.name == name {
			return f, true
		}
	}
	return structField{}, false
}

// suggestion names the known key closest to a misspelt one, when one is close
// enough to be the likely intent.
func suggestion(key string, fields []structField) string {
	best, bestDist := "", 3
	for _, f := range fields {
		if d := editDistance(key, f.name); d < bestDist {
			best, bestDist = f.name, d
		}
	}
	// A short key is within two edits of too much to make a useful hint.
	if best == "" || bestDist >= len(key) {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// editDistance is the Levenshtein distance between a and b in bytes, capped
// at 3 since only distances up to 2 matter.
func editDistance(a, b string) int {
	if len(a)-len(b) > 2 || len(b)-len(a) > 2 {
		return 3
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return min(prev[len(b)], 3)
}

var (
	durationType = reflect.TypeFor[time.Duration]()
	nodeType     = reflect.TypeFor[yaml.Node]()
	selfDecoders = []reflect.Type{
		reflect.TypeFor[yaml.Unmarshaler](),
		reflect.TypeFor[encoding.TextUnmarshaler](),
		reflect.TypeFor[interface{ UnmarshalYAML(func(any) error) error }](), // yaml.v2 style
	}
)

// decodesItself reports whether values of t take whatever YAML they are given
// and judge it themselves, so the walk must not look inside.
func decodesItself(t reflect.Type) bool {
	if t == nodeType || t.Kind() == reflect.Interface {
		return true
	}
	for _, u := range selfDecoders {
		if t.Implements(u) || reflect.PointerTo(t).Implements(u) {
			return true
		}
	}
	return false
}

func isMerge(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Value == "<<" && n.ShortTag() == "!!merge"
}

// joinPath appends key to a dotted path, quoting keys that would make the
// path ambiguous (a map key holding a dot, say).
func joinPath(path, key string) string {
	plain := key != "" && strings.IndexFunc(key, func(r rune) bool {
		return !(r == '_' || r == '-' || '0' <= r && r <= '9' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z')
	}) < 0
	switch {
	case !plain:
		return path + "[" + strconv.Quote(key) + "]"
	case path == "":
		return key
	}
	return path + "." + key
}

// describe shows a node's tag and, for a scalar, its (shortened) value.
func describe(n *yaml.Node) string {
	if n.Kind != yaml.ScalarNode {
		return n.ShortTag()
	}
	v := n.Value
	if len(v) > 40 {
		v = v[:37] + "..."
	}
	return fmt.Sprintf("%s %q", n.ShortTag(), v)
}

// trimLine drops yaml.v3's "line N: " prefix where it repeats the line that
// the problem already carries.
func trimLine(msg string, line int) string {
	return strings.TrimPrefix(msg, fmt.Sprintf("line %d: ", line))
}
