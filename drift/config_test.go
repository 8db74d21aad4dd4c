package drift

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestConfigWithDefaults(t *testing.T) {
	f := func(in, want Config) {
		t.Helper()
		if got := in.WithDefaults(); !reflect.DeepEqual(got, want) {
			t.Fatalf("WithDefaults of %+v:\ngot  %+v\nwant %+v", in, got, want)
		}
	}
	defaults := Config{
		Sample: 1, Window: WindowConfig{Rows: 1000}, MinRows: 100, Reservoir: 1000, Rule: RuleFamilyWise,
		FalseAlarmRate: 0.05, DriftShare: 0.5, Consecutive: 2, Cooldown: 10 * time.Minute,
	}
	f(Config{}, defaults)
	// Windows by time keep no row count.
	byTime := defaults
	byTime.Window = WindowConfig{Every: time.Minute}
	f(Config{Window: WindowConfig{Every: time.Minute}}, byTime)
	// A row window smaller than the default min_rows is judged whole.
	small := defaults
	small.Window, small.MinRows = WindowConfig{Rows: 50}, 50
	f(Config{Window: WindowConfig{Rows: 50}}, small)
	// Set fields are kept, and so are the method, thresholds and features,
	// which have no defaults here.
	set := Config{
		Disabled: true, Input: "x", Sample: 0.25, Window: WindowConfig{Rows: 500}, MinRows: 10, Reservoir: 20,
		Method: MethodPSI, Threshold: Threshold{Auto: true}, Rule: RuleShare, FalseAlarmRate: 0.01, DriftShare: 0.75, Consecutive: 3,
		Cooldown: time.Second, Features: map[string]FeatureConfig{"a": {Ignore: true}},
	}
	f(set, set)
}

func TestConfigValidate(t *testing.T) {
	f := func(c Config, want string) {
		t.Helper()
		c = c.WithDefaults()
		err := c.Validate("models.demo.drift")
		if want == "" {
			if err != nil {
				t.Fatalf("%+v: unexpected error: %s", c, err)
			}
			return
		}
		if err == nil || !strings.Contains(err.Error(), "models.demo.drift."+want) {
			t.Fatalf("%+v: got error %v, want one naming models.demo.drift.%s", c, err, want)
		}
	}
	f(Config{}, "")
	f(Config{Window: WindowConfig{Every: time.Minute}}, "")
	f(Config{Window: WindowConfig{Rows: 50}}, "")
	f(Config{Threshold: Threshold{Auto: true}}, "")
	f(Config{Sample: 1.5}, "sample: must be in (0, 1], got 1.5")
	f(Config{Sample: -0.5}, "sample:")
	f(Config{Window: WindowConfig{Rows: -1}}, "window: rows and every must not be negative")
	f(Config{Window: WindowConfig{Every: -time.Second}}, "window:")
	f(Config{Window: WindowConfig{Rows: 10, Every: time.Minute}}, "window: set rows or every, not both")
	f(Config{MinRows: -1}, "min_rows: must be at least 1")
	f(Config{MinRows: 1001}, "min_rows: 1001 is more than window.rows (1000)")
	f(Config{Window: WindowConfig{Rows: 50}, MinRows: 51}, "min_rows: 51 is more than window.rows (50)")
	f(Config{Window: WindowConfig{Every: time.Minute}, MinRows: 1_000_000}, "") // no row bound on a time window
	f(Config{Reservoir: 9}, "reservoir: must be at least 10, got 9")
	f(Config{FalseAlarmRate: 0.6}, "false_alarm_rate: must be in (0, 0.5], got 0.6")
	f(Config{FalseAlarmRate: -0.01}, "false_alarm_rate:")
	// A zero drift_share or consecutive takes the default; beyond that:
	f(Config{DriftShare: 1.5}, "drift_share: must be in (0, 1], got 1.5")
	f(Config{DriftShare: -0.1}, "drift_share:")
	f(Config{DriftShare: 1}, "")
	f(Config{Consecutive: -1}, "consecutive: must be at least 1, got -1")
	f(Config{Cooldown: -time.Second}, "cooldown: must not be negative")
	// Auto thresholds of windows by time are calibrated per size as they come.
	f(Config{Window: WindowConfig{Every: time.Minute}, Threshold: Threshold{Auto: true}}, "")
	f(Config{Window: WindowConfig{Every: time.Minute}, Features: map[string]FeatureConfig{"age": {Threshold: Threshold{Auto: true}}}}, "")
	f(Config{Window: WindowConfig{Every: time.Minute}, Features: map[string]FeatureConfig{"age": {Threshold: Threshold{Value: 0.3}}}}, "")
}

func TestThresholdText(t *testing.T) {
	f := func(text string, want Threshold, wantErr bool) {
		t.Helper()
		var got Threshold
		err := got.UnmarshalText([]byte(text))
		if wantErr {
			if err == nil || !strings.Contains(err.Error(), "invalid drift threshold") {
				t.Fatalf("UnmarshalText(%q): got %+v, error %v; want an invalid drift threshold error", text, got, err)
			}
			return
		}
		if err != nil || got != want {
			t.Fatalf("UnmarshalText(%q) = %+v, %v; want %+v", text, got, err, want)
		}
		back, err := got.MarshalText()
		if err != nil || string(back) != text {
			t.Fatalf("MarshalText(%+v) = %q, %v; want %q", got, back, err, text)
		}
	}
	f("auto", Threshold{Auto: true}, false)
	f("0.2", Threshold{Value: 0.2}, false)
	f("1e-06", Threshold{Value: 1e-6}, false)
	f("3", Threshold{Value: 3}, false)
	f("-1", Threshold{}, true)
	f("0", Threshold{}, true)
	f("NaN", Threshold{}, true)
	f("x", Threshold{}, true)
	f("", Threshold{}, true)
	f("Auto", Threshold{}, true)
}

func TestMethodText(t *testing.T) {
	f := func(text string, wantErr bool) {
		t.Helper()
		var m Method
		err := m.UnmarshalText([]byte(text))
		if wantErr {
			if err == nil || !strings.Contains(err.Error(), `unknown drift method "`+text+`"`) {
				t.Fatalf("UnmarshalText(%q): got %q, error %v; want an unknown drift method error", text, m, err)
			}
			return
		}
		if err != nil || string(m) != text {
			t.Fatalf("UnmarshalText(%q) = %q, %v", text, m, err)
		}
	}
	for _, name := range []string{"", "psi", "jensen_shannon", "wasserstein", "ks", "hellinger", "chi_square", "linf"} {
		f(name, false)
	}
	f("kl", true)
	f("KS", true)
	f("chi-square", true)
}

func TestDefaultMethod(t *testing.T) {
	f := func(k Kind, rows int, want Method) {
		t.Helper()
		if got := defaultMethod(k, rows); got != want {
			t.Fatalf("defaultMethod(%s, %d) = %s, want %s", k, rows, got, want)
		}
		if !want.validFor(k) {
			t.Fatalf("the default %s is not valid for %s", want, k)
		}
	}
	// Tests up to 1000 rows, distances beyond, as Evidently chooses.
	f(Numeric, 100, MethodKS)
	f(Numeric, 1000, MethodKS)
	f(Numeric, 1001, MethodWasserstein)
	f(Categorical, 1000, MethodChiSquare)
	f(Categorical, 1001, MethodJensenShannon)
	for m, want := range map[Method]float64{MethodWasserstein: 0.1, MethodJensenShannon: 0.1, MethodPSI: 0.2, MethodHellinger: 0.15, MethodLInfinity: 0.1} {
		if got := m.defaultThreshold(); got != want {
			t.Fatalf("%s: default threshold %v, want %v", m, got, want)
		}
	}
}

// TestWindowConfigJSON checks that the drift report's window speaks the
// config file's keys, with the period as a duration string, and reads back.
func TestWindowConfigJSON(t *testing.T) {
	f := func(w WindowConfig, want string) {
		t.Helper()
		got, err := json.Marshal(Report{Window: w})
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(got), `"window":`+want+`,`) {
			t.Fatalf("report of %+v: %s, want window %s", w, got, want)
		}
		var back WindowConfig
		if err := json.Unmarshal([]byte(want), &back); err != nil || back != w {
			t.Fatalf("%s reads back as %+v (%v), want %+v", want, back, err, w)
		}
	}
	f(WindowConfig{Rows: 1000}, `{"rows":1000}`)
	f(WindowConfig{Every: 90 * time.Second}, `{"every":"1m30s"}`)
}
