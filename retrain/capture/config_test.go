package capture

import (
	"strings"
	"testing"
	"time"
)

func TestConfigDefaults(t *testing.T) {
	c := Config{Sample: 0.1}.WithDefaults()
	if c.Retention != 1<<30 || c.MaxAge != 168*time.Hour || c.BufferSize != 4096 || c.Sample != 0.1 {
		t.Fatalf("unexpected defaults: %+v", c)
	}
	if err := c.Validate("models.demo.capture"); err != nil {
		t.Fatalf("defaults do not validate: %s", err)
	}
	if err := (Config{}).WithDefaults().Validate("c"); err != nil {
		t.Fatalf("capture off does not validate: %s", err)
	}
	if err := (LabelsConfig{}).WithDefaults().Validate("feedback"); err != nil {
		t.Fatalf("label defaults do not validate: %s", err)
	}
}

func TestConfigValidate(t *testing.T) {
	f := func(change func(*Config), key string) {
		t.Helper()
		c := Config{Sample: 0.5}.WithDefaults()
		change(&c)
		err := c.Validate("models.demo.capture")
		if err == nil || !strings.HasPrefix(err.Error(), "models.demo.capture."+key+":") {
			t.Fatalf("want an error naming %s, got %v", key, err)
		}
	}
	f(func(c *Config) { c.Sample = 1.5 }, "sample")
	f(func(c *Config) { c.Sample = -0.1 }, "sample")
	f(func(c *Config) { c.Retention = 1 << 19 }, "retention")
	f(func(c *Config) { c.MaxAge = time.Second }, "max_age")
	f(func(c *Config) { c.BufferSize = -1 }, "buffer_size")
}

func TestSize(t *testing.T) {
	f := func(in string, want Size, str string) {
		t.Helper()
		var s Size
		if err := s.UnmarshalText([]byte(in)); err != nil {
			t.Fatalf("%q: %s", in, err)
		}
		if s != want || s.String() != str {
			t.Fatalf("%q: got %d (%s), want %d (%s)", in, s, s, want, str)
		}
	}
	f("512", 512, "512")
	f("16MiB", 16<<20, "16MiB")
	f("1 GiB", 1<<30, "1GiB")
	f("10MB", 10e6, "10000000")
	f("64KiB", 64<<10, "64KiB")
	for _, bad := range []string{"", "-1", "1.5MiB", "12 mb", "MiB", "99999999999TiB"} {
		var s Size
		if err := s.UnmarshalText([]byte(bad)); err == nil {
			t.Fatalf("%q: want an error, got %d", bad, s)
		}
	}
}
