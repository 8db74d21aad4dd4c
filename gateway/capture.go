package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fastjson"

	"github.com/infergate/infergate/retrain/capture"
	"github.com/infergate/infergate/runtime"
)

// modelCapture records a sample of one model's traffic. It is shared by
// the states of reloads that keep the model's capture section.
type modelCapture struct {
	w   *capture.Writer
	cfg capture.Config
	set *metrics.Set
}

// openCapture returns m's capture for cfg: old's when its section is
// unchanged, else a new one; nil when capture is off.
func (s *Server) openCapture(name string, mc ModelConfig, old *state) (*modelCapture, error) {
	if mc.Capture.Sample == 0 {
		return nil, nil
	}
	if old != nil {
		if om := old.models[name]; om != nil && om.capture != nil && reflect.DeepEqual(om.capture.cfg, mc.Capture) {
			return om.capture, nil
		}
	}
	if s.o.Engine == nil {
		return nil, fmt.Errorf("models.%s.capture: needs the engine (state_dir or cluster), whose streams keep captured traffic", name)
	}
	c := &modelCapture{cfg: mc.Capture, set: metrics.NewSet()}
	var err error
	if c.w, err = capture.Open(s.o.Engine, name, mc.Capture, s.captureOptions(c.set)); err != nil {
		return nil, err
	}
	metrics.RegisterSet(c.set)
	return c, nil
}

// captureOptions are the options of a capture Writer or Labels store
// whose series go to set.
func (s *Server) captureOptions(set *metrics.Set) capture.Options {
	return capture.Options{Log: s.log, Metrics: set, Replica: s.cp.cluster.Replica}
}

// close flushes and closes the capture, then drops its series.
func (c *modelCapture) close(log interface{ Error(string, ...any) }) {
	if err := c.w.Close(); err != nil {
		log.Error("cannot close capture", "error", err)
	}
	metrics.UnregisterSet(c.set, true)
}

// captureCall hands a sampled request and its answer to m's capture. The
// tensors are copied, since the request's buffers go back to their pools.
func (m *model) captureCall(v *version, req *inferRequest, results []runtime.Tensor) {
	if m.capture == nil || !m.capture.w.Sampled() {
		return
	}
	rec := capture.Record{ID: string(req.ID), Time: time.Now(), Model: m.name, Version: v.name,
		Inputs: make(map[string]capture.Tensor, len(req.Inputs)), Outputs: make(map[string]capture.Tensor, len(results))}
	for i, in := range req.Inputs {
		rec.Inputs[v.rt.Inputs()[i].Name] = captureTensor(in)
	}
	for i, out := range results {
		rec.Outputs[v.rt.Outputs()[i].Name] = captureTensor(out)
	}
	if len(results) > 0 {
		m.remember(rec.ID, v, results[0], rec.Outputs[v.rt.Outputs()[0].Name].Data.([]float64))
	}
	m.capture.w.Write(rec)
}

func captureTensor(t runtime.Tensor) capture.Tensor {
	return capture.Tensor{Datatype: t.DataType.String(), Shape: append([]int64(nil), t.Shape...), Data: appendFloats(nil, t)}
}

// feedback answers POST /v2/models/{m}/feedback: ground-truth labels by
// request id, {"id": "...", "label": ...} or a list of them, recorded
// durably before the answer.
func (s *Server) feedback(ctx *fasthttp.RequestCtx, m *model) {
	if s.labels == nil {
		writeError(ctx, fasthttp.StatusServiceUnavailable, "feedback needs the engine (state_dir or cluster), whose streams keep labels")
		return
	}
	var held int64
	defer s.memory.releaseHeld(&held)
	body, ok := s.readWholeBody(ctx, &held)
	if !ok {
		return
	}
	var scanner jsonScanner
	values, err := scanner.scan(body, maxFeedbackValues)
	switch {
	case errors.Is(err, errTooManyValues):
		writeError(ctx, fasthttp.StatusRequestEntityTooLarge, fmt.Sprintf("feedback too large: more than %d JSON values; post the labels in smaller lists", maxFeedbackValues))
		return
	case err != nil:
		writeError(ctx, fasthttp.StatusBadRequest, "invalid feedback: not JSON: "+err.Error())
		return
	}
	if code, err := s.reserveMemory(&held, int64(len(body))+int64(values)*jsonValueCost); err != nil {
		writeError(ctx, code, err.Error())
		return
	}
	labels, err := parseLabels(body)
	if err != nil {
		writeError(ctx, fasthttp.StatusBadRequest, "invalid feedback: "+err.Error())
		return
	}
	switch err := s.labels.RecordLabels(m.name, labels); {
	case errors.Is(err, capture.ErrInvalidLabel):
		writeError(ctx, fasthttp.StatusBadRequest, err.Error())
	case errors.Is(err, capture.ErrClosed), errors.Is(err, capture.ErrUnavailable):
		writeError(ctx, fasthttp.StatusServiceUnavailable, err.Error())
	case err != nil: // the engine did not acknowledge in time: try again
		writeError(ctx, fasthttp.StatusServiceUnavailable, err.Error())
	default:
		m.score(labels)
		writeJSON(ctx, fmt.Appendf(nil, `{"recorded":%d}`, len(labels)))
	}
}

// maxFeedbackValues bounds the JSON values of one feedback body: ten
// thousand labels of a few values each.
const maxFeedbackValues = 100_000

// parseLabels reads one {"id", "label"} object or a list of them.
func parseLabels(body []byte) ([]capture.Label, error) {
	v, err := fastjson.ParseBytes(body)
	if err != nil {
		return nil, fmt.Errorf("not JSON: %w", err)
	}
	items := []*fastjson.Value{v}
	if v.Type() == fastjson.TypeArray {
		items = v.GetArray()
	}
	if len(items) == 0 {
		return nil, errors.New("no labels")
	}
	labels := make([]capture.Label, 0, len(items))
	for i, item := range items {
		id, label := item.GetStringBytes("id"), item.Get("label")
		switch {
		case item.Type() != fastjson.TypeObject:
			return nil, fmt.Errorf("item %d: want an object {\"id\": ..., \"label\": ...}", i)
		case len(id) == 0:
			return nil, fmt.Errorf("item %d: \"id\" must be the request's id, a non-empty string", i)
		case label == nil:
			return nil, fmt.Errorf("item %d: \"label\" is missing", i)
		}
		labels = append(labels, capture.Label{ID: string(id), Label: json.RawMessage(label.MarshalTo(nil))})
	}
	return labels, nil
}
