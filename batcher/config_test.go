package batcher

import (
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	f := func(c Config, want string) {
		t.Helper()
		c = c.WithDefaults()
		err := c.Validate("models.demo.batching")
		switch {
		case want == "" && err != nil:
			t.Fatalf("unexpected error: %v", err)
		case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
			t.Fatalf("got error %v, want one containing %q", err, want)
		}
	}
	f(Config{}, "")
	f(Config{MaxBatchSize: 32, PreferredBatchSizes: []int{8, 32}, MaxQueueDelay: Delay{Duration: time.Millisecond}}, "")
	f(Config{MaxBatchSize: 32, MaxQueueDelay: Delay{Auto: true}, LatencyTarget: 20 * time.Millisecond}, "")

	f(Config{MaxBatchSize: -1}, "models.demo.batching.max_batch_size: must not be negative, got -1")
	f(Config{Instances: -2}, "models.demo.batching.instances: must be at least 1, got -2")
	f(Config{MaxQueueSize: -1}, "models.demo.batching.max_queue_size: must be at least 1")
	f(Config{DefaultTimeout: -time.Second}, "models.demo.batching.default_timeout: must be positive")
	f(Config{PriorityLevels: -1}, "models.demo.batching.priority_levels: must be at least 1")
	f(Config{MaxQueueDelay: Delay{Duration: -time.Millisecond}}, "models.demo.batching.max_queue_delay: must not be negative")
	f(Config{LatencyTarget: -time.Millisecond}, "models.demo.batching.latency_target: must not be negative")
	f(Config{MaxBatchSize: 8, MaxQueueDelay: Delay{Auto: true}}, "models.demo.batching.latency_target: must be set when max_queue_delay is auto")
	f(Config{PreferredBatchSizes: []int{4}}, "models.demo.batching.preferred_batch_sizes: needs max_batch_size")
	f(Config{MaxBatchSize: 8, PreferredBatchSizes: []int{4, 9}}, "preferred_batch_sizes: 9 is outside 1..max_batch_size (8)")
	f(Config{MaxBatchSize: 8, PreferredBatchSizes: []int{0}}, "preferred_batch_sizes: 0 is outside 1..max_batch_size (8)")
}

func TestConfigWithDefaults(t *testing.T) {
	got := Config{MaxBatchSize: 8, Instances: 3}.WithDefaults()
	want := Config{MaxBatchSize: 8, Instances: 3, MaxQueueSize: 1024, DefaultTimeout: 10 * time.Second, PriorityLevels: 1}
	if got.MaxBatchSize != want.MaxBatchSize || got.Instances != want.Instances || got.MaxQueueSize != want.MaxQueueSize ||
		got.DefaultTimeout != want.DefaultTimeout || got.PriorityLevels != want.PriorityLevels {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}

func TestDelayUnmarshalText(t *testing.T) {
	f := func(in string, want Delay, wantErr bool) {
		t.Helper()
		var d Delay
		err := d.UnmarshalText([]byte(in))
		switch {
		case wantErr && err == nil:
			t.Fatalf("%q: got %v, want an error", in, d)
		case wantErr:
			if !strings.Contains(err.Error(), "max_queue_delay") {
				t.Fatalf("%q: error %q does not name the setting", in, err)
			}
		case err != nil:
			t.Fatalf("%q: unexpected error: %v", in, err)
		case d != want:
			t.Fatalf("%q: got %+v, want %+v", in, d, want)
		}
		if err == nil {
			text, _ := d.MarshalText()
			var back Delay
			if err := back.UnmarshalText(text); err != nil || back != d {
				t.Fatalf("%q: round trip through %q gave %+v, %v", in, text, back, err)
			}
		}
	}
	f("auto", Delay{Auto: true}, false)
	f("500us", Delay{Duration: 500 * time.Microsecond}, false)
	f("0s", Delay{}, false)
	f("0", Delay{}, false)
	f("2ms", Delay{Duration: 2 * time.Millisecond}, false)
	f("-1ms", Delay{}, true)
	f("Auto", Delay{}, true)
	f("soon", Delay{}, true)
	f("", Delay{}, true)
	f("10", Delay{}, true)
}
