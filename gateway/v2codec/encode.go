package v2codec

import (
	"encoding/binary"
	"math"
	"slices"
	"strconv"
	"unicode/utf8"
	"unsafe"

	"github.com/infergate/infergate/runtime"
)

// The encoders below append V2 JSON to dst and return the extended slice,
// so that a caller encodes into a pooled buffer without allocating. They are
// safe for concurrent use on distinct dst.
//
// JSON has no NaN or infinities: a non-finite FP16, FP32 or FP64 value is
// encoded as null. Clients that need those values exactly ask for binary
// outputs (Triton's binary tensor extension), which carry the raw bits.

// AppendInferResponse appends the V2 JSON response for results (one tensor
// per model output, in the model's output order) selected by r.Outputs (all
// outputs when empty). Outputs asked for as binary (r.BinaryOutput, or the
// output's own binary_data parameter) carry parameters.binary_data_size in
// the JSON and their raw bytes follow the JSON in output order; headerLen is
// then the JSON's length, for the Inference-Header-Content-Length header,
// else -1. An output asked for with classification is answered as
// AppendClassification's BYTES tensor, with labels[index] (nil, or one list
// per model output) naming its classes.
func AppendInferResponse(dst []byte, model, version string, r *Request, outputs []runtime.TensorInfo, results []runtime.Tensor, labels [][]string) (out []byte, headerLen int) {
	if len(results) != len(outputs) {
		panic("BUG: AppendInferResponse got " + strconv.Itoa(len(results)) + " results for " + strconv.Itoa(len(outputs)) + " outputs")
	}
	start := len(dst)
	dst = append(dst, `{"model_name":`...)
	dst = appendJSONString(dst, model)
	dst = append(dst, `,"model_version":`...)
	dst = appendJSONString(dst, version)
	if r.ID != nil {
		dst = append(dst, `,"id":`...)
		dst = appendJSONString(dst, bytesToString(r.ID))
	}
	dst = append(dst, `,"outputs":[`...)
	n := r.outputCount(len(outputs))
	anyBinary := false
	// classes holds the classified outputs' BYTES elements, in response
	// order, between the JSON and the binary part.
	var classes [][]byte
	for i := range n {
		idx, bin, k := r.output(i)
		if i > 0 {
			dst = append(dst, ',')
		}
		if k > 0 {
			var shape [2]int64
			var c []byte
			c, shape = AppendClassification(nil, results[idx], k, labelsOf(labels, idx))
			dst = appendClassOutput(dst, outputs[idx].Name, shape, c, bin)
			classes = append(classes, c)
		} else {
			dst = appendOutput(dst, outputs[idx].Name, results[idx], bin)
		}
		anyBinary = anyBinary || bin
	}
	dst = append(dst, "]}"...)
	if !anyBinary {
		return dst, -1
	}

	headerLen = len(dst) - start
	c := 0
	for i := range n {
		idx, bin, k := r.output(i)
		switch {
		case k > 0 && bin:
			dst = append(dst, classes[c]...)
		case bin:
			dst = append(dst, results[idx].Data...)
		}
		if k > 0 {
			c++
		}
	}
	return dst, headerLen
}

// labelsOf returns the labels of model output idx, or nil.
func labelsOf(labels [][]string, idx int) []string {
	if idx < len(labels) {
		return labels[idx]
	}
	return nil
}

// AppendClassification appends the top k classes of each row of t, a
// [rows, classes] FP32 or FP64 tensor, highest score first (the lower index
// first among equal scores, NaN last), as the elements of a BYTES tensor of
// shape [rows, min(k, classes)] in Triton's binary layout: each element is a
// 4-byte little-endian length followed by "<score>:<index>", or
// "<score>:<index>:<label>" where labels has one for the index. The score is
// in its shortest form that reads back as the same FP32 or FP64 value
// (Triton's classification extension; the same bytes serve gRPC's
// raw_output_contents). It allocates.
func AppendClassification(dst []byte, t runtime.Tensor, k int, labels []string) (out []byte, shape [2]int64) {
	if len(t.Shape) != 2 || t.DataType != runtime.FP32 && t.DataType != runtime.FP64 ||
		int64(len(t.Data)) != t.Shape[0]*t.Shape[1]*int64(t.DataType.Size()) || k < 1 {
		panic("BUG: AppendClassification of " + t.DataType.String() + runtime.FormatShape(t.Shape) + " with " + strconv.Itoa(len(t.Data)) + " bytes, k " + strconv.Itoa(k))
	}
	rows, width := int(t.Shape[0]), int(t.Shape[1])
	k = min(k, width)
	scores := make([]float64, width)
	order := make([]int, width)
	size := t.DataType.Size()
	le := binary.LittleEndian
	for row := range rows {
		data := t.Data[row*width*size:]
		for j := range width {
			if t.DataType == runtime.FP32 {
				scores[j] = float64(math.Float32frombits(le.Uint32(data[j*4:])))
			} else {
				scores[j] = math.Float64frombits(le.Uint64(data[j*8:]))
			}
			order[j] = j
		}
		slices.SortStableFunc(order, func(a, b int) int {
			sa, sb := scores[a], scores[b]
			switch {
			case sa > sb || !math.IsNaN(sa) && math.IsNaN(sb):
				return -1
			case sa < sb || math.IsNaN(sa) && !math.IsNaN(sb):
				return 1
			}
			return 0
		})
		for _, j := range order[:k] {
			at := len(dst)
			dst = append(dst, 0, 0, 0, 0)
			dst = appendScore(dst, scores[j], 8*size)
			dst = append(dst, ':')
			dst = strconv.AppendInt(dst, int64(j), 10)
			if j < len(labels) {
				dst = append(dst, ':')
				dst = append(dst, labels[j]...)
			}
			le.PutUint32(dst[at:], uint32(len(dst)-at-4))
		}
	}
	return dst, [2]int64{int64(rows), int64(k)}
}

// appendScore appends a class's score: its shortest form of bitSize bits,
// with NaN and the infinities spelled as strconv does.
func appendScore(dst []byte, f float64, bitSize int) []byte {
	return strconv.AppendFloat(dst, f, 'g', -1, bitSize)
}

// appendClassOutput appends the $response_output object of a classified
// output: a BYTES tensor of shape whose elements c holds in Triton's binary
// layout, sent as they are when bin, else as JSON strings.
func appendClassOutput(dst []byte, name string, shape [2]int64, c []byte, bin bool) []byte {
	dst = append(dst, `{"name":`...)
	dst = appendJSONString(dst, name)
	dst = append(dst, `,"datatype":"BYTES","shape":`...)
	dst = appendShape(dst, shape[:])
	if bin {
		dst = append(dst, `,"parameters":{"binary_data_size":`...)
		dst = strconv.AppendInt(dst, int64(len(c)), 10)
		return append(dst, "}}"...)
	}
	dst = append(dst, `,"data":[`...)
	for i := 0; len(c) > 0; i++ {
		n := binary.LittleEndian.Uint32(c)
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendJSONString(dst, bytesToString(c[4:4+n]))
		c = c[4+n:]
	}
	return append(dst, "]}"...)
}

// outputCount returns how many outputs the response holds.
func (r *Request) outputCount(modelOutputs int) int {
	if len(r.Outputs) == 0 {
		return modelOutputs
	}
	return len(r.Outputs)
}

// output returns the model output index of the response's i-th output,
// whether it goes as binary and its classification count (0 for none).
func (r *Request) output(i int) (index int, binary bool, classes int) {
	if len(r.Outputs) == 0 {
		return i, r.BinaryOutput, 0
	}
	o := &r.Outputs[i]
	return o.Index, o.Binary, o.Classes
}

// appendOutput appends one $response_output object.
func appendOutput(dst []byte, name string, t runtime.Tensor, bin bool) []byte {
	if n := runtime.Elements(t.Shape); n < 0 || n*t.DataType.Size() != len(t.Data) || !t.DataType.Valid() {
		panic("BUG: output " + strconv.Quote(name) + " of " + t.DataType.String() + runtime.FormatShape(t.Shape) +
			" holds " + strconv.Itoa(len(t.Data)) + " bytes")
	}
	dst = append(dst, `{"name":`...)
	dst = appendJSONString(dst, name)
	dst = append(dst, `,"datatype":"`...)
	dst = append(dst, t.DataType.String()...)
	dst = append(dst, `","shape":`...)
	dst = appendShape(dst, t.Shape)
	if bin {
		dst = append(dst, `,"parameters":{"binary_data_size":`...)
		dst = strconv.AppendInt(dst, int64(len(t.Data)), 10)
		return append(dst, "}}"...)
	}
	dst = append(dst, `,"data":`...)
	dst = appendTensorData(dst, t)
	return append(dst, '}')
}

// appendTensorData appends t's elements as a flat, row-major JSON array.
func appendTensorData(dst []byte, t runtime.Tensor) []byte {
	dst = append(dst, '[')
	size := t.DataType.Size()
	for off := 0; off < len(t.Data); off += size {
		if off > 0 {
			dst = append(dst, ',')
		}
		dst = appendElement(dst, t.DataType, t.Data[off:off+size])
	}
	return append(dst, ']')
}

// appendElement appends the JSON of one little-endian element of type dt.
func appendElement(dst []byte, dt runtime.DataType, b []byte) []byte {
	le := binary.LittleEndian
	switch dt {
	case runtime.FP32:
		return appendFloat(dst, float64(math.Float32frombits(le.Uint32(b))), 32)
	case runtime.FP64:
		return appendFloat(dst, math.Float64frombits(le.Uint64(b)), 64)
	case runtime.FP16:
		// Every half is exactly a float32, whose shortest form reads back
		// as the same half.
		return appendFloat(dst, float64(HalfToFloat32(le.Uint16(b))), 32)
	case runtime.BOOL:
		if b[0] != 0 {
			return append(dst, "true"...)
		}
		return append(dst, "false"...)
	case runtime.INT8:
		return strconv.AppendInt(dst, int64(int8(b[0])), 10)
	case runtime.UINT8:
		return strconv.AppendUint(dst, uint64(b[0]), 10)
	case runtime.INT16:
		return strconv.AppendInt(dst, int64(int16(le.Uint16(b))), 10)
	case runtime.UINT16:
		return strconv.AppendUint(dst, uint64(le.Uint16(b)), 10)
	case runtime.INT32:
		return strconv.AppendInt(dst, int64(int32(le.Uint32(b))), 10)
	case runtime.UINT32:
		return strconv.AppendUint(dst, uint64(le.Uint32(b)), 10)
	case runtime.INT64:
		return strconv.AppendInt(dst, int64(le.Uint64(b)), 10)
	case runtime.UINT64:
		return strconv.AppendUint(dst, le.Uint64(b), 10)
	}
	panic("BUG: appendElement called for " + dt.String())
}

// appendFloat appends f in its shortest form that reads back as the same
// float of bitSize bits, or null where f is not finite. Plain decimals are
// used between 1e-6 and 1e21 and exponents outside, as encoding/json does.
func appendFloat(dst []byte, f float64, bitSize int) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(dst, "null"...)
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 {
		if bitSize == 32 {
			abs = float64(float32(abs))
		}
		if abs < 1e-6 || abs >= 1e21 {
			format = 'e'
		}
	}
	dst = strconv.AppendFloat(dst, f, format, -1, bitSize)
	if format == 'e' {
		// strconv pads the exponent to two digits ("1e-07"); drop the zero.
		if n := len(dst); n >= 4 && dst[n-4] == 'e' && dst[n-3] == '-' && dst[n-2] == '0' {
			dst[n-2] = dst[n-1]
			dst = dst[:n-1]
		}
	}
	return dst
}

// HalfToFloat32 converts IEEE 754 binary16 bits to the float32 of the same
// value; the conversion is exact.
func HalfToFloat32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h & 0x3ff)
	switch exp {
	case 0x1f: // infinity or NaN, payload kept
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	case 0: // zero or subnormal: mant units of 2^-24
		f := float32(mant) * 0x1p-24
		if sign != 0 {
			f = -f
		}
		return f
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
}

// appendShape appends shape as a JSON array; Dynamic dimensions show as -1.
func appendShape(dst []byte, shape []int64) []byte {
	dst = append(dst, '[')
	for i, d := range shape {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = strconv.AppendInt(dst, d, 10)
	}
	return append(dst, ']')
}

// AppendModelMetadata appends the V2 model metadata response:
// {"name","versions":[...],"platform","inputs":[{"name","datatype","shape"}],"outputs":[...]}.
func AppendModelMetadata(dst []byte, name string, versions []string, platform string, inputs, outputs []runtime.TensorInfo) []byte {
	dst = append(dst, `{"name":`...)
	dst = appendJSONString(dst, name)
	dst = append(dst, `,"versions":`...)
	dst = appendJSONStrings(dst, versions)
	dst = append(dst, `,"platform":`...)
	dst = appendJSONString(dst, platform)
	dst = append(dst, `,"inputs":`...)
	dst = appendTensorInfos(dst, inputs)
	dst = append(dst, `,"outputs":`...)
	dst = appendTensorInfos(dst, outputs)
	return append(dst, '}')
}

// appendTensorInfos appends the $metadata_tensor objects of infos.
func appendTensorInfos(dst []byte, infos []runtime.TensorInfo) []byte {
	dst = append(dst, '[')
	for i, info := range infos {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"name":`...)
		dst = appendJSONString(dst, info.Name)
		dst = append(dst, `,"datatype":`...)
		dst = appendJSONString(dst, info.DataType.String())
		dst = append(dst, `,"shape":`...)
		dst = appendShape(dst, info.Shape)
		dst = append(dst, '}')
	}
	return append(dst, ']')
}

// AppendServerMetadata appends the V2 server metadata response:
// {"name","version","extensions":[...]}.
func AppendServerMetadata(dst []byte, name, version string, extensions []string) []byte {
	dst = append(dst, `{"name":`...)
	dst = appendJSONString(dst, name)
	dst = append(dst, `,"version":`...)
	dst = appendJSONString(dst, version)
	dst = append(dst, `,"extensions":`...)
	dst = appendJSONStrings(dst, extensions)
	return append(dst, '}')
}

// AppendError appends the V2 error response {"error":"<msg>"}.
func AppendError(dst []byte, msg string) []byte {
	dst = append(dst, `{"error":`...)
	dst = appendJSONString(dst, msg)
	return append(dst, '}')
}

// appendJSONStrings appends ss as a JSON array of strings.
func appendJSONStrings(dst []byte, ss []string) []byte {
	dst = append(dst, '[')
	for i, s := range ss {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendJSONString(dst, s)
	}
	return append(dst, ']')
}

// appendJSONString appends s as a quoted JSON string. Quotes, backslashes
// and control characters are escaped; valid UTF-8 passes through as it is,
// and each invalid byte becomes U+FFFD, since JSON text must be UTF-8.
func appendJSONString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0 // s[start:i] is pending, to be copied unchanged
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 {
				dst = append(dst, s[start:i]...)
				dst = append(dst, `\ufffd`...)
				start = i + 1
			}
			i += size
			continue
		}
		if c >= 0x20 && c != '"' && c != '\\' {
			i++
			continue
		}
		dst = append(dst, s[start:i]...)
		switch c {
		case '"', '\\':
			dst = append(dst, '\\', c)
		case '\n':
			dst = append(dst, `\n`...)
		case '\r':
			dst = append(dst, `\r`...)
		case '\t':
			dst = append(dst, `\t`...)
		default:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		}
		i++
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// bytesToString views b as a string without copying, for read-only use
// while b is not modified.
func bytesToString(b []byte) string {
	return unsafe.String(unsafe.SliceData(b), len(b))
}
