package drift

import (
	"fmt"
	"strconv"

	"github.com/VictoriaMetrics/metrics"
)

// monitorMetrics are a monitor's series. With no metrics.Set they go to a
// private one that nobody exports, so the code that updates them has no
// second path.
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
	share          *metrics.Gauge
	drifted        *metrics.Gauge
	features       []featureMetrics
}

type featureMetrics struct {
	statistics []*metrics.Gauge // in statisticNames order
	drifted    *metrics.Gauge
	bins       []*metrics.Counter
}

func newMonitorMetrics(set *metrics.Set, labels string, judges []judge) monitorMetrics {
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
		share:          set.NewGauge(name("share", ""), nil),
		drifted:        set.NewGauge(name("drifted", ""), nil),
	}
	for _, j := range judges {
		feature := fmt.Sprintf("feature=%q", j.profile.Name)
		var fm featureMetrics
		for _, stat := range statisticNames[j.profile.Kind] {
			fm.statistics = append(fm.statistics, set.NewGauge(name("statistic", feature+`,statistic="`+stat+`"`), nil))
		}
		fm.drifted = set.NewGauge(name("feature_drifted", feature), nil)
		for b := range j.profile.Counts {
			fm.bins = append(fm.bins, set.NewCounter(name("bin_rows_total", feature+`,bin="`+strconv.Itoa(b)+`"`)))
		}
		m.features = append(m.features, fm)
	}
	return m
}

// record exports a closed window: its rows and bin counts always, its
// statistics when it was judged.
func (m *monitorMetrics) record(w *window, res *WindowResult, judges []judge) {
	m.rows.Add(int(w.rows))
	for i := range w.features {
		for b, n := range w.features[i].counts {
			m.features[i].bins[b].Add(int(n))
		}
	}
	if !res.Judged {
		m.windowsSkipped.Inc()
		return
	}
	m.windowsJudged.Inc()
	m.share.Set(res.Share)
	for i, fr := range res.Features {
		if !fr.Judged {
			continue
		}
		fm := &m.features[i]
		for k, stat := range statisticNames[judges[i].profile.Kind] {
			fm.statistics[k].Set(fr.Statistics[stat])
		}
		fm.drifted.Set(float64(boolIndex(fr.Drifted)))
	}
}

func (m *monitorMetrics) setDrifted(drifted bool) { m.drifted.Set(float64(boolIndex(drifted))) }

func (m *monitorMetrics) decision(t DecisionType) {
	if t == DriftDetected {
		m.detected.Inc()
	} else {
		m.resolved.Inc()
	}
}
