package gateway

import (
	"context"
	"fmt"

	"github.com/infergate/infergate/batcher"
	"github.com/infergate/infergate/runtime"
)

// batchJobPriority is the batcher level of batch-scoring chunks
// (cluster.batch_jobs): every batcher has one level more than the model's
// priority_levels, and this one, level 0, is below every online request,
// so a chunk's rows form batches only from the room that no online request
// wants. Online priorities are shifted up by one (onlineLevel), so users
// keep their 0..priority_levels-1.
const batchJobPriority = 0

// onlineLevel returns the batcher level of an online request whose
// parameters.priority is p, on a model with levels priority_levels: p+1,
// above batchJobPriority. A p outside 0..levels-1 is ErrBadPriority, stating
// the range users see, never the batcher's.
func onlineLevel(p, levels int) (int, error) {
	if p < 0 || p >= levels {
		return 0, fmt.Errorf("%w: %d, want 0..%d", batcher.ErrBadPriority, p, levels-1)
	}
	return batchJobPriority + 1 + p, nil
}

// sessionRunner runs a batcher's batches on one session it owns.
type sessionRunner struct {
	session *runtime.Session
	// inputs and outputs are the tensors of a batch, their Shape[0] and
	// Data set per Run.
	inputs, outputs []runtime.Tensor
}

var _ batcher.Runner = (*sessionRunner)(nil)

func newSessionRunner(s *runtime.Session, ins, outs []runtime.TensorInfo) *sessionRunner {
	tensors := func(infos []runtime.TensorInfo) []runtime.Tensor {
		ts := make([]runtime.Tensor, len(infos))
		for i, info := range infos {
			ts[i] = runtime.Tensor{DataType: info.DataType, Shape: append([]int64(nil), info.Shape...)}
		}
		return ts
	}
	return &sessionRunner{session: s, inputs: tensors(ins), outputs: tensors(outs)}
}

// Run computes rows rows from the batch buffers in into out.
func (r *sessionRunner) Run(rows int, in, out [][]byte) error {
	for i := range r.inputs {
		r.inputs[i].Shape[0], r.inputs[i].Data = int64(rows), in[i]
	}
	for j := range r.outputs {
		r.outputs[j].Shape[0], r.outputs[j].Data = int64(rows), out[j]
	}
	if err := r.session.Run(r.inputs, r.outputs); err != nil {
		return err
	}
	for j := range r.outputs {
		if &r.outputs[j].Data[0] != &out[j][0] {
			return fmt.Errorf("output %d was not written into the batch buffer", j)
		}
	}
	return nil
}

// batchLayout returns the bytes per row of each input and output, or false
// when a tensor's rows have no fixed size (no leading dynamic batch
// dimension, or another dynamic dimension): such a model cannot be batched.
func batchLayout(ins, outs []runtime.TensorInfo) (batcher.Layout, bool) {
	rowBytes := func(infos []runtime.TensorInfo) ([]int, bool) {
		sizes := make([]int, len(infos))
		for i, info := range infos {
			if len(info.Shape) == 0 || info.Shape[0] != runtime.Dynamic {
				return nil, false
			}
			n := runtime.Elements(info.Shape[1:])
			if n <= 0 {
				return nil, false
			}
			sizes[i] = n * info.DataType.Size()
		}
		return sizes, true
	}
	in, okIn := rowBytes(ins)
	out, okOut := rowBytes(outs)
	return batcher.Layout{InputRowBytes: in, OutputRowBytes: out}, okIn && okOut
}

// startBatcher gives each of v's instances to a batcher worker for as long
// as v is loaded; stopBatcher gives them back. It returns nil, nil when v's
// tensors cannot be batched: then requests run on free instances directly.
// The batcher has cfg's priority levels plus batchJobPriority below them.
func startBatcher(v *version, cfg batcher.Config) (*batcher.Batcher, error) {
	cfg = cfg.WithDefaults()
	cfg.PriorityLevels++
	layout, ok := batchLayout(v.rt.Inputs(), v.rt.Outputs())
	if !ok {
		return nil, nil
	}
	runners := make([]batcher.Runner, v.rt.Instances())
	for i := range runners {
		s, err := v.rt.Acquire(context.Background())
		if err != nil {
			stopBatcher(v)
			return nil, fmt.Errorf("cannot start batcher of model %q version %s: %w", v.rt.Model, v.name, err)
		}
		v.owned = append(v.owned, s)
		runners[i] = newSessionRunner(s, v.rt.Inputs(), v.rt.Outputs())
	}
	labels := fmt.Sprintf(`model=%q,version=%q`, v.rt.Model, v.name)
	b, err := batcher.New(cfg, layout, runners, labels)
	if err != nil {
		stopBatcher(v)
		return nil, fmt.Errorf("cannot start batcher of model %q version %s: %w", v.rt.Model, v.name, err)
	}
	return b, nil
}

// stopBatcher drains v's batcher, if any, and gives its instances back.
func stopBatcher(v *version) {
	if v.batcher != nil {
		v.batcher.Close()
	}
	for _, s := range v.owned {
		v.rt.Release(s)
	}
	v.owned = nil
}
