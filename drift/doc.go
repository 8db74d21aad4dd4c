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
// is stored. A Reference is immutable once loaded and may be shared. The
// statistics functions are pure and safe for concurrent use.
//
// In a fleet of replicas one leads and the others follow (SetLeading, or
// Options.Follower from the start). A follower's monitor closes, judges,
// decides and commits nothing: its open window only accumulates, and
// TakeCounts, called once a report interval, takes and empties it as
// Counts, plain data that the replica sends to the leader. Window state is
// plain counts, so the leader's MergeCounts adds the Counts of every
// follower into its own open window by addition (reservoir samples
// weighted by the values they stand for) and judges once for the fleet;
// counts of another reference profile are refused. With Options.AlignWindows,
// windows by time close at wall-clock multiples of their period, so that
// window k means the same rows to every replica and to each leader in
// turn; a follower's counts are added to the leader's window that is open
// when they arrive. SetLeading, TakeCounts and MergeCounts are safe for
// concurrent use with each other and with Observe.
package drift
