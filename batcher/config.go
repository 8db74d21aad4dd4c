package batcher

import (
	"cmp"
	"fmt"
	"time"
)

// Config configures dynamic batching for one model version. It is the
// model's `batching:` section of the config file. A zero field takes its
// default (see WithDefaults); batching itself is off unless MaxBatchSize is set.
type Config struct {
	// MaxBatchSize is the most rows one batch holds; 0 turns batching off
	// (each request runs alone, still queued and bounded).
	MaxBatchSize int `yaml:"max_batch_size"`
	// PreferredBatchSizes are batch sizes sent at once when the queue can
	// fill one exactly, without waiting for MaxQueueDelay.
	PreferredBatchSizes []int `yaml:"preferred_batch_sizes"`
	// MaxQueueDelay is how long the oldest request may wait for a fuller
	// batch; 0 sends what is there as soon as an instance is free. "auto"
	// turns on adaptive mode, which waits only while LatencyTarget still holds.
	MaxQueueDelay Delay `yaml:"max_queue_delay"`
	// LatencyTarget is the adaptive mode's bound on queue wait plus compute.
	LatencyTarget time.Duration `yaml:"latency_target"`
	// Instances is the number of workers, each owning one session.
	Instances int `yaml:"instances"`
	// MaxQueueSize bounds the requests waiting; beyond it requests are
	// rejected at once (503 with Retry-After).
	MaxQueueSize int `yaml:"max_queue_size"`
	// DefaultTimeout is a request's deadline; a request may lower it with
	// the V2 `timeout` parameter, never raise it.
	DefaultTimeout time.Duration `yaml:"default_timeout"`
	// PriorityLevels is the number of priority levels; a request's
	// `priority` parameter picks one (0 is the lowest), and a higher level
	// always forms batches first.
	PriorityLevels int `yaml:"priority_levels"`
}

// Delay is MaxQueueDelay: a duration, or Auto for adaptive batching.
type Delay struct {
	Duration time.Duration
	Auto     bool
}

// UnmarshalText accepts "auto" or a Go duration such as "500us".
func (d *Delay) UnmarshalText(b []byte) error {
	if string(b) == "auto" {
		*d = Delay{Auto: true}
		return nil
	}
	v, err := time.ParseDuration(string(b))
	if err != nil || v < 0 {
		return fmt.Errorf("invalid max_queue_delay %q: want a non-negative duration such as 500us, or auto", b)
	}
	*d = Delay{Duration: v}
	return nil
}

// MarshalText writes d as UnmarshalText reads it.
func (d Delay) MarshalText() ([]byte, error) {
	return []byte(d.String()), nil
}

// String returns "auto" or the duration.
func (d Delay) String() string {
	if d.Auto {
		return "auto"
	}
	return d.Duration.String()
}

// WithDefaults returns c with its zero fields set to the defaults: one
// instance, 1024 queued requests, a 10s deadline, one priority level.
func (c Config) WithDefaults() Config {
	c.Instances = cmp.Or(c.Instances, 1)
	c.MaxQueueSize = cmp.Or(c.MaxQueueSize, 1024)
	c.DefaultTimeout = cmp.Or(c.DefaultTimeout, 10*time.Second)
	c.PriorityLevels = cmp.Or(c.PriorityLevels, 1)
	return c
}

// Validate reports the first invalid setting of c, after defaults; prefix
// names the section in errors, for example "models.demo.batching".
func (c *Config) Validate(prefix string) error {
	switch {
	case c.MaxBatchSize < 0:
		return fmt.Errorf("%s.max_batch_size: must not be negative, got %d", prefix, c.MaxBatchSize)
	case c.Instances < 1:
		return fmt.Errorf("%s.instances: must be at least 1, got %d", prefix, c.Instances)
	case c.MaxQueueSize < 1:
		return fmt.Errorf("%s.max_queue_size: must be at least 1, got %d", prefix, c.MaxQueueSize)
	case c.DefaultTimeout <= 0:
		return fmt.Errorf("%s.default_timeout: must be positive, got %s", prefix, c.DefaultTimeout)
	case c.PriorityLevels < 1:
		return fmt.Errorf("%s.priority_levels: must be at least 1, got %d", prefix, c.PriorityLevels)
	case c.MaxQueueDelay.Duration < 0:
		return fmt.Errorf("%s.max_queue_delay: must not be negative, got %s", prefix, c.MaxQueueDelay)
	case c.LatencyTarget < 0:
		return fmt.Errorf("%s.latency_target: must not be negative, got %s", prefix, c.LatencyTarget)
	case c.MaxQueueDelay.Auto && c.LatencyTarget == 0:
		return fmt.Errorf("%s.latency_target: must be set when max_queue_delay is auto", prefix)
	case len(c.PreferredBatchSizes) > 0 && c.MaxBatchSize == 0:
		return fmt.Errorf("%s.preferred_batch_sizes: needs max_batch_size, since batching is off without it", prefix)
	}
	for _, n := range c.PreferredBatchSizes {
		if n < 1 || n > c.MaxBatchSize {
			return fmt.Errorf("%s.preferred_batch_sizes: %d is outside 1..max_batch_size (%d)", prefix, n, c.MaxBatchSize)
		}
	}
	return nil
}
