package detection

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/infergate/infergate/drift"
)

// The rules compared, in the tables' order.
const (
	RuleNew   = iota // infergate's new defaults
	RuleOld          // infergate's old defaults
	RuleAuto         // infergate with threshold: auto
	RuleScipy        // the scipy baseline
	// An "infergate mmd" rule (Method: drift.MethodMMD) goes here, before
	// the baseline, once the method exists: a name in RuleNames, its
	// config in newOfflines, and a score where it has one.
	nRules
)

// RuleNames names the rules in the tables.
var RuleNames = [nRules]string{
	RuleNew:   "infergate new defaults",
	RuleOld:   "infergate old defaults",
	RuleAuto:  "infergate threshold: auto",
	RuleScipy: "scipy KS + Bonferroni",
}

// DefaultSizes are the window sizes measured.
var DefaultSizes = []int{10, 20, 50, 100, 200, 500, 1000}

// Options say what Run measures. Zero fields take the defaults.
type Options struct {
	// Datasets names the data sets: BreastCancer, Wine and Demo by default.
	Datasets []string
	// Sizes are the window sizes; default DefaultSizes.
	Sizes []int
	// Windows is the number of windows per data set, size and shift, and
	// twice that of clean ones; default 200 (20 with Quick).
	Windows int
	// Splits is the number of random reference/pool splits of a
	// scikit-learn data set, the windows shared among them; default 10
	// (2 with Quick). The demo has one reference of fresh rows.
	Splits int
	// Quick makes a smoke run: fewer windows and splits.
	Quick bool
	// Seed makes the run reproducible; default 1.
	Seed uint64
	// Python runs the scripts; default /usr/bin/python3.
	Python string
	// NoBaseline skips the scipy baseline (and Python, but for the
	// scikit-learn data sets, which need it to load).
	NoBaseline bool
	// Workers judge cells at once; default runtime.NumCPU().
	Workers int
	// Progress, when set, receives a progress bar.
	Progress io.Writer
}

// withDefaults returns o with its zero fields set.
func (o Options) withDefaults() Options {
	if len(o.Datasets) == 0 {
		o.Datasets = []string{BreastCancer, Wine, Demo}
	}
	if len(o.Sizes) == 0 {
		o.Sizes = DefaultSizes
	}
	if o.Quick {
		o.Windows, o.Splits = cmp.Or(o.Windows, 20), cmp.Or(o.Splits, 2)
	}
	o.Windows, o.Splits = cmp.Or(o.Windows, 200), cmp.Or(o.Splits, 10)
	o.Seed = cmp.Or(o.Seed, 1)
	o.Python = cmp.Or(o.Python, "/usr/bin/python3")
	o.Workers = cmp.Or(o.Workers, runtime.NumCPU())
	return o
}

// Result is what Run measured.
type Result struct {
	Options Options       `json:"-"`
	Shifts  []Shift       `json:"shifts"`
	Cells   []*Cell       `json:"cells"`
	Elapsed time.Duration `json:"elapsed_ns"`
}

// Cell is the windows of one data set and window size.
type Cell struct {
	Dataset  string `json:"dataset"`
	Features int    `json:"features"`
	Rows     int    `json:"window_rows"`
	Splits   int    `json:"splits"`
	// Reference is the number of reference rows of each split.
	Reference int `json:"reference_rows"`
	// Counts[s][r] counts the windows of shift s and those rule r flagged.
	Counts [][nRules]Count `json:"counts"`
	// MaxPDiff is the largest difference between a KS p-value of the new
	// defaults and scipy's on the same feature and window; Disagree counts
	// the windows on which their decisions differ.
	MaxPDiff float64 `json:"max_p_value_difference"`
	Disagree int     `json:"decisions_differing"`
	// Inconsistent counts windows whose decision by drift.Offline differs
	// from the one its p-values give under the rule (a bug if not 0).
	Inconsistent [nRules]int   `json:"inconsistent"`
	GoTime       time.Duration `json:"go_ns"`
	PythonTime   time.Duration `json:"python_ns"`
	// scores[r] holds each window's score under rule r (drifted when
	// below the rule's level), NaN where the rule has none, and shift
	// its shift's index.
	scores [nRules][]float64
	shift  []int
}

// Count is a number of windows and how many of them were flagged.
type Count struct {
	Windows int `json:"windows"`
	Flagged int `json:"flagged"`
}

// Run measures every data set and window size of o.
func Run(ctx context.Context, o Options) (*Result, error) {
	o = o.withDefaults()
	start := time.Now()
	var sets []*dataset
	for _, name := range o.Datasets {
		switch name {
		case Demo:
			sets = append(sets, demoDataset())
		case BreastCancer, Wine:
			d, err := loadSklearn(o.Python, name)
			if err != nil {
				return nil, err
			}
			sets = append(sets, d)
		default:
			return nil, fmt.Errorf("cannot measure drift detection: unknown data set %q", name)
		}
	}
	res := &Result{Options: o, Shifts: Shifts}
	type job struct {
		cell *Cell
		set  *dataset
		seed uint64
	}
	var jobs []job
	for i, d := range sets {
		for _, n := range o.Sizes {
			c := &Cell{Dataset: d.name, Features: len(d.features), Rows: n, Splits: o.Splits}
			if d.fresh != nil {
				c.Splits = 1
			}
			res.Cells = append(res.Cells, c)
			jobs = append(jobs, job{cell: c, set: d, seed: o.Seed*1_000_003 + uint64(i)*10_007 + uint64(n)})
		}
	}
	// The biggest cells first, so that the workers finish together.
	slices.SortStableFunc(jobs, func(a, b job) int {
		return cmp.Compare(b.cell.Rows*b.cell.Features, a.cell.Rows*a.cell.Features)
	})
	perCell := o.Windows * (len(Shifts) + 1) // clean windows count twice
	bar := startProgress(o.Progress, len(jobs)*perCell)
	defer bar.stop()

	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	next := make(chan job)
	errs := make(chan error, o.Workers)
	var wg sync.WaitGroup
	for range o.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range next {
				if err := measureCell(ctx, o, j.set, j.cell, j.seed, &bar.done); err != nil {
					errs <- err
					cancel()
					return
				}
			}
		}()
	}
feed:
	for _, j := range jobs {
		select {
		case next <- j:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	close(errs)
	if err := cmp.Or(<-errs, parent.Err()); err != nil {
		return nil, err
	}
	res.Elapsed = time.Since(start)
	return res, nil
}

// newOfflines returns a drift.Offline per infergate rule for ref and windows
// of n rows (nil for the baseline).
func newOfflines(ref *drift.Reference, n int) ([nRules]*drift.Offline, error) {
	d := float64(len(ref.Features))
	w := drift.WindowConfig{Rows: n}
	cfgs := [nRules]*drift.Config{
		RuleNew:  {Window: w},
		RuleOld:  {Window: w, Rule: drift.RuleShare, DriftShare: 0.5, Threshold: drift.Threshold{Value: 0.05 / d}},
		RuleAuto: {Window: w, Threshold: drift.Threshold{Auto: true}},
	}
	var offs [nRules]*drift.Offline
	for r, cfg := range cfgs {
		if cfg == nil {
			continue
		}
		off, err := drift.NewOffline(ref, *cfg)
		if err != nil {
			return offs, fmt.Errorf("cannot set up %s: %w", RuleNames[r], err)
		}
		offs[r] = off
	}
	return offs, nil
}

// reference profiles the rows of s as an FP32 input's features.
func (d *dataset) reference(s *split, seed uint64) *drift.Reference {
	ref := &drift.Reference{Rows: len(s.ref)}
	col := make([]float64, len(s.ref))
	for j, name := range d.features {
		for i, row := range s.ref {
			col[i] = row[j]
		}
		ref.Features = append(ref.Features, drift.BuildProfile(name, drift.Numeric, col, drift.ProfileOptions{Float32: true, Seed: seed + uint64(j)}))
	}
	return ref
}

// measureCell draws, judges and scores the windows of c.
func measureCell(ctx context.Context, o Options, d *dataset, c *Cell, seed uint64, done *atomic.Int64) error {
	goStart := time.Now()
	nf := len(d.features)
	splits := make([]*split, c.Splits)
	offs := make([][nRules]*drift.Offline, c.Splits)
	var py *baselineWriter
	if !o.NoBaseline {
		var err error
		if py, err = newBaselineWriter(nf); err != nil {
			return err
		}
		defer py.remove()
	}
	for k := range splits {
		splits[k] = d.newSplit(seed*31 + uint64(k))
		c.Reference = len(splits[k].ref)
		var err error
		if offs[k], err = newOfflines(d.reference(splits[k], seed+uint64(k)), c.Rows); err != nil {
			return fmt.Errorf("cannot measure %s at %d rows: %w", d.name, c.Rows, err)
		}
		if py != nil {
			py.addReference(splits[k].ref)
		}
	}
	c.Counts = make([][nRules]Count, len(Shifts))
	var goP [][]float64
	ps := make([]float64, nf)
	for si, sh := range Shifts {
		windows := o.Windows
		if sh.Kind == Clean {
			windows *= 2
		}
		for i := range windows {
			if err := ctx.Err(); err != nil {
				return err
			}
			k := i % c.Splits
			r := rand.New(rand.NewPCG(seed, uint64(si)<<32|uint64(i)))
			rows := d.window(splits[k], r, c.Rows, sh)
			var drifted [nRules]bool
			for rule, off := range offs[k] {
				if off == nil {
					continue
				}
				wr, err := off.Judge(rows)
				if err != nil {
					return fmt.Errorf("cannot judge a window of %s: %w", d.name, err)
				}
				drifted[rule] = wr.Drifted
				if rule == RuleNew {
					for j, f := range wr.Features {
						ps[j] = f.Statistics["ks_p_value"]
					}
				}
			}
			c.shift = append(c.shift, si)
			c.scores[RuleNew] = append(c.scores[RuleNew], minP(ps)*float64(nf))
			c.scores[RuleOld] = append(c.scores[RuleOld], kthSmallest(ps, (nf+1)/2))
			c.scores[RuleAuto] = append(c.scores[RuleAuto], math.NaN())
			for _, rule := range []int{RuleNew, RuleOld} {
				if level := levels(nf)[rule]; drifted[rule] != (c.scores[rule][len(c.shift)-1] < level) {
					c.Inconsistent[rule]++
				}
			}
			for rule := range RuleScipy {
				c.Counts[si][rule].Windows++
				if drifted[rule] {
					c.Counts[si][rule].Flagged++
				}
			}
			if py != nil {
				goP = append(goP, slices.Clone(ps))
				py.addWindow(k, rows)
			}
			done.Add(1)
		}
	}
	c.GoTime = time.Since(goStart)
	if py == nil {
		return nil
	}
	pyStart := time.Now()
	scipyP, err := py.run(ctx, o.Python)
	if err != nil {
		return fmt.Errorf("cannot run the scipy baseline on %s at %d rows: %w", d.name, c.Rows, err)
	}
	c.PythonTime = time.Since(pyStart)
	if len(scipyP) != len(goP) {
		return fmt.Errorf("cannot read the scipy baseline on %s at %d rows: %d windows, want %d", d.name, c.Rows, len(scipyP), len(goP))
	}
	for w, p := range scipyP {
		if len(p) != nf {
			return fmt.Errorf("cannot read the scipy baseline on %s at %d rows: window %d has %d p-values, want %d", d.name, c.Rows, w, len(p), nf)
		}
		score := minP(p) * float64(nf)
		c.scores[RuleScipy] = append(c.scores[RuleScipy], score)
		flagged := score < levels(nf)[RuleScipy]
		cnt := &c.Counts[c.shift[w]][RuleScipy]
		cnt.Windows++
		if flagged {
			cnt.Flagged++
		}
		if flagged != (c.scores[RuleNew][w] < levels(nf)[RuleNew]) {
			c.Disagree++
		}
		for j := range p {
			c.MaxPDiff = max(c.MaxPDiff, math.Abs(p[j]-goP[w][j]))
		}
	}
	return nil
}

// levels returns the level of each rule's score for d features: a window
// is flagged when its score is below it.
func levels(d int) [nRules]float64 {
	return [nRules]float64{RuleNew: 0.05, RuleOld: 0.05 / float64(d), RuleAuto: math.NaN(), RuleScipy: 0.05}
}

// minP returns the smallest of ps.
func minP(ps []float64) float64 { return slices.Min(ps) }

// kthSmallest returns the k-th smallest of ps (k from 1).
func kthSmallest(ps []float64, k int) float64 {
	s := slices.Clone(ps)
	slices.Sort(s)
	return s[k-1]
}

// progress is a bar of the windows judged.
type progress struct {
	done atomic.Int64
	stop func()
}
