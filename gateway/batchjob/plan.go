package batchjob

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/infergate/infergate/retrain/table"
	"github.com/infergate/infergate/runtime"
)

// plan is what a job reads, runs and writes, checked before any work.
type plan struct {
	input runtime.TensorInfo
	width int
	// features are the file's columns of the model's features, in the
	// input's order; carry the columns copied through.
	features []string
	carry    []table.Column
	outputs  []output
	// columns are the output's: carry, every output's, and version.
	columns []table.Column
	// rejects are the rejects file's columns: row, column, reason, carry.
	rejects []table.Column
}

// output is one model output and the columns it is written as.
type output struct {
	info    runtime.TensorInfo
	perRow  int
	kind    table.Kind
	columns []string
}

// newPlan checks the file read by r against the model and job: every
// feature has a numeric column, every carried column exists, no column
// is left over (unless job.AllowExtra), every output has a type a table
// holds, and no two output columns share a name.
func newPlan(job *Job, r *table.Reader) (*plan, error) {
	mv := job.Run
	ins := mv.Inputs()
	if len(ins) != 1 || len(ins[0].Shape) != 2 || (ins[0].DataType != runtime.FP32 && ins[0].DataType != runtime.FP64) {
		return nil, fmt.Errorf("cannot score with model %q: score takes a model with one FP32 or FP64 input of shape [batch, features], not %v", job.Model, ins)
	}
	p := &plan{input: ins[0], width: len(job.Features)}
	if p.width == 0 {
		return nil, fmt.Errorf("cannot score with model %q: it names no features; name them in the config (models.%s.inputs[].features) or in the model's metadata", job.Model, job.Model)
	}
	if d := ins[0].Shape[1]; d != runtime.Dynamic && int(d) != p.width {
		return nil, fmt.Errorf("cannot score with model %q: its input %q takes %d features, the config names %d", job.Model, ins[0].Name, d, p.width)
	}
	for f := range job.Map {
		if !slices.Contains(job.Features, f) {
			return nil, fmt.Errorf("cannot map feature %q: model %q has no such feature (its features: %s)", f, job.Model, strings.Join(job.Features, ", "))
		}
	}

	cols := r.Columns()
	byName := map[string]table.Column{}
	for _, c := range cols {
		byName[c.Name] = c
	}
	// A column named exactly as a feature, or as a feature's mapped
	// column, is that feature's: never another's by its case.
	exact := map[string]bool{}
	for _, f := range job.Features {
		name := f
		if m, ok := job.Map[f]; ok {
			name = m
		}
		if _, ok := byName[name]; ok {
			exact[name] = true
		}
	}
	var missing, mistyped, ambiguous []string
	used := map[string]bool{}
	for _, f := range job.Features {
		name := f
		if m, ok := job.Map[f]; ok {
			name = m
		}
		c, ok := byName[name]
		if !ok {
			// A warehouse's export may name columns in its own case
			// (Snowflake's AGE for age): one column whose name differs
			// only in case is the feature's.
			var folded []string
			for _, fc := range cols {
				if strings.EqualFold(fc.Name, name) && !exact[fc.Name] {
					folded = append(folded, fc.Name)
				}
			}
			switch len(folded) {
			case 0:
			case 1:
				fmt.Fprintf(job.Log, "feature %q is read from column %q: their names differ only in case\n", f, folded[0])
				c, ok, name = byName[folded[0]], true, folded[0]
			default:
				ambiguous = append(ambiguous, fmt.Sprintf("%s (columns %s differ from it only in case)", quoteFeature(f, name), strings.Join(quoteAll(folded), " and ")))
				ok = true
			}
		}
		switch {
		case !ok:
			missing = append(missing, quoteFeature(f, name))
		case c.Name == "": // ambiguous
		case r.Format() == table.Parquet && !c.Kind.Numeric():
			mistyped = append(mistyped, fmt.Sprintf("%q holds %s values", name, c.Described()))
		}
		p.features = append(p.features, name)
		used[name] = true
	}
	if len(ambiguous) > 0 {
		return nil, fmt.Errorf("cannot score %q: no column is named as model %q's feature %s: name one with --map feature=column", job.In, job.Model, strings.Join(ambiguous, ", "))
	}
	if len(missing) > 0 {
		where := "its columns"
		if r.Format() == table.JSONL {
			where = "its columns, the keys of its first object"
		}
		return nil, fmt.Errorf("cannot score %q: it has no column for feature %s of model %q (%s: %s)",
			job.In, strings.Join(missing, ", "), job.Model, where, columnNames(cols))
	}
	if len(mistyped) > 0 {
		return nil, fmt.Errorf("cannot score %q: feature columns must hold numbers (integers, floats, decimals or booleans), but %s; cast them where the file is made", job.In, strings.Join(mistyped, ", "))
	}
	for _, name := range job.Carry {
		c, ok := byName[name]
		if !ok {
			return nil, fmt.Errorf("cannot carry column %q: %q has no such column (its columns: %s)", name, job.In, columnNames(cols))
		}
		if c.Nested() {
			return nil, fmt.Errorf("cannot carry column %q of %q: it holds %s values, and score carries plain columns only; flatten it where the file is made, or leave it out (--allow-extra)", name, job.In, c.Described())
		}
		if r.Format() != table.Parquet { // CSV and JSON-lines values are carried as their text
			c = table.Column{Name: name, Kind: table.String, Optional: true}
		}
		p.carry = append(p.carry, c)
		used[name] = true
	}
	var extra []string
	for _, c := range cols {
		if !used[c.Name] {
			extra = append(extra, strconv.Quote(c.Name))
		}
	}
	if len(extra) > 0 && !job.AllowExtra {
		return nil, fmt.Errorf("cannot score %q: column %s is neither a feature of model %q nor carried; carry it (--carry), or pass --allow-extra to leave it out",
			job.In, strings.Join(extra, ", "), job.Model)
	}
	if err := r.Select(p.features, job.Carry); err != nil {
		return nil, fmt.Errorf("cannot score: %w", err)
	}
	if err := p.planOutputs(job); err != nil {
		return nil, err
	}

	p.columns = append(slices.Clone(p.carry), outputColumns(p.outputs)...)
	p.columns = append(p.columns, table.Column{Name: "version", Kind: table.String, Dictionary: true})
	seen := map[string]bool{}
	for _, c := range p.columns {
		if seen[c.Name] {
			return nil, fmt.Errorf("cannot score: two output columns are named %q (a carried column and a model output's); rename the input column", c.Name)
		}
		seen[c.Name] = true
	}
	p.rejects = append([]table.Column{{Name: "row", Kind: table.Int64}, {Name: "column", Kind: table.String}, {Name: "reason", Kind: table.String}}, p.carry...)
	if job.Rejects != "" {
		for _, c := range p.carry {
			if c.Name == "row" || c.Name == "column" || c.Name == "reason" {
				return nil, fmt.Errorf("cannot write the rejects: the carried column %q would share its name with a rejects column (row, column, reason); rename the input column", c.Name)
			}
		}
	}
	return p, nil
}

// planOutputs learns each output's values per row from one run of a row
// of zeros, and names its columns: <output> for one value a row, else
// <output>_<label> where the version's labels name its classes, else
// <output>_<i>.
func (p *plan) planOutputs(job *Job) error {
	in := runtime.Tensor{DataType: p.input.DataType, Shape: []int64{1, int64(p.width)}, Data: make([]byte, p.width*p.input.DataType.Size())}
	outs := make([]runtime.Tensor, len(job.Run.Outputs()))
	if err := job.Run.Run(context.Background(), []runtime.Tensor{in}, outs); err != nil {
		return fmt.Errorf("cannot score with model %q: a run of one row failed: %w", job.Model, err)
	}
	for i, info := range job.Run.Outputs() {
		t := outs[i]
		if len(t.Shape) == 0 || len(t.Shape) > 2 || t.Shape[0] != 1 {
			return fmt.Errorf("cannot score with model %q: output %q has shape %v for one row; score writes outputs of shape [batch] or [batch, n]", job.Model, info.Name, t.Shape)
		}
		o := output{info: info, perRow: 1}
		if len(t.Shape) == 2 {
			o.perRow = int(t.Shape[1])
		}
		switch info.DataType {
		case runtime.FP32:
			o.kind = table.Float32
		case runtime.FP64:
			o.kind = table.Float64
		case runtime.INT64, runtime.INT32:
			o.kind = table.Int64
		case runtime.BOOL:
			o.kind = table.Bool
		default:
			return fmt.Errorf("cannot score with model %q: output %q is %s; score writes FP32, FP64, INT32, INT64 and BOOL outputs", job.Model, info.Name, info.DataType)
		}
		var labels []string
		if i < len(job.Labels) {
			labels = job.Labels[i]
		}
		for j := range o.perRow {
			switch {
			case o.perRow == 1:
				o.columns = append(o.columns, info.Name)
			case len(labels) == o.perRow:
				o.columns = append(o.columns, info.Name+"_"+labels[j])
			default:
				o.columns = append(o.columns, info.Name+"_"+strconv.Itoa(j))
			}
		}
		p.outputs = append(p.outputs, o)
	}
	return nil
}

func outputColumns(outs []output) []table.Column {
	var cols []table.Column
	for _, o := range outs {
		for _, name := range o.columns {
			cols = append(cols, table.Column{Name: name, Kind: o.kind})
		}
	}
	return cols
}

func quoteFeature(feature, column string) string {
	if feature == column {
		return strconv.Quote(feature)
	}
	return fmt.Sprintf("%q (mapped to column %q)", feature, column)
}

// quoteAll returns names, each quoted.
func quoteAll(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = strconv.Quote(n)
	}
	return out
}

func columnNames(cols []table.Column) string {
	names := make([]string, len(cols))
	for i, c := range cols {
		names[i] = c.Name
	}
	return strings.Join(names, ", ")
}
