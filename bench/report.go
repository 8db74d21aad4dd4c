package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// Report is everything one `infergate bench` invocation measured.
type Report struct {
	Command string    `json:"command"`
	Date    time.Time `json:"date"`
	Machine Machine   `json:"machine"`
	// Runs are the load runs in the order they ran.
	Runs []*Result `json:"runs,omitempty"`
	// Compute is the compute ceiling, if one was measured.
	Compute *ComputeResult `json:"compute,omitempty"`
}

// WriteJSON writes v as indented JSON.
func WriteJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("cannot write JSON: %w", err)
	}
	return nil
}

// WriteMarkdown writes r as a Markdown document: where and how it ran, then
// a table of the load runs and one of the compute ceiling.
func (r *Report) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# infergate bench\n\n")
	fmt.Fprintf(&b, "- machine: %s\n", r.Machine)
	if r.Machine.LoadAverage != "" {
		fmt.Fprintf(&b, "- load average at the start: %s\n", r.Machine.LoadAverage)
	}
	fmt.Fprintf(&b, "- date: %s\n", r.Date.UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "- command: `%s`\n\n", r.Command)
	if len(r.Runs) > 0 {
		b.WriteString(ResultsTable(r.Runs))
		b.WriteByte('\n')
	}
	if r.Compute != nil {
		b.WriteString(ComputeTable(r.Compute))
		b.WriteByte('\n')
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// ResultsTable returns a Markdown table with one row per run: throughput,
// latency percentiles of 2xx answers (from the scheduled send time in open
// loop, and the p99 from the actual send time) and errors.
func ResultsTable(results []*Result) string {
	var b strings.Builder
	b.WriteString("| run | mode | conns | target req/s | ok req/s | rows/s | p50 | p90 | p99 | p99.9 | max | p99 from send | errors |\n")
	b.WriteString("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n")
	for _, r := range results {
		target := "—"
		if r.Rate > 0 {
			target = formatCount(r.Rate)
		}
		l := r.Latency
		fromSend := "—"
		if r.SendLatency != nil {
			fromSend = r.SendLatency.P99.String()
		}
		fmt.Fprintf(&b, "| %s | %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			escapeCell(r.Name), r.Mode, r.Connections, target, formatCount(r.OKPerSec), formatCount(r.RowsPerSec),
			l.P50, l.P90, l.P99, l.P999, l.Max, fromSend, escapeCell(r.errorSummary()))
	}
	return b.String()
}

// errorSummary lists the errors as "503: 12 (p99 0.4ms), timeout: 1", or "none";
// the p99 is that of all non-2xx answers.
func (r *Result) errorSummary() string {
	if len(r.Errors) == 0 && r.Unsent == 0 {
		return "none"
	}
	var parts []string
	for _, k := range r.ErrorKeys() {
		part := k + ": " + strconv.FormatInt(r.Errors[k], 10)
		if k[0] >= '0' && k[0] <= '9' && r.ErrorLatency != nil {
			part += " (p99 " + r.ErrorLatency.P99.String()
			if r.ErrorSendLatency != nil {
				part += ", from send " + r.ErrorSendLatency.P99.String()
			}
			part += ")"
		}
		parts = append(parts, part)
	}
	if r.Unsent > 0 {
		parts = append(parts, "unsent: "+strconv.FormatInt(r.Unsent, 10))
	}
	return strings.Join(parts, ", ")
}

// ComputeTable returns a Markdown table of the compute ceiling, one row per
// batch size, the best one in bold.
func ComputeTable(c *ComputeResult) string {
	var b strings.Builder
	on := ""
	if c.Provider != "" {
		on = " on " + c.Provider
	}
	fmt.Fprintf(&b, "Compute ceiling of %s version %s%s (%d at once): best %s rows/s at batch %d.\n\n",
		escapeCell(c.Model), c.Version, on, c.Concurrency, formatCount(c.Best.RowsPerSec), c.Best.Batch)
	b.WriteString("| batch | runs | rows/s | run p50 | run p99 |\n")
	b.WriteString("| ---: | ---: | ---: | ---: | ---: |\n")
	for _, p := range c.Points {
		rows := formatCount(p.RowsPerSec)
		if p.Batch == c.Best.Batch {
			rows = "**" + rows + "**"
		}
		fmt.Fprintf(&b, "| %d | %d | %s | %s | %s |\n", p.Batch, p.Runs, rows, p.Run.P50, p.Run.P99)
	}
	return b.String()
}

// formatCount formats a rate with three significant digits at most after
// the integer part, such as 12345 or 12.3.
func formatCount(v float64) string {
	switch {
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}

// escapeCell keeps text from breaking a Markdown table row.
func escapeCell(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ").Replace(s)
}
