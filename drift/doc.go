// Package drift watches a model version's live traffic for feature drift:
// it holds each version's reference profile (bins, counts and a sample of
// its training data), keeps streaming per-feature counters over tumbling
// windows, judges each closed window with PSI, Jensen-Shannon, normed
// Wasserstein, Kolmogorov-Smirnov, Hellinger and chi-square statistics, and
// decides when the version as a whole has drifted or recovered.
//
// A Monitor is safe for concurrent use: Observe may be called from any
// number of request goroutines; it takes one short lock and allocates
// nothing. Closed windows are judged by the Monitor's own goroutine, which
// Close stops; that goroutine alone makes decisions and hands them, with
// the State they lead to, to Options.Commit, taking that State only once it
// is stored. Window state is plain counts, so windows of several replicas
// merge by addition. A Reference is immutable once loaded and may be shared.
// The statistics functions are pure and safe for concurrent use.
package drift
