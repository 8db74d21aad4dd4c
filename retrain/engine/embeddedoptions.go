package engine

import (
	"log/slog"
	"time"
)

// EmbeddedOptions are the settings of an embedded server beyond its
// state_dir.
type EmbeddedOptions struct {
	// Log gets the server's warnings and errors (default: none).
	Log *slog.Logger
	// SyncInterval, when set, syncs the store to disk that often instead of
	// before each write is acknowledged: faster writes, but a crash of the
	// machine (not of the process) loses up to an interval of acknowledged
	// ones. `infergate serve` leaves it at 0, always; `infergate bench`
	// sets it to show what always costs.
	SyncInterval time.Duration
}

// syncSettings returns the server's SyncAlways and SyncInterval for o:
// always with NATS's default interval of 2 minutes as a backstop, or only
// every o.SyncInterval.
func (o EmbeddedOptions) syncSettings() (always bool, interval time.Duration) {
	if o.SyncInterval <= 0 {
		return true, 2 * time.Minute
	}
	return false, o.SyncInterval
}
