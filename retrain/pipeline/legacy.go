package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"

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
	// emitted are the events emitted again for their pending deliveries,
	// deadLetters the dead letters stored, unimportable the deliveries
	// left out (no webhooks are configured, or the event is not one).
	emitted, deadLetters, unimportable int
}

// importLegacy imports the state file that the retrain service before the
// engine kept in the state_dir, if there is one, then renames it to
// retrain.db.imported-<UTC time>, so that the next Open leaves it alone.
// What the engine holds wins over the file: a run is only created, never
// replaced, and the last run id handed out only raised, to the file's
// when it is higher, so that no id is handed out twice. The outbox's
// deliveries go to the webhook outbox (see importLegacyOutbox). A damaged
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
	if err := s.importLegacyOutbox(old.Outbox, &n); err != nil {
		return fmt.Errorf("cannot import the webhook outbox of %s: %w", path, err)
	}
	moved := path + ".imported-" + now.Format("20060102T150405.000000000Z")
	if err := renameDurably(path, moved); err != nil {
		return fmt.Errorf("cannot rename the imported state file %s: %w; the next start imports it again, which is harmless", path, err)
	}
	level := slog.LevelInfo
	if n.unimportable > 0 || n.badSeen > 0 {
		level = slog.LevelWarn
	}
	s.log.Log(context.Background(), level, "imported the state file of the retrain service from before the engine; it was renamed and is no longer read",
		"file", path, "renamed_to", moved, "runs", n.runs, "runs_kept", n.runsKept, "run_sequence", old.RunSequence,
		"seen_events", n.seen, "seen_events_expired", n.expired, "seen_events_unreadable", n.badSeen,
		"events_emitted", n.emitted, "dead_letters", n.deadLetters, "deliveries_not_importable", n.unimportable)
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
		var have, rev uint64
		e, err := st.runs.Get(ctx, sequenceKey)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			ids, err := st.ids(ctx)
			if err != nil {
				return err
			}
			if len(ids) > 0 {
				last = max(last, ids[0])
			}
			if last == 0 {
				return nil
			}
		case err != nil:
			return fmt.Errorf("cannot read the last run id: %w", err)
		default:
			if have, err = strconv.ParseUint(string(e.Value()), 10, 64); err != nil {
				return damaged(RunsBucket, sequenceKey, fmt.Errorf("%q is not a run id", e.Value()))
			}
			if have >= last {
				return nil
			}
			rev = e.Revision()
		}
		_, err = st.write(ctx, sequenceKey, strconv.AppendUint(nil, last, 10), rev)
		if !errors.Is(err, errConflict) {
			return err
		}
	}
}

// importLegacyOutbox hands the deliveries that old kept to the webhook
// outbox. The event of a pending delivery to a configured target is
// emitted again with its own id, so that an import done twice within the
// outbox's ten minutes stores it once (every target that takes its type
// gets it, so one that had it already gets it again: receivers
// deduplicate by id; its attempts count from one again, at once). A dead
// delivery, and a pending one to a target no longer configured, become
// dead letters. Without webhooks nothing can be imported, which is
// counted, not an error.
func (s *Service) importLegacyOutbox(old legacy.Outbox, n *legacyImport) error {
	if s.outbox == nil {
		n.unimportable += len(old.Deliveries)
		return nil
	}
	configured := make(map[string]bool)
	for _, t := range s.cfg.Webhooks {
		configured[t.Name] = true
	}
	replica, _ := os.Hostname()
	emitted := make(map[string]bool)
	for _, d := range old.Deliveries {
		raw := old.Events[d.EventID]
		dl := outbox.DeadLetter{EventID: d.EventID, EventType: d.Type, Subject: d.Subject, Target: d.Target,
			Attempts: d.Attempts, LastError: d.LastError, DeadAt: d.DeadAt, Replica: replica, Event: raw}
		switch {
		case d.Dead:
		case !configured[d.Target]:
			dl.LastError = fmt.Sprintf("webhook target %q is no longer configured (the last attempt before: %s)", d.Target, d.LastError)
			dl.DeadAt = s.now().UTC()
		case emitted[d.EventID]:
			continue
		default:
			var e outbox.Event
			err := json.Unmarshal(raw, &e)
			if err == nil {
				ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
				err = s.outbox.Emit(ctx, e)
				cancel()
			} else {
				err = fmt.Errorf("%w: %w", outbox.ErrInvalidEvent, err)
			}
			if errors.Is(err, outbox.ErrInvalidEvent) {
				n.unimportable++
				s.log.Error("not importing a webhook delivery whose event cannot be sent", "event_id", d.EventID, "target", d.Target, "error", err)
				continue
			}
			if err != nil {
				return err
			}
			emitted[d.EventID] = true
			n.emitted++
			continue
		}
		err := s.outbox.ImportDeadLetter(dl)
		if errors.Is(err, outbox.ErrInvalidEvent) {
			n.unimportable++
			s.log.Error("not importing a dead letter whose event cannot be read", "event_id", d.EventID, "target", d.Target, "error", err)
			continue
		}
		if err != nil {
			return err
		}
		n.deadLetters++
	}
	return nil
}

// renameDurably renames from to to and syncs their folder, so that the
// rename outlives a crash.
func renameDurably(from, to string) error {
	if err := os.Rename(from, to); err != nil {
		return err
	}
	dir, err := os.Open(filepath.Dir(to))
	if err != nil {
		return err
	}
	defer dir.Close()
	return dir.Sync()
}
