package bench

import (
	"bytes"
	"cmp"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Plot geometry in SVG user units.
const (
	plotWidth  = 760
	plotHeight = 460
	marginL    = 80
	marginR    = 30
	marginT    = 50
	marginB    = 60
)

// series is one line of the plot.
type series struct {
	name    string
	color   string
	latency func(*Result) time.Duration
}

var curveSeries = []series{
	{"p50", "#1f77b4", func(r *Result) time.Duration { return time.Duration(r.Latency.P50) }},
	{"p99", "#d62728", func(r *Result) time.Duration { return time.Duration(r.Latency.P99) }},
}

// WriteLatencyCurve writes an SVG plot of the latency-throughput curve of a
// rate sweep: p50 and p99 latency of 2xx answers (log scale) against the
// achieved throughput of each run, joined in the order of the offered rate.
// Runs without 2xx answers are left out.
func WriteLatencyCurve(w io.Writer, title string, results []*Result) error {
	var pts []*Result
	for _, r := range results {
		if r.OK > 0 {
			pts = append(pts, r)
		}
	}
	// In the order of the offered load, so that a run past saturation, whose
	// achieved throughput falls back, bends the curve back as it should.
	slices.SortStableFunc(pts, func(a, b *Result) int {
		return cmp.Or(cmp.Compare(a.Rate, b.Rate), cmp.Compare(a.OKPerSec, b.OKPerSec))
	})

	xMax := 1.0
	yMin, yMax := math.Inf(1), math.Inf(-1)
	for _, r := range pts {
		xMax = max(xMax, r.OKPerSec)
		for _, s := range curveSeries {
			ms := max(float64(s.latency(r))/1e6, 1e-3)
			yMin, yMax = min(yMin, ms), max(yMax, ms)
		}
	}
	if len(pts) == 0 {
		yMin, yMax = 0.1, 10
	}
	xTicks := niceTicks(xMax * 1.05)
	xTop := xTicks[len(xTicks)-1]
	lo, hi := math.Floor(math.Log10(yMin)), math.Ceil(math.Log10(yMax))
	if hi <= lo {
		hi = lo + 1
	}
	innerW, innerH := float64(plotWidth-marginL-marginR), float64(plotHeight-marginT-marginB)
	xPos := func(v float64) float64 { return marginL + v/xTop*innerW }
	yPos := func(ms float64) float64 {
		return marginT + (hi-math.Log10(max(ms, 1e-3)))/(hi-lo)*innerH
	}

	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n",
		plotWidth, plotHeight, plotWidth, plotHeight)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", plotWidth, plotHeight)
	fmt.Fprintf(&b, `<text x="%d" y="28" text-anchor="middle" font-size="15">%s</text>`+"\n", plotWidth/2, escapeXML(title))

	// Grid and tick labels.
	for _, t := range xTicks {
		x := xPos(t)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/>`+"\n", x, marginT, x, plotHeight-marginB)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", x, plotHeight-marginB+18, formatTick(t))
	}
	for e := lo; e <= hi; e++ {
		for _, m := range []float64{1, 2, 5} {
			ms := m * math.Pow(10, e)
			if e == hi && m > 1 {
				break
			}
			y := yPos(ms)
			stroke := "#eee"
			if m == 1 {
				stroke = "#ccc"
			}
			fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="%s"/>`+"\n", marginL, y, plotWidth-marginR, y, stroke)
			fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", marginL-6, y+4, strconv.FormatFloat(ms, 'g', -1, 64))
		}
	}
	// Axes and their labels.
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", marginL, plotHeight-marginB, plotWidth-marginR, plotHeight-marginB)
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", marginL, marginT, marginL, plotHeight-marginB)
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">achieved throughput (2xx requests/s)</text>`+"\n",
		marginL+int(innerW)/2, plotHeight-14)
	fmt.Fprintf(&b, `<text transform="translate(20 %d) rotate(-90)" text-anchor="middle">latency (ms, log scale)</text>`+"\n",
		marginT+int(innerH)/2)

	// Lines, points with tooltips, legend.
	for i, s := range curveSeries {
		var poly strings.Builder
		for _, r := range pts {
			fmt.Fprintf(&poly, "%.1f,%.1f ", xPos(r.OKPerSec), yPos(float64(s.latency(r))/1e6))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", s.color, strings.TrimSpace(poly.String()))
		for _, r := range pts {
			tip := fmt.Sprintf("%s: %s ok req/s (target %s): %s %s", r.Name, formatCount(r.OKPerSec), formatCount(r.Rate), s.name, Millis(s.latency(r)))
			fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s"><title>%s</title></circle>`+"\n",
				xPos(r.OKPerSec), yPos(float64(s.latency(r))/1e6), s.color, escapeXML(tip))
		}
		ly := marginT + 16 + 18*i
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"/>`+"\n", marginL+14, ly-4, marginL+38, ly-4, s.color)
		fmt.Fprintf(&b, `<text x="%d" y="%d">%s</text>`+"\n", marginL+44, ly, s.name)
	}
	b.WriteString("</svg>\n")
	_, err := w.Write(b.Bytes())
	return err
}

// niceTicks returns evenly spaced round ticks from 0 covering top.
func niceTicks(top float64) []float64 {
	raw := top / 5
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	step := mag
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*mag >= raw {
			step = m * mag
			break
		}
	}
	var ticks []float64
	for t := 0.0; ; t += step {
		ticks = append(ticks, t)
		if t >= top {
			return ticks
		}
	}
}

func formatTick(v float64) string {
	switch {
	case v >= 1e6 && math.Mod(v, 1e5) == 0:
		return strconv.FormatFloat(v/1e6, 'f', -1, 64) + "M"
	case v >= 1e3 && math.Mod(v, 100) == 0:
		return strconv.FormatFloat(v/1e3, 'f', -1, 64) + "k"
	}
	return strconv.FormatFloat(v, 'g', 4, 64)
}

func escapeXML(s string) string {
	var b strings.Builder
	xml.EscapeText(&b, []byte(s))
	return b.String()
}
