package jobs

import (
	"errors"
	"time"
)

// ErrFinished: the job already ended; it cannot be canceled. 409.
var ErrFinished = errors.New("job already finished")

// DefaultRecordRetention is how long a finished job's record is kept.
const DefaultRecordRetention = 24 * time.Hour
