package strictyaml

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// sampleConfig exercises every shape the walk handles: inline structs, ignored
// fields, pointers, lists, maps, inline maps and self-decoding types.
type sampleConfig struct {
	sampleCommon `yaml:",inline"`
	Server       sampleServer           `yaml:"server"`
	Models       []sampleModel          `yaml:"models"`
	Routes       map[string]sampleRoute `yaml:"routes"`
	Plugin       *samplePlugin          `yaml:"plugin"`
	Secret       string                 `yaml:"-"`
}

type sampleCommon struct {
	LogLevel string `yaml:"log_level"`
}

type sampleServer struct {
	Listen      string        `yaml:"listen"`
	ReadTimeout time.Duration `yaml:"read_timeout"`
	MaxBody     Size          `yaml:"max_body"`
}

type sampleModel struct {
	Name      string          `yaml:"name"`
	Instances int             `yaml:"instances"`
	Batching  *sampleBatching `yaml:"batching"`
	Policy    samplePolicy    `yaml:"version_policy"`
}

type sampleBatching struct {
	MaxBatchSize  int           `yaml:"max_batch_size"`
	MaxQueueDelay time.Duration `yaml:"max_queue_delay"`
}

type sampleRoute struct {
	Weights map[string]int `yaml:"weights"`
}

type samplePlugin struct {
	Name    string         `yaml:"name"`
	Options map[string]any `yaml:",inline"`
}

// samplePolicy decodes itself ("all" or {latest: N}); its fields have no keys,
// so the walk would report "latest" as unknown if it looked inside.
type samplePolicy struct {
	All    bool `yaml:"-"`
	Latest int  `yaml:"-"`
}

func (p *samplePolicy) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode && n.Value == "all" {
		p.All = true
		return nil
	}
	var v struct {
		Latest int `yaml:"latest"`
	}
	if err := n.Decode(&v); err != nil {
		return err
	}
	if v.Latest < 1 {
		return errors.New("latest must be at least 1")
	}
	p.Latest = v.Latest
	return nil
}

func defaultSampleConfig() sampleConfig {
	return sampleConfig{
		sampleCommon: sampleCommon{LogLevel: "info"},
		Server:       sampleServer{Listen: ":8080", ReadTimeout: 5 * time.Second, MaxBody: 16 << 20},
		Plugin:       &samplePlugin{Name: "none"},
	}
}

func TestDecodeStrictErrors(t *testing.T) {
	f := func(input, want string) {
		t.Helper()
		cfg := defaultSampleConfig()
		err := Decode([]byte(input), &cfg, "config")
		if err == nil {
			t.Fatalf("expected an error decoding\n%s", input)
		}
		if got := strings.TrimPrefix(err.Error(), "cannot decode config: "); got != want {
			t.Fatalf("unexpected error decoding\n%s\ngot  %s\nwant %s", input, err, want)
		}
	}

	// Unknown keys: top level, nested, in a list element, with and without a suggestion.
	f("listen: :80\n", `line 1: listen: unknown key`)
	f("server:\n  listn: :80\n", `line 2: server.listn: unknown key (did you mean "listen"?)`)
	f("log_levl: debug\n", `line 1: log_levl: unknown key (did you mean "log_level"?)`)
	f("secret: hunter2\n", `line 1: secret: unknown key`)
	f("models:\n  - name: a\n  - name: b\n    batching:\n      max_queue_dealy: 1ms\n",
		`line 5: models[1].batching.max_queue_dealy: unknown key (did you mean "max_queue_delay"?)`)
	f("routes:\n  \"a.b\":\n    weight: {v1: 1}\n", `line 3: routes["a.b"].weight: unknown key (did you mean "weights"?)`)

	// Wrong types.
	f("models:\n  - name: a\n    instances: abc\n", `line 3: models[0].instances: cannot unmarshal !!str "abc" into int`)
	f("routes:\n  canary:\n    weights: {v1: 90, v2: x}\n", `line 3: routes.canary.weights.v2: cannot unmarshal !!str "x" into int`)
	f("server: 5\n", `line 1: server: cannot unmarshal !!int "5" into strictyaml.sampleServer`)
	f("models: {name: a}\n", `line 1: models: cannot unmarshal !!map into []strictyaml.sampleModel`)
	f("models:\n  - version_policy: {latest: 0}\n", `line 2: models[0].version_policy: latest must be at least 1`)

	// A document that holds nothing: an emptied or truncated file is not a
	// config of defaults.
	const empty = `the document is empty (a file being rewritten may be, for a moment): write {} to take every default`
	for _, doc := range []string{"", "\n\n", "# nothing yet\n", "---\n", "~\n", "null\n", "--- # cut here\n"} {
		f(doc, empty)
	}

	// Duplicates, merges, several documents, syntax.
	f("server:\n  listen: a\n  listen: b\n", `line 3: server.listen: duplicate key (first given at line 2)`)
	f("models:\n  - <<: 5\n    name: a\n", `line 2: models[0]: a merge key (<<) needs a mapping or a list of mappings`)
	f("models:\n  - &a {name: a}\n  - <<: *a\n    instancs: 2\n", `line 4: models[1].instancs: unknown key (did you mean "instances"?)`)
	f("server: {}\n---\nserver: {}\n", `line 2: a second YAML document is not allowed in a config`)
	f("server: {}\n---\n", `line 2: a second YAML document is not allowed in a config`)
	f("server: [\n", `yaml: line 1: did not find expected node content`)
	f("~: 1\nroutes:\n  a: {weights: {~: 1}}\n", `line 1: a key must not be null; line 3: routes.a.weights: a key must not be null`)

	// Every problem is reported, up to a bound.
	f("a: 1\nserver:\n  b: 2\n  read_timeout: x\n", `line 1: a: unknown key; line 3: server.b: unknown key; line 4: server.read_timeout: invalid duration "x": want a Go duration such as 500us, 2s or 1m`)
	f(strings.Repeat("models:\n", 2)+"k0: 0\nk1: 1\nk2: 2\nk3: 3\nk4: 4\nk5: 5\nk6: 6\nk7: 7\nk8: 8\nk9: 9\n",
		`line 2: models: duplicate key (first given at line 1); `+
			`line 3: k0: unknown key; line 4: k1: unknown key; line 5: k2: unknown key; line 6: k3: unknown key; `+
			`line 7: k4: unknown key; line 8: k5: unknown key; line 9: k6: unknown key; line 10: k7: unknown key; `+
			`line 11: k8: unknown key; and 1 more problems`)
}

func TestDecodeStrictKeepsDefaults(t *testing.T) {
	f := func(input string, want sampleConfig) {
		t.Helper()
		cfg := defaultSampleConfig()
		if err := Decode([]byte(input), &cfg, "config"); err != nil {
			t.Fatalf("cannot decode\n%s\n%s", input, err)
		}
		if !reflect.DeepEqual(cfg, want) {
			t.Fatalf("unexpected config decoding\n%s\ngot  %+v\nwant %+v", input, cfg, want)
		}
	}

	// A key without a value keeps its default, and so does every key of {}.
	f("server:\n", defaultSampleConfig())
	f("{}\n", defaultSampleConfig())

	want := defaultSampleConfig()
	want.Server.Listen = ":9090"
	want.LogLevel = "debug"
	f("log_level: debug\nserver:\n  listen: :9090\n", want)

	// A pointer that already holds a value is decoded into, not replaced; an
	// inline map takes the keys the struct lacks.
	want = defaultSampleConfig()
	want.Plugin = &samplePlugin{Name: "none", Options: map[string]any{"depth": 3}}
	f("plugin:\n  depth: 3\n", want)

	// Anchors and merge keys share settings between list elements.
	want = defaultSampleConfig()
	want.Models = []sampleModel{
		{Name: "a", Instances: 2, Batching: &sampleBatching{MaxBatchSize: 8, MaxQueueDelay: 500 * time.Microsecond}, Policy: samplePolicy{All: true}},
		{Name: "b", Instances: 2, Batching: &sampleBatching{MaxBatchSize: 8, MaxQueueDelay: 500 * time.Microsecond}, Policy: samplePolicy{Latest: 2}},
	}
	f(`
models:
  - &base
    name: a
    instances: 2
    batching: {max_batch_size: 8, max_queue_delay: 500us}
    version_policy: all
  - <<: *base
    name: b
    version_policy: {latest: 2}
`, want)
}

func TestDecodeStrictDuration(t *testing.T) {
	f := func(value string, want time.Duration, wantErr string) {
		t.Helper()
		cfg := defaultSampleConfig()
		err := Decode([]byte("server:\n  read_timeout: "+value+"\n"), &cfg, "config")
		if wantErr != "" {
			if err == nil || err.Error() != "cannot decode config: "+wantErr {
				t.Fatalf("unexpected error for %q\ngot  %v\nwant %s", value, err, wantErr)
			}
			return
		}
		if err != nil {
			t.Fatalf("cannot decode %q: %s", value, err)
		}
		if cfg.Server.ReadTimeout != want {
			t.Fatalf("unexpected duration for %q; got %s; want %s", value, cfg.Server.ReadTimeout, want)
		}
	}
	f("500us", 500*time.Microsecond, "")
	f("1m30s", 90*time.Second, "")
	f(`"2h"`, 2*time.Hour, "")
	f("5 parsecs", 0, `line 2: server.read_timeout: invalid duration "5 parsecs": want a Go duration such as 500us, 2s or 1m`)
	f("5", 0, `line 2: server.read_timeout: invalid duration "5": want a Go duration such as 500us, 2s or 1m`)
}

func TestSizeDecode(t *testing.T) {
	f := func(value string, want Size, wantErr string) {
		t.Helper()
		cfg := defaultSampleConfig()
		err := Decode([]byte("server:\n  max_body: "+value+"\n"), &cfg, "config")
		if wantErr != "" {
			if err == nil || err.Error() != "cannot decode config: line 2: server.max_body: "+wantErr {
				t.Fatalf("unexpected error for %q\ngot  %v\nwant %s", value, err, wantErr)
			}
			return
		}
		if err != nil {
			t.Fatalf("cannot decode %q: %s", value, err)
		}
		if cfg.Server.MaxBody != want {
			t.Fatalf("unexpected size for %q; got %d; want %d", value, cfg.Server.MaxBody, want)
		}
	}
	f("512", 512, "")
	f(`"512"`, 512, "")
	f("0", 0, "")
	f("100B", 100, "")
	f("64KiB", 64<<10, "")
	f("16MiB", 16<<20, "")
	f("16 MiB", 16<<20, "")
	f("1GiB", 1<<30, "")
	f("2TiB", 2<<40, "")
	f("3kB", 3000, "")
	f("10MB", 10_000_000, "")
	f("1GB", 1_000_000_000, "")
	f("8388607TiB", 8388607<<40, "")

	const units = "want a whole number of bytes with an optional unit: B, kB, MB, GB, TB, KiB, MiB, GiB, TiB"
	f("-5", 0, `invalid size "-5": must not be negative`)
	f("-1KiB", 0, `invalid size "-1KiB": must not be negative`)
	f("8388608TiB", 0, `invalid size "8388608TiB": too large for a 64-bit byte count`)
	f("99999999999999999999", 0, `invalid size "99999999999999999999": too large for a 64-bit byte count`)
	f("16mib", 0, `invalid size "16mib": `+units)
	f("16KB", 0, `invalid size "16KB": `+units)
	f("1.5GiB", 0, `invalid size "1.5GiB": `+units)
	f("16  MiB", 0, `invalid size "16  MiB": `+units)
	f(`"512 "`, 0, `invalid size "512 ": `+units)
	f("MiB", 0, `invalid size "MiB": `+units)
	f("0x10", 0, `invalid size "0x10": `+units)
	f("[1]", 0, `invalid size: want a number of bytes such as 512 or 16MiB, got !!seq`)
}

func TestSizeString(t *testing.T) {
	f := func(s Size, want string) {
		t.Helper()
		if got := s.String(); got != want {
			t.Fatalf("unexpected String() for %d; got %q; want %q", int64(s), got, want)
		}
		if s < 0 {
			return
		}
		back, err := parseSize(want)
		if err != nil || back != s {
			t.Fatalf("%q does not decode back to %d: %d, %v", want, int64(s), back, err)
		}
	}
	f(0, "0")
	f(1000, "1000")
	f(1536, "1536")
	f(3<<10, "3KiB")
	f(16<<20, "16MiB")
	f(1<<30, "1GiB")
	f(1025<<30, "1025GiB")
	f(5<<40, "5TiB")
	f(-1024, "-1024")
}

func FuzzDecodeStrict(f *testing.F) {
	for _, seed := range []string{
		"",
		"log_level: debug\nserver:\n  listen: :8080\n  read_timeout: 500us\n  max_body: 16MiB\n",
		"models:\n  - name: a\n    instances: 2\n    batching: {max_batch_size: 8, max_queue_delay: 1ms}\n    version_policy: all\n",
		"models:\n  - &base {name: a, version_policy: {latest: 2}}\n  - <<: *base\n    name: b\n",
		"routes:\n  canary:\n    weights: {v1: 90, v2: 10}\n",
		"plugin:\n  name: x\n  depth: [1, 2, {a: b}]\n",
		"models: &m [*m]\n",
		"server: {listen: a, listen: b}\n---\nx: 1\n",
		"a: &a [*a, *a]\nb: &b [*a, *a]\nc: [*b, *b]\n",
		"server:\n  max_body: 99999999999999999999GiB\n  bogus: !!binary aGk=\n",
		"&00000:\n 0:0000000000: #0000000000000",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg := defaultSampleConfig()
		err := Decode(data, &cfg, "config")
		if err != nil && !strings.HasPrefix(err.Error(), "cannot decode config: ") {
			t.Fatalf("error without the usual prefix: %s", err)
		}
		// The walk only adds paths to yaml.v3's own verdict, so the two agree,
		// but for null keys, which yaml.v3 silently drops, and empty
		// documents, which it takes as nothing to do.
		if err != nil && (strings.Contains(err.Error(), "a key must not be null") || errors.Is(err, errEmpty)) {
			return
		}
		if accepted := yamlStrictAccepts(data); (err == nil) != accepted {
			t.Fatalf("Decode says %v, yaml.v3 with KnownFields accepts: %v\n%q", err, accepted, data)
		}
	})
}

// yamlStrictAccepts reports whether yaml.v3 with KnownFields decodes data as
// a sampleConfig, holding at most one document.
func yamlStrictAccepts(data []byte) bool {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	cfg := defaultSampleConfig()
	if err := dec.Decode(&cfg); err != nil {
		return errors.Is(err, io.EOF)
	}
	return errors.Is(dec.Decode(new(yaml.Node)), io.EOF)
}
