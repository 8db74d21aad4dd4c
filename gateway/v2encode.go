package gateway

import (
	"github.com/infergate/infergate/gateway/v2codec"
	"github.com/infergate/infergate/runtime"
)

// The V2 encoders live in package v2codec; these are the names the
// gateway's handlers call them by.

// appendInferResponse appends the V2 response for results selected by r,
// classified outputs labelled by labels (v2codec.AppendInferResponse).
func appendInferResponse(dst []byte, model, version string, r *inferRequest, outputs []runtime.TensorInfo, results []runtime.Tensor, labels [][]string) ([]byte, int) {
	return v2codec.AppendInferResponse(dst, model, version, r, outputs, results, labels)
}

// appendModelMetadata appends the V2 model metadata response.
func appendModelMetadata(dst []byte, name string, versions []string, platform string, inputs, outputs []runtime.TensorInfo) []byte {
	return v2codec.AppendModelMetadata(dst, name, versions, platform, inputs, outputs)
}

// appendServerMetadata appends the V2 server metadata response.
func appendServerMetadata(dst []byte, name, version string, extensions []string) []byte {
	return v2codec.AppendServerMetadata(dst, name, version, extensions)
}

// appendError appends the V2 error response {"error":"<msg>"}.
func appendError(dst []byte, msg string) []byte { return v2codec.AppendError(dst, msg) }

// halfToFloat32 converts IEEE 754 binary16 bits to the float32 of the same
// value, exactly.
func halfToFloat32(h uint16) float32 { return v2codec.HalfToFloat32(h) }
