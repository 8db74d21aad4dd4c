package bench

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fastjson"

	"github.com/infergate/infergate/runtime"
)

// TensorSpec is one input as V2 model metadata describes it.
type TensorSpec struct {
	Name     string
	DataType runtime.DataType
	// Shape holds -1 for each dimension of free size.
	Shape []int64
}

// ParseMetadata returns the inputs a V2 model metadata document
// (GET /v2/models/{m}) lists.
func ParseMetadata(doc []byte) ([]TensorSpec, error) {
	var p fastjson.Parser
	v, err := p.ParseBytes(doc)
	if err != nil {
		return nil, fmt.Errorf("cannot parse model metadata: %w", err)
	}
	ins := v.GetArray("inputs")
	if len(ins) == 0 {
		return nil, fmt.Errorf("model metadata lists no inputs: %.200s", doc)
	}
	specs := make([]TensorSpec, len(ins))
	for i, in := range ins {
		name := string(in.GetStringBytes("name"))
		dt, ok := runtime.ParseDataType(in.GetStringBytes("datatype"))
		if name == "" || !ok {
			return nil, fmt.Errorf("model metadata input %d: want a name and a datatype such as FP32, got %s", i, in)
		}
		dims := in.GetArray("shape")
		shape := make([]int64, len(dims))
		for j, d := range dims {
			n, err := d.Int64()
			if err != nil || n < runtime.Dynamic {
				return nil, fmt.Errorf("model metadata input %q: invalid shape %s", name, in.Get("shape"))
			}
			shape[j] = n
		}
		specs[i] = TensorSpec{Name: name, DataType: dt, Shape: shape}
	}
	return specs, nil
}

// FetchMetadata returns the V2 model metadata document of model (and of its
// version, if not empty) from the server at addr.
func FetchMetadata(addr, model, version string, timeout time.Duration) ([]byte, error) {
	path := "/v2/models/" + url.PathEscape(model)
	if version != "" {
		path += "/versions/" + url.PathEscape(version)
	}
	body, err := fetch(addr, path, timeout)
	if err != nil {
		return nil, fmt.Errorf("cannot fetch model metadata: %w", err)
	}
	return body, nil
}

// FetchMetrics returns the Prometheus text the server at addr answers on /metrics.
func FetchMetrics(addr string, timeout time.Duration) (string, error) {
	body, err := fetch(addr, "/metrics", timeout)
	if err != nil {
		return "", fmt.Errorf("cannot fetch metrics: %w", err)
	}
	return string(body), nil
}

// fetch GETs path from addr and returns the body of a 200 answer.
func fetch(addr, path string, timeout time.Duration) ([]byte, error) {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://" + addr + path)
	if err := fasthttp.DoTimeout(req, resp, timeout); err != nil {
		return nil, fmt.Errorf("http://%s%s: %w", addr, path, err)
	}
	if resp.StatusCode() != fasthttp.StatusOK {
		return nil, fmt.Errorf("http://%s%s: status %d: %.200s", addr, path, resp.StatusCode(), resp.Body())
	}
	return append([]byte(nil), resp.Body()...), nil
}

// ShapeFor returns the shape of a request of rows rows: a dynamic first
// dimension becomes rows, other dynamic dimensions 1. A fixed first
// dimension stays as it is.
func (s TensorSpec) ShapeFor(rows int) []int64 {
	shape := make([]int64, len(s.Shape))
	for i, d := range s.Shape {
		switch {
		case d != runtime.Dynamic:
			shape[i] = d
		case i == 0:
			shape[i] = int64(rows)
		default:
			shape[i] = 1
		}
	}
	return shape
}

// Payload is a generated infer request.
type Payload struct {
	Body []byte
	// Rows is the number of rows the request carries.
	Rows int
	// HeaderLength is, for a body in the binary tensor data extension, the
	// length of its JSON header; 0 for a JSON body.
	HeaderLength int
}

// HeaderLengthHeader says, in the binary tensor data extension, how many
// bytes of the body are its JSON header; the tensors' bytes follow it.
const HeaderLengthHeader = "Inference-Header-Content-Length"

// Into makes r send the payload: its body, rows and, for binary tensor
// data, the header length and an octet-stream content type.
func (p Payload) Into(r *Request) {
	r.Body, r.Rows = p.Body, p.Rows
	if p.HeaderLength == 0 {
		return
	}
	r.ContentType = "application/octet-stream"
	if r.Header == nil {
		r.Header = map[string]string{}
	}
	r.Header[HeaderLengthHeader] = strconv.Itoa(p.HeaderLength)
}

// GenerateRequest returns a V2 infer request with one tensor per input,
// rows rows each, filled with random values of the input's datatype drawn
// from seed: floats are multiples of 1/64 in [-1, 1) (exact in FP16),
// integers are in [0, 100), booleans are even. With binary, the tensors'
// bytes follow the JSON header in the binary tensor data extension (as
// Triton's clients send large tensors), so the server decodes no numbers
// from text. The payload carries rows rows, or the first input's fixed
// first dimension.
func GenerateRequest(inputs []TensorSpec, rows int, seed uint64, binary bool) (Payload, error) {
	if rows < 1 {
		return Payload{}, fmt.Errorf("bench: rows must be at least 1, got %d", rows)
	}
	if len(inputs) == 0 {
		return Payload{}, fmt.Errorf("bench: no inputs to generate")
	}
	src := newValues(seed)
	b := []byte(`{"inputs":[`)
	var data []byte
	for i, in := range inputs {
		if !in.DataType.Valid() {
			return Payload{}, fmt.Errorf("bench: input %q has unsupported datatype %s", in.Name, in.DataType)
		}
		if i > 0 {
			b = append(b, ',')
		}
		shape := in.ShapeFor(rows)
		name, _ := json.Marshal(in.Name)
		b = append(b, `{"name":`...)
		b = append(b, name...)
		b = append(b, `,"shape":[`...)
		for j, d := range shape {
			if j > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendInt(b, d, 10)
		}
		b = append(b, `],"datatype":"`...)
		b = append(b, in.DataType.String()...)
		n := runtime.Elements(shape)
		if binary {
			size := n * in.DataType.Size()
			b = append(b, `","parameters":{"binary_data_size":`...)
			b = strconv.AppendInt(b, int64(size), 10)
			b = append(b, "}}"...)
			data = slices.Grow(data, size)
			for range n {
				data = src.appendBinary(data, in.DataType)
			}
			continue
		}
		b = append(b, `","data":[`...)
		for j := range n {
			if j > 0 {
				b = append(b, ',')
			}
			b = src.appendJSON(b, in.DataType)
		}
		b = append(b, "]}"...)
	}
	b = append(b, "]}"...)
	if shape := inputs[0].ShapeFor(rows); len(shape) > 0 {
		rows = int(shape[0])
	}
	p := Payload{Body: b, Rows: rows}
	if binary {
		p.HeaderLength = len(b)
		p.Body = append(b, data...)
	}
	return p, nil
}

// RequestRows returns the first dimension of the first input of a V2 JSON
// infer request body, or 1 when it has none.
func RequestRows(body []byte) int {
	var p fastjson.Parser
	v, err := p.ParseBytes(body)
	if err != nil {
		return 1
	}
	if n := v.GetInt("inputs", "0", "shape", "0"); n > 0 {
		return n
	}
	return 1
}

// RandomTensor returns a tensor for info with batch rows (dynamic first
// dimension) filled like GenerateRequest fills its data.
func RandomTensor(info runtime.TensorInfo, batch int, seed uint64) runtime.Tensor {
	shape := TensorSpec{Shape: info.Shape}.ShapeFor(batch)
	n := runtime.Elements(shape)
	size := info.DataType.Size()
	data := make([]byte, n*size)
	src := newValues(seed)
	for i := range n {
		src.putBinary(data[i*size:(i+1)*size], info.DataType)
	}
	return runtime.Tensor{DataType: info.DataType, Shape: shape, Data: data}
}

// values draws the random element values of generated tensors.
type values struct{ rng *rand.Rand }

func newValues(seed uint64) values {
	return values{rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))}
}

func (v values) float() float64 { return float64(v.rng.IntN(128)-64) / 64 }
func (v values) int() int64     { return int64(v.rng.IntN(100)) }
func (v values) bool() bool     { return v.rng.IntN(2) == 1 }

func (v values) appendJSON(b []byte, dt runtime.DataType) []byte {
	switch dt {
	case runtime.FP16, runtime.FP32, runtime.FP64:
		return strconv.AppendFloat(b, v.float(), 'g', -1, 64)
	case runtime.BOOL:
		return strconv.AppendBool(b, v.bool())
	default:
		return strconv.AppendInt(b, v.int(), 10)
	}
}

// appendBinary appends one little-endian element of dt to b.
func (v values) appendBinary(b []byte, dt runtime.DataType) []byte {
	n := len(b)
	b = append(b, make([]byte, dt.Size())...)
	v.putBinary(b[n:], dt)
	return b
}

// putBinary writes one little-endian element of dt into dst.
func (v values) putBinary(dst []byte, dt runtime.DataType) {
	switch dt {
	case runtime.FP16:
		binary.LittleEndian.PutUint16(dst, float16Bits(float32(v.float())))
	case runtime.FP32:
		binary.LittleEndian.PutUint32(dst, math.Float32bits(float32(v.float())))
	case runtime.FP64:
		binary.LittleEndian.PutUint64(dst, math.Float64bits(v.float()))
	case runtime.BOOL:
		dst[0] = 0
		if v.bool() {
			dst[0] = 1
		}
	default:
		n := uint64(v.int())
		for i := range dst {
			dst[i] = byte(n >> (8 * i))
		}
	}
}

// float16Bits converts f to IEEE half precision. It is exact for the
// generated values (0 or multiples of 1/64 below 1 in magnitude), which are
// all normal half-precision numbers.
func float16Bits(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	if b&0x7fffffff == 0 {
		return sign
	}
	exp := int(b>>23&0xff) - 127 + 15
	return sign | uint16(exp)<<10 | uint16(b>>13&0x3ff)
}
