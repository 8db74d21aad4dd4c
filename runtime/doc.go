// Package runtime runs ONNX models through ONNX Runtime: it loads the shared
// library, owns the process's one ORT environment, chooses execution
// providers, opens sessions and keeps the model repository's versions.
//
// An Environment is created once per process and is safe for concurrent
// use. A Session is used by one goroutine at a time (its owner); a
// ModelVersion hands its sessions out one at a time and is safe for
// concurrent use, as is Repository loading. This is the only package that
// imports onnxruntime_go.
package runtime
