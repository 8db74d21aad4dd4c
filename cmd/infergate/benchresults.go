package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/infergate/infergate/bench"
)

// check is one target of the suite and whether it was met.
type check struct {
	scenario, target, measured string
	met                        bool
}

// section writes a scenario's heading, its setup and its table, and says
// where an open-loop run fell behind its schedule.
func (s *suite) section(title, setup string, runs ...*bench.Result) {
	fmt.Fprintf(&s.md, "## %s\n\n%s\n\n%s\n", title, setup, bench.ResultsTable(runs))
	for _, r := range runs {
		if r.Unsent == 0 {
			continue
		}
		fmt.Fprintf(&s.md, "%s: %d arrivals were still waiting for a free connection when the run ended. Every one of the "+
			"%d connections was busy: the gateway, or the generator sharing its %d cores, fell behind the schedule, and "+
			"the latency from the scheduled time counts that wait (compare the p99 from the actual send).\n\n",
			r.Name, r.Unsent, r.Connections, s.rep.Machine.Cores)
	}
}

func (s *suite) add(c check) { s.checks = append(s.checks, c) }

// ratio checks got/base >= want.
func (s *suite) ratio(scenario string, got, base, want float64) {
	r := 0.0
	if base > 0 {
		r = got / base
	}
	s.add(check{scenario: scenario, target: fmt.Sprintf("≥ %.2f x", want),
		measured: fmt.Sprintf("%.0f / %.0f = %.2f x", got, base, r), met: r >= want})
}

// median checks that the median of sorted ratios is at least want.
func (s *suite) median(scenario string, ratios []float64, want float64) {
	m := ratios[len(ratios)/2]
	s.add(check{scenario: scenario, target: fmt.Sprintf("≥ %.2f x", want), measured: fmt.Sprintf("%.2f x", m), met: m >= want})
}

// atMost checks got <= bound.
func (s *suite) atMost(scenario string, got bench.Millis, bound time.Duration) {
	s.add(check{scenario: scenario, target: "≤ " + bench.Millis(bound).String(), measured: got.String(),
		met: time.Duration(got) <= bound})
}

func (s *suite) svgName() string { return "heavy-curve.svg" }

func (s *suite) writeCurve(sweep []*bench.Result) error {
	f, err := os.Create(filepath.Join(filepath.Dir(s.opts.out), s.svgName()))
	if err != nil {
		return fmt.Errorf("cannot write the latency-throughput plot: %w", err)
	}
	if err := bench.WriteLatencyCurve(f, "heavy model, fixed-delay batching: latency vs throughput", sweep); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// write writes the Markdown results and, beside them, the JSON report.
func (s *suite) write() error {
	var b strings.Builder
	b.WriteString("# infergate benchmark results\n\n")
	fmt.Fprintf(&b, "- machine: %s; load average when the suite started: %s\n", s.rep.Machine, s.rep.Machine.LoadAverage)
	fmt.Fprintf(&b, "- date: %s\n", s.rep.Date.UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "- command: `%s`", s.rep.Command)
	if s.opts.driftPairs == 0 {
		b.WriteString(" (`make bench` runs it with the progress bars shown)")
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "- setup: one process holds the load generator (fasthttp client) and the gateway (on loopback, "+
		"one ONNX Runtime environment, CPU, one intra-op thread per session), so they share the %d cores; "+
		"each run warms up for %s, then measures for %s. Latencies are of 2xx answers unless said otherwise; in open "+
		"loop they run from the scheduled send time for arrivals that found every connection busy (so queueing is not "+
		"hidden), else from the actual send. Raw numbers: [%s](%s).\n\n",
		s.rep.Machine.Cores, s.opts.warmup, s.opts.duration, filepath.Base(s.jsonPath()), filepath.Base(s.jsonPath()))
	met := 0
	for _, c := range s.checks {
		if c.met {
			met++
		}
	}
	fmt.Fprintf(&b, "## Targets: %d of %d met\n\n", met, len(s.checks))
	b.WriteString("| scenario | target | measured | |\n| --- | --- | --- | --- |\n")
	for _, c := range s.checks {
		verdict := "not met"
		if c.met {
			verdict = "met"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", c.scenario, c.target, c.measured, verdict)
	}
	b.WriteString("\n")
	b.WriteString(s.md.String())
	if err := os.WriteFile(s.opts.out, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("cannot write the results: %w", err)
	}
	f, err := os.Create(s.jsonPath())
	if err != nil {
		return fmt.Errorf("cannot write the results: %w", err)
	}
	if err := bench.WriteJSON(f, &s.rep); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "%d of %d targets met; wrote %s\n", met, len(s.checks), s.opts.out)
	return nil
}

func (s *suite) jsonPath() string {
	return strings.TrimSuffix(s.opts.out, filepath.Ext(s.opts.out)) + ".json"
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
