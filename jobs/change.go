package jobs

import (
	"encoding/json"
	"time"
)

// Terminal is a job's end in the one finish path every terminal state
// takes: the record's state, reason, error and finish time; its locks
// released and its record expiring (Finish); the event (job.succeeded,
// job.failed or job.canceled); and exactly one history entry.
type Terminal struct {
	State  State
	Reason string
	Error  string // appended to the record's errors (failed) and shown in event and history
	Result json.RawMessage
	At     time.Time
	// Event and History are completed from the record; the caller sets
	// what only it knows (attempt, node, status, bytes, …).
	Event   Event
	History HistoryEntry
	// Before are entries appended before the terminal event (what the job
	// found: store.restored, backup.corrupt).
	Before []Event
}
