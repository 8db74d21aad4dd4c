package runtime

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
)

// ErrUnloaded is returned by Run once a version has begun to unload.
var ErrUnloaded = errors.New("runtime: model version is unloading")

// ModelVersion is one loaded version of a model with its pool of instances
// (sessions). It is safe for concurrent use: Run borrows a free instance for
// the duration of one call.
type ModelVersion struct {
	Model   string
	Version int64
	// VersionName is Version formatted for the protocol and metrics.
	VersionName string

	inputs   []TensorInfo
	outputs  []TensorInfo
	features []string

	sessions []*Session
	free     chan *Session // holds the instances not running now
	closing  chan struct{} // closed when Close begins
	once     sync.Once
}

// Inputs returns the served inputs: the model's, with shapes as configured.
func (v *ModelVersion) Inputs() []TensorInfo { return v.inputs }

// Outputs returns the model's outputs.
func (v *ModelVersion) Outputs() []TensorInfo { return v.outputs }

// Features returns the names of the first input's columns, from the config
// or the model metadata; nil when neither names them.
func (v *ModelVersion) Features() []string { return v.features }

// Instances returns the number of sessions of v.
func (v *ModelVersion) Instances() int { return len(v.sessions) }

// LoadModelVersion opens cfg.Instances sessions of dir/model.onnx, applies
// the config's input refinements and runs one warm-up inference on each
// instance, so the version is ready when this returns.
func (e *Environment) LoadModelVersion(dir, model string, version int64, cfg ModelConfig) (*ModelVersion, error) {
	path := dir + "/model.onnx"
	v := &ModelVersion{
		Model: model, Version: version, VersionName: strconv.FormatInt(version, 10),
		free: make(chan *Session, max(cfg.Instances, 1)), closing: make(chan struct{}),
	}
	for range max(cfg.Instances, 1) {
		s, err := e.NewSession(path)
		if err != nil {
			v.destroy()
			return nil, fmt.Errorf("cannot load model %q version %d: %w", model, version, err)
		}
		v.sessions = append(v.sessions, s)
	}
	first := v.sessions[0]
	v.outputs, v.features = first.Outputs(), first.Features()
	var err error
	if v.inputs, err = refineInputs(first.Inputs(), cfg.Inputs); err != nil {
		v.destroy()
		return nil, fmt.Errorf("cannot load model %q version %d: %w", model, version, err)
	}
	for _, in := range cfg.Inputs {
		if len(in.Features) > 0 && in.Name == v.inputs[0].Name {
			v.features = in.Features
		}
	}
	for _, s := range v.sessions {
		if err := warmUp(s, v.inputs); err != nil {
			v.destroy()
			return nil, fmt.Errorf("cannot warm up model %q version %d: %w", model, version, err)
		}
		v.free <- s
	}
	return v, nil
}

// refineInputs applies configured shapes to the model's inputs: a config may
// fix a dynamic dimension but rename or reshape nothing else.
func refineInputs(model []TensorInfo, cfg []InputConfig) ([]TensorInfo, error) {
	out := slices.Clone(model)
	for _, c := range cfg {
		i := slices.IndexFunc(out, func(t TensorInfo) bool { return t.Name == c.Name })
		if i < 0 {
			return nil, fmt.Errorf("config names input %q, which the model does not have (it has %v)", c.Name, names(model))
		}
		if len(c.Features) > 0 && len(out[i].Shape) > 0 {
			if last := out[i].Shape[len(out[i].Shape)-1]; last != Dynamic && last != int64(len(c.Features)) {
				return nil, fmt.Errorf("input %q: %d feature names for %d columns", c.Name, len(c.Features), last)
			}
		}
		if c.Shape == nil {
			continue
		}
		if len(c.Shape) != len(out[i].Shape) {
			return nil, fmt.Errorf("input %q: configured shape %s has rank %d, the model's %s has %d",
				c.Name, FormatShape(c.Shape), len(c.Shape), FormatShape(out[i].Shape), len(out[i].Shape))
		}
		for j, d := range c.Shape {
			if m := out[i].Shape[j]; d < Dynamic || (m != Dynamic && d != m) {
				return nil, fmt.Errorf("input %q: configured shape %s conflicts with the model's %s",
					c.Name, FormatShape(c.Shape), FormatShape(out[i].Shape))
			}
		}
		out[i].Shape = slices.Clone(c.Shape)
	}
	return out, nil
}

// warmUp runs one inference of zeros with every dynamic dimension set to 1,
// so the first real request does not pay for ONNX Runtime's lazy setup.
func warmUp(s *Session, inputs []TensorInfo) error {
	ins := make([]Tensor, len(inputs))
	for i, info := range inputs {
		shape := slices.Clone(info.Shape)
		for j := range shape {
			if shape[j] == Dynamic {
				shape[j] = 1
			}
		}
		ins[i] = Tensor{DataType: info.DataType, Shape: shape, Data: make([]byte, max(Elements(shape)*info.DataType.Size(), 1))}
	}
	return s.runUncached(ins, make([]Tensor, len(s.outputs)))
}

// Run computes outputs from inputs on a free instance, waiting for one until
// ctx is done. It returns ErrUnloaded once Close has begun. Unlike
// Session.Run it caches no I/O binding, so the instance keeps no reference
// to the caller's buffers once Run returns: pass it per-request buffers.
func (v *ModelVersion) Run(ctx context.Context, inputs, outputs []Tensor) error {
	s, err := v.Acquire(ctx)
	if err != nil {
		return err
	}
	defer v.Release(s)
	return s.runUncached(inputs, outputs)
}

// Acquire takes a free instance for the caller's exclusive use until it
// calls Release, waiting for one until ctx is done; a worker that owns an
// instance (a batcher's) holds it for its lifetime. It returns ErrUnloaded
// once Close has begun, even while an instance is still free.
func (v *ModelVersion) Acquire(ctx context.Context) (*Session, error) {
	// A select picks at random among ready cases, so closing is checked
	// alone first, and again once an instance was taken: Close may have
	// begun while this call waited.
	if v.unloading() {
		return nil, ErrUnloaded
	}
	select {
	case s := <-v.free:
		if v.unloading() {
			v.free <- s // for Close, which waits for every instance
			return nil, ErrUnloaded
		}
		return s, nil
	case <-v.closing:
		return nil, ErrUnloaded
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// unloading reports whether Close has begun.
func (v *ModelVersion) unloading() bool {
	select {
	case <-v.closing:
		return true
	default:
		return false
	}
}

// Release gives back an instance taken with Acquire.
func (v *ModelVersion) Release(s *Session) { v.free <- s }

// Close stops new runs, waits for every instance to be released (the runs
// in flight to finish) and then destroys the sessions. It is safe to call
// more than once.
func (v *ModelVersion) Close() {
	v.once.Do(func() {
		close(v.closing)
		for range v.sessions {
			<-v.free
		}
		v.destroy()
	})
}

func (v *ModelVersion) destroy() {
	for _, s := range v.sessions {
		s.Close()
	}
	v.sessions = nil
}
