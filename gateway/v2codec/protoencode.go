package v2codec

import (
	"encoding/binary"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/infergate/infergate/runtime"
)

// Field numbers of ModelInferResponse and of its InferOutputTensor, as the
// Open Inference Protocol's grpc_service.proto numbers them.
const (
	respModelName    protowire.Number = 1
	respModelVersion protowire.Number = 2
	respID           protowire.Number = 3
	respOutputs      protowire.Number = 5
	respRawOutput    protowire.Number = 6

	outName     protowire.Number = 1
	outDatatype protowire.Number = 2
	outShape    protowire.Number = 3
	outContents protowire.Number = 5
)

// AppendProtoInferResponse appends to dst the gRPC ModelInferResponse for
// results (one tensor per model output, in the model's output order)
// selected by r.Outputs (all outputs when empty), encoded as proto.Marshal
// encodes it, and returns the extended buffer. When the request's inputs
// came in raw_input_contents (r.RawContents), the outputs go in
// raw_output_contents, one entry per output in response order, else in
// each output's typed contents. FP16, which has no typed field, sends every
// output raw. An output asked for with classification comes as
// AppendClassification's BYTES tensor, labelled by labels[index] (nil, or
// one list per model output), in bytes_contents or raw in Triton's layout.
// It encodes straight from results, with no message built in between.
func AppendProtoInferResponse(dst []byte, model, version string, r *Request, outputs []runtime.TensorInfo, results []runtime.Tensor, labels [][]string) []byte {
	if len(results) != len(outputs) {
		panic(fmt.Sprintf("BUG: AppendProtoInferResponse got %d results for %d outputs", len(results), len(outputs)))
	}
	n := len(r.Outputs)
	if n == 0 {
		n = len(outputs)
	}
	raw := r.RawContents
	for i := range n {
		idx, k := r.protoOutput(i)
		if k == 0 && contentsField(results[idx].DataType) < 0 {
			raw = true
		}
		if t := results[idx]; k == 0 && (runtime.Elements(t.Shape) < 0 || runtime.Elements(t.Shape)*t.DataType.Size() != len(t.Data) || !t.DataType.Valid()) {
			panic(fmt.Sprintf("BUG: output %q of %s%s holds %d bytes", outputs[idx].Name, t.DataType, runtime.FormatShape(t.Shape), len(t.Data)))
		}
	}
	dst = appendStringField(dst, respModelName, model)
	dst = appendStringField(dst, respModelVersion, version)
	dst = appendStringField(dst, respID, r.ID)
	for i := range n {
		idx, k := r.protoOutput(i)
		start := len(dst)
		dst = appendOutputTensor(dst, outputs[idx].Name, results[idx], k, labelsOf(labels, idx), raw)
		dst = prefixField(dst, start, respOutputs)
	}
	if !raw {
		return dst
	}
	for i := range n {
		idx, k := r.protoOutput(i)
		start := len(dst)
		if k > 0 {
			dst, _ = AppendClassification(dst, results[idx], k, labelsOf(labels, idx))
		} else {
			dst = append(dst, results[idx].Data...)
		}
		dst = prefixField(dst, start, respRawOutput)
	}
	return dst
}

// appendOutputTensor appends the fields of the InferOutputTensor of t (or
// of its top k classes where k > 0); its contents unless raw.
func appendOutputTensor(dst []byte, name string, t runtime.Tensor, k int, labels []string, raw bool) []byte {
	dst = appendStringField(dst, outName, name)
	if k > 0 {
		dst = appendStringField(dst, outDatatype, "BYTES")
		start := len(dst)
		var shape [2]int64
		dst, shape = AppendClassification(dst, t, k, labels)
		if raw {
			// Only the shape was wanted: the elements go raw.
			return appendPackedInt64(dst[:start], outShape, shape[:])
		}
		// The elements, each a 4-byte length and its bytes, become
		// bytes_contents; the shape must precede them.
		elems := append([]byte(nil), dst[start:]...)
		dst = appendPackedInt64(dst[:start], outShape, shape[:])
		start = len(dst)
		for len(elems) >= 4 {
			m := binary.LittleEndian.Uint32(elems)
			dst = protowire.AppendTag(dst, fieldContentsBytes, protowire.BytesType)
			dst = protowire.AppendBytes(dst, elems[4:4+m])
			elems = elems[4+m:]
		}
		return prefixField(dst, start, outContents)
	}
	dst = appendStringField(dst, outDatatype, t.DataType.String())
	dst = appendPackedInt64(dst, outShape, t.Shape)
	if raw {
		return dst
	}
	start := len(dst)
	dst = appendTypedContents(dst, t)
	return prefixField(dst, start, outContents)
}

// appendTypedContents appends t's elements as the packed contents field of
// its datatype, which must have one; no field when t has no elements.
func appendTypedContents(dst []byte, t runtime.Tensor) []byte {
	field := contentsField(t.DataType)
	if field < 0 {
		panic("BUG: appendTypedContents called for " + t.DataType.String())
	}
	if len(t.Data) == 0 {
		return dst
	}
	start := len(dst)
	le := binary.LittleEndian
	switch t.DataType {
	case runtime.FP32, runtime.FP64:
		// Packed fixed32 and fixed64 are the tensor's little-endian bytes.
		dst = append(dst, t.Data...)
	case runtime.BOOL:
		for _, b := range t.Data {
			dst = protowire.AppendVarint(dst, protowire.EncodeBool(b != 0))
		}
	case runtime.INT8:
		for _, b := range t.Data {
			dst = protowire.AppendVarint(dst, uint64(int64(int8(b))))
		}
	case runtime.INT16:
		for k := 0; k < len(t.Data); k += 2 {
			dst = protowire.AppendVarint(dst, uint64(int64(int16(le.Uint16(t.Data[k:])))))
		}
	case runtime.INT32:
		for k := 0; k < len(t.Data); k += 4 {
			dst = protowire.AppendVarint(dst, uint64(int64(int32(le.Uint32(t.Data[k:])))))
		}
	case runtime.UINT8:
		for _, b := range t.Data {
			dst = protowire.AppendVarint(dst, uint64(b))
		}
	case runtime.UINT16:
		for k := 0; k < len(t.Data); k += 2 {
			dst = protowire.AppendVarint(dst, uint64(le.Uint16(t.Data[k:])))
		}
	case runtime.UINT32:
		for k := 0; k < len(t.Data); k += 4 {
			dst = protowire.AppendVarint(dst, uint64(le.Uint32(t.Data[k:])))
		}
	case runtime.INT64, runtime.UINT64:
		for k := 0; k < len(t.Data); k += 8 {
			dst = protowire.AppendVarint(dst, le.Uint64(t.Data[k:]))
		}
	}
	return prefixField(dst, start, protowire.Number(field+1))
}

// appendStringField appends a string field, which proto3 leaves out when
// empty.
func appendStringField[S string | []byte](dst []byte, num protowire.Number, s S) []byte {
	if len(s) == 0 {
		return dst
	}
	dst = protowire.AppendTag(dst, num, protowire.BytesType)
	dst = protowire.AppendVarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// appendPackedInt64 appends a packed repeated int64 field; none when vs is
// empty.
func appendPackedInt64(dst []byte, num protowire.Number, vs []int64) []byte {
	if len(vs) == 0 {
		return dst
	}
	start := len(dst)
	for _, v := range vs {
		dst = protowire.AppendVarint(dst, uint64(v))
	}
	return prefixField(dst, start, num)
}

// prefixField makes dst[start:] the value of length-delimited field num:
// it inserts the field's tag and the value's length before it.
func prefixField(dst []byte, start int, num protowire.Number) []byte {
	var head [2 * binary.MaxVarintLen64]byte
	h := protowire.AppendVarint(protowire.AppendTag(head[:0], num, protowire.BytesType), uint64(len(dst)-start))
	end := len(dst)
	dst = append(dst, h...)
	copy(dst[start+len(h):], dst[start:end])
	copy(dst[start:], h)
	return dst
}
