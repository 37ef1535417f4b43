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
