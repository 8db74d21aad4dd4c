package onnxexport

import (
	"fmt"

	"github.com/infergate/infergate/runtime"
)

// Echo returns a model whose one output equals its one input: input "input"
// and output "output", both of element type t and shape [batch, width]. It
// is built on the Identity operator and serves as the simplest model for
// testing a serving path with any element type.
func Echo(t runtime.DataType, width int) ([]byte, error) {
	if !t.Valid() {
		return nil, fmt.Errorf("cannot build echo model: unsupported element type %s", t)
	}
	if width <= 0 {
		return nil, fmt.Errorf("cannot build echo model: width must be positive, got %d", width)
	}
	g := graph{name: "echo"}
	g.input("input", t, width)
	g.output("output", t, width)
	g.node("identity", "Identity", []string{"input"}, []string{"output"})
	return g.model(nil), nil
}

// Pair returns a model with two inputs of different types and two outputs,
// for testing multi-input serving: inputs "a" FP32 [batch, 4] and "b" INT64
// [batch, 2]; outputs "a_sum" FP32 [batch, 1], the sum of each row of a,
// and "b_out" INT64 [batch, 2], a copy of b.
func Pair() ([]byte, error) {
	g := graph{name: "pair"}
	g.input("a", runtime.FP32, 4)
	g.input("b", runtime.INT64, 2)
	g.output("a_sum", runtime.FP32, 1)
	g.output("b_out", runtime.INT64, 2)
	// Since opset 13, ReduceSum takes its axes as an input tensor.
	g.int64Initializer("axes", []int64{1}, []int64{1})
	g.node("sum", "ReduceSum", []string{"a", "axes"}, []string{"a_sum"}, intAttr("keepdims", 1))
	g.node("copy", "Identity", []string{"b"}, []string{"b_out"})
	return g.model(nil), nil
}
