package runtime

import "fmt"

// DataType is a tensor element type. Its values are ONNX's TensorProto
// element type codes, so a DataType converts to and from the ONNX schema
// and the ONNX Runtime C API without a table.
type DataType uint8

// The element types infergate serves. String tensors (BYTES) are not served.
const (
	Invalid DataType = 0
	FP32    DataType = 1
	UINT8   DataType = 2
	INT8    DataType = 3
	UINT16  DataType = 4
	INT16   DataType = 5
	INT32   DataType = 6
	INT64   DataType = 7
	BOOL    DataType = 9
	FP16    DataType = 10
	FP64    DataType = 11
	UINT32  DataType = 12
	UINT64  DataType = 13
)

var dataTypeNames = [...]string{
	FP32: "FP32", UINT8: "UINT8", INT8: "INT8", UINT16: "UINT16", INT16: "INT16",
	INT32: "INT32", INT64: "INT64", BOOL: "BOOL", FP16: "FP16", FP64: "FP64",
	UINT32: "UINT32", UINT64: "UINT64",
}

var dataTypeSizes = [...]uint8{
	FP32: 4, UINT8: 1, INT8: 1, UINT16: 2, INT16: 2, INT32: 4, INT64: 8,
	BOOL: 1, FP16: 2, FP64: 8, UINT32: 4, UINT64: 8,
}

// String returns the Open Inference Protocol name of t, such as "FP32".
func (t DataType) String() string {
	if int(t) < len(dataTypeNames) && dataTypeNames[t] != "" {
		return dataTypeNames[t]
	}
	return fmt.Sprintf("DataType(%d)", uint8(t))
}

// Size returns the size of one element of t in bytes, or 0 if t is not a
// served type.
func (t DataType) Size() int {
	if int(t) < len(dataTypeSizes) {
		return int(dataTypeSizes[t])
	}
	return 0
}

// Valid reports whether t is a served element type.
func (t DataType) Valid() bool { return t.Size() != 0 }

// ParseDataType returns the DataType named by the Open Inference Protocol
// name b ("FP32", "INT64", ...). It does not allocate.
func ParseDataType(b []byte) (DataType, bool) {
	for t, name := range dataTypeNames {
		if name != "" && string(b) == name {
			return DataType(t), true
		}
	}
	return Invalid, false
}
