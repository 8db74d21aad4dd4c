package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/infergate/infergate/retrain/legacy"
	"github.com/infergate/infergate/retrain/outbox"
)

// legacyFile is the file under state_dir in which the retrain service
// kept its state before the engine: runs, seen events and its webhook
// outbox. The first Open on the engine imports it (importLegacy).
const legacyFile = "retrain.db"

// legacyImport counts what importLegacy did.
type legacyImport struct {
	// runs were created; runsKept were not, since the bucket held a run
	// of that id already.
	runs, runsKept int
	// seen are the accepted events recorded (or recorded already);
	// expired are those older than keepSeen, left out; badSeen could not
	// be read.
	seen, expired, badSeen int
	// webhooks counts the outbox's deliveries (see outbox.ImportLegacy).
	webhooks outbox.LegacyCounts
}

// importLegacy imports the state file that the retrain service before the
// engine kept in the state_dir, if there is one, then renames it to
// retrain.db.imported-<UTC time>, so that the next Open leaves it alone.
// What the engine holds wins over the file: a run is only created, never
// replaced, and the last run id handed out only raised, to the file's
// when it is higher, so that no id is handed out twice. The outbox's
// deliveries go to the webhook outbox (see outbox.ImportLegacy). A damaged
// file, or a run in it that cannot be read, stops Open with an error that
// names the file and how to recover; nothing is renamed then, nor after
// any other error: importing again is harmless. It runs in Open before
// recover, which then takes up the imported runs as it does its own.
func (s *Service) importLegacy() error {
	if s.cfg.StateDir == "" {
		return nil
	}
	path := filepath.Join(s.cfg.StateDir, legacyFile)
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("cannot import the state file %s: %w", path, err)
	}
	old, err := legacy.ReadRetrain(path)
	if err != nil {
		return fmt.Errorf("cannot import the retrain service's state from before the engine: %w", err)
	}
	var n legacyImport
	for _, lr := range old.Runs {
		if err := s.importLegacyRun(path, lr, &n); err != nil {
			return err
		}
	}
	if err := s.store.raiseSequence(old.RunSequence); err != nil {
		return fmt.Errorf("cannot import the last run id of %s: %w", path, err)
	}
	now := s.now().UTC()
	for _, id := range slices.Sorted(maps.Keys(old.Seen)) {
		e, err := decodeSeen(id, old.Seen[id])
		switch {
		case err != nil:
			n.badSeen++
			s.log.Error("not importing a seen event that cannot be read; a re-delivery of it would queue a run again", "file", path, "event_id", id, "error", err)
		case now.Sub(e.At) > keepSeen:
			n.expired++
		default:
			if err := s.store.putSeen(id, e); err != nil {
				return fmt.Errorf("cannot import the seen events of %s: %w", path, err)
			}
			n.seen++
		}
	}
	if n.webhooks, err = s.outbox.ImportLegacy(context.Background(), old.Outbox, now); err != nil {
		return fmt.Errorf("cannot import the webhook outbox of %s: %w", path, err)
	}
	moved, err := legacy.Retire(path, now)
	if err != nil {
		return err
	}
	level := slog.LevelInfo
	if n.webhooks.Unimportable > 0 || n.badSeen > 0 {
		level = slog.LevelWarn
	}
	s.log.Log(context.Background(), level, "imported the state file of the retrain service from before the engine; it was renamed and is no longer read",
		"file", path, "renamed_to", moved, "runs", n.runs, "runs_kept", n.runsKept, "run_sequence", old.RunSequence,
		"seen_events", n.seen, "seen_events_expired", n.expired, "seen_events_unreadable", n.badSeen,
		"events_emitted", n.webhooks.Emitted, "dead_letters", n.webhooks.DeadLetters, "deliveries_not_importable", n.webhooks.Unimportable)
	return nil
}

// importLegacyRun creates run lr unless the bucket holds a run of its id.
func (s *Service) importLegacyRun(path string, lr legacy.Run, n *legacyImport) error {
	key := strconv.FormatUint(lr.ID, 10)
	r, err := decodeRun(key, lr.Record, 0)
	if err != nil {
		return fmt.Errorf("cannot import run %s from %s: %w; move the file aside to start without its runs, or restore it from a backup", key, path, err)
	}
	b, err := s.store.encode(&r)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	switch _, err := s.store.write(ctx, key, b, 0); {
	case errors.Is(err, errConflict):
		n.runsKept++
	case err != nil:
		return fmt.Errorf("cannot import run %s into bucket %s: %w", key, RunsBucket, err)
	default:
		n.runs++
	}
	return nil
}

// raiseSequence makes the last run id handed out at least last, and
// writes it down when it never was (as newRun would have: the highest
// stored id), so that the next run continues after the imported ones.
func (st *store) raiseSequence(last uint64) error {
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	for {
		have, rev, err := st.lastID(ctx)
		if err != nil {
			return err
		}
		// Where the key was never written, have is the highest stored id:
		// written down even when it is last or above.
		if have >= last && (rev != 0 || have == 0) {
			return nil
		}
		_, err = st.write(ctx, sequenceKey, strconv.AppendUint(nil, max(have, last), 10), rev)
		if !errors.Is(err, errConflict) {
			return err
		}
	}
}
