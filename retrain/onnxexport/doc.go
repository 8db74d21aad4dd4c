// Package onnxexport writes small ONNX models as ModelProto bytes: the
// feed-forward networks the built-in trainer produces, and the tiny
// fixed-shape models the project's tests serve.
//
// The bytes are encoded by hand from the ONNX schema (onnx.proto) with
// protowire, so the package needs neither generated code nor protoc. Models
// use IR version 8 and the default-domain opset 17. Output is
// deterministic: the same arguments always give the same bytes, metadata
// included, so a committed model can be regenerated and compared.
//
// Everything here is a pure function of its arguments and safe for
// concurrent use.
package onnxexport
