package gateway

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/valyala/fasthttp"

	"github.com/infergate/infergate/drift"
	"github.com/infergate/infergate/runtime"
)

// versionDrift is what monitors one version's traffic for drift.
type versionDrift struct {
	monitor *drift.Monitor
	// input is the index of the input whose columns are the features;
	// inWidth and outWidth are the elements per row of it and of the first
	// output (the predictions).
	input             int
	inWidth, outWidth int
}

// startDrift starts monitoring v when its folder holds a reference profile
// and the model's drift section does not turn it off, from the drift
// state srv stored for it.
func (v *version) startDrift(cfg drift.Config, dir string, log *slog.Logger, srv *Server) error {
	if cfg.Disabled {
		return nil
	}
	ref, err := drift.LoadReference(filepath.Join(dir, drift.ReferenceFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("cannot monitor drift of model %q version %s: %w", v.rt.Model, v.name, err)
	}
	d, columns, predictions, err := driftLayout(v.rt, cfg.Input, ref)
	if err != nil {
		return fmt.Errorf("cannot monitor drift of model %q version %s: %w", v.rt.Model, v.name, err)
	}
	model, name := v.rt.Model, v.name
	d.monitor, err = drift.New(drift.Options{
		Config: cfg, Reference: ref, Model: model, Version: name,
		Columns: columns, PredictionColumns: predictions, Log: log,
		Metrics: v.metrics.set, Labels: v.metrics.labels,
		State: srv.cp.driftStateLocked(model, name),
		// In a fleet only the leader judges, on everyone's counts, over
		// windows whose bounds every replica agrees on.
		Follower: !srv.cp.leading, AlignWindows: srv.cp.cluster.NATSURL != "",
		Commit: func(st drift.State, d *drift.Decision) error {
			return srv.cp.commitDrift(model, name, st, d)
		},
		Judged: func(res drift.WindowResult) { srv.cp.recordWindow(model, name, res) },
	})
	if err != nil {
		return err
	}
	v.drift = d
	log.Info("drift monitoring on", "model", v.rt.Model, "version", v.name,
		"features", len(columns), "predictions", len(predictions), "window", windowString(cfg.Window))
	return nil
}

// driftRecord is a version's stored drift state, with the event of the
// decision that led to it, for whoever leads next to emit again should the
// writer have died before it did.
type driftRecord struct {
	State drift.State `json:"state"`
	written
	// rev is the record's revision in the control bucket.
	rev uint64
}

// driftStateLocked returns the drift state stored for model's version, or
// nil. It needs the lock.
func (cp *controlPlane) driftStateLocked(model, version string) *drift.State {
	if rec := cp.drifts[driftStateKey(model, version)]; rec != nil {
		st := rec.State
		return &st
	}
	return nil
}

// commitDrift is the Commit of model's version's drift monitor: it stores
// st with the event of decision d (when d is not nil) in one write, fenced
// by the lease, then emits the event and hands d to
// Options.DriftDecisions. Without an engine nothing is stored.
func (cp *controlPlane) commitDrift(model, version string, st drift.State, d *drift.Decision) error {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if !cp.leading || !cp.lease.holds(cp.now()) {
		// Only the leader decides: a monitor still leading here while
		// this replica lost the lease waits to be told it follows.
		return errFenced
	}
	rec := driftRecord{State: st, written: written{Replica: cp.cluster.Replica, Leader: cp.leaderName()}}
	key := driftStateKey(model, version)
	if stored := cp.drifts[key]; stored != nil {
		// Events of earlier decisions not yet in the outbox stay in the
		// record until they are (see forgetEvents).
		rec.Events = slices.Clone(stored.Events)
	}
	if d != nil {
		e, err := newOutboxEvent(string(d.Type), model, version, d)
		if err != nil {
			return err
		}
		e.Replica, e.Leader = rec.Replica, rec.Leader
		rec.Events = append(rec.Events, e)
	}
	if cp.store != nil {
		data, err := json.Marshal(rec)
		if err == nil {
			if rec.rev, err = cp.store.putFenced(driftStateKey(model, version), data, cp.lastSeq); errors.Is(err, errFenced) {
				cp.fencedRefusals++
			}
		}
		if err != nil {
			if d != nil {
				eventsFailed.Inc()
				return fmt.Errorf("cannot store the %s decision of model %q version %s: %w", d.Type, model, version, err)
			}
			return fmt.Errorf("cannot store the drift state of model %q version %s: %w", model, version, err)
		}
		cp.drifts[driftStateKey(model, version)] = &rec
		cp.lastSeq = rec.rev // a fenced write: nothing came between
	}
	if d != nil {
		cp.emitLocked(Event{cloud: &rec.Events[len(rec.Events)-1], fenced: true, key: key, last: cp.store != nil})
		if cp.driftDecisions != nil {
			select {
			case cp.driftDecisions <- *d:
			default:
				eventsDropped.Inc()
			}
		}
	}
	return nil
}

func windowString(w drift.WindowConfig) string {
	if w.Every > 0 {
		return w.Every.String()
	}
	return strconv.Itoa(w.Rows) + " rows"
}

// driftLayout finds the input tensor named input (the first when empty) and
// the columns of it and of the first output that ref's features and
// predictions name. A column is named by the model's feature names, or as
// "<tensor>[<column>]".
func driftLayout(rt *runtime.ModelVersion, input string, ref *drift.Reference) (d *versionDrift, columns, predictions []int, err error) {
	d = &versionDrift{}
	if input != "" {
		if d.input = slices.IndexFunc(rt.Inputs(), func(t runtime.TensorInfo) bool { return t.Name == input }); d.input < 0 {
			return nil, nil, nil, fmt.Errorf("drift.input names %q, which the model does not have", input)
		}
	}
	in, out := rt.Inputs()[d.input], rt.Outputs()[0]
	if d.inWidth = rowWidth(in); d.inWidth <= 0 {
		return nil, nil, nil, fmt.Errorf("input %q has shape %s; drift needs [batch, features]", in.Name, runtime.FormatShape(in.Shape))
	}
	var names []string
	if d.input == 0 {
		names = rt.Features()
	}
	for _, p := range ref.Features {
		col := columnOf(p.Name, names, in.Name, d.inWidth)
		if col < 0 {
			return nil, nil, nil, fmt.Errorf("reference feature %q is not a column of input %q (columns: %v)", p.Name, in.Name, names)
		}
		columns = append(columns, col)
	}
	if len(ref.Predictions) > 0 {
		if d.outWidth = rowWidth(out); d.outWidth <= 0 {
			return nil, nil, nil, fmt.Errorf("output %q has shape %s; prediction drift needs [batch, columns]", out.Name, runtime.FormatShape(out.Shape))
		}
	}
	for _, p := range ref.Predictions {
		col := columnOf(p.Name, nil, out.Name, d.outWidth)
		if col < 0 {
			return nil, nil, nil, fmt.Errorf("reference prediction %q is not a column of output %q: want %s[0] to %s[%d]", p.Name, out.Name, out.Name, out.Name, d.outWidth-1)
		}
		predictions = append(predictions, col)
	}
	return d, columns, predictions, nil
}

// rowWidth returns the elements per row of a [batch, n] tensor, or 0.
func rowWidth(t runtime.TensorInfo) int {
	if len(t.Shape) != 2 || t.Shape[1] <= 0 {
		return 0
	}
	return int(t.Shape[1])
}

// columnOf returns the column that name denotes, or -1.
func columnOf(name string, names []string, tensor string, width int) int {
	if i := slices.Index(names, name); i >= 0 {
		return i
	}
	rest, ok := strings.CutPrefix(name, tensor+"[")
	if !ok || !strings.HasSuffix(rest, "]") {
		return -1
	}
	i, err := strconv.Atoi(strings.TrimSuffix(rest, "]"))
	if err != nil || i < 0 || i >= width {
		return -1
	}
	return i
}

// observeDrift hands a request's feature and prediction rows to v's monitor,
// converted to float64 in call's buffers.
func (v *version) observeDrift(call *inferCall, inputs, outputs []runtime.Tensor) {
	d := v.drift
	call.driftIn = appendFloats(call.driftIn[:0], inputs[d.input])
	in := drift.Rows{Values: call.driftIn, Width: d.inWidth}
	var out drift.Rows
	if d.outWidth > 0 && len(outputs) > 0 {
		call.driftOut = appendFloats(call.driftOut[:0], outputs[0])
		out = drift.Rows{Values: call.driftOut, Width: d.outWidth}
	}
	d.monitor.Observe(in, out)
}

// appendFloats appends t's elements as float64s.
func appendFloats(dst []float64, t runtime.Tensor) []float64 {
	le, size := binary.LittleEndian, t.DataType.Size()
	for off := 0; off+size <= len(t.Data); off += size {
		b := t.Data[off : off+size]
		var x float64
		switch t.DataType {
		case runtime.FP32:
			x = float64(math.Float32frombits(le.Uint32(b)))
		case runtime.FP64:
			x = math.Float64frombits(le.Uint64(b))
		case runtime.FP16:
			x = float64(halfToFloat32(le.Uint16(b)))
		case runtime.BOOL, runtime.UINT8:
			x = float64(b[0])
		case runtime.INT8:
			x = float64(int8(b[0]))
		case runtime.INT16:
			x = float64(int16(le.Uint16(b)))
		case runtime.UINT16:
			x = float64(le.Uint16(b))
		case runtime.INT32:
			x = float64(int32(le.Uint32(b)))
		case runtime.UINT32:
			x = float64(le.Uint32(b))
		case runtime.INT64:
			x = float64(int64(le.Uint64(b)))
		case runtime.UINT64:
			x = float64(le.Uint64(b))
		}
		dst = append(dst, x)
	}
	return dst
}

// driftReport answers GET /v2/models/{m}[/versions/{v}]/drift: one
// version's report when pinned, else those of every monitored version.
func (s *Server) driftReport(ctx *fasthttp.RequestCtx, m *model, pinned *version) {
	var body any
	if pinned != nil {
		if pinned.drift == nil {
			writeError(ctx, fasthttp.StatusNotFound, fmt.Sprintf("model %q version %s has no drift monitoring: its folder has no %s (or drift is disabled)", m.name, pinned.name, drift.ReferenceFile))
			return
		}
		body = pinned.drift.monitor.Report()
	} else {
		reports := []drift.Report{}
		for _, v := range m.versions {
			if v.drift != nil {
				reports = append(reports, v.drift.monitor.Report())
			}
		}
		body = struct {
			Model    string         `json:"model_name"`
			Versions []drift.Report `json:"versions"`
		}{m.name, reports}
	}
	data, err := json.Marshal(body)
	if err != nil {
		writeError(ctx, fasthttp.StatusInternalServerError, "cannot encode drift report: "+err.Error())
		return
	}
	writeJSON(ctx, data)
}
