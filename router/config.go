package router

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// maxSplitWeight bounds a split weight so that the scaling done by
// Canary.Apply and the bucket arithmetic of NewTable cannot overflow.
const maxSplitWeight = 1_000_000

// Config is a model's `routing:` section: how its traffic is split across
// versions, mirrored to shadows and shifted by a canary. A zero field takes
// its default (see WithDefaults). The JSON names and values match the YAML
// keys and values (durations as Go duration strings such as "30s"), so the
// admin API and the state store speak the config file's language, both
// ways.
type Config struct {
	// Split maps a version to its weight; a version's share of the traffic
	// is its weight over the sum of all weights. A zero weight keeps the
	// version in the table but sends it nothing. An empty Split leaves the
	// choice to the gateway, which fills it before building a Table.
	Split map[string]int `yaml:"split" json:"split,omitempty"`
	// StickyHeader names a request header whose value keeps a caller on one
	// version for as long as the split is unchanged; a request without it
	// is split at random.
	StickyHeader string `yaml:"sticky_header" json:"sticky_header,omitempty"`
	// Shadow lists the versions that get a copy of a share of the traffic
	// after the primary has answered.
	Shadow []Shadow `yaml:"shadow" json:"shadow,omitempty"`
	// ShadowMaxInFlight bounds the copies in flight per shadow version;
	// beyond it copies are dropped, so shadows never queue against the
	// primary. The default is 64.
	ShadowMaxInFlight int `yaml:"shadow_max_in_flight" json:"shadow_max_in_flight,omitempty"`
	// Canary, when set, moves traffic step by step to a new version while
	// its metrics hold up against the split's versions.
	Canary *CanaryConfig `yaml:"canary" json:"canary,omitempty"`
}

// Shadow is one version that is mirrored a share of the traffic.
type Shadow struct {
	// Version is the model version that receives the copies.
	Version string `yaml:"version" json:"version"`
	// Percent is the share of requests copied to it, in (0, 100].
	Percent float64 `yaml:"percent" json:"percent"`
}

// CanaryConfig is a model's `canary:` section: a Flagger-style analysis
// that checks, once per Interval, the canary's metrics against those of
// the split's versions (the primary), then advances, holds, promotes or
// rolls back. A zero field takes its default (see WithDefaults).
type CanaryConfig struct {
	// Version is the model version under test.
	Version string `yaml:"version" json:"version"`
	// StepWeight is how many percent the canary's weight grows per passed
	// interval, up to MaxWeight. The default is 10.
	StepWeight int `yaml:"step_weight" json:"step_weight,omitempty"`
	// StepWeights, instead of StepWeight, lists the weights in order, for
	// example [1, 5, 25, 50].
	StepWeights []int `yaml:"step_weights" json:"step_weights,omitempty"`
	// MaxWeight is the canary's last weight before promotion, in percent.
	// The default is 50; with StepWeights it is the last of them.
	MaxWeight int `yaml:"max_weight" json:"max_weight,omitempty"`
	// Interval is the time between analyses. The default is 1m.
	Interval time.Duration `yaml:"interval" json:"interval,omitempty"`
	// Threshold is the number of failed analyses that rolls the canary
	// back; failures add up over the whole run, so a flapping canary is
	// rolled back too. The default is 5.
	Threshold int `yaml:"threshold" json:"threshold,omitempty"`
	// MinRequests is the number of canary requests an interval needs
	// before its checks count; with fewer the analysis holds, neither
	// passing nor failing. The same bound applies to agreement samples and
	// to labeled requests. The default is 20.
	MinRequests int `yaml:"min_requests" json:"min_requests,omitempty"`
	// MaxErrorRate is the highest share of canary requests that may fail,
	// in [0, 1]. The default is 0.01; to demand no errors at all set a
	// tiny rate such as 1e-9, since 0 means the default.
	MaxErrorRate float64 `yaml:"max_error_rate" json:"max_error_rate,omitempty"`
	// MaxLatencyRatio is how many times the primary's p99 latency the
	// canary's may reach. The default is 1.5.
	MaxLatencyRatio float64 `yaml:"max_latency_ratio" json:"max_latency_ratio,omitempty"`
	// MinAgreement, when set, is the least share of sampled requests on
	// which the canary's top class matches the primary's, in (0, 1].
	// It is off by default, since only classifiers have a top class.
	MinAgreement float64 `yaml:"min_agreement" json:"min_agreement,omitempty"`
	// AgreementPercent is the share of the primary's requests mirrored to
	// the canary to measure agreement, in (0, 100]. It matters only with
	// MinAgreement, and its default is 10.
	AgreementPercent float64 `yaml:"agreement_percent" json:"agreement_percent,omitempty"`
	// MaxAccuracyDrop, when set, is how far the canary's accuracy on
	// labeled requests may fall below the primary's, in (0, 1]. The check
	// runs only in intervals with at least MinRequests labels for both.
	MaxAccuracyDrop float64 `yaml:"max_accuracy_drop" json:"max_accuracy_drop,omitempty"`
}

// WithDefaults returns c with its zero fields set to the defaults, its
// canary's included.
func (c Config) WithDefaults() Config {
	c.ShadowMaxInFlight = cmp.Or(c.ShadowMaxInFlight, 64)
	if c.Canary != nil {
		canary := c.Canary.WithDefaults()
		c.Canary = &canary
	}
	return c
}

// Validate reports the first invalid setting of c, after defaults; path
// names the section in errors, for example "models.demo.routing".
func (c *Config) Validate(path string) error {
	total := 0
	// Sorted, so that a config with two mistakes always names the same one.
	for _, v := range slices.Sorted(maps.Keys(c.Split)) {
		w := c.Split[v]
		switch {
		case v == "":
			return fmt.Errorf("%s.split: a version name must not be empty", path)
		case w < 0 || w > maxSplitWeight:
			return fmt.Errorf("%s.split.%s: weight must be in 0..%d, got %d", path, v, maxSplitWeight, w)
		}
		total += w
	}
	if len(c.Split) > 0 && total == 0 {
		return fmt.Errorf("%s.split: weights must sum to more than 0", path)
	}
	if c.StickyHeader != "" && !isToken(c.StickyHeader) {
		return fmt.Errorf("%s.sticky_header: %q is not a header name: use letters, digits and !#$%%&'*+-.^_`|~", path, c.StickyHeader)
	}
	if c.ShadowMaxInFlight < 1 {
		return fmt.Errorf("%s.shadow_max_in_flight: must be at least 1, got %d", path, c.ShadowMaxInFlight)
	}
	for i, s := range c.Shadow {
		p := fmt.Sprintf("%s.shadow[%d]", path, i)
		switch {
		case s.Version == "":
			return fmt.Errorf("%s.version: must be set", p)
		case !(s.Percent > 0 && s.Percent <= 100):
			return fmt.Errorf("%s.percent: must be in (0, 100], got %g", p, s.Percent)
		case slices.ContainsFunc(c.Shadow[:i], func(o Shadow) bool { return o.Version == s.Version }):
			return fmt.Errorf("%s.version: %q is shadowed twice", p, s.Version)
		}
	}
	if c.Canary == nil {
		return nil
	}
	if err := c.Canary.Validate(path + ".canary"); err != nil {
		return err
	}
	if len(c.Split) > 0 && total == c.Split[c.Canary.Version] {
		return fmt.Errorf("%s.canary.version: %q needs another version with weight in split to compare against", path, c.Canary.Version)
	}
	return nil
}

// WithDefaults returns c with its zero fields set to the defaults
// documented on each field.
func (c CanaryConfig) WithDefaults() CanaryConfig {
	if len(c.StepWeights) == 0 {
		c.StepWeight = cmp.Or(c.StepWeight, 10)
		c.MaxWeight = cmp.Or(c.MaxWeight, 50)
	} else {
		c.MaxWeight = cmp.Or(c.MaxWeight, c.StepWeights[len(c.StepWeights)-1])
	}
	c.Interval = cmp.Or(c.Interval, time.Minute)
	c.Threshold = cmp.Or(c.Threshold, 5)
	c.MinRequests = cmp.Or(c.MinRequests, 20)
	c.MaxErrorRate = cmp.Or(c.MaxErrorRate, 0.01)
	c.MaxLatencyRatio = cmp.Or(c.MaxLatencyRatio, 1.5)
	c.AgreementPercent = cmp.Or(c.AgreementPercent, 10)
	return c
}

// Validate reports the first invalid setting of c, after defaults; path
// names the section in errors, for example "models.demo.routing.canary".
func (c *CanaryConfig) Validate(path string) error {
	switch {
	case c.Version == "":
		return fmt.Errorf("%s.version: must be set", path)
	case c.StepWeight != 0 && len(c.StepWeights) > 0:
		return fmt.Errorf("%s.step_weights: set step_weight or step_weights, not both", path)
	case c.StepWeight < 0 || c.StepWeight > 100:
		return fmt.Errorf("%s.step_weight: must be in 1..100, got %d", path, c.StepWeight)
	case c.MaxWeight < 1 || c.MaxWeight > 100:
		return fmt.Errorf("%s.max_weight: must be in 1..100, got %d", path, c.MaxWeight)
	case c.Interval <= 0:
		return fmt.Errorf("%s.interval: must be positive, got %s", path, c.Interval)
	case c.Threshold < 1:
		return fmt.Errorf("%s.threshold: must be at least 1, got %d", path, c.Threshold)
	case c.MinRequests < 1:
		return fmt.Errorf("%s.min_requests: must be at least 1, got %d", path, c.MinRequests)
	case !inRange(c.MaxErrorRate, 0, 1):
		return fmt.Errorf("%s.max_error_rate: must be in [0, 1], got %g", path, c.MaxErrorRate)
	case !(c.MaxLatencyRatio > 0) || math.IsInf(c.MaxLatencyRatio, 1):
		return fmt.Errorf("%s.max_latency_ratio: must be positive, got %g", path, c.MaxLatencyRatio)
	case !inRange(c.MinAgreement, 0, 1):
		return fmt.Errorf("%s.min_agreement: must be in [0, 1], got %g", path, c.MinAgreement)
	case !(c.AgreementPercent > 0 && c.AgreementPercent <= 100):
		return fmt.Errorf("%s.agreement_percent: must be in (0, 100], got %g", path, c.AgreementPercent)
	case !inRange(c.MaxAccuracyDrop, 0, 1):
		return fmt.Errorf("%s.max_accuracy_drop: must be in [0, 1], got %g", path, c.MaxAccuracyDrop)
	}
	prev := 0
	for _, w := range c.StepWeights {
		if w <= prev || w > c.MaxWeight {
			return fmt.Errorf("%s.step_weights: must rise strictly from 1 or more to max_weight (%d), got %v", path, c.MaxWeight, c.StepWeights)
		}
		prev = w
	}
	if prev != c.MaxWeight && len(c.StepWeights) > 0 {
		return fmt.Errorf("%s.step_weights: must end at max_weight (%d), got %v", path, c.MaxWeight, c.StepWeights)
	}
	return nil
}

// weightAt returns the canary's weight at step i of its schedule, and
// whether that step is the last before promotion.
func (c *CanaryConfig) weightAt(i int) (weight int, last bool) {
	if len(c.StepWeights) > 0 {
		i = min(i, len(c.StepWeights)-1)
		return c.StepWeights[i], i == len(c.StepWeights)-1
	}
	weight = min((i+1)*c.StepWeight, c.MaxWeight)
	return weight, weight == c.MaxWeight
}

// inRange reports whether x is a number in [lo, hi]; NaN is not.
func inRange(x, lo, hi float64) bool {
	return x >= lo && x <= hi
}

// isToken reports whether s is an HTTP token (RFC 9110, section 5.6.2), the
// syntax of a header name.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := range len(s) {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// UnmarshalJSON decodes c strictly: an unknown key is an error, and a split
// weight must be a whole number (1.9 is refused, not truncated into 1), an
// error that names its version.
func (c *Config) UnmarshalJSON(data []byte) error {
	type plain Config // without methods, so that decoding it does not recurse
	var wire struct {
		plain
		Split map[string]json.RawMessage `json:"split"`
	}
	if err := decodeJSON(data, &wire); err != nil {
		return err
	}
	*c = Config(wire.plain)
	c.Split = nil
	if wire.Split == nil {
		return nil
	}
	c.Split = make(map[string]int, len(wire.Split))
	for _, v := range slices.Sorted(maps.Keys(wire.Split)) {
		// The raw value is valid JSON, so Atoi takes exactly its integers.
		w, err := strconv.Atoi(string(wire.Split[v]))
		if err != nil {
			return fmt.Errorf("split.%s: a weight must be a whole number in 0..%d, got %s", v, maxSplitWeight, wire.Split[v])
		}
		c.Split[v] = w
	}
	return nil
}

// MarshalJSON encodes c with its interval as a Go duration string ("1m0s"),
// as the config file and UnmarshalJSON take it.
func (c CanaryConfig) MarshalJSON() ([]byte, error) {
	type plain CanaryConfig
	wire := struct {
		plain
		Interval string `json:"interval,omitempty"`
	}{plain: plain(c)}
	if c.Interval != 0 {
		wire.Interval = c.Interval.String()
	}
	return json.Marshal(wire)
}

// UnmarshalJSON decodes c strictly: an unknown key is an error, and the
// interval is a Go duration string such as "30s" (a number of nanoseconds
// is refused, as in the config file).
func (c *CanaryConfig) UnmarshalJSON(data []byte) error {
	type plain CanaryConfig
	var wire struct {
		plain
		Interval json.RawMessage `json:"interval"`
	}
	if err := decodeJSON(data, &wire); err != nil {
		return err
	}
	*c = CanaryConfig(wire.plain)
	c.Interval = 0
	if len(wire.Interval) == 0 || string(wire.Interval) == "null" {
		return nil
	}
	var text string
	err := json.Unmarshal(wire.Interval, &text)
	if err == nil {
		c.Interval, err = time.ParseDuration(text)
	}
	if err != nil {
		return fmt.Errorf("interval: want a Go duration such as \"30s\" or \"1m\", got %s", wire.Interval)
	}
	return nil
}

// decodeJSON decodes the one JSON value data into dst, refusing keys that
// dst has no field for. The wire structs above embed the config they
// decode, and encoding/json names embedded structs in a type error's path;
// decodeJSON takes those steps out, so the path reads as the keys do
// (canary.step_weights, not plain.canary.plain.step_weights).
func decodeJSON(data []byte, dst any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	err := dec.Decode(dst)
	if te := (*json.UnmarshalTypeError)(nil); errors.As(err, &te) {
		te.Field = strings.Join(slices.DeleteFunc(strings.Split(te.Field, "."), func(step string) bool { return step == "plain" }), ".")
	}
	return err
}
