package drift

import (
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"testing/synctest"
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
