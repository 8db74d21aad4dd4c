package batchjob

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/schollz/progressbar/v3"

	"github.com/infergate/infergate/drift"
	"github.com/infergate/infergate/retrain/table"
)

// windowsLevel is the level of the test whether more windows drifted than
// the rule's false alarm rate explains, and windowsMargin how many times
// that rate the share of drifted windows must also reach.
const (
	windowsLevel  = 0.01
	windowsMargin = 2
)

// Validation is the drift report of a file: how its windows judged, and
// how far the whole of it sits from the reference.
type Validation struct {
	File    string `json:"file"`
	Model   string `json:"model"`
	Version string `json:"version"`
	Rows    int64  `json:"rows"`
	// Nulls counts the rows with a null or NaN feature.
	Nulls int64 `json:"rows_with_nulls"`
	// WindowRows is the rows of a window; Windows counts the windows
	// judged, Skipped those under min_rows (the file's last), Drifted those
	// that drifted.
	WindowRows int               `json:"window_rows"`
	Windows    int               `json:"windows"`
	Skipped    int               `json:"windows_skipped"`
	Drifted    int               `json:"windows_drifted"`
	Rule       drift.RuleApplied `json:"rule"`
	// DriftedShare is Drifted over Windows; WindowsPValue the chance of at
	// least Drifted drifted windows of Windows if each drifted with the
	// rule's false alarm rate (1 under the share rule, which states none).
	DriftedShare  float64 `json:"drifted_share"`
	WindowsPValue float64 `json:"windows_p_value"`
	// WindowsTest says how the windows decide the file, or why they do not.
	WindowsTest string `json:"windows_test"`
	// Features are, per input feature, the windows it drifted in and its
	// whole-file effect sizes.
	Features []FeatureReport `json:"features"`
	// FileDrifted says whether the file drifted: more drifted windows than
	// false alarms explain (WindowsPValue below 0.01), or an effect size
	// over its threshold; Reasons say which.
	FileDrifted bool     `json:"drifted"`
	Reasons     []string `json:"reasons,omitempty"`
	// IsJudged is false without a reference: the file was only read.
	IsJudged bool `json:"judged"`
}

// FeatureReport is one feature's part of a Validation.
type FeatureReport struct {
	drift.EffectSize
	DriftedWindows int `json:"drifted_windows"`
}

// Judged reports whether the file was judged against a reference.
func (v *Validation) Judged() bool { return v != nil && v.IsJudged }

// validate reads the whole file: it counts its rows, finds text where a
// number belongs, a null or NaN feature when the job keeps no rejects,
// and judges the file's drift against the reference, if any.
func validate(ctx context.Context, job *Job, p *plan) (*Validation, error) {
	r, err := table.Open(job.In, table.ReadOptions{GroupRows: job.GroupRows})
	if err != nil {
		return nil, err
	}
	defer r.Close()
	if err := r.Select(p.features, nil); err != nil {
		return nil, err
	}
	v := &Validation{File: job.In, Model: job.Model, Version: job.Version, IsJudged: job.Reference != nil}
	var (
		off    *drift.Offline
		window [][]float64
		cfg    = job.Drift.WithDefaults()
	)
	if v.IsJudged {
		if err := checkReference(job, p); err != nil {
			return nil, err
		}
		if off, err = drift.NewOffline(job.Reference, cfg); err != nil {
			return nil, err
		}
		v.WindowRows = cfg.Window.Rows
		if v.WindowRows <= 0 {
			v.WindowRows = 1000 // a window by time has no size a file can follow
		}
		v.Features = make([]FeatureReport, len(p.features))
		window = make([][]float64, 0, v.WindowRows)
	}
	judge := func() error {
		defer func() { window = window[:0] }()
		if len(window) < cfg.MinRows {
			v.Skipped++
			off.Include(window) // its rows still count for the whole file
			return nil
		}
		res, err := off.Judge(window)
		if err != nil {
			return err
		}
		v.Windows++
		v.Rule = res.Rule
		if res.Drifted {
			v.Drifted++
		}
		for i := range v.Features {
			if i < len(res.Features) && res.Features[i].Drifted {
				v.Features[i].DriftedWindows++
			}
		}
		return nil
	}

	bar := newBar(job.Progress, r.Rows(), "validating "+filepath.Base(job.In))
	defer bar.Finish()
	var c table.Chunk
	rows := make([][]float64, 0) // backing rows of window, reused
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		err := r.Next(&c, 8192)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("cannot score: %w", err)
		}
		for i := range c.Rows {
			if col, why := badFeature(&c, i, p); col >= 0 {
				if job.Rejects == "" {
					return nil, fmt.Errorf("cannot score %q: row %d, column %q: %s (pass --rejects FILE to write such rows there and score the rest)",
						job.In, c.Start+int64(i)+1, p.features[col], why)
				}
				v.Nulls++
			}
			if !v.IsJudged {
				continue
			}
			n := len(window)
			if n == len(rows) {
				rows = append(rows, make([]float64, p.width))
			}
			row := rows[n]
			for f := range p.width {
				row[f] = c.Numbers[f][i]
			}
			window = append(window, row)
			if len(window) == v.WindowRows {
				if err := judge(); err != nil {
					return nil, err
				}
			}
		}
		v.Rows += int64(c.Rows)
		bar.Add64(int64(c.Rows))
	}
	if v.Rows == 0 {
		return nil, fmt.Errorf("cannot score %q: it holds no rows", job.In)
	}
	if !v.IsJudged {
		return v, nil
	}
	if len(window) > 0 {
		if err := judge(); err != nil {
			return nil, err
		}
	}
	v.decide(off, cfg)
	return v, nil
}

// decide fills v's effect sizes and verdict.
func (v *Validation) decide(off *drift.Offline, cfg drift.Config) {
	for i, e := range off.EffectSizes() {
		v.Features[i].EffectSize = e
	}
	v.WindowsPValue = 1
	if v.Windows > 0 {
		v.DriftedShare = float64(v.Drifted) / float64(v.Windows)
	}
	switch {
	case v.Rule.Name == drift.RuleShare:
		v.WindowsTest = "not made: the share rule states no false alarm rate"
	case len(v.Rule.Uncontrolled) > 0:
		v.WindowsTest = fmt.Sprintf("not made: features %v are judged by fixed thresholds, whose false alarms the rate does not bound", v.Rule.Uncontrolled)
	default:
		// The reference sample is one draw: every window is compared with
		// the same one, so a clean file's windows drift somewhat more often
		// than the rate. Twice the rate, and more than chance explains,
		// stay clear of that at any file size.
		v.WindowsPValue = binomialTail(v.Windows, v.Drifted, cfg.FalseAlarmRate)
		v.WindowsTest = fmt.Sprintf("drifted when at least %g of the windows drift and chance at the %g rate explains that with p < %g",
			windowsMargin*cfg.FalseAlarmRate, cfg.FalseAlarmRate, windowsLevel)
		if v.DriftedShare >= windowsMargin*cfg.FalseAlarmRate && v.WindowsPValue < windowsLevel {
			v.Reasons = append(v.Reasons, fmt.Sprintf("%d of %d windows of %d rows drifted (%.1f%%), more than the %g false alarm rate explains (p = %.2g)",
				v.Drifted, v.Windows, v.WindowRows, 100*v.DriftedShare, cfg.FalseAlarmRate, v.WindowsPValue))
		}
	}
	for _, f := range v.Features {
		switch {
		case f.PSI > drift.PSIThreshold:
			v.Reasons = append(v.Reasons, fmt.Sprintf("feature %q: PSI %.3f over the whole file, above %g", f.Name, f.PSI, drift.PSIThreshold))
		case f.Wasserstein > drift.WassersteinThreshold:
			v.Reasons = append(v.Reasons, fmt.Sprintf("feature %q: Wasserstein distance %.3f standard deviations over the whole file, above %g", f.Name, f.Wasserstein, drift.WassersteinThreshold))
		}
	}
	v.FileDrifted = len(v.Reasons) > 0
}

// binomialTail returns the chance of at least k successes in n trials of
// chance p.
func binomialTail(n, k int, p float64) float64 {
	if k <= 0 {
		return 1
	}
	lp, lq := math.Log(p), math.Log1p(-p)
	var sum float64
	for i := k; i <= n; i++ {
		lc, _ := math.Lgamma(float64(n + 1))
		a, _ := math.Lgamma(float64(i + 1))
		b, _ := math.Lgamma(float64(n - i + 1))
		sum += math.Exp(lc - a - b + float64(i)*lp + float64(n-i)*lq)
	}
	return min(sum, 1)
}

// checkReference checks that the reference profiles the model's features,
// in the input's order.
func checkReference(job *Job, p *plan) error {
	ref := job.Reference
	if len(ref.Features) != len(job.Features) {
		return fmt.Errorf("cannot judge drift: the reference of version %s profiles %d features, the model takes %d", job.Version, len(ref.Features), len(job.Features))
	}
	for i, f := range ref.Features {
		if f.Name != job.Features[i] {
			return fmt.Errorf("cannot judge drift: the reference's feature %d is %q, the model's %q", i, f.Name, job.Features[i])
		}
	}
	return nil
}

// badFeature returns the first feature of row i of c that is null or not
// a finite number, and why; -1 when none is.
func badFeature(c *table.Chunk, i int, p *plan) (int, string) {
	for f := range p.width {
		switch x := c.Numbers[f][i]; {
		case c.Nulls[f][i]:
			return f, "null"
		case math.IsNaN(x):
			return f, "NaN"
		case math.IsInf(x, 0):
			return f, "not finite"
		}
	}
	return -1, ""
}

// printValidation prints v as a table: the verdict, then one line a
// feature.
func printValidation(w io.Writer, v *Validation) {
	fmt.Fprintf(w, "drift of %s against version %s of %s: %d rows in %d windows of %d rows (%d skipped), %d drifted (%.1f%%) under rule %s at false alarm rate %g\n",
		v.File, v.Version, v.Model, v.Rows, v.Windows, v.WindowRows, v.Skipped, v.Drifted, 100*v.DriftedShare, v.Rule.Name, v.Rule.FalseAlarmRate)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "feature\tdrifted windows\tPSI (> %g)\tWasserstein sd (> %g)\tmissing\t\n", drift.PSIThreshold, drift.WassersteinThreshold)
	for _, f := range v.Features {
		flag := ""
		if f.Drifted {
			flag = "  drifted"
		}
		fmt.Fprintf(tw, "%s\t%d\t%.4f\t%.4f\t%d\t%s\n", f.Name, f.DriftedWindows, f.PSI, f.Wasserstein, f.Missing, flag)
	}
	tw.Flush()
	if v.FileDrifted {
		fmt.Fprintf(w, "the file DRIFTED: %s\n", strings.Join(v.Reasons, "; "))
	} else {
		fmt.Fprintf(w, "the file did not drift\n")
	}
}

// writeJSON writes v to path as indented JSON, through a temporary file.
func writeJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("cannot write %q: %w", path, err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("cannot write %q: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("cannot write %q: %w", path, err)
	}
	return nil
}

// progress is a progress bar of rows.
type progress interface {
	Add64(int64) error
	Finish() error
}

// noProgress draws nothing.
type noProgress struct{}

func (noProgress) Add64(int64) error { return nil }
func (noProgress) Finish() error     { return nil }

// newBar returns a progress bar of rows to w (total -1 when unknown), or
// one that draws nothing when w is nil. The caller finishes it.
func newBar(w io.Writer, total int64, what string) progress {
	if w == nil {
		return noProgress{}
	}
	return progressbar.NewOptions64(total, progressbar.OptionSetWriter(w), progressbar.OptionSetDescription(what),
		progressbar.OptionShowCount(), progressbar.OptionShowIts(), progressbar.OptionSetItsString("rows"),
		progressbar.OptionThrottle(200_000_000), progressbar.OptionSetPredictTime(true), progressbar.OptionFullWidth(),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(w) }))
}
