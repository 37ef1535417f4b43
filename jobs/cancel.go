package jobs

import (
	"errors"
	"fmt"
	"time"
)

// ErrFinished: the job already ended; it cannot be canceled. 409.
var ErrFinished = errors.New("job already finished")

// ErrNotCancelable: a restore that has started cannot be canceled, since
// its attempt may already have replaced the store with the backup; a
// cancel would record "canceled" over a rollback that happened. 409.
var ErrNotCancelable = errors.New("job cannot be canceled now")

// Cancelable reports whether a cancel may end r: any job not yet
// finished, except a restore that has started (ErrNotCancelable).
func (r Record) Cancelable() error {
	if r.State.Terminal() {
		return fmt.Errorf("%w: job %s is %s", ErrFinished, r.ID, r.State)
	}
	if r.Kind == KindRestore && (r.Attempts > 0 || r.State != StatePending) {
		return fmt.Errorf("%w: restore %s has started (%s, attempt %d): it may already have replaced store %s, and runs to its end", ErrNotCancelable, r.ID, r.State, r.Attempts, r.Store)
	}
	return nil
}

// DefaultRecordRetention is how long a finished job's record is kept.
const DefaultRecordRetention = 24 * time.Hour
