// Package legacy reads the bbolt files in which infergate kept its state
// before JetStream (the gateway's infergate.db, the retrain service's
// retrain.db) so that a first start on the engine can import them: it
// reads a file whole, read-only and without bbolt, checks every page it
// walks, and hands back the buckets' keys and values, or, through
// ReadGateway and ReadRetrain, the routing, drift states, runs and outbox
// deliveries that they held, as plain data; Retire renames an imported
// file out of the way.
//
// A damaged file (truncated, a page zeroed or overwritten, a bad meta
// checksum, a page id out of range, a page reached twice) is an error that
// wraps ErrDamaged, names the file, says what is damaged and how to
// recover; never a panic and never a silent partial read. bbolt keeps no
// checksum of its data pages, so a value overwritten in place, its page's
// structure intact, reads as it now is; ReadGateway and ReadRetrain check
// what they decode themselves (delivery records, event JSON).
//
// The format read is bbolt's version 2 as written on little-endian
// machines (amd64, arm64), the ones infergate is built for; see format.go.
//
// A File is immutable once Open returns and safe for concurrent use; the
// functions hold no shared state.
package legacy
