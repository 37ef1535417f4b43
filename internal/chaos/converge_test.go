package chaos

import (
	"strings"
	"testing"

	"storekeeper/jobs"
)

// Convergence waits for every job listed to settle: a job waiting to be
// retried (a lease lost at the last fault) has not, and a check made
// before its next attempt ran saw it "retry after convergence" (a CI run,
// seed 775624261).
func TestConvergenceWaitsForRetries(t *testing.T) {
	settled := []jobs.Record{{ID: "a", State: jobs.StateSucceeded}, {ID: "b", State: jobs.StateFailed}, {ID: "c", State: jobs.StateCanceled}}
	if err := unsettled(settled); err != nil {
		t.Fatalf("terminal jobs only: %v", err)
	}
	for _, st := range []jobs.State{jobs.StatePending, jobs.StateActive, jobs.StateRetry} {
		err := unsettled(append(settled, jobs.Record{ID: "d", State: st}))
		if err == nil || !strings.Contains(err.Error(), "job d") {
			t.Errorf("a job %s: %v, want it named as not settled", st, err)
		}
	}
}
