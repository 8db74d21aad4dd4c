package drift

import (
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// Offline judges a window as a monitor of the same config judges the
// same rows as traffic: same statistics, thresholds, rule and verdict.
func TestOfflineJudgesAsTheMonitor(t *testing.T) {
	ref := normalReference(t, 3, 4, 2000)
	for _, cfg := range []Config{
		{Window: WindowConfig{Rows: 200}},
		{Window: WindowConfig{Rows: 200}, Threshold: Threshold{Auto: true}, Features: map[string]FeatureConfig{"b": {Method: MethodPSI}}},
		{Window: WindowConfig{Rows: 200}, Rule: RuleShare, DriftShare: 0.25},
	} {
		off, err := NewOffline(ref, cfg)
		if err != nil {
			t.Fatal(err)
		}
		for _, shift := range []float64{0, 0.3} {
			r := rand.New(rand.NewPCG(4, 4))
			rows := make([][]float64, 200)
			for k := range rows {
				rows[k] = make([]float64, 4)
				for i := range rows[k] {
					rows[k][i] = r.NormFloat64() + shift
				}
			}
			got, err := off.Judge(rows)
			if err != nil {
				t.Fatal(err)
			}
			synctest.Test(t, func(t *testing.T) {
				mon := newMonitor(t, ref, cfg)
				for _, row := range rows {
					mon.Observe(Rows{Values: row, Width: 4}, Rows{})
				}
				synctest.Wait()
				want := *mon.Report().Last
				if got.Drifted != want.Drifted || !reflect.DeepEqual(got.Rule, want.Rule) || !reflect.DeepEqual(got.Features, want.Features) {
					t.Fatalf("config %+v, shift %v: offline judged\n%+v\nthe monitor\n%+v", cfg, shift, got, want)
				}
			})
			if shift > 0 && !got.Drifted {
				t.Fatalf("config %+v: a shift of 0.3 sd in every feature over 200 rows not found: %+v", cfg, got)
			}
		}
	}
	off, _ := NewOffline(ref, Config{})
	if _, err := off.Judge([][]float64{{1, 2, 3}}); err == nil || !strings.Contains(err.Error(), "row 0 holds 3 values, want 4 features") {
		t.Fatalf("a short row: error %v", err)
	}
}

// Above 1000 rows the default methods are distances over a window's
// reservoir, whose noise alone crosses the usual thresholds on skewed
// features; the test that gates them holds the family-wise rate, and a
// material shift still drifts.
func TestDefaultDistancesHoldTheRate(t *testing.T) {
	const nf, refRows, rows, windows, rate = 8, 4000, 2000, 400, 0.01
	r := rand.New(rand.NewPCG(7, 7))
	skewed := func() float64 { return math.Exp(2 * r.NormFloat64()) }
	ref := &Reference{Rows: refRows}
	for i := range nf {
		values := make([]float64, refRows)
		for k := range values {
			values[k] = skewed()
		}
		ref.Features = append(ref.Features, BuildProfile(string(rune('a'+i)), Numeric, values, ProfileOptions{Seed: uint64(i)}))
	}
	off, err := NewOffline(ref, Config{Window: WindowConfig{Every: time.Minute}, FalseAlarmRate: rate})
	if err != nil {
		t.Fatal(err)
	}
	window := func(shift float64) WindowResult {
		t.Helper()
		w := make([][]float64, rows)
		for k := range w {
			w[k] = make([]float64, nf)
			for i := range w[k] {
				w[k][i] = skewed()
			}
			w[k][0] += shift
		}
		res, err := off.Judge(w)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	drifted, overThreshold := 0, 0
	for range windows {
		res := window(0)
		if res.Drifted {
			drifted++
		}
		for _, f := range res.Features {
			if f.Value > f.Threshold {
				overThreshold++
				break
			}
		}
		if f := res.Features[0]; f.Method != MethodWasserstein || f.Gate == nil || f.Gate.Statistic != "ks_p_value" || f.Gate.Threshold != rate/nf {
			t.Fatalf("a %d-row window judged by %s, gate %+v: want wasserstein gated by ks_p_value at %g", rows, f.Method, f.Gate, rate/nf)
		}
		if res.Rule.Controlled != nf || len(res.Rule.Uncontrolled) > 0 {
			t.Fatalf("rule %+v: want all %d features controlled", res.Rule, nf)
		}
	}
	// 4 clean windows in 400 drift on average; 12 is beyond 3 standard
	// deviations. The distances alone cross 0.1 in about a fifth of them.
	t.Logf("clean windows of %d rows: %d of %d drifted, %d with a distance over its threshold", rows, drifted, windows, overThreshold)
	if drifted > 12 {
		t.Errorf("%d of %d clean windows drifted: want about %g of them", drifted, windows, rate*windows)
	}
	if res := window(0.5 * ref.Features[0].Std); !res.Drifted || !res.Features[0].Drifted {
		t.Errorf("a shift of half a standard deviation in feature a: drifted %t, a %+v", res.Drifted, res.Features[0])
	}
}
