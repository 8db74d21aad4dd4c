package drift

import (
	"fmt"
	"strconv"

	"github.com/VictoriaMetrics/metrics"
)

// MetricHelp is the HELP text of each metric family a Monitor exports, by
// family name, for a /metrics writer that adds HELP lines. It is read-only.
var MetricHelp = map[string]string{
	"infergate_drift_rows_total":            "Rows observed in closed drift windows.",
	"infergate_drift_windows_total":         "Drift windows closed, by result: judged, or skipped (fewer than min_rows rows).",
	"infergate_drift_window_overruns_total": "Times a drift window was due to close while every window buffer still waited for judgement (the open window grew instead).",
	"infergate_drift_decisions_total":       "Drift decisions made, by type: detected, resolved.",
	"infergate_drift_commit_errors_total":   "Failed writes of a drift decision or of the drift state to the state store (retried).",
	"infergate_drift_counts_total":          "Window counts shipped by fleet followers, by result: merged into the leader's window, or refused.",
	"infergate_drift_share":                 "Share (0 to 1) of the features that drifted in the last judged window; absent until a window is judged and after an unjudged one.",
	"infergate_drift_drifted":               "1 while the version is drifted (between drift.detected and drift.resolved), else 0.",
	"infergate_drift_statistic":             "Each drift statistic of a feature in the last judged window (p-values and distances are unitless); absent until a window is judged and after a window that did not judge the feature.",
	"infergate_drift_feature_drifted":       "1 when the feature drifted in the last judged window, else 0; absent when that window did not judge it.",
	"infergate_drift_bin_rows_total":        "Rows that fell in each reference bin of a feature (bin 0 is the underflow bin, the last the overflow or unseen bin), added as windows close.",
}

// monitorMetrics are a monitor's series. With no metrics.Set they go to a
// private one that nobody exports, so the code that updates them has no
// second path. The run goroutine updates them.
type monitorMetrics struct {
	rows           *metrics.Counter
	windowsJudged  *metrics.Counter
	windowsSkipped *metrics.Counter
	overruns       *metrics.Counter
	detected       *metrics.Counter
	resolved       *metrics.Counter
	commitErrors   *metrics.Counter
	countsMerged   *metrics.Counter
	countsRefused  *metrics.Counter
	share          windowGauge
	drifted        *metrics.Gauge
	features       []featureMetrics
}

type featureMetrics struct {
	statistics []windowGauge // in statisticNames order
	drifted    windowGauge
	bins       []*metrics.Counter // empty with Config.DisableBinSeries
}

// windowGauge is a gauge of the last judged window that exists only while
// that window is the last one closed: set registers it, expire removes
// it, so that a scraper finds no value rather than a stale one. It is used
// by one goroutine at a time.
type windowGauge struct {
	set  *metrics.Set
	name string
	g    *metrics.Gauge // nil while expired
}

func (w *windowGauge) setValue(v float64) {
	if w.g == nil {
		w.g = w.set.NewGauge(w.name, nil)
	}
	w.g.Set(v)
}

func (w *windowGauge) expire() {
	if w.g != nil {
		w.set.UnregisterMetric(w.name)
		w.g = nil
	}
}

func newMonitorMetrics(set *metrics.Set, labels string, judges []judge, binSeries bool) monitorMetrics {
	if set == nil {
		set = metrics.NewSet()
	}
	name := func(series, extra string) string {
		all := labels
		if all != "" && extra != "" {
			all += ","
		}
		if all += extra; all == "" {
			return "infergate_drift_" + series
		}
		return "infergate_drift_" + series + "{" + all + "}"
	}
	m := monitorMetrics{
		rows:           set.NewCounter(name("rows_total", "")),
		windowsJudged:  set.NewCounter(name("windows_total", `result="judged"`)),
		windowsSkipped: set.NewCounter(name("windows_total", `result="skipped"`)),
		overruns:       set.NewCounter(name("window_overruns_total", "")),
		detected:       set.NewCounter(name("decisions_total", `type="detected"`)),
		resolved:       set.NewCounter(name("decisions_total", `type="resolved"`)),
		commitErrors:   set.NewCounter(name("commit_errors_total", "")),
		countsMerged:   set.NewCounter(name("counts_total", `result="merged"`)),
		countsRefused:  set.NewCounter(name("counts_total", `result="refused"`)),
		share:          windowGauge{set: set, name: name("share", "")},
		drifted:        set.NewGauge(name("drifted", ""), nil),
	}
	for _, j := range judges {
		feature := fmt.Sprintf("feature=%q", j.profile.Name)
		var fm featureMetrics
		for _, stat := range statisticNames[j.profile.Kind] {
			fm.statistics = append(fm.statistics, windowGauge{set: set, name: name("statistic", feature+`,statistic="`+stat+`"`)})
		}
		fm.drifted = windowGauge{set: set, name: name("feature_drifted", feature)}
		if binSeries {
			for b := range j.profile.Counts {
				fm.bins = append(fm.bins, set.NewCounter(name("bin_rows_total", feature+`,bin="`+strconv.Itoa(b)+`"`)))
			}
		}
		m.features = append(m.features, fm)
	}
	return m
}

// record exports a closed window: its rows and bin counts always, its
// statistics when it was judged. The statistics of an earlier window go
// when a window closes without judging them.
func (m *monitorMetrics) record(w *window, res *WindowResult, judges []judge) {
	m.rows.Add(int(w.rows))
	for i := range w.features {
		if bins := m.features[i].bins; len(bins) > 0 {
			for b, n := range w.features[i].counts {
				bins[b].Add(int(n))
			}
		}
	}
	if !res.Judged {
		m.windowsSkipped.Inc()
		m.expire()
		return
	}
	m.windowsJudged.Inc()
	m.share.setValue(res.Share)
	for i, fr := range res.Features {
		fm := &m.features[i]
		if !fr.Judged {
			fm.expire()
			continue
		}
		for k, stat := range statisticNames[judges[i].profile.Kind] {
			fm.statistics[k].setValue(fr.Statistics[stat])
		}
		fm.drifted.setValue(float64(boolIndex(fr.Drifted)))
	}
}

// expire removes the gauges of the last judged window: a window closed
// without judgement, or the monitor follows and judges none.
func (m *monitorMetrics) expire() {
	m.share.expire()
	for i := range m.features {
		m.features[i].expire()
	}
}

func (fm *featureMetrics) expire() {
	for k := range fm.statistics {
		fm.statistics[k].expire()
	}
	fm.drifted.expire()
}

func (m *monitorMetrics) setDrifted(drifted bool) { m.drifted.Set(float64(boolIndex(drifted))) }

func (m *monitorMetrics) decision(t DecisionType) {
	if t == DriftDetected {
		m.detected.Inc()
	} else {
		m.resolved.Inc()
	}
}
