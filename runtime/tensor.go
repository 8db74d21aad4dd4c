package runtime

import (
	"fmt"
	"strings"
)

// Dynamic marks a dimension whose size is chosen per request, such as the
// batch dimension.
const Dynamic int64 = -1

// TensorInfo describes one model input or output as the model declares it.
// Shape holds Dynamic for each dimension of free size.
type TensorInfo struct {
	Name     string
	DataType DataType
	Shape    []int64
}

// String formats info as `name FP32[-1,8]` for error messages and logs.
func (info TensorInfo) String() string {
	return info.Name + " " + info.DataType.String() + FormatShape(info.Shape)
}

// Tensor is a row-major tensor over raw little-endian element bytes. Its
// position in a slice of tensors says which model input or output it is.
// Shape and Data are owned by whoever made the Tensor; a Session never keeps
// them after Run returns.
type Tensor struct {
	DataType DataType
	Shape    []int64
	Data     []byte
}

// Elements returns the number of elements the shape holds, or -1 if a
// dimension is negative or the product overflows an int.
func Elements(shape []int64) int {
	const maxElements = 1 << 40
	n := int64(1)
	for _, d := range shape {
		if d < 0 || (d > 0 && n > maxElements/d) {
			return -1
		}
		n *= d
	}
	return int(n)
}

// FormatShape formats a shape as "[1,8]".
func FormatShape(shape []int64) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, d := range shape {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprint(&b, d)
	}
	b.WriteByte(']')
	return b.String()
}
