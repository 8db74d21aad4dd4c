// Package trainer fits small feed-forward classifiers to tabular data and
// hands them to onnxexport as models: it is the built-in trainer of the
// retrain pipeline and the maker of the demo model.
//
// Training is deterministic: the same data and Options give bit-identical
// weights on every platform. It runs on one goroutine, draws randomness only
// from a seeded PCG, iterates no maps, and avoids the two sources of
// platform-dependent floating point in Go: the assembly implementations of
// math.Exp and friends (the package has its own exp) and the compiler's
// fusion of a*b+c into one FMA instruction, which it is allowed to do on
// arm64, ppc64le, s390x, riscv64 and amd64 v3 (products that feed a sum are
// written as prod(a, b), which rounds and so cannot be fused).
//
// All functions are safe for concurrent use; they share no state.
package trainer
