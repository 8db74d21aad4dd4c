package capture

import (
	"cmp"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

// Config configures the capture of one model. It is the model's `capture:`
// section of the config file; a zero field takes its default (see
// WithDefaults), and a zero Sample leaves capture off. Retention applies to
// the model's capture stream, which every replica shares: the bounds of the
// replica that opened it last are the stream's.
type Config struct {
	// Sample is the share of requests captured, in [0, 1]; 0 is off.
	Sample float64 `yaml:"sample"`
	// Retention bounds the compressed bytes kept for the model; the oldest
	// blocks are deleted beyond it; default 1GiB.
	Retention Size `yaml:"retention"`
	// MaxAge is how long a block is kept; default 7 days (168h).
	MaxAge time.Duration `yaml:"max_age"`
	// BufferSize is the number of records buffered between the request path
	// and the shipper; beyond it records are dropped; default 4096.
	BufferSize int `yaml:"buffer_size"`
}

// WithDefaults returns c with its zero fields, other than Sample, set to
// the defaults.
func (c Config) WithDefaults() Config {
	c.Retention = cmp.Or(c.Retention, 1<<30)
	c.MaxAge = cmp.Or(c.MaxAge, 7*24*time.Hour)
	c.BufferSize = cmp.Or(c.BufferSize, 4096)
	return c
}

// Validate reports the first invalid setting of c, after defaults; path
// names the section in errors, for example "models.demo.capture".
func (c Config) Validate(path string) error {
	switch {
	case !(c.Sample >= 0 && c.Sample <= 1):
		return fmt.Errorf("%s.sample: must be in [0, 1] (0 turns capture off), got %g", path, c.Sample)
	case c.Retention < 4*maxBlock:
		return fmt.Errorf("%s.retention: must be at least %s, four blocks, got %s", path, Size(4*maxBlock), c.Retention)
	case c.MaxAge < time.Minute:
		return fmt.Errorf("%s.max_age: must be at least 1m, got %s", path, c.MaxAge)
	case c.BufferSize < 1:
		return fmt.Errorf("%s.buffer_size: must be at least 1, got %d", path, c.BufferSize)
	}
	return nil
}

// LabelsConfig configures the label streams (the config's `feedback:`
// section); a zero field takes its default.
type LabelsConfig struct {
	// Retention bounds the bytes of a model's labels kept; the oldest are
	// deleted beyond it; default 1GiB.
	Retention Size `yaml:"retention"`
	// MaxAge is how long a label is kept; default 30 days (720h).
	MaxAge time.Duration `yaml:"max_age"`
}

// WithDefaults returns c with its zero fields set to the defaults.
func (c LabelsConfig) WithDefaults() LabelsConfig {
	c.Retention = cmp.Or(c.Retention, 1<<30)
	c.MaxAge = cmp.Or(c.MaxAge, 30*24*time.Hour)
	return c
}

// Validate reports the first invalid setting of c, after defaults; path
// names the section in errors.
func (c LabelsConfig) Validate(path string) error {
	switch {
	case c.Retention < 4*maxBlock:
		return fmt.Errorf("%s.retention: must be at least %s, got %s", path, Size(4*maxBlock), c.Retention)
	case c.MaxAge < time.Minute:
		return fmt.Errorf("%s.max_age: must be at least 1m, got %s", path, c.MaxAge)
	}
	return nil
}

// Options are what a Writer or a Labels store is built with besides its
// config. Zero fields take defaults.
type Options struct {
	// Log receives one line per event worth an operator's attention; nil
	// discards.
	Log *slog.Logger
	// Metrics, when set, receives the series. They are registered once, so
	// give each Writer and Labels a set of its own (or one where nothing
	// else registers the same names) and unregister it after Close.
	Metrics *metrics.Set
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Replica names the gateway replica that captures, in each record and
	// in the subjects it publishes on; default "local".
	Replica string
}

func (o Options) withDefaults() Options {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Metrics == nil {
		o.Metrics = metrics.NewSet() // nobody exports it
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	o.Replica = cmp.Or(o.Replica, "local")
	return o
}

// Size is a byte count that decodes from YAML as a plain integer or a string
// with a unit: "512", "64KiB", "16MiB", "1GiB", "10MB" (kB, MB, GB, TB are
// powers of 1000; KiB, MiB, GiB, TiB powers of 1024). It is the same syntax
// as the gateway's sizes. A Size is a plain value, safe for concurrent use.
type Size int64

var sizeUnits = map[string]int64{
	"": 1, "B": 1,
	"kB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12,
	"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40,
}

// UnmarshalText decodes a size; negative and overflowing values are errors.
func (s *Size) UnmarshalText(text []byte) error {
	str := string(text)
	end := strings.IndexFunc(str, func(r rune) bool { return r < '0' || r > '9' })
	if end < 0 {
		end = len(str)
	}
	digits, unit := str[:end], strings.TrimPrefix(str[end:], " ")
	mult, ok := sizeUnits[unit]
	if digits == "" || !ok {
		return fmt.Errorf("invalid size %q: want a whole number of bytes with an optional unit: B, kB, MB, GB, TB, KiB, MiB, GiB, TiB", str)
	}
	n, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || n > math.MaxInt64/mult {
		return fmt.Errorf("invalid size %q: too large for a 64-bit byte count", str)
	}
	*s = Size(n * mult)
	return nil
}

// MarshalText writes s as UnmarshalText reads it.
func (s Size) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// String formats s in the largest IEC unit that divides it exactly ("16MiB"),
// else as a plain byte count.
func (s Size) String() string {
	for _, unit := range []string{"TiB", "GiB", "MiB", "KiB"} {
		if mult := Size(sizeUnits[unit]); s > 0 && s%mult == 0 {
			return strconv.FormatInt(int64(s/mult), 10) + unit
		}
	}
	return strconv.FormatInt(int64(s), 10)
}
