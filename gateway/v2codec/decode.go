package v2codec

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/infergate/infergate/runtime"
)

// Request is one decoded V2 inference request. Acquire it with
// AcquireRequest and give it back with ReleaseRequest; its buffers are
// reused by later requests, so nothing in it may be kept after release. A
// Request is not safe for concurrent use.
type Request struct {
	// ID is the request's "id", copied out of the body; nil when absent.
	ID []byte

	// Inputs holds one tensor per model input, in the model's input order.
	Inputs []runtime.Tensor

	// Outputs is the "outputs" selection in request order; empty means all
	// of the model's outputs, each binary when BinaryOutput is set.
	Outputs []RequestedOutput

	// Timeout is parameters.timeout (microseconds in the request); 0 when absent.
	Timeout time.Duration

	// Priority is parameters.priority; 0 when absent.
	Priority int

	// BinaryOutput is parameters.binary_data_output (Triton's binary tensor
	// extension): outputs are sent as raw bytes after the JSON unless an
	// output's own binary_data parameter says otherwise.
	BinaryOutput bool

	// Values is the number of values (containers, strings, numbers and
	// literals) of the request's JSON, counted by Decode.
	Values int

	// WellFormed is set when Decode found the JSON well formed and within
	// its bound on values, even if the request it holds is wrong: Values
	// then counts all of it.
	WellFormed bool

	// RawContents is set by DecodeProto when the gRPC
	// request sent its inputs in raw_input_contents: the response then
	// sends its outputs raw too.
	RawContents bool

	// wire holds where ParseProto found the fields of an encoded
	// ModelInferRequest, for DecodeProto.
	wire protoWire

	// scanner keeps the key sets of the objects being decoded, checks the
	// values the decoder does not read itself, and checks a whole body
	// again when Decode fails.
	scanner Scanner

	// id backs ID across requests, so that an "id" costs no allocation.
	id []byte

	// outputSet[k] is whether Outputs[k] gave its own binary_data.
	outputSet []bool

	// text and key1 hold a string value and a key that had escapes, decoded.
	text, key1 []byte

	// path is the index path of the nested "data" value being decoded, kept
	// only to name a bad value in an error.
	path []int

	// doc and bin are the body's JSON and binary parts while Decode runs;
	// binary is set when the body has the binary extension's layout, and
	// offset is where the next binary input begins in bin.
	doc, bin []byte
	binary   bool
	offset   int

	// maxValues bounds Values.
	maxValues int
}

// RequestedOutput is one entry of a request's "outputs" selection.
type RequestedOutput struct {
	// Index is the position of the output among the model's outputs.
	Index int
	// Binary is the output's parameters.binary_data, or the request's
	// parameters.binary_data_output where the output does not say.
	Binary bool
	// Classes is the output's parameters.classification (Triton's
	// classification extension): the output is answered as the top Classes
	// classes of each row, a BYTES tensor, instead of its scores; 0 when
	// absent. Decode accepts it only on a [batch, classes] FP32 or FP64
	// output, and no larger than a fixed class count.
	Classes int
}

// A released request drops tensor buffers grown past this bound, so that
// one huge request does not leave its memory pinned in the pool.
const maxPooledTensorBytes = 4 << 20

var requestPool sync.Pool

// AcquireRequest returns an empty Request from the pool. It is safe for
// concurrent use.
func AcquireRequest() *Request {
	if v := requestPool.Get(); v != nil {
		return v.(*Request)
	}
	return &Request{}
}

// ReleaseRequest returns r to the pool. Neither r nor anything taken
// from it (IDs, tensors' Shape and Data) may be used afterwards.
func ReleaseRequest(r *Request) {
	r.reset()
	requestPool.Put(r)
}

// reset empties r but keeps its buffers, unless they grew too big to pool.
func (r *Request) reset() {
	r.wire.reset()
	r.resetDecoded()
}

// resetDecoded empties what a decode fills, but leaves what ParseProto
// found for DecodeProto.
func (r *Request) resetDecoded() {
	r.ID = nil
	r.RawContents = false
	r.Outputs = r.Outputs[:0]
	r.outputSet = r.outputSet[:0]
	r.Timeout = 0
	r.Priority = 0
	r.BinaryOutput = false
	// The tensors beyond len stay reachable through the capacity, so that the
	// next request reuses their Shape and Data buffers.
	for i := range r.Inputs {
		t := &r.Inputs[i]
		t.DataType = runtime.Invalid
		t.Shape = t.Shape[:0]
		t.Data = t.Data[:0]
		if cap(t.Data) > maxPooledTensorBytes {
			t.Data = nil
		}
	}
	r.Inputs = r.Inputs[:0]
	r.Values, r.WellFormed = 0, false
}

// Decode decodes body, a V2 infer request for a model of these inputs and
// outputs, into r in one pass over its bytes: the JSON is checked as strictly
// as Scanner checks it (no NaN, leading zeros, bad escapes, invalid UTF-8,
// duplicate keys or trailing data) while it is read, and each element of an
// input's "data" goes straight from its text into the tensor's buffer.
// headerLen is the value of the Inference-Header-Content-Length header
// (Triton's binary tensor extension), or -1 when absent. When present,
// body[:headerLen] is the JSON and the rest holds the binary data of the
// inputs whose parameters carry binary_data_size, in request order.
//
// The JSON may hold at most maxValues values (the gateway bounds them by
// what the model's inputs take); beyond that Decode stops, with an error
// wrapping ErrTooManyValues (HTTP 413). Every other error describes a bad
// request (HTTP 400). Where the JSON is well formed, r.WellFormed is set
// and r.Values holds its number of values, even when Decode fails. r keeps
// no view of body.
func (r *Request) Decode(body []byte, headerLen, maxValues int, inputs, outputs []runtime.TensorInfo) error {
	r.reset()
	r.doc, r.bin = body, nil
	if headerLen >= 0 {
		if headerLen > len(body) {
			return fmt.Errorf("Inference-Header-Content-Length %d exceeds the body's %d bytes", headerLen, len(body))
		}
		r.doc, r.bin = body[:headerLen], body[headerLen:]
	}
	defer func() { r.doc, r.bin = nil, nil }()
	r.binary = headerLen >= 0
	r.maxValues, r.offset = maxValues, 0
	r.scanner.open, r.scanner.keys, r.scanner.firstKey, r.scanner.decoded = r.scanner.open[:0], r.scanner.keys[:0], r.scanner.firstKey[:0], r.scanner.decoded[:0]
	err := r.decodeRequest(inputs, outputs)
	if err != nil {
		// A body that is not JSON, or holds too many values, is refused as
		// such wherever its fault lies, not for the first thing the decoder
		// found wrong before reaching it. Checking the whole body again
		// costs only requests that fail.
		values, scanErr := r.scanner.Scan(r.doc, maxValues)
		if scanErr != nil {
			return r.jsonError(scanErr)
		}
		r.Values, r.WellFormed = values, true
		return err
	}
	r.WellFormed = true
	return nil
}

// jsonError turns an error of Scanner into Decode's.
func (r *Request) jsonError(err error) error {
	if errors.Is(err, ErrTooManyValues) {
		return fmt.Errorf("request too large for the model: its JSON holds more than %d values, "+
			"more than the model's inputs take at max_batch_size rows: %w", r.maxValues, ErrTooManyValues)
	}
	return fmt.Errorf("invalid JSON: %s", err)
}

// count counts one value that the decoder reads itself.
func (r *Request) count() error {
	r.Values++
	if r.Values > r.maxValues {
		return r.jsonError(fmt.Errorf("%w: more than %d", ErrTooManyValues, r.maxValues))
	}
	return nil
}

// skip checks and counts the value at doc[i], inside depth containers, and
// returns the index after it and its trailing space.
func (r *Request) skip(i, depth int) (int, error) {
	end, n, err := r.scanner.skip(r.doc, i, depth, r.maxValues-r.Values)
	r.Values += n
	if err != nil {
		return end, r.jsonError(err)
	}
	return end, nil
}

// walk checks the value at doc[i] like skip but does not count it: for a
// value counted already, or one that is the request's fault anyway.
func (r *Request) walk(i, depth int) (int, error) {
	end, _, err := r.scanner.skip(r.doc, i, depth, math.MaxInt)
	if err != nil {
		return end, r.jsonError(err)
	}
	return end, nil
}

// next reads what follows a member or element at doc[i]: a comma, after
// which it returns where the next one begins and more, or the container's
// closing bracket, after which it returns the index past it.
func (r *Request) next(i int, closing byte) (int, bool, error) {
	doc := r.doc
	i = skipSpace(doc, i)
	switch {
	case i >= len(doc):
		return i, false, r.jsonError(scanError(doc, i, "unexpected end of document"))
	case doc[i] == ',':
		if i = skipSpace(doc, i+1); i >= len(doc) {
			return i, false, r.jsonError(scanError(doc, i, "unexpected end of document"))
		}
		return i, true, nil
	case doc[i] == closing:
		return i + 1, false, nil
	}
	return i, false, r.jsonError(scanError(doc, i, fmt.Sprintf("unexpected %q after a value", doc[i])))
}

// key reads the key at doc[i] of the object being decoded, refusing one
// the object has already, and returns where its value begins.
func (r *Request) key(i int) (int, error) {
	i, err := r.scanner.key(r.doc, i)
	if err != nil {
		return i, r.jsonError(err)
	}
	if i >= len(r.doc) {
		return i, r.jsonError(scanError(r.doc, i, "unexpected end of document"))
	}
	return i, nil
}

// open counts the container that opens at doc[i] and returns where its
// first member begins, or, when it is empty, the index after its closing
// bracket and true.
func (r *Request) open(i int, closing byte) (int, bool, error) {
	if err := r.count(); err != nil {
		return i, false, err
	}
	doc := r.doc
	i = skipSpace(doc, i+1)
	if i < len(doc) && doc[i] == closing {
		return i + 1, true, nil
	}
	if i >= len(doc) {
		return i, false, r.jsonError(scanError(doc, i, "unexpected end of document"))
	}
	return i, false, nil
}

// decodeRequest decodes the request object that r.doc holds.
func (r *Request) decodeRequest(inputs, outputs []runtime.TensorInfo) error {
	doc := r.doc
	i := skipSpace(doc, 0)
	if i >= len(doc) {
		return r.jsonError(scanError(doc, i, "unexpected end of document"))
	}
	if doc[i] != '{' {
		if _, err := r.walk(i, 0); err != nil {
			return err
		}
		return fmt.Errorf("the request must be a JSON object, got %s", r.jsonType(i))
	}
	i, empty, err := r.open(i, '}')
	if err != nil {
		return err
	}
	seenInputs := false
	r.scanner.enter()
	for more := !empty; more; {
		if i, err = r.key(i); err != nil {
			return err
		}
		switch string(r.scanner.lastKey(doc)) {
		case "id":
			i, err = r.decodeID(i)
		case "parameters":
			i, err = r.decodeParameters(i)
		case "inputs":
			seenInputs = true
			i, err = r.decodeInputs(i, inputs)
		case "outputs":
			i, err = r.decodeOutputs(i, outputs)
		default:
			i, err = r.skip(i, 1)
		}
		if err != nil {
			return err
		}
		if i, more, err = r.next(i, '}'); err != nil {
			return err
		}
	}
	r.scanner.leave()
	if i = skipSpace(doc, i); i != len(doc) {
		return r.jsonError(scanError(doc, i, "unexpected data after the document"))
	}

	if !seenInputs {
		return errors.New(`missing "inputs"`)
	}
	if r.offset != len(r.bin) {
		return fmt.Errorf("the binary data after the JSON holds %d bytes but the inputs' binary_data_size add up to %d", len(r.bin), r.offset)
	}
	for i := range inputs {
		if r.Inputs[i].DataType == runtime.Invalid {
			return fmt.Errorf("missing input %q", inputs[i].Name)
		}
	}
	// binary_data_output is the default of the outputs that do not say,
	// wherever it came in the request.
	for k := range r.Outputs {
		if !r.outputSet[k] {
			r.Outputs[k].Binary = r.BinaryOutput
		}
	}
	return nil
}

func (r *Request) decodeID(i int) (int, error) {
	end, err := r.skip(i, 1)
	if err != nil {
		return end, err
	}
	if r.doc[i] != '"' {
		return end, fmt.Errorf(`"id" must be a string, got %s`, r.jsonType(i))
	}
	if r.id == nil {
		// A non-nil buffer, so that "id": "" is present but empty.
		r.id = make([]byte, 0, 64)
	}
	r.id = append(r.id[:0], r.stringValue(i)...)
	r.ID = r.id
	return end, nil
}

func (r *Request) decodeParameters(i int) (int, error) {
	end, err := r.skip(i, 1)
	if err != nil {
		return end, err
	}
	if r.doc[i] != '{' {
		return end, fmt.Errorf(`"parameters" must be an object, got %s`, r.jsonType(i))
	}
	return end, r.members(i, func(key []byte, v int) error {
		switch string(key) {
		case "timeout":
			us, ok := r.nonNegativeInt(v)
			if !ok || us > math.MaxInt64/int64(time.Microsecond) {
				return fmt.Errorf("parameters.timeout: want a non-negative integer number of microseconds, got %s", r.describe(v))
			}
			r.Timeout = time.Duration(us) * time.Microsecond
		case "priority":
			n, ok := r.nonNegativeInt(v)
			if !ok || n > math.MaxInt32 {
				return fmt.Errorf("parameters.priority: want a non-negative integer, got %s", r.describe(v))
			}
			r.Priority = int(n)
		case "binary_data_output":
			b, ok := r.boolValue(v)
			if !ok {
				return fmt.Errorf("parameters.binary_data_output: want true or false, got %s", r.describe(v))
			}
			r.BinaryOutput = b
		}
		return nil
	})
}

func (r *Request) decodeInputs(i int, model []runtime.TensorInfo) (int, error) {
	doc := r.doc
	if doc[i] != '[' {
		end, err := r.skip(i, 1)
		if err != nil {
			return end, err
		}
		return end, fmt.Errorf(`"inputs" must be an array, got %s`, r.jsonType(i))
	}
	i, empty, err := r.open(i, ']')
	if err != nil {
		return i, err
	}
	if empty {
		return i, fmt.Errorf(`"inputs" is empty (the model takes %s)`, quotedNames(model))
	}

	// Reslicing within capacity brings back the tensors of earlier requests
	// with their buffers; DataType Invalid marks an input not yet seen.
	r.Inputs = slices.Grow(r.Inputs[:0], len(model))[:len(model)]
	for k := range r.Inputs {
		t := &r.Inputs[k]
		t.DataType = runtime.Invalid
		t.Shape = t.Shape[:0]
		t.Data = t.Data[:0]
	}
	for j, more := 0, true; more; j++ {
		if i, err = r.decodeInput(j, i, model); err != nil {
			return i, err
		}
		if i, more, err = r.next(i, ']'); err != nil {
			return i, err
		}
	}
	return i, nil
}

// inputFields are where the values of an input object's members begin in
// the JSON, -1 for those absent.
type inputFields struct {
	name, datatype, shape, parameters, data int
}

// decodeInput decodes inputs[j], at doc[i], into the tensor of the model
// input it names, and returns the index after it. Binary data, if the
// input has some, begins at r.offset in r.bin.
func (r *Request) decodeInput(j, i int, model []runtime.TensorInfo) (int, error) {
	doc := r.doc
	if doc[i] != '{' {
		end, err := r.skip(i, 2)
		if err != nil {
			return end, err
		}
		return end, fmt.Errorf("inputs[%d]: want an object, got %s", j, r.jsonType(i))
	}
	i, empty, err := r.open(i, '}')
	if err != nil {
		return i, err
	}
	f := inputFields{-1, -1, -1, -1, -1}
	var (
		t            *runtime.Tensor
		info         runtime.TensorInfo
		decoded      bool // the data, read as it came
		binarySize   int64
		hasBinary    bool
		binaryParsed bool
	)
	r.scanner.enter()
	for more := !empty; more; {
		if i, err = r.key(i); err != nil {
			return i, err
		}
		read := false
		switch string(r.scanner.lastKey(doc)) {
		case "name":
			f.name = i
		case "datatype":
			f.datatype = i
		case "shape":
			f.shape = i
		case "parameters":
			f.parameters = i
		case "data":
			f.data = i
			if f.name < 0 || f.datatype < 0 || f.shape < 0 {
				break // read at the end, once what it needs is known
			}
			read = true
			// The usual order: what the data needs came first, so the
			// data is decoded as it is read.
			if t, info, err = r.inputHead(j, f, model); err != nil {
				return i, err
			}
			if f.parameters >= 0 {
				binaryParsed = true
				if binarySize, hasBinary, err = r.decodeBinarySize(f.parameters, info.Name); err != nil {
					return i, err
				}
				if hasBinary {
					return i, fmt.Errorf(`input %q: has both "data" and parameters.binary_data_size`, info.Name)
				}
			}
			if i, err = r.decodeData(i, t, info.Name, runtime.Elements(t.Shape)); err != nil {
				return i, err
			}
			decoded = true
		}
		if !read {
			if i, err = r.skip(i, dataDepth); err != nil {
				return i, err
			}
		}
		if i, more, err = r.next(i, '}'); err != nil {
			return i, err
		}
	}
	r.scanner.leave()

	if t == nil {
		if t, info, err = r.inputHead(j, f, model); err != nil {
			return i, err
		}
	}
	if !binaryParsed && f.parameters >= 0 {
		if binarySize, hasBinary, err = r.decodeBinarySize(f.parameters, info.Name); err != nil {
			return i, err
		}
	}
	elements := runtime.Elements(t.Shape)
	switch {
	case hasBinary && f.data >= 0:
		return i, fmt.Errorf(`input %q: has both "data" and parameters.binary_data_size`, info.Name)
	case hasBinary && !r.binary:
		return i, fmt.Errorf("input %q: parameters.binary_data_size needs the Inference-Header-Content-Length header", info.Name)
	case hasBinary:
		return i, r.decodeBinaryData(t, info.Name, elements, binarySize)
	case f.data < 0:
		return i, fmt.Errorf(`input %q: missing "data"`, info.Name)
	case decoded:
		return i, nil
	}
	// The data came before what it needs: decode it now, without counting
	// its values again.
	values, limit := r.Values, r.maxValues
	r.maxValues = math.MaxInt
	_, err = r.decodeData(f.data, t, info.Name, elements)
	r.Values, r.maxValues = values, limit
	return i, err
}

// inputHead reads the name, datatype and shape of inputs[j], checked
// already, and returns the tensor they decode into.
func (r *Request) inputHead(j int, f inputFields, model []runtime.TensorInfo) (*runtime.Tensor, runtime.TensorInfo, error) {
	if f.name < 0 {
		return nil, runtime.TensorInfo{}, fmt.Errorf(`inputs[%d]: missing "name"`, j)
	}
	if r.doc[f.name] != '"' {
		return nil, runtime.TensorInfo{}, fmt.Errorf(`inputs[%d]: "name" must be a string, got %s`, j, r.jsonType(f.name))
	}
	name := r.stringValue(f.name)
	idx := tensorIndex(model, name)
	if idx < 0 {
		return nil, runtime.TensorInfo{}, fmt.Errorf("unknown input %q (the model takes %s)", name, quotedNames(model))
	}
	info := model[idx]
	t := &r.Inputs[idx]
	if t.DataType != runtime.Invalid {
		return nil, info, fmt.Errorf("input %q: duplicated", info.Name)
	}
	var err error
	if t.DataType, err = r.decodeDataType(f.datatype, info); err != nil {
		return nil, info, err
	}
	return t, info, r.decodeShape(f.shape, t, info)
}

func (r *Request) decodeDataType(v int, info runtime.TensorInfo) (runtime.DataType, error) {
	if v < 0 {
		return runtime.Invalid, fmt.Errorf(`input %q: missing "datatype"`, info.Name)
	}
	if r.doc[v] != '"' {
		return runtime.Invalid, fmt.Errorf(`input %q: "datatype" must be a string, got %s`, info.Name, r.jsonType(v))
	}
	name := r.stringValue(v)
	dt, ok := runtime.ParseDataType(name)
	switch {
	case string(name) == "BYTES":
		return runtime.Invalid, fmt.Errorf("input %q: datatype BYTES is not supported (infergate serves BOOL, integer and floating-point tensors)", info.Name)
	case !ok:
		return runtime.Invalid, fmt.Errorf("input %q: unknown datatype %q", info.Name, name)
	case dt != info.DataType:
		return runtime.Invalid, fmt.Errorf("input %q: datatype %s does not match the model's %s", info.Name, dt, info.DataType)
	}
	return dt, nil
}

func (r *Request) decodeShape(v int, t *runtime.Tensor, info runtime.TensorInfo) error {
	if v < 0 {
		return fmt.Errorf(`input %q: missing "shape"`, info.Name)
	}
	if r.doc[v] != '[' {
		return fmt.Errorf(`input %q: "shape" must be an array, got %s`, info.Name, r.jsonType(v))
	}
	err := r.items(v, func(j, d int) error {
		n, ok := r.nonNegativeInt(d)
		if !ok {
			return fmt.Errorf("input %q: shape[%d]: want a non-negative integer, got %s", info.Name, j, r.describe(d))
		}
		t.Shape = append(t.Shape, n)
		return nil
	})
	if err != nil {
		return err
	}
	if len(t.Shape) != len(info.Shape) {
		return fmt.Errorf("input %q: shape %s has rank %d but the model's %s has rank %d",
			info.Name, runtime.FormatShape(t.Shape), len(t.Shape), runtime.FormatShape(info.Shape), len(info.Shape))
	}
	for j, want := range info.Shape {
		if want != runtime.Dynamic && want != t.Shape[j] {
			return fmt.Errorf("input %q: shape %s does not match the model's %s",
				info.Name, runtime.FormatShape(t.Shape), runtime.FormatShape(info.Shape))
		}
	}
	if runtime.Elements(t.Shape) < 0 {
		return fmt.Errorf("input %q: shape %s holds too many elements", info.Name, runtime.FormatShape(t.Shape))
	}
	return nil
}

// decodeBinarySize returns the input's parameters.binary_data_size, if any,
// from its parameters at doc[v].
func (r *Request) decodeBinarySize(v int, name string) (size int64, ok bool, err error) {
	if r.doc[v] != '{' {
		return 0, false, fmt.Errorf(`input %q: "parameters" must be an object, got %s`, name, r.jsonType(v))
	}
	err = r.members(v, func(key []byte, p int) error {
		if string(key) != "binary_data_size" {
			return nil
		}
		if size, ok = r.nonNegativeInt(p); !ok {
			return fmt.Errorf("input %q: parameters.binary_data_size: want a non-negative integer, got %s", name, r.describe(p))
		}
		return nil
	})
	return size, ok, err
}

// decodeBinaryData copies the input's binary data from r.bin at r.offset.
func (r *Request) decodeBinaryData(t *runtime.Tensor, name string, elements int, size int64) error {
	// elements is at most 1<<40 and an element at most 8 bytes: no overflow.
	want := int64(elements) * int64(t.DataType.Size())
	if size != want {
		return fmt.Errorf("input %q: binary_data_size %d does not match shape %s of %s (%d bytes)",
			name, size, runtime.FormatShape(t.Shape), t.DataType, want)
	}
	if left := len(r.bin) - r.offset; want > int64(left) {
		return fmt.Errorf("input %q: binary data needs %d bytes but only %d are left after the JSON", name, want, left)
	}
	end := r.offset + int(want)
	t.Data = append(t.Data[:0], r.bin[r.offset:end]...)
	if t.DataType == runtime.BOOL {
		// The extension encodes true as 1 and false as 0; anything else would
		// reach the model as an undefined bool.
		for j, b := range t.Data {
			if b > 1 {
				return fmt.Errorf("input %q: binary BOOL element %d is %d, want 0 or 1", name, j, b)
			}
		}
	}
	r.offset = end
	return nil
}

// dataDepth is how many containers hold an input's "data": the request,
// "inputs" and the input.
const dataDepth = 3

// decodeData decodes "data" at doc[i], flat or nested to match the shape,
// into t.Data, and returns the index after it. A flat array is refused as
// soon as it runs longer than the shape, a nested one as soon as a level
// does; either, like any element, before a byte more of it is stored.
func (r *Request) decodeData(i int, t *runtime.Tensor, name string, elements int) (int, error) {
	doc := r.doc
	if doc[i] != '[' {
		end, err := r.skip(i, dataDepth)
		if err != nil {
			return end, err
		}
		return end, fmt.Errorf(`input %q: "data" must be an array, got %s`, name, r.jsonType(i))
	}
	size := t.DataType.Size()
	// Each element takes at least two bytes of the JSON, its text and a
	// comma: growing to the shape's size first cannot be made to allocate
	// more than the body justifies.
	if elements <= (len(doc)-i)/2+1 {
		t.Data = slices.Grow(t.Data[:0], elements*size)
	}
	if first := skipSpace(doc, i+1); first < len(doc) && doc[first] == '[' && len(t.Shape) > 1 {
		r.path = r.path[:0]
		return r.decodeNested(i, t, name, 0)
	}

	i, empty, err := r.open(i, ']')
	if err != nil {
		return i, err
	}
	n := 0
	for more := !empty; more; n++ {
		if n == elements {
			return i, r.lengthError(i, n, dataDepth+1, func(held int) error {
				return fmt.Errorf("input %q: shape %s has %d elements but data holds %d", name, runtime.FormatShape(t.Shape), elements, held)
			})
		}
		start := i
		if t.Data, i, err = r.appendElement(t.Data, t.DataType, i); err != nil {
			return i, r.elementError(start, n, dataDepth+1, elements, err, func(held int) error {
				return fmt.Errorf("input %q: shape %s has %d elements but data holds %d", name, runtime.FormatShape(t.Shape), elements, held)
			}, func() error {
				return fmt.Errorf("input %q: data[%d]: %w", name, n, err)
			})
		}
		if i, more, err = r.next(i, ']'); err != nil {
			return i, err
		}
	}
	if n != elements {
		return i, fmt.Errorf("input %q: shape %s has %d elements but data holds %d", name, runtime.FormatShape(t.Shape), elements, n)
	}
	return i, nil
}

// decodeNested decodes the nested data at doc[i], the array at depth of
// the shape, which must hold t.Shape[depth] values: arrays above the last
// dimension, scalars in it.
func (r *Request) decodeNested(i int, t *runtime.Tensor, name string, depth int) (int, error) {
	doc := r.doc
	if dataDepth+depth >= maxJSONDepth {
		return i, r.jsonError(scanError(doc, i, fmt.Sprintf("nested deeper than %d levels", maxJSONDepth)))
	}
	want := t.Shape[depth]
	levelError := func(held int) error {
		return fmt.Errorf("input %q: %s holds %d values but shape %s needs %d there",
			name, r.dataPath(), held, runtime.FormatShape(t.Shape), want)
	}
	i, empty, err := r.open(i, ']')
	if err != nil {
		return i, err
	}
	last := depth == len(t.Shape)-1
	n := 0
	for more := !empty; more; n++ {
		if int64(n) == want {
			return i, r.lengthError(i, n, dataDepth+depth+1, levelError)
		}
		start := i
		r.path = append(r.path, n)
		switch {
		case last:
			if t.Data, i, err = r.appendElement(t.Data, t.DataType, i); err != nil {
				err = fmt.Errorf("input %q: %s: %w", name, r.dataPath(), err)
			}
		case i < len(doc) && doc[i] == '[':
			i, err = r.decodeNested(i, t, name, depth+1)
		default:
			var end int
			if end, err = r.walk(i, dataDepth+depth+1); err == nil {
				err = fmt.Errorf("input %q: %s: want an array of %d values (shape %s), got %s",
					name, r.dataPath(), t.Shape[depth+1], runtime.FormatShape(t.Shape), r.describe(i))
			}
			i = end
		}
		r.path = r.path[:len(r.path)-1]
		if err != nil {
			return i, r.elementError(start, n, dataDepth+depth+1, int(min(want, math.MaxInt32)), err, levelError, func() error { return err })
		}
		if i, more, err = r.next(i, ']'); err != nil {
			return i, err
		}
	}
	if int64(n) != want {
		return i, levelError(n)
	}
	return i, nil
}

// lengthError counts the elements of an array from its n-th, at doc[i],
// on, and returns what tooLong makes of its length.
func (r *Request) lengthError(i, n, depth int, tooLong func(held int) error) error {
	rest, err := r.countRest(i, depth)
	if err != nil {
		return err
	}
	return tooLong(n + rest)
}

// elementError returns the error of an array whose n-th element, at
// doc[start], failed with err: its wrong length, as the shape needs it
// checked first, else what elemErr makes of err.
func (r *Request) elementError(start, n, depth, want int, err error, wrongLength func(held int) error, elemErr func() error) error {
	rest, scanErr := r.countRest(start, depth)
	if scanErr != nil {
		return scanErr
	}
	if n+rest != want {
		return wrongLength(n + rest)
	}
	return elemErr()
}

// countRest counts the elements of an array from the one at doc[i] to its
// end.
func (r *Request) countRest(i, depth int) (int, error) {
	n := 0
	for more := true; more; n++ {
		var err error
		if i, err = r.walk(i, depth); err != nil {
			return n, err
		}
		if i, more, err = r.next(i, ']'); err != nil {
			return n, err
		}
	}
	return n, nil
}

// dataPath names the value at r.path, such as "data[1][0]".
func (r *Request) dataPath() string {
	var b strings.Builder
	b.WriteString("data")
	for _, j := range r.path {
		fmt.Fprintf(&b, "[%d]", j)
	}
	return b.String()
}

// appendElement appends the little-endian bytes of the JSON value at
// doc[i] as a dt, and returns the index after the value. Numbers are parsed
// from the body's bytes as they are: strconv rounds a decimal exactly, once,
// to the float's width.
func (r *Request) appendElement(dst []byte, dt runtime.DataType, i int) ([]byte, int, error) {
	doc := r.doc
	if i >= len(doc) {
		return dst, i, r.jsonError(scanError(doc, i, "unexpected end of document"))
	}
	if err := r.count(); err != nil {
		return dst, i, err
	}
	c := doc[i]
	if c != '-' && (c < '0' || c > '9') {
		if dt == runtime.BOOL && (c == 't' || c == 'f') {
			end, err := scanLiteral(doc, i)
			switch {
			case err != nil:
				return dst, end, r.jsonError(err)
			case doc[i+1] == 'r':
				return append(dst, 1), end, nil
			case doc[i+1] == 'a':
				return append(dst, 0), end, nil
			}
		}
		end, err := r.walk(i, 0)
		if err != nil {
			return dst, end, err
		}
		return dst, end, r.wrongType(dt, i)
	}
	end, mantissa, exp, exact, err := scanDecimal(doc, i)
	if err != nil {
		return dst, end, r.jsonError(err)
	}
	// The common short numbers are converted as strconv converts them on its
	// fastest path: an exact mantissa and power of ten, one division or
	// multiplication, rounded once. The others go to strconv.
	switch {
	case !exact:
	case dt == runtime.FP32 && mantissa < 1<<24 && exp >= -10 && exp <= 10:
		f := float32(mantissa)
		if exp < 0 {
			f /= float32pow10[-exp]
		} else {
			f *= float32pow10[exp]
		}
		if c == '-' {
			f = -f
		}
		return binary.LittleEndian.AppendUint32(dst, math.Float32bits(f)), end, nil
	case dt == runtime.FP64 && mantissa < 1<<53 && exp >= -22 && exp <= 22:
		f := float64(mantissa)
		if exp < 0 {
			f /= float64pow10[-exp]
		} else {
			f *= float64pow10[exp]
		}
		if c == '-' {
			f = -f
		}
		return binary.LittleEndian.AppendUint64(dst, math.Float64bits(f)), end, nil
	}
	// strconv copies the text into any error it returns, and fmt formats
	// it at once: nothing keeps this view of the body.
	s := bytesToString(doc[i:end])
	switch dt {
	case runtime.FP32:
		f, err := strconv.ParseFloat(s, 32)
		if err != nil {
			return dst, end, fmt.Errorf("%s is out of range for FP32", s)
		}
		return binary.LittleEndian.AppendUint32(dst, math.Float32bits(float32(f))), end, nil
	case runtime.FP64:
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return dst, end, fmt.Errorf("%s is out of range for FP64", s)
		}
		return binary.LittleEndian.AppendUint64(dst, math.Float64bits(f)), end, nil
	case runtime.FP16:
		// Rounding to float64 first could differ from rounding the decimal
		// straight to half only within 2^-53 of a half-way point.
		f, err := strconv.ParseFloat(s, 64)
		h := float64ToHalf(f)
		if err != nil || h&0x7fff == 0x7c00 {
			return dst, end, fmt.Errorf("%s is out of range for FP16", s)
		}
		return binary.LittleEndian.AppendUint16(dst, h), end, nil
	case runtime.BOOL:
		return dst, end, r.wrongType(dt, i)
	}
	dst, err = appendInteger(dst, dt, s)
	return dst, end, err
}

// The powers of ten that float32 and float64 hold exactly.
var (
	float32pow10 = [...]float32{1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10}
	float64pow10 = [...]float64{1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10,
		1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22}
)

// scanDecimal checks the number at doc[i] as scanNumber does and returns
// the index after it and its value, without sign, as mantissa·10^exp; exact
// is false where the mantissa would need more than 19 digits or the
// exponent is too large to matter (the value is then strconv's to find).
func scanDecimal(doc []byte, i int) (end int, mantissa uint64, exp int, exact bool, err error) {
	start := i
	if doc[i] == '-' {
		i++
	}
	digits := 0 // of the mantissa, from its first non-zero one
	exact = true
	// digit adds decimal digit d to the mantissa.
	digit := func(d byte) {
		if digits == 19 {
			exact = false
			return
		}
		mantissa = mantissa*10 + uint64(d)
		if mantissa != 0 {
			digits++
		}
	}
	switch {
	case i < len(doc) && doc[i] == '0':
		i++
	case i < len(doc) && doc[i] >= '1' && doc[i] <= '9':
		for ; i < len(doc) && doc[i] >= '0' && doc[i] <= '9'; i++ {
			digit(doc[i] - '0')
			if !exact {
				exp++ // a dropped digit of the integer part
			}
		}
	default:
		end, err = scanNumber(doc, start)
		return end, 0, 0, false, err
	}
	if i < len(doc) && doc[i] == '.' {
		i++
		if i >= len(doc) || doc[i] < '0' || doc[i] > '9' {
			end, err = scanNumber(doc, start)
			return end, 0, 0, false, err
		}
		for ; i < len(doc) && doc[i] >= '0' && doc[i] <= '9'; i++ {
			if digit(doc[i] - '0'); exact {
				exp--
			}
		}
	}
	if i < len(doc) && (doc[i] == 'e' || doc[i] == 'E') {
		i++
		negative := false
		if i < len(doc) && (doc[i] == '+' || doc[i] == '-') {
			negative = doc[i] == '-'
			i++
		}
		if i >= len(doc) || doc[i] < '0' || doc[i] > '9' {
			end, err = scanNumber(doc, start)
			return end, 0, 0, false, err
		}
		e := 0
		for ; i < len(doc) && doc[i] >= '0' && doc[i] <= '9'; i++ {
			if e < 100000 {
				e = e*10 + int(doc[i]-'0')
			} else {
				exact = false
			}
		}
		if negative {
			e = -e
		}
		exp += e
	}
	if i < len(doc) && (doc[i] >= '0' && doc[i] <= '9' || doc[i] == '.' || doc[i] == 'x' || doc[i] == 'X') {
		end, err = scanNumber(doc, start)
		return end, 0, 0, false, err
	}
	return i, mantissa, exp, exact, nil
}

// wrongType is the error of the value at doc[i], checked already, which
// is not of a kind that dt takes.
func (r *Request) wrongType(dt runtime.DataType, i int) error {
	switch dt {
	case runtime.BOOL:
		return fmt.Errorf("want true or false, got %s", r.describe(i))
	case runtime.FP16, runtime.FP32, runtime.FP64:
		return fmt.Errorf("want a number, got %s", r.describe(i))
	}
	return fmt.Errorf("want an integer, got %s", r.describe(i))
}

// appendInteger appends JSON number s, checked already, as the integer
// type dt. Numbers with a fraction or an exponent are refused even where
// integral (1.0, 1e3), as Triton does: they are usually floats sent to the
// wrong input.
func appendInteger(dst []byte, dt runtime.DataType, s string) ([]byte, error) {
	digits := s
	negative := s[0] == '-'
	if negative {
		digits = s[1:]
	}
	var magnitude uint64
	overflow := false
	for k := 0; k < len(digits); k++ {
		d := digits[k] - '0'
		if d > 9 {
			return dst, fmt.Errorf("want an integer, got %s", s)
		}
		if magnitude > (math.MaxUint64-uint64(d))/10 {
			overflow = true
		}
		magnitude = magnitude*10 + uint64(d)
	}
	var n uint64
	if dt == runtime.UINT64 {
		if overflow || negative && magnitude != 0 { // -0 is valid JSON, and 0
			return dst, fmt.Errorf("%s is out of range for %s", s, dt)
		}
		n = magnitude
	} else {
		lo, hi := integerRange(dt)
		var i int64
		switch {
		case overflow, negative && magnitude > 1<<63, !negative && magnitude > math.MaxInt64:
			return dst, fmt.Errorf("%s is out of range for %s", s, dt)
		case negative:
			i = int64(-magnitude) // two's complement: -(1<<63) is MinInt64
		default:
			i = int64(magnitude)
		}
		if i < lo || i > hi {
			return dst, fmt.Errorf("%s is out of range for %s", s, dt)
		}
		n = uint64(i) // two's complement; the byte order below keeps the low bytes
	}
	switch dt.Size() {
	case 1:
		return append(dst, byte(n)), nil
	case 2:
		return binary.LittleEndian.AppendUint16(dst, uint16(n)), nil
	case 4:
		return binary.LittleEndian.AppendUint32(dst, uint32(n)), nil
	case 8:
		return binary.LittleEndian.AppendUint64(dst, n), nil
	}
	panic("BUG: appendInteger called for " + dt.String())
}

// integerRange returns the smallest and largest values of the integer type
// dt other than UINT64.
func integerRange(dt runtime.DataType) (lo, hi int64) {
	switch dt {
	case runtime.INT8:
		return math.MinInt8, math.MaxInt8
	case runtime.UINT8:
		return 0, math.MaxUint8
	case runtime.INT16:
		return math.MinInt16, math.MaxInt16
	case runtime.UINT16:
		return 0, math.MaxUint16
	case runtime.INT32:
		return math.MinInt32, math.MaxInt32
	case runtime.UINT32:
		return 0, math.MaxUint32
	case runtime.INT64:
		return math.MinInt64, math.MaxInt64
	}
	panic("BUG: integerRange called for " + dt.String())
}

// The helpers below read values that skip or walk has checked already.

// members calls f with each member of the object at doc[i]: its key,
// unescaped, and where its value begins. It stops at f's first error.
func (r *Request) members(i int, f func(key []byte, v int) error) error {
	doc := r.doc
	i = skipSpace(doc, i+1)
	if doc[i] == '}' {
		return nil
	}
	for {
		end, _ := scanString(doc, i)
		key := doc[i+1 : end-1]
		if bytes.IndexByte(key, '\\') >= 0 {
			r.key1 = unquote(r.key1[:0], doc[i:end])
			key = r.key1
		}
		i = skipSpace(doc, skipSpace(doc, end)+1) // past the colon
		if err := f(key, i); err != nil {
			return err
		}
		i = r.valueEnd(i)
		if doc[i] == '}' {
			return nil
		}
		i = skipSpace(doc, i+1)
	}
}

// items calls f with the index and start of each element of the array at
// doc[i]. It stops at f's first error.
func (r *Request) items(i int, f func(j, v int) error) error {
	doc := r.doc
	i = skipSpace(doc, i+1)
	if doc[i] == ']' {
		return nil
	}
	for j := 0; ; j++ {
		if err := f(j, i); err != nil {
			return err
		}
		i = r.valueEnd(i)
		if doc[i] == ']' {
			return nil
		}
		i = skipSpace(doc, i+1)
	}
}

// valueEnd returns the index after the value at doc[i] and its space.
func (r *Request) valueEnd(i int) int {
	end, _, err := r.scanner.skip(r.doc, i, 0, math.MaxInt)
	if err != nil {
		panic("BUG: a value checked already is not JSON: " + err.Error())
	}
	return end
}

// stringValue returns the text of the string at doc[i], unescaped, valid
// until the next call.
func (r *Request) stringValue(i int) []byte {
	end, _ := scanString(r.doc, i)
	s := r.doc[i+1 : end-1]
	if bytes.IndexByte(s, '\\') < 0 {
		return s
	}
	r.text = unquote(r.text[:0], r.doc[i:end])
	return r.text
}

// unquote appends the text of JSON string quoted, checked already, to dst.
func unquote(dst, quoted []byte) []byte {
	var s string
	if err := json.Unmarshal(quoted, &s); err != nil {
		panic("BUG: a string checked already is not JSON: " + err.Error())
	}
	return append(dst, s...)
}

// boolValue returns the value at doc[i] if it is true or false.
func (r *Request) boolValue(i int) (value, ok bool) {
	switch r.doc[i] {
	case 't':
		return true, true
	case 'f':
		return false, true
	}
	return false, false
}

// nonNegativeInt returns the value at doc[i] as a non-negative JSON integer.
func (r *Request) nonNegativeInt(i int) (int64, bool) {
	if c := r.doc[i]; c != '-' && (c < '0' || c > '9') {
		return 0, false
	}
	end, _ := scanNumber(r.doc, i)
	s := bytesToString(r.doc[i:end])
	if s == "-0" {
		s = "0"
	}
	if strings.ContainsAny(s, ".eE-") {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}

// describe says what the value at doc[i] is in an error: a number's text,
// a string's start, else its JSON type.
func (r *Request) describe(i int) string {
	switch c := r.doc[i]; {
	case c == '-' || c >= '0' && c <= '9':
		end, _ := scanNumber(r.doc, i)
		return string(r.doc[i:end])
	case c == '"':
		s := r.stringValue(i)
		const maxShown = 32
		if len(s) > maxShown {
			return fmt.Sprintf("string %q...", s[:maxShown])
		}
		return fmt.Sprintf("string %q", s)
	}
	return r.jsonType(i)
}

// jsonType names the JSON type of the value at doc[i].
func (r *Request) jsonType(i int) string {
	switch r.doc[i] {
	case '{':
		return "object"
	case '[':
		return "array"
	case '"':
		return "string"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	}
	return "number"
}

func (r *Request) decodeOutputs(i int, model []runtime.TensorInfo) (int, error) {
	end, err := r.skip(i, 1)
	if err != nil {
		return end, err
	}
	if r.doc[i] != '[' {
		return end, fmt.Errorf(`"outputs" must be an array, got %s`, r.jsonType(i))
	}
	return end, r.items(i, func(k, v int) error {
		if r.doc[v] != '{' {
			return fmt.Errorf("outputs[%d]: want an object, got %s", k, r.jsonType(v))
		}
		nameAt, paramsAt := -1, -1
		r.members(v, func(key []byte, m int) error {
			switch string(key) {
			case "name":
				nameAt = m
			case "parameters":
				paramsAt = m
			}
			return nil
		})
		if nameAt < 0 {
			return fmt.Errorf(`outputs[%d]: missing "name"`, k)
		}
		if r.doc[nameAt] != '"' {
			return fmt.Errorf(`outputs[%d]: "name" must be a string, got %s`, k, r.jsonType(nameAt))
		}
		name := r.stringValue(nameAt)
		idx := tensorIndex(model, name)
		if idx < 0 {
			return fmt.Errorf("unknown output %q (the model gives %s)", name, quotedNames(model))
		}
		for _, o := range r.Outputs {
			if o.Index == idx {
				return fmt.Errorf("output %q: requested twice", model[idx].Name)
			}
		}
		out, set := RequestedOutput{Index: idx}, false
		if paramsAt >= 0 {
			if r.doc[paramsAt] != '{' {
				return fmt.Errorf(`output %q: "parameters" must be an object, got %s`, model[idx].Name, r.jsonType(paramsAt))
			}
			err := r.members(paramsAt, func(key []byte, b int) error {
				switch string(key) {
				case "binary_data":
					var ok bool
					if out.Binary, ok = r.boolValue(b); !ok {
						return fmt.Errorf("output %q: parameters.binary_data: want true or false, got %s", model[idx].Name, r.describe(b))
					}
					set = true
				case "classification":
					k, err := r.classification(model[idx], b)
					if err != nil {
						return err
					}
					out.Classes = k
				default:
					return fmt.Errorf("output %q: unsupported parameter %q (an output takes binary_data and classification)", model[idx].Name, key)
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		r.Outputs = append(r.Outputs, out)
		r.outputSet = append(r.outputSet, set)
		return nil
	})
}

// classification returns the class count of the classification parameter
// at doc[i] for output info (CheckClassification).
func (r *Request) classification(info runtime.TensorInfo, i int) (int, error) {
	k, ok := r.nonNegativeInt(i)
	if !ok || k < 1 {
		return 0, fmt.Errorf("output %q: parameters.classification: want an integer of at least 1, got %s", info.Name, r.describe(i))
	}
	if err := CheckClassification(info, k); err != nil {
		return 0, err
	}
	return int(k), nil
}

// CheckClassification checks a classification parameter k (at least 1)
// asked of output info, for any protocol: the output must be a [batch,
// classes] FP32 or FP64 tensor, and k no more than its classes (nor than
// maxClasses where they are dynamic). The error names the output.
func CheckClassification(info runtime.TensorInfo, k int64) error {
	if k < 1 {
		return fmt.Errorf("output %q: parameters.classification: want an integer of at least 1, got %d", info.Name, k)
	}
	if len(info.Shape) != 2 || info.DataType != runtime.FP32 && info.DataType != runtime.FP64 {
		return fmt.Errorf("output %q: parameters.classification needs a [batch, classes] FP32 or FP64 output, not %s%s",
			info.Name, info.DataType, runtime.FormatShape(info.Shape))
	}
	if classes := info.Shape[1]; classes != runtime.Dynamic && k > classes {
		return fmt.Errorf("output %q: parameters.classification asks for %d classes but the output has %d", info.Name, k, classes)
	}
	if k > maxClasses {
		return fmt.Errorf("output %q: parameters.classification asks for %d classes, more than %d", info.Name, k, maxClasses)
	}
	return nil
}

// maxClasses bounds parameters.classification where the output's class
// count is dynamic.
const maxClasses = 1 << 20

// tensorIndex returns the index of the tensor called name, or -1.
func tensorIndex(infos []runtime.TensorInfo, name []byte) int {
	for i := range infos {
		if infos[i].Name == string(name) {
			return i
		}
	}
	return -1
}

// quotedNames lists the tensors' names for an error: `"x", "y"`.
func quotedNames(infos []runtime.TensorInfo) string {
	if len(infos) == 0 {
		return "nothing"
	}
	var b strings.Builder
	for i, info := range infos {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strconv.Quote(info.Name))
	}
	return b.String()
}

// float64ToHalf converts f to IEEE 754 binary16 bits, rounding to nearest
// with ties to even. Values beyond the largest half (65504) round to
// infinity, as IEEE rounding does; NaN stays a (quiet) NaN.
func float64ToHalf(f float64) uint16 {
	b := math.Float64bits(f)
	sign := uint16(b>>48) & 0x8000
	exp := int(b>>52) & 0x7ff
	mant := b & (1<<52 - 1)

	if exp == 0x7ff {
		if mant != 0 {
			return sign | 0x7e00
		}
		return sign | 0x7c00
	}
	halfExp := exp - 1023 + 15
	if halfExp >= 0x1f {
		return sign | 0x7c00
	}
	if halfExp >= 1 {
		// Normal: keep the top 10 of 52 mantissa bits. A carry out of the
		// mantissa lands in the exponent, which is what rounding up needs,
		// up to and including infinity.
		bits := uint64(halfExp)<<10 | mant>>42
		bits += roundUp(mant, 42, bits)
		if bits >= 0x7c00 {
			return sign | 0x7c00
		}
		return sign | uint16(bits)
	}

	// Subnormal or zero: the value is m·2^(exp-1075) and a half subnormal
	// counts units of 2^-24, so the half's bits are m shifted right by
	// 1051-exp, rounded. Beyond a shift of 53 even the largest m rounds to 0.
	shift := 1051 - exp
	if exp == 0 || shift > 53 {
		return sign
	}
	m := mant | 1<<52
	bits := m >> shift
	bits += roundUp(m, uint(shift), bits)
	return sign | uint16(bits)
}

// roundUp returns 1 if dropping the low shift bits of m, leaving kept,
// should round up: they are more than half, or exactly half and kept is odd.
func roundUp(m uint64, shift uint, kept uint64) uint64 {
	rest := m & (1<<shift - 1)
	half := uint64(1) << (shift - 1)
	if rest > half || rest == half && kept&1 == 1 {
		return 1
	}
	return 0
}
