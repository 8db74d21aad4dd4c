// Package router decides which version of a model serves a request: it
// splits traffic across versions by weight, keeps a caller on one version
// through a sticky key, samples the requests mirrored to shadow versions,
// and runs the canary analysis that moves a new version's weight step by
// step until it is promoted or rolled back. It does no I/O and keeps no
// clock: the gateway passes in the time, the random numbers and the metric
// snapshots, and persists the plain structs this package returns.
//
// A Table is immutable once built and safe for concurrent use; the gateway
// builds a new one whenever the routing changes and swaps it in atomically.
// Config and CanaryConfig are plain values, safe to share once validated.
// A Canary is not safe for concurrent use: its owner (one goroutine, or a
// mutex) calls Start, Evaluate, Promote and Rollback, and publishes the
// Table built from Canary.Apply after each transition.
package router
