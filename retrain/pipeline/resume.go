package pipeline

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"

	"go.etcd.io/bbolt"
)

// A version that a run published but never canaried (the run failed in
// its canary step, or the service stopped between publishing and the
// canary's start) is taken up again: Open queues a run for it, and the
// data step of the model's next run starts its canary instead of training
// yet another version.

// uncanaried returns the run that published model's newest version when
// that run failed, so the version never got its canary; except is a run
// to leave out (the one asking).
func (s *Service) uncanaried(tx *bbolt.Tx, model, except string) (Run, bool, error) {
	c := tx.Bucket(runsBucket).Cursor()
	for k, v := c.Last(); k != nil; k, v = c.Prev() {
		var r Run
		if err := json.Unmarshal(v, &r); err != nil {
			return Run{}, false, fmt.Errorf("cannot decode run %d: %w", binary.BigEndian.Uint64(k), err)
		}
		if r.Model != model || r.Candidate == "" || r.ID == except {
			continue
		}
		if r.Outcome != Failed {
			return Run{}, false, nil
		}
		newest, err := newestVersion(filepath.Join(s.cfg.Repository, model))
		if err != nil {
			return Run{}, false, err
		}
		return r, strconv.FormatInt(newest, 10) == r.Candidate, nil
	}
	return Run{}, false, nil
}

// resume makes the run start the canary of the version an earlier run
// published and never canaried, if there is one and the gateway shows no
// canary of it; it keeps unpinned traffic on the version that one was
// compared with, as publishing does.
func (st *runState) resume(ctx context.Context) (bool, error) {
	var p Run
	var ok bool
	err := st.s.db.View(func(tx *bbolt.Tx) (err error) {
		p, ok, err = st.s.uncanaried(tx, st.run.Model, st.run.ID)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("cannot look for a version never canaried: %w", err)
	}
	if !ok {
		return false, nil
	}
	if r := st.routing; r != nil && r.Canary != nil && r.Canary.Config.Version == p.Candidate {
		return false, nil // its canary did start: run p missed the answer
	}
	st.logf("version %s, published by run %s, never got its canary (%s): starting it instead of training another version", p.Candidate, p.ID, p.Reason)
	if p.Metrics != nil {
		st.metrics = *p.Metrics
		if err := st.pinPrimary(ctx, p.Metrics.BaseVersion); err != nil {
			return false, err
		}
	}
	st.mu.Lock()
	st.run.Candidate = p.Candidate
	st.mu.Unlock()
	st.resumed = true
	return true, nil
}
