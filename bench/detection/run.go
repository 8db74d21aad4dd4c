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
	RuleMMD          // infergate with method: mmd
	RuleScipy        // the scipy baseline
	nRules
)

// RuleNames names the rules in the tables.
var RuleNames = [nRules]string{
	RuleNew:   "infergate new defaults",
	RuleOld:   "infergate old defaults",
	RuleAuto:  "infergate threshold: auto",
	RuleMMD:   "infergate mmd",
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
	// scikit-learn data set, each shift's windows dealt round robin among
	// them; default 100 (10 with Quick). The demo has one reference of
	// fresh rows.
	Splits int
	// AutoSplits is the number of splits, the first ones, whose windows
	// threshold: auto judges, as its calibration takes seconds a split
	// and window size; default 10 (2 with Quick); negative: none.
	AutoSplits int
	// MMDWindows is the number of windows per data set, size and shift,
	// the first ones, and twice that of clean ones, that method mmd
	// judges, as its permutations take up to a tenth of a second a
	// window; default 40 (5 with Quick); negative: none.
	MMDWindows int
	// DemoReference is the number of fresh rows of the demo's reference;
	// default demoReference.
	DemoReference int
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
		o.Windows, o.Splits = cmp.Or(o.Windows, 20), cmp.Or(o.Splits, 10)
		o.AutoSplits, o.MMDWindows = cmp.Or(o.AutoSplits, 2), cmp.Or(o.MMDWindows, 5)
	}
	o.Windows, o.Splits = cmp.Or(o.Windows, 200), cmp.Or(o.Splits, 100)
	o.AutoSplits, o.MMDWindows = cmp.Or(o.AutoSplits, 10), cmp.Or(o.MMDWindows, 40)
	o.DemoReference = cmp.Or(o.DemoReference, demoReference)
	o.Seed = cmp.Or(o.Seed, 1)
	o.Python = cmp.Or(o.Python, "/usr/bin/python3")
	o.Workers = cmp.Or(o.Workers, runtime.NumCPU())
	return o
}

// Result is what Run measured.
type Result struct {
	Options Options `json:"-"`
	Shifts  []Shift `json:"shifts"`
	Cells   []*Cell `json:"cells"`
	// TooSmall lists, per data set, the window sizes not measured because
	// they exceed the rows its pool holds.
	TooSmall map[string][]int `json:"sizes_too_large_for_the_data_set,omitempty"`
	Elapsed  time.Duration    `json:"elapsed_ns"`
}

// measured reports whether res has a cell of data set ds and window size n.
func (res *Result) measured(ds string, n int) bool {
	return !slices.Contains(res.TooSmall[ds], n)
}

// Cell is the windows of one data set and window size.
type Cell struct {
	Dataset  string `json:"dataset"`
	Features int    `json:"features"`
	Rows     int    `json:"window_rows"`
	Splits   int    `json:"splits"`
	// AutoSplits are the splits whose windows threshold: auto judged.
	AutoSplits int `json:"auto_splits"`
	// Reference is the number of reference rows of each split.
	Reference int `json:"reference_rows"`
	// Counts[s][r] counts the windows of shift s and those rule r flagged.
	Counts [][nRules]Count `json:"counts"`
	// NotDrawn counts the knockout windows not drawn because no class's
	// knockout leaves the pool enough rows.
	NotDrawn int `json:"knockout_windows_not_drawn"`
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
			sets = append(sets, demoDataset(o.DemoReference))
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
	res := &Result{Options: o, Shifts: Shifts, TooSmall: map[string][]int{}}
	type job struct {
		cell *Cell
		set  *dataset
		seed uint64
	}
	var jobs []job
	for i, d := range sets {
		for _, n := range o.Sizes {
			if n > d.maxWindow() {
				res.TooSmall[d.name] = append(res.TooSmall[d.name], n)
				continue
			}
			c := &Cell{Dataset: d.name, Features: len(d.features), Rows: n, Splits: o.Splits}
			if d.fresh != nil {
				c.Splits = 1
			}
			c.AutoSplits = min(max(o.AutoSplits, 0), c.Splits)
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

// newOffline returns a drift.Offline for infergate rule r, ref and
// windows of n rows.
func newOffline(r int, ref *drift.Reference, n int) (*drift.Offline, error) {
	d := float64(len(ref.Features))
	w := drift.WindowConfig{Rows: n}
	var cfg drift.Config
	switch r {
	case RuleNew:
		cfg = drift.Config{Window: w}
	case RuleOld:
		cfg = drift.Config{Window: w, Rule: drift.RuleShare, DriftShare: 0.5, Threshold: drift.Threshold{Value: 0.05 / d}}
	case RuleAuto:
		cfg = drift.Config{Window: w, Threshold: drift.Threshold{Auto: true}}
	case RuleMMD:
		cfg = drift.Config{Window: w, Method: drift.MethodMMD}
	default:
		panic(fmt.Sprintf("BUG: rule %d is not infergate's", r))
	}
	off, err := drift.NewOffline(ref, cfg)
	if err != nil {
		return nil, fmt.Errorf("cannot set up %s: %w", RuleNames[r], err)
	}
	return off, nil
}

// reference profiles the rows of s as an FP32 input's features, with the
// row sample method mmd compares windows with, as infergate profile
// builds them.
func (d *dataset) reference(s *split, seed uint64) *drift.Reference {
	ref := &drift.Reference{Rows: len(s.ref)}
	columns := make([][]float64, len(d.features))
	for j, name := range d.features {
		columns[j] = make([]float64, len(s.ref))
		for i, row := range s.ref {
			columns[j][i] = row[j]
		}
		ref.Features = append(ref.Features, drift.BuildProfile(name, drift.Numeric, columns[j], drift.ProfileOptions{Float32: true, Seed: seed + uint64(j)}))
	}
	ref.SampleRows = drift.SampleRowsOf(columns, drift.DefaultSampleSize, seed, true)
	return ref
}

// measureCell draws, judges and scores the windows of c: window i of a
// shift is judged against split i mod c.Splits, by threshold: auto when
// that split is one of the first c.AutoSplits and by method mmd when i is
// below o.MMDWindows (twice that for clean windows).
func measureCell(ctx context.Context, o Options, d *dataset, c *Cell, seed uint64, done *atomic.Int64) error {
	goStart := time.Now()
	nf := len(d.features)
	splits := make([]*split, c.Splits)
	refs := make([]*drift.Reference, c.Splits)
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
		refs[k] = d.reference(splits[k], seed+uint64(k))
		c.Reference = len(splits[k].ref)
		if py != nil {
			py.addReference(splits[k].ref)
		}
	}
	// offline returns the Offline of rule r and split k, set up when first
	// asked for: auto thresholds calibrate for seconds.
	offline := func(r, k int) (*drift.Offline, error) {
		if offs[k][r] == nil {
			off, err := newOffline(r, refs[k], c.Rows)
			if err != nil {
				return nil, fmt.Errorf("cannot measure %s at %d rows: %w", d.name, c.Rows, err)
			}
			offs[k][r] = off
		}
		return offs[k][r], nil
	}
	c.Counts = make([][nRules]Count, len(Shifts))
	var goP [][]float64
	ps := make([]float64, nf)
	lv := levels(nf)
	for si, sh := range Shifts {
		windows, mmdWindows := o.Windows, o.MMDWindows
		if sh.Kind == Clean {
			windows, mmdWindows = 2*windows, 2*mmdWindows
		}
		for i := range windows {
			if err := ctx.Err(); err != nil {
				return err
			}
			done.Add(1)
			k := i % c.Splits
			r := rand.New(rand.NewPCG(seed, uint64(si)<<32|uint64(i)))
			rows := d.window(splits[k], r, c.Rows, sh)
			if rows == nil {
				c.NotDrawn++
				continue
			}
			judged := [nRules]bool{RuleNew: true, RuleOld: true, RuleAuto: k < c.AutoSplits, RuleMMD: i < mmdWindows}
			var drifted [nRules]bool
			var score [nRules]float64 // NaN where the rule has none
			for rule := range score {
				score[rule] = math.NaN()
			}
			for rule := range RuleScipy {
				if !judged[rule] {
					continue
				}
				off, err := offline(rule, k)
				if err != nil {
					return err
				}
				wr, err := off.Judge(rows)
				if err != nil {
					return fmt.Errorf("cannot judge a window of %s: %w", d.name, err)
				}
				drifted[rule] = wr.Drifted
				switch rule {
				case RuleNew:
					for j, f := range wr.Features {
						ps[j] = f.Statistics["ks_p_value"]
					}
					score[RuleNew] = minP(ps) * float64(nf)
					score[RuleOld] = kthSmallest(ps, (nf+1)/2)
				case RuleMMD:
					if wr.MMD == nil {
						return fmt.Errorf("cannot judge a window of %s by method mmd: no MMD result", d.name)
					}
					score[RuleMMD] = wr.MMD.PValue
				}
			}
			c.shift = append(c.shift, si)
			for rule := range RuleScipy {
				c.scores[rule] = append(c.scores[rule], score[rule])
				if !judged[rule] {
					continue
				}
				if !math.IsNaN(lv[rule]) && drifted[rule] != (score[rule] < lv[rule]) {
					c.Inconsistent[rule]++
				}
				c.Counts[si][rule].Windows++
				if drifted[rule] {
					c.Counts[si][rule].Flagged++
				}
			}
			if py != nil {
				goP = append(goP, slices.Clone(ps))
				py.addWindow(k, rows)
			}
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
	return [nRules]float64{RuleNew: 0.05, RuleOld: 0.05 / float64(d), RuleAuto: math.NaN(), RuleMMD: 0.05, RuleScipy: 0.05}
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
