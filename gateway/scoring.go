package gateway

import (
	"encoding/json"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/infergate/infergate/retrain/capture"
	"github.com/infergate/infergate/runtime"
)

// rememberedPredictions bounds how many captured requests a model keeps
// the predictions of, for scoring the labels that arrive for them later.
const rememberedPredictions = 100_000

// prediction is what a version answered a captured request: its top class
// per row of the first output.
type prediction struct {
	v       *version
	classes []int32
}

// newPredictions returns the memory of a model's captured predictions.
func newPredictions() *lru.Cache[string, prediction] {
	c, err := lru.New[string, prediction](rememberedPredictions)
	if err != nil {
		panic("BUG: " + err.Error())
	}
	return c
}

// remember keeps the top classes v answered to the captured request id.
func (m *model) remember(id string, v *version, out runtime.Tensor, values []float64) {
	rows := 1
	if len(out.Shape) > 0 {
		rows = int(out.Shape[0])
	}
	if id == "" || rows <= 0 || len(values)%rows != 0 {
		return
	}
	width := len(values) / rows
	p := prediction{v: v, classes: make([]int32, rows)}
	for r := range rows {
		row := values[r*width : (r+1)*width]
		if width == 1 {
			p.classes[r] = int32(row[0] + 0.5) // a probability or a class index
		} else {
			p.classes[r] = int32(argmax(row))
		}
	}
	m.predictions.Add(id, p)
}

// score counts, per version, how many rows of the labeled requests it had
// predicted right: for the canary's accuracy check and drift's accuracy per
// window. A label is a class index for every row, or a list of one per row.
func (m *model) score(labels []capture.Label) {
	for _, l := range labels {
		// A label counts once: a resent or corrected one scores nothing.
		p, ok := m.predictions.Peek(l.ID)
		if !ok {
			continue
		}
		m.predictions.Remove(l.ID)
		correct := 0
		for r, predicted := range p.classes {
			if class, ok := labelOf(l.Label, r, len(p.classes)); ok && class == int(predicted) {
				correct++
			}
		}
		p.v.interval.labeled.Add(int64(len(p.classes)))
		p.v.interval.correct.Add(int64(correct))
		if p.v.drift != nil {
			p.v.drift.monitor.ObserveLabels(len(p.classes), correct)
		}
	}
}

// labelOf returns the class label gives row r of a request of rows rows.
func labelOf(label json.RawMessage, r, rows int) (int, bool) {
	var one float64
	if json.Unmarshal(label, &one) == nil {
		return int(one), true
	}
	var each []float64
	if json.Unmarshal(label, &each) == nil && len(each) == rows {
		return int(each[r]), true
	}
	return 0, false
}
