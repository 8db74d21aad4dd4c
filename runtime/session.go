package runtime

import (
	"fmt"
	"unsafe"

	ort "github.com/yalue/onnxruntime_go"
)

// Session is one ONNX Runtime session of a model file. Run may be called by
// one goroutine at a time; Close must follow the last Run.
type Session struct {
	ort      *ort.DynamicAdvancedSession
	inputs   []TensorInfo
	outputs  []TensorInfo
	features []string
	provider string
	// cachesInputs is cachesInputs(provider): whether Run may reuse a
	// cached binding's inputs as they are bound, or binds them again.
	cachesInputs bool

	// Per-run scratch, reused because a Session runs one call at a time.
	inValues  []ort.Value
	outValues []ort.Value
	// outPreset says which outValues view the caller's buffers in
	// runUncached; the others were allocated by ONNX Runtime.
	outPreset []bool
	// bindings caches Run's I/O bindings.
	bindings bindingCache
}

// NewSession opens a session of the model file at path on the environment's
// execution provider, reading input and output names, types and shapes from
// the model.
func (e *Environment) NewSession(path string) (*Session, error) {
	opts, err := e.sessionOptions()
	if err != nil {
		return nil, err
	}
	defer opts.Destroy()
	ins, outs, err := ort.GetInputOutputInfoWithOptions(path, opts)
	if err != nil {
		return nil, fmt.Errorf("cannot read inputs and outputs of %q: %w", path, err)
	}
	s := &Session{provider: e.provider, cachesInputs: cachesInputs(e.provider)}
	if s.inputs, err = tensorInfos(ins); err != nil {
		return nil, fmt.Errorf("cannot serve %q: %w", path, err)
	}
	if s.outputs, err = tensorInfos(outs); err != nil {
		return nil, fmt.Errorf("cannot serve %q: %w", path, err)
	}
	s.features, err = readFeatures(path)
	if err != nil {
		return nil, err
	}
	s.ort, err = ort.NewDynamicAdvancedSession(path, names(s.inputs), names(s.outputs), opts)
	if err != nil {
		return nil, fmt.Errorf("cannot open session of %q: %w", path, err)
	}
	s.inValues = make([]ort.Value, len(s.inputs))
	s.outValues = make([]ort.Value, len(s.outputs))
	s.outPreset = make([]bool, len(s.outputs))
	return s, nil
}

// FeaturesKey is the model metadata key whose comma-separated value names
// the columns of the first input's last dimension.
const FeaturesKey = "infergate.features"

func readFeatures(path string) ([]string, error) {
	md, err := ort.GetModelMetadata(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read metadata of %q: %w", path, err)
	}
	defer md.Destroy()
	v, ok, err := md.LookupCustomMetadataMap(FeaturesKey)
	if err != nil || !ok || v == "" {
		return nil, err
	}
	return splitComma(v), nil
}

func splitComma(s string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == ',' {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return out
}

func tensorInfos(infos []ort.InputOutputInfo) ([]TensorInfo, error) {
	out := make([]TensorInfo, len(infos))
	for i, info := range infos {
		dt := DataType(info.DataType)
		if info.OrtValueType != ort.ONNXTypeTensor || !dt.Valid() || uint32(dt) != uint32(info.DataType) {
			return nil, fmt.Errorf("tensor %q has unsupported type %s", info.Name, info.String())
		}
		shape := make([]int64, len(info.Dimensions))
		for j, d := range info.Dimensions {
			shape[j] = max(d, Dynamic) // symbolic dims come back as -1 already; keep it so
		}
		out[i] = TensorInfo{Name: info.Name, DataType: dt, Shape: shape}
	}
	return out, nil
}

func names(infos []TensorInfo) []string {
	out := make([]string, len(infos))
	for i, info := range infos {
		out[i] = info.Name
	}
	return out
}

// Inputs returns the model's inputs as the model declares them.
func (s *Session) Inputs() []TensorInfo { return s.inputs }

// Outputs returns the model's outputs as the model declares them.
func (s *Session) Outputs() []TensorInfo { return s.outputs }

// Features returns the feature names stored in the model's metadata, if any.
func (s *Session) Features() []string { return s.features }

// Provider returns the execution provider the session runs on.
func (s *Session) Provider() string { return s.provider }

// Run computes outputs from inputs, both in the model's order. Each output's
// Shape and Data are overwritten, reusing their capacity. The caller checked
// the inputs against Inputs.
//
// Run is the batch path: pass it buffers that live as long as the session
// and come back run after run, as a batcher's buffer sets do. Outputs whose
// shape follows from the batch size are written by ONNX Runtime straight
// into the caller's buffers, and the ORT values and I/O binding of each set
// of buffers and shapes are cached (see maxBindings), so that a run over
// buffers seen before allocates nothing on CPU. On another provider the
// inputs of a cached binding are bound again before each run, since
// binding is when ONNX Runtime copies them to the device (see
// cachesInputs). A binding pins its buffers until it is evicted or the
// session closed: buffers that change from call to call belong to
// ModelVersion.Run, which keeps nothing.
func (s *Session) Run(inputs, outputs []Tensor) error {
	s.checkArity(inputs, outputs)
	for i := range outputs {
		if !s.sizeOutput(&outputs[i], i, inputs) {
			return s.runUncached(inputs, outputs)
		}
	}
	b, err := s.binding(inputs, outputs)
	if err != nil {
		return err
	}
	if err := s.ort.RunWithBinding(b.io); err != nil {
		return fmt.Errorf("cannot run model: %w", err)
	}
	return nil
}

func (s *Session) checkArity(inputs, outputs []Tensor) {
	if len(inputs) != len(s.inputs) || len(outputs) != len(s.outputs) {
		panic(fmt.Sprintf("BUG: session takes %d inputs and %d outputs, got %d and %d",
			len(s.inputs), len(s.outputs), len(inputs), len(outputs)))
	}
}

// runUncached runs with ORT values made for this run and destroyed before
// it returns, so that the session keeps no reference to the caller's
// buffers: outputs whose shape is known before running are written straight
// into the caller's buffers, the others are allocated by ONNX Runtime and
// copied out. It serves one-off buffers (the direct path's, the warm-up's)
// and models whose output shapes are only known after the run.
func (s *Session) runUncached(inputs, outputs []Tensor) error {
	s.checkArity(inputs, outputs)
	defer s.release()
	for i, in := range inputs {
		v, err := ort.NewCustomDataTensor(ort.Shape(in.Shape), in.Data, ort.TensorElementDataType(in.DataType))
		if err != nil {
			return fmt.Errorf("cannot pass input %q: %w", s.inputs[i].Name, err)
		}
		s.inValues[i] = v
	}
	for i := range outputs {
		if !s.sizeOutput(&outputs[i], i, inputs) {
			continue // ONNX Runtime allocates it
		}
		out := &outputs[i]
		v, err := ort.NewCustomDataTensor(ort.Shape(out.Shape), out.Data, ort.TensorElementDataType(out.DataType))
		if err != nil {
			return fmt.Errorf("cannot pass output %q: %w", s.outputs[i].Name, err)
		}
		s.outValues[i] = v
		s.outPreset[i] = true
	}
	if err := s.ort.Run(s.inValues, s.outValues); err != nil {
		return fmt.Errorf("cannot run model: %w", err)
	}
	for i, v := range s.outValues {
		if s.outPreset[i] {
			continue
		}
		if err := copyOutput(&outputs[i], v); err != nil {
			return fmt.Errorf("cannot read output %q: %w", s.outputs[i].Name, err)
		}
	}
	return nil
}

// sizeOutput sizes dst for output i when its shape is known before running:
// static but for a leading batch dimension that the first input shares.
func (s *Session) sizeOutput(dst *Tensor, i int, inputs []Tensor) bool {
	info := s.outputs[i]
	dst.DataType = info.DataType
	dst.Shape = append(dst.Shape[:0], info.Shape...)
	for j, d := range dst.Shape {
		if d != Dynamic {
			continue
		}
		if j != 0 || len(inputs[0].Shape) == 0 || len(s.inputs[0].Shape) == 0 || s.inputs[0].Shape[0] != Dynamic {
			return false
		}
		dst.Shape[0] = inputs[0].Shape[0]
	}
	n := Elements(dst.Shape) * info.DataType.Size()
	if n <= 0 {
		return false // ORT refuses empty custom tensors; let it allocate
	}
	if cap(dst.Data) < n {
		dst.Data = make([]byte, n)
	}
	dst.Data = dst.Data[:n]
	return true
}

// release destroys the ORT values of the last runUncached.
func (s *Session) release() {
	clear(s.outPreset)
	for i, v := range s.inValues {
		if v != nil {
			v.Destroy()
			s.inValues[i] = nil
		}
	}
	for i, v := range s.outValues {
		if v != nil {
			v.Destroy()
			s.outValues[i] = nil
		}
	}
}

// copyOutput copies an output ONNX Runtime allocated into dst's buffers.
func copyOutput(dst *Tensor, v ort.Value) error {
	dst.DataType = DataType(v.DataType())
	dst.Shape = append(dst.Shape[:0], v.GetShape()...)
	var raw []byte
	switch t := v.(type) {
	case *ort.Tensor[float32]:
		raw = bytesOf(t.GetData())
	case *ort.Tensor[float64]:
		raw = bytesOf(t.GetData())
	case *ort.Tensor[int8]:
		raw = bytesOf(t.GetData())
	case *ort.Tensor[uint8]:
		raw = bytesOf(t.GetData())
	case *ort.Tensor[int16]:
		raw = bytesOf(t.GetData())
	case *ort.Tensor[uint16]:
		raw = bytesOf(t.GetData())
	case *ort.Tensor[int32]:
		raw = bytesOf(t.GetData())
	case *ort.Tensor[uint32]:
		raw = bytesOf(t.GetData())
	case *ort.Tensor[int64]:
		raw = bytesOf(t.GetData())
	case *ort.Tensor[uint64]:
		raw = bytesOf(t.GetData())
	case *ort.Tensor[bool]:
		raw = bytesOf(t.GetData())
	default:
		return fmt.Errorf("unsupported output value %T", v)
	}
	dst.Data = append(dst.Data[:0], raw...)
	return nil
}

func bytesOf[T any](s []T) []byte {
	if len(s) == 0 {
		return nil
	}
	var zero T
	return unsafe.Slice((*byte)(unsafe.Pointer(&s[0])), len(s)*int(unsafe.Sizeof(zero)))
}

// Close destroys the session. The caller ensures no Run is in flight.
func (s *Session) Close() error {
	s.bindings.clear()
	return s.ort.Destroy()
}
