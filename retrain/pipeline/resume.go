package pipeline

import (
	"context"
	"errors"
	"fmt"
	"strconv"
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
func (s *Service) uncanaried(model, except string) (last Run, resumes int, ok bool, err error) {
	canaried := false
	err = s.store.newest(func(r Run) bool {
		if r.Model != model || r.Candidate == "" || r.ID == except {
			return true
		}
		if last.ID == "" {
			last = r
		} else if r.Candidate != last.Candidate {
			return false
		}
		if !r.CanaryStarted.IsZero() {
			canaried = true
			return false
		}
		if r.ResumedFrom == "" {
			return false // the run that published it
		}
		resumes++
		return true
	})
	if err != nil {
		return Run{}, 0, false, err
	}
	if canaried || last.ID == "" || last.Outcome != Failed || !last.Transient || resumes >= maxResumes {
		return Run{}, 0, false, nil
	}
	models, err := s.modelStore(context.Background())
	if err != nil {
		return Run{}, 0, false, err
	}
	newest, err := newestVersion(context.Background(), models, model)
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
	p, resumes, ok, err := st.s.uncanaried(st.run.Model, st.run.ID)
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
