package keyspace

import (
	"time"
)

// CancelChannel carries the ids of canceled jobs to the workers running them.
const CancelChannel = "storekeeper:cancel"

func durationMS(start, end time.Time) int64 {
	if start.IsZero() {
		return 0
	}
	return end.Sub(start).Milliseconds()
}

// ConfirmChannel carries nothing anyone reads: a PUBLISH on it is the one
// write every confirmation of jobsdb makes (--redis-min-replicas), so
// that the WAIT after it covers everything the primary held before it.
// No process subscribes to it.
const ConfirmChannel = "storekeeper:confirm"
