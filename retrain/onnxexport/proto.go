package onnxexport

import (
	"encoding/binary"
	"math"
	"slices"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/infergate/infergate/runtime"
)

const (
	irVersion    = 8
	opsetVersion = 17
	producerName = "infergate"

	// batchDim names the free first dimension of every input and output.
	batchDim = "batch"
)

// Field numbers from onnx.proto. Only the fields this package writes are
// listed.
const (
	modelIRVersion     protowire.Number = 1
	modelProducerName  protowire.Number = 2
	modelGraph         protowire.Number = 7
	modelOpsetImport   protowire.Number = 8
	modelMetadataProps protowire.Number = 14

	opsetVersionField protowire.Number = 2

	entryKey   protowire.Number = 1
	entryValue protowire.Number = 2

	graphNode        protowire.Number = 1
	graphName        protowire.Number = 2
	graphInitializer protowire.Number = 5
	graphInput       protowire.Number = 11
	graphOutput      protowire.Number = 12

	nodeInput     protowire.Number = 1
	nodeOutput    protowire.Number = 2
	nodeName      protowire.Number = 3
	nodeOpType    protowire.Number = 4
	nodeAttribute protowire.Number = 5

	attrName protowire.Number = 1
	attrInt  protowire.Number = 3
	attrType protowire.Number = 20

	attrTypeInt = 2 // AttributeProto.AttributeType INT

	tensorDims     protowire.Number = 1
	tensorDataType protowire.Number = 2
	tensorName     protowire.Number = 8
	tensorRawData  protowire.Number = 9

	valueInfoName protowire.Number = 1
	valueInfoType protowire.Number = 2

	typeTensor protowire.Number = 1

	tensorTypeElemType protowire.Number = 1
	tensorTypeShape    protowire.Number = 2

	shapeDim protowire.Number = 1

	dimValue protowire.Number = 1
	dimParam protowire.Number = 2
)

func appendVarint(b []byte, num protowire.Number, v uint64) []byte {
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

func appendBytes(b []byte, num protowire.Number, v []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

func appendString(b []byte, num protowire.Number, s string) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

// graph collects the repeated fields of a GraphProto, each already encoded
// with its tag, so that model can write them in field-number order.
type graph struct {
	name         string
	nodes        []byte
	initializers []byte
	inputs       []byte
	outputs      []byte
}

// input declares a graph input of type t and shape [batch, width].
func (g *graph) input(name string, t runtime.DataType, width int) {
	g.inputs = appendBytes(g.inputs, graphInput, valueInfo(name, t, width))
}

// output declares a graph output of type t and shape [batch, width].
func (g *graph) output(name string, t runtime.DataType, width int) {
	g.outputs = appendBytes(g.outputs, graphOutput, valueInfo(name, t, width))
}

// node appends a node; attrs are encoded AttributeProtos (see intAttr).
func (g *graph) node(name, opType string, inputs, outputs []string, attrs ...[]byte) {
	var n []byte
	for _, s := range inputs {
		n = appendString(n, nodeInput, s)
	}
	for _, s := range outputs {
		n = appendString(n, nodeOutput, s)
	}
	n = appendString(n, nodeName, name)
	n = appendString(n, nodeOpType, opType)
	for _, a := range attrs {
		n = appendBytes(n, nodeAttribute, a)
	}
	g.nodes = appendBytes(g.nodes, graphNode, n)
}

// floatInitializer appends an FP32 constant of the given dims.
func (g *graph) floatInitializer(name string, dims []int64, values []float32) {
	raw := make([]byte, 0, 4*len(values))
	for _, v := range values {
		raw = binary.LittleEndian.AppendUint32(raw, math.Float32bits(v))
	}
	g.initializers = appendBytes(g.initializers, graphInitializer, tensor(name, runtime.FP32, dims, raw))
}

// int64Initializer appends an INT64 constant of the given dims.
func (g *graph) int64Initializer(name string, dims []int64, values []int64) {
	raw := make([]byte, 0, 8*len(values))
	for _, v := range values {
		raw = binary.LittleEndian.AppendUint64(raw, uint64(v))
	}
	g.initializers = appendBytes(g.initializers, graphInitializer, tensor(name, runtime.INT64, dims, raw))
}

// model encodes a ModelProto holding g, importing the default opset and
// carrying metadata as metadata_props in sorted key order.
func (g *graph) model(metadata map[string]string) []byte {
	var gb []byte
	gb = append(gb, g.nodes...)
	gb = appendString(gb, graphName, g.name)
	gb = append(gb, g.initializers...)
	gb = append(gb, g.inputs...)
	gb = append(gb, g.outputs...)

	var opset []byte
	// The default ONNX domain is the empty string, so domain is left out.
	opset = appendVarint(opset, opsetVersionField, opsetVersion)

	var m []byte
	m = appendVarint(m, modelIRVersion, irVersion)
	m = appendString(m, modelProducerName, producerName)
	m = appendBytes(m, modelGraph, gb)
	m = appendBytes(m, modelOpsetImport, opset)
	keys := make([]string, 0, len(metadata))
	for k := range metadata {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		var e []byte
		e = appendString(e, entryKey, k)
		e = appendString(e, entryValue, metadata[k])
		m = appendBytes(m, modelMetadataProps, e)
	}
	return m
}

// tensor encodes a TensorProto whose elements are raw little-endian bytes.
func tensor(name string, t runtime.DataType, dims []int64, raw []byte) []byte {
	var b []byte
	// dims is a proto2 repeated int64 without [packed=true]: one tag per
	// value, as the reference implementation writes it.
	for _, d := range dims {
		b = appendVarint(b, tensorDims, uint64(d))
	}
	b = appendVarint(b, tensorDataType, uint64(t))
	b = appendString(b, tensorName, name)
	b = appendBytes(b, tensorRawData, raw)
	return b
}

// valueInfo encodes a ValueInfoProto for a tensor of type t and shape
// [batch, width].
func valueInfo(name string, t runtime.DataType, width int) []byte {
	var batch, fixed []byte
	batch = appendString(batch, dimParam, batchDim)
	fixed = appendVarint(fixed, dimValue, uint64(width))
	var shape []byte
	shape = appendBytes(shape, shapeDim, batch)
	shape = appendBytes(shape, shapeDim, fixed)

	var tt []byte
	tt = appendVarint(tt, tensorTypeElemType, uint64(t))
	tt = appendBytes(tt, tensorTypeShape, shape)
	var typ []byte
	typ = appendBytes(typ, typeTensor, tt)

	var b []byte
	b = appendString(b, valueInfoName, name)
	b = appendBytes(b, valueInfoType, typ)
	return b
}

// intAttr encodes an AttributeProto of type INT.
func intAttr(name string, v int64) []byte {
	var b []byte
	b = appendString(b, attrName, name)
	b = appendVarint(b, attrInt, uint64(v))
	b = appendVarint(b, attrType, attrTypeInt)
	return b
}
