package pipeline

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"

	"go.etcd.io/bbolt"
)

// A version that a run published but never canaried is taken up again
// when the run failed for a reason that may pass (see transient): Open
// queues a run for it, and the data step of the model's next run starts
// its canary instead of training yet another version. A version is taken
// up by at most maxResumes runs, counted on the runs in the store so that
// restarts count too, and never once a run recorded that the gateway
// acknowledged its canary's start (Run.CanaryStarted). A failure that will
// not pass on its own (the gateway refusing the canary section, a version
// that never becomes ready) leaves the version as it is: the next run
// trains a new one.

// maxResumes is how many runs may take up the canary of a version after
// the run that published it failed to start it.
const maxResumes = 3

// errInterrupted is wrapped by the reason of a run that the service's
// stopping, or a crash, ended.
var errInterrupted = errors.New("interrupted")

// transient says whether a run's failure may pass on its own: the service
// stopped, or a call to the gateway got no answer, or only 429, 502, 503
// or 504, until the step's deadline.
func transient(err error) bool {
	var gaveUp *gaveUpError
	return errors.Is(err, errInterrupted) || errors.As(err, &gaveUp)
}

// uncanaried returns the newest run of model with a candidate when its
// candidate is to be taken up again: the model's newest version, never
// canaried, left by a transient failure, and taken up by fewer than
// maxResumes runs (resumes says how many). except is a run to leave out
// (the one asking).
func (s *Service) uncanaried(tx *bbolt.Tx, model, except string) (last Run, resumes int, ok bool, err error) {
	c := tx.Bucket(runsBucket).Cursor()
	for k, v := c.Last(); k != nil; k, v = c.Prev() {
		var r Run
		if err := json.Unmarshal(v, &r); err != nil {
			return Run{}, 0, false, fmt.Errorf("cannot decode run %d: %w", binary.BigEndian.Uint64(k), err)
		}
		if r.Model != model || r.Candidate == "" || r.ID == except {
			continue
		}
		if last.ID == "" {
			last = r
		} else if r.Candidate != last.Candidate {
			break
		}
		if !r.CanaryStarted.IsZero() {
			return Run{}, 0, false, nil
		}
		if r.ResumedFrom == "" {
			break // the run that published it
		}
		resumes++
	}
	if last.ID == "" || last.Outcome != Failed || !last.Transient || resumes >= maxResumes {
		return Run{}, 0, false, nil
	}
	newest, err := newestVersion(filepath.Join(s.cfg.Repository, model))
	if err != nil {
		return Run{}, 0, false, err
	}
	return last, resumes, strconv.FormatInt(newest, 10) == last.Candidate, nil
}

// resume makes the run start the canary of the version an earlier run
// published and never canaried, if there is one to take up and the
// gateway shows no canary of it; it keeps unpinned traffic on the version
// that one was compared with, as publishing does. The run records the
// version as its candidate before it calls the gateway, so that a crash
// counts as one of the version's maxResumes.
func (st *runState) resume(ctx context.Context) (bool, error) {
	var p Run
	var resumes int
	var ok bool
	err := st.s.db.View(func(tx *bbolt.Tx) (err error) {
		p, resumes, ok, err = st.s.uncanaried(tx, st.run.Model, st.run.ID)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("cannot look for a version never canaried: %w", err)
	}
	if !ok {
		return false, nil
	}
	if r := st.routing; r != nil && r.Canary != nil && r.Canary.Config.Version == p.Candidate {
		return false, nil // its canary did start: run p missed recording it
	}
	st.mu.Lock()
	st.run.Candidate, st.run.ResumedFrom = p.Candidate, p.ID
	st.mu.Unlock()
	st.logf("version %s, last tried by run %s, never got its canary (%s): starting it instead of training another version (take-up %d of %d)",
		p.Candidate, p.ID, p.Reason, resumes+1, maxResumes)
	if p.Metrics != nil {
		st.metrics = *p.Metrics
		if err := st.pinPrimary(ctx, p.Metrics.BaseVersion); err != nil {
			return false, err
		}
	}
	st.resumed = true
	return true, nil
}
