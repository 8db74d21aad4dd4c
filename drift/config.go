package drift

import (
	"cmp"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// Config configures drift monitoring for one model. It is the model's
// `drift:` section of the config file; a zero field takes its default (see
// WithDefaults). Monitoring is on for every version that has a
// reference.json unless Disabled is set.
type Config struct {
	// Disabled turns monitoring off even where a reference profile exists.
	Disabled bool `yaml:"disabled"`
	// Input names the input tensor whose columns are the features; the
	// default is the model's first input.
	Input string `yaml:"input"`
	// Sample is the share of requests observed, in (0, 1]; default 1.
	Sample float64 `yaml:"sample"`
	// Window says when a window closes: after Rows rows, or Every period.
	Window WindowConfig `yaml:"window"`
	// MinRows is the fewest rows a window needs to be judged; default 100,
	// or window.rows when that is smaller.
	MinRows int `yaml:"min_rows"`
	// Reservoir is the number of values per feature a window keeps for the
	// two-sample statistics (KS, Wasserstein); default 1000.
	Reservoir int `yaml:"reservoir"`
	// Method is the statistic that decides for every feature without its
	// own; empty picks by kind and window size (see Method).
	Method Method `yaml:"method"`
	// Threshold is the deciding statistic's threshold, or auto; zero takes
	// the rule's share of FalseAlarmRate for a p-value method, the
	// method's default for a distance.
	Threshold Threshold `yaml:"threshold"`
	// Rule says how the features' verdicts decide a window; default
	// family_wise.
	Rule Rule `yaml:"rule"`
	// FalseAlarmRate is, under family_wise, the chance that a window of
	// unshifted data counts as drifted, which the p-value methods and the
	// auto thresholds share; under share, each one's own. Default 0.05.
	FalseAlarmRate float64 `yaml:"false_alarm_rate"`
	// DriftShare is, under the share rule, the share of drifted features
	// at which a window counts as drifted; default 0.5.
	DriftShare float64 `yaml:"drift_share"`
	// Consecutive is the number of drifted windows in a row that make the
	// version drift, and of clean windows in a row that resolve it; default 2.
	Consecutive int `yaml:"consecutive"`
	// Cooldown is how long after a drift.detected decision no new one is
	// made; default 10m.
	Cooldown time.Duration `yaml:"cooldown"`
	// Features overrides the method or threshold of single features, by name.
	Features map[string]FeatureConfig `yaml:"features"`
	// DisableBinSeries leaves out infergate_drift_bin_rows_total, the
	// counters of rows per reference bin: one series per count of every
	// feature's reference profile (its bins+2 for a numeric feature, 12
	// with the default 10 bins; its categories+1 for a categorical one),
	// the bulk of a version's drift series.
	DisableBinSeries bool `yaml:"disable_bin_series"`
}

// WindowConfig says when a tumbling window closes. Exactly one is set;
// with neither, windows close every 1000 rows.
type WindowConfig struct {
	Rows  int           `yaml:"rows"`
	Every time.Duration `yaml:"every"`
}

// windowJSON is WindowConfig as JSON has it: the keys of the config file,
// the one that is set, and the period as a Go duration string.
type windowJSON struct {
	Rows  int    `json:"rows,omitempty"`
	Every string `json:"every,omitempty"`
}

// MarshalJSON encodes w as {"rows":1000} or {"every":"1m0s"}.
func (w WindowConfig) MarshalJSON() ([]byte, error) {
	wj := windowJSON{Rows: w.Rows}
	if w.Every != 0 {
		wj.Every = w.Every.String()
	}
	return json.Marshal(wj)
}

// UnmarshalJSON decodes what MarshalJSON encodes.
func (w *WindowConfig) UnmarshalJSON(b []byte) error {
	var wj windowJSON
	if err := json.Unmarshal(b, &wj); err != nil {
		return fmt.Errorf("cannot decode a drift window: %w", err)
	}
	*w = WindowConfig{Rows: wj.Rows}
	if wj.Every != "" {
		every, err := time.ParseDuration(wj.Every)
		if err != nil {
			return fmt.Errorf("cannot decode a drift window: every: %w", err)
		}
		w.Every = every
	}
	return nil
}

// FeatureConfig overrides the decision of one feature.
type FeatureConfig struct {
	// Ignore leaves the feature out of decisions (it is still reported).
	Ignore    bool      `yaml:"ignore"`
	Method    Method    `yaml:"method"`
	Threshold Threshold `yaml:"threshold"`
}

// Rule names how the verdicts on a window's features decide the window.
type Rule string

// The decision rules.
const (
	// RuleFamilyWise: a window drifts when any input feature drifts, each
	// p-value method and auto threshold held to an equal part of
	// false_alarm_rate (Bonferroni), so that a window of unshifted data
	// drifts with at most that chance, whatever the number of features.
	RuleFamilyWise Rule = "family_wise"
	// RuleShare: a window drifts when drift_share of the input features
	// drift, each held to false_alarm_rate on its own.
	RuleShare Rule = "share"
	// RuleMMD is reported, not configured: with method mmd the
	// multivariate detector decides, at false_alarm_rate.
	RuleMMD Rule = "mmd"
)

// UnmarshalText accepts one of the rule names.
func (r *Rule) UnmarshalText(b []byte) error {
	switch v := Rule(b); v {
	case "", RuleFamilyWise, RuleShare:
		*r = v
		return nil
	}
	return fmt.Errorf("unknown drift rule %q: want family_wise or share", b)
}

// Method names a deciding statistic.
type Method string

// The deciding statistics. A feature drifts when a distance exceeds its
// threshold, or when a p-value falls below it.
const (
	MethodPSI           Method = "psi"
	MethodJensenShannon Method = "jensen_shannon"
	MethodWasserstein   Method = "wasserstein" // normed by the reference standard deviation
	MethodKS            Method = "ks"          // p-value
	MethodHellinger     Method = "hellinger"
	MethodChiSquare     Method = "chi_square" // p-value
	MethodLInfinity     Method = "linf"
	// MethodMMD decides for the whole version, not per feature: maximum
	// mean discrepancy between the window's rows and the reference's,
	// its p-value from permutations (see MMDResult).
	MethodMMD Method = "mmd"
)

// smallWindow is the window size up to which the default methods are the
// tests (KS, chi-square); beyond it, tests flag differences too small to
// matter, so the defaults are distances, as Evidently chooses.
const smallWindow = 1000

// defaultMethod is the statistic that decides for a feature of kind k in a
// window of rows rows when the config names none.
func defaultMethod(k Kind, rows int) Method {
	switch {
	case k == Categorical && rows <= smallWindow:
		return MethodChiSquare
	case k == Categorical:
		return MethodJensenShannon
	case rows <= smallWindow:
		return MethodKS
	}
	return MethodWasserstein
}

// defaultThreshold returns the threshold of m, a distance, when the
// config gives none.
func (m Method) defaultThreshold() float64 {
	switch m {
	case MethodPSI:
		return 0.2
	case MethodHellinger:
		return 0.15
	}
	return 0.1 // Jensen-Shannon, normed Wasserstein, L-infinity
}

// isPValue reports whether m decides by a p-value falling below the threshold.
func (m Method) isPValue() bool { return m == MethodKS || m == MethodChiSquare }

// validFor reports whether m can judge a feature of kind k.
func (m Method) validFor(k Kind) bool {
	switch m {
	case MethodPSI, MethodJensenShannon, MethodHellinger:
		return true
	case MethodKS, MethodWasserstein:
		return k == Numeric
	case MethodChiSquare, MethodLInfinity:
		return k == Categorical
	}
	return false
}

// UnmarshalText accepts one of the method names.
func (m *Method) UnmarshalText(b []byte) error {
	switch v := Method(b); v {
	case "", MethodPSI, MethodJensenShannon, MethodWasserstein, MethodKS, MethodHellinger, MethodChiSquare, MethodLInfinity, MethodMMD:
		*m = v
		return nil
	}
	return fmt.Errorf("unknown drift method %q: want psi, jensen_shannon, wasserstein, ks, hellinger, chi_square, linf or mmd", b)
}

// Threshold is a fixed threshold, or Auto: calibrated from the reference.
type Threshold struct {
	Value float64
	Auto  bool
}

// UnmarshalText accepts "auto" or a positive number.
func (t *Threshold) UnmarshalText(b []byte) error {
	if string(b) == "auto" {
		*t = Threshold{Auto: true}
		return nil
	}
	v, err := strconv.ParseFloat(string(b), 64)
	if err != nil || !(v > 0) {
		return fmt.Errorf("invalid drift threshold %q: want a positive number or auto", b)
	}
	*t = Threshold{Value: v}
	return nil
}

// MarshalText writes t as UnmarshalText reads it.
func (t Threshold) MarshalText() ([]byte, error) {
	if t.Auto {
		return []byte("auto"), nil
	}
	return strconv.AppendFloat(nil, t.Value, 'g', -1, 64), nil
}

// WithDefaults returns c with its zero fields set to the defaults.
func (c Config) WithDefaults() Config {
	c.Sample = cmp.Or(c.Sample, 1)
	if c.Window.Rows == 0 && c.Window.Every == 0 {
		c.Window.Rows = 1000
	}
	// A row window smaller than the default is judged when full, not never.
	minRows := 100
	if c.Window.Rows > 0 {
		minRows = min(minRows, c.Window.Rows)
	}
	c.MinRows = cmp.Or(c.MinRows, minRows)
	c.Reservoir = cmp.Or(c.Reservoir, 1000)
	c.Rule = cmp.Or(c.Rule, RuleFamilyWise)
	c.FalseAlarmRate = cmp.Or(c.FalseAlarmRate, 0.05)
	c.DriftShare = cmp.Or(c.DriftShare, 0.5)
	c.Consecutive = cmp.Or(c.Consecutive, 2)
	c.Cooldown = cmp.Or(c.Cooldown, 10*time.Minute)
	return c
}

// Validate reports the first invalid setting of c, after defaults; prefix
// names the section in errors, for example "models.demo.drift".
func (c *Config) Validate(prefix string) error {
	switch {
	case !(c.Sample > 0 && c.Sample <= 1):
		return fmt.Errorf("%s.sample: must be in (0, 1], got %g", prefix, c.Sample)
	case c.Window.Rows < 0 || c.Window.Every < 0:
		return fmt.Errorf("%s.window: rows and every must not be negative", prefix)
	case c.Window.Rows > 0 && c.Window.Every > 0:
		return fmt.Errorf("%s.window: set rows or every, not both", prefix)
	case c.MinRows < 1:
		return fmt.Errorf("%s.min_rows: must be at least 1, got %d", prefix, c.MinRows)
	case c.Window.Rows > 0 && c.MinRows > c.Window.Rows:
		return fmt.Errorf("%s.min_rows: %d is more than window.rows (%d), so no window would be judged", prefix, c.MinRows, c.Window.Rows)
	case c.Reservoir < 10:
		return fmt.Errorf("%s.reservoir: must be at least 10, got %d", prefix, c.Reservoir)
	case !(c.FalseAlarmRate > 0 && c.FalseAlarmRate <= 0.5):
		return fmt.Errorf("%s.false_alarm_rate: must be in (0, 0.5], got %g", prefix, c.FalseAlarmRate)
	case !(c.DriftShare > 0 && c.DriftShare <= 1):
		return fmt.Errorf("%s.drift_share: must be in (0, 1], got %g", prefix, c.DriftShare)
	case c.Consecutive < 1:
		return fmt.Errorf("%s.consecutive: must be at least 1, got %d", prefix, c.Consecutive)
	case c.Cooldown < 0:
		return fmt.Errorf("%s.cooldown: must not be negative, got %s", prefix, c.Cooldown)
	}
	return nil
}
