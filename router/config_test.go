package router

import (
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	f := func(c Config, want string) {
		t.Helper()
		c = c.WithDefaults()
		err := c.Validate("models.demo.routing")
		switch {
		case want == "" && err != nil:
			t.Fatalf("unexpected error: %v", err)
		case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
			t.Fatalf("got error %v, want one containing %q", err, want)
		}
	}
	canary := func(c CanaryConfig) Config {
		if c.Version == "" {
			c.Version = "2"
		}
		return Config{Split: map[string]int{"1": 100}, Canary: &c}
	}
	f(Config{}, "")
	f(Config{Split: map[string]int{"1": 90, "2": 10, "3": 0}, StickyHeader: "x-user-id", Shadow: []Shadow{{"3", 100}}}, "")
	f(canary(CanaryConfig{}), "")
	f(canary(CanaryConfig{StepWeights: []int{1, 5, 25, 50}, MinAgreement: 0.95, MaxAccuracyDrop: 0.02}), "")

	f(Config{Split: map[string]int{"1": 0}}, "models.demo.routing.split: weights must sum to more than 0")
	f(Config{Split: map[string]int{"1": 5, "2": -1}}, "models.demo.routing.split.2: weight must be in 0..1000000, got -1")
	f(Config{Split: map[string]int{"": 5}}, "models.demo.routing.split: a version name must not be empty")
	f(Config{StickyHeader: "x user"}, `models.demo.routing.sticky_header: "x user" is not a header name`)
	f(Config{StickyHeader: "X-Tenant_Id.v2"}, "")
	for _, bad := range []string{"x-user\r\nx-evil: 1", "x-user\n", "x-user\x00", "x:user", "x\tuser", "x-usér", "x(user)", `x"user"`} {
		f(Config{StickyHeader: bad}, "models.demo.routing.sticky_header: "+strconv.Quote(bad)+" is not a header name")
	}
	f(Config{ShadowMaxInFlight: -1}, "models.demo.routing.shadow_max_in_flight: must be at least 1, got -1")
	f(Config{Shadow: []Shadow{{"", 10}}}, "models.demo.routing.shadow[0].version: must be set")
	f(Config{Shadow: []Shadow{{"2", 0}}}, "models.demo.routing.shadow[0].percent: must be in (0, 100], got 0")
	f(Config{Shadow: []Shadow{{"2", 101}}}, "models.demo.routing.shadow[0].percent: must be in (0, 100], got 101")
	f(Config{Shadow: []Shadow{{"2", 10}, {"2", 20}}}, `models.demo.routing.shadow[1].version: "2" is shadowed twice`)

	f(canary(CanaryConfig{Version: "1"}), `models.demo.routing.canary.version: "1" needs another version with weight in split`)
	f(Config{Canary: &CanaryConfig{}}, "models.demo.routing.canary.version: must be set")
	f(canary(CanaryConfig{StepWeight: 5, StepWeights: []int{5}}), "models.demo.routing.canary.step_weights: set step_weight or step_weights, not both")
	f(canary(CanaryConfig{StepWeight: 101}), "models.demo.routing.canary.step_weight: must be in 1..100, got 101")
	f(canary(CanaryConfig{MaxWeight: 120}), "models.demo.routing.canary.max_weight: must be in 1..100, got 120")
	f(canary(CanaryConfig{StepWeights: []int{10, 5}}), "models.demo.routing.canary.step_weights: must rise strictly from 1 or more to max_weight (5), got [10 5]")
	f(canary(CanaryConfig{StepWeights: []int{0, 5}}), "models.demo.routing.canary.step_weights: must rise strictly")
	f(canary(CanaryConfig{StepWeights: []int{10, 20}, MaxWeight: 50}), "models.demo.routing.canary.step_weights: must end at max_weight (50), got [10 20]")
	f(canary(CanaryConfig{Interval: -time.Second}), "models.demo.routing.canary.interval: must be positive, got -1s")
	f(canary(CanaryConfig{Threshold: -1}), "models.demo.routing.canary.threshold: must be at least 1, got -1")
	f(canary(CanaryConfig{MinRequests: -1}), "models.demo.routing.canary.min_requests: must be at least 1, got -1")
	f(canary(CanaryConfig{MaxErrorRate: 1.5}), "models.demo.routing.canary.max_error_rate: must be in [0, 1], got 1.5")
	f(canary(CanaryConfig{MaxLatencyRatio: -2}), "models.demo.routing.canary.max_latency_ratio: must be positive, got -2")
	f(canary(CanaryConfig{MinAgreement: 2}), "models.demo.routing.canary.min_agreement: must be in [0, 1], got 2")
	f(canary(CanaryConfig{AgreementPercent: 200}), "models.demo.routing.canary.agreement_percent: must be in (0, 100], got 200")
	f(canary(CanaryConfig{MaxAccuracyDrop: -0.1}), "models.demo.routing.canary.max_accuracy_drop: must be in [0, 1], got -0.1")
}

func TestConfigWithDefaults(t *testing.T) {
	c := Config{Split: map[string]int{"1": 1}, Canary: &CanaryConfig{Version: "2"}}.WithDefaults()
	if c.ShadowMaxInFlight != 64 {
		t.Fatalf("shadow_max_in_flight: got %d, want 64", c.ShadowMaxInFlight)
	}
	want := CanaryConfig{Version: "2", StepWeight: 10, MaxWeight: 50, Interval: time.Minute, Threshold: 5,
		MinRequests: 20, MaxErrorRate: 0.01, MaxLatencyRatio: 1.5, AgreementPercent: 10}
	if got := *c.Canary; !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	steps := CanaryConfig{Version: "2", StepWeights: []int{5, 30}}.WithDefaults()
	if steps.StepWeight != 0 || steps.MaxWeight != 30 {
		t.Fatalf("with step_weights: got step_weight %d, max_weight %d; want 0 and 30", steps.StepWeight, steps.MaxWeight)
	}
}

func TestConfigJSON(t *testing.T) {
	// What GET answers, PUT takes back: durations as Go duration strings.
	c := Config{Split: map[string]int{"1": 90, "2": 10}, StickyHeader: "x-user-id", Shadow: []Shadow{{"3", 12.5}},
		Canary: &CanaryConfig{Version: "2", StepWeights: []int{5, 50}, Interval: 90 * time.Second}}.WithDefaults()
	data, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), `"interval":"1m30s"`) {
		t.Fatalf("the interval is not a duration string: %s", data)
	}
	var back Config
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatalf("cannot decode what was encoded: %v\n%s", err, data)
	}
	if !reflect.DeepEqual(back, c) {
		t.Fatalf("round trip through %s\ngot  %+v\nwant %+v", data, back, c)
	}
	// So does the canary's state, whose config is a CanaryConfig.
	state := Canary{Config: *c.Canary, Phase: PhaseProgressing}
	if data, err = json.Marshal(state); err != nil || !strings.Contains(string(data), `"interval":"1m30s"`) {
		t.Fatalf("canary state: %v %s", err, data)
	}

	f := func(data, want string) {
		t.Helper()
		var c Config
		err := json.Unmarshal([]byte(data), &c)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("decoding %s: got error %v, want one containing %q", data, err, want)
		}
	}
	f(`{"split":{"1":1.9,"2":0.5}}`, "split.1: a weight must be a whole number in 0..1000000, got 1.9")
	f(`{"split":{"1":1,"2":0.5}}`, "split.2: a weight must be a whole number in 0..1000000, got 0.5")
	f(`{"split":{"1":1e3}}`, "split.1: a weight must be a whole number in 0..1000000, got 1e3")
	f(`{"split":{"1":"7"}}`, `split.1: a weight must be a whole number in 0..1000000, got "7"`)
	f(`{"split":{"1":null}}`, "split.1: a weight must be a whole number in 0..1000000, got null")
	f(`{"split":{"1":99999999999999999999}}`, "split.1: a weight must be a whole number")
	f(`{"split":{"1":0x10}}`, "invalid character 'x'")
	f(`{"split":{"1":1_000}}`, "invalid character '_'")
	f(`{"splt":{"1":1}}`, `unknown field "splt"`)
	f(`{"canary":{"version":"2","intervl":"1m"}}`, `unknown field "intervl"`)
	f(`{"canary":{"version":"2","interval":60000000000}}`, `interval: want a Go duration such as "30s" or "1m", got 60000000000`)
	f(`{"canary":{"version":"2","interval":"soon"}}`, `interval: want a Go duration such as "30s" or "1m", got "soon"`)
	f(`{"canary":{"version":"2","step_weights":[5,50.5]}}`, "canary.step_weights")
}
