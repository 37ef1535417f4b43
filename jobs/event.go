package jobs

import (
	"encoding/json"
	"time"
)

// EventType names a lifecycle change.
type EventType string

const (
	EventJobEnqueued   EventType = "job.enqueued"
	EventJobStarted    EventType = "job.started"
	EventJobProgress   EventType = "job.progress"
	EventJobRetrying   EventType = "job.retrying"
	EventJobSucceeded  EventType = "job.succeeded"
	EventJobFailed     EventType = "job.failed" // final
	EventJobCanceled   EventType = "job.canceled"
	EventStoreCorrupt  EventType = "store.corrupt"
	EventStoreRestored EventType = "store.restored"
	EventNodeUp        EventType = "node.up"
	EventNodeDown      EventType = "node.down"
	// EventBackupCorrupt: verifying a backup found it damaged; the backup
	// is marked bad (never restored from) and the live store is untouched.
	EventBackupCorrupt EventType = "backup.corrupt"
	// EventStoreLost: the node that owned a store found its lease held by
	// another claim; it stopped serving the store (Holder names the
	// claim that has it).
	EventStoreLost EventType = "store.lost"
	// EventBackupTargetFailed: a backup could not be uploaded to a backup
	// target (Target), once per outage of that target on a node; the
	// backup itself succeeded, and later uploads catch the target up.
	EventBackupTargetFailed EventType = "backup.target_failed"
	// EventShipGap: part of a store's commit log was dropped before every
	// backup target had it (a target was down past --ship-buffer): a
	// restore to a moment inside the gap is refused. Error says which
	// writes; a backup is enqueued (RestoreJobID names none; JobID is the
	// backup's) so later moments can be restored again.
	EventShipGap EventType = "store.ship_gap"
)

// Event is one entry of the events stream; ID is the stream entry id,
// filled in when read. Numbers stay numbers in JSON.
type Event struct {
	ID       string          `json:"id,omitempty"`
	Type     EventType       `json:"type"`
	JobID    string          `json:"job_id,omitempty"`
	Kind     Kind            `json:"kind,omitempty"`
	Store    string          `json:"store,omitempty"`
	Node     string          `json:"node,omitempty"`
	Trigger  Trigger         `json:"trigger,omitempty"`
	Actor    string          `json:"actor,omitempty"`
	Attempt  int             `json:"attempt,omitempty"`
	MaxRetry int             `json:"max_retry,omitempty"`
	Error    string          `json:"error,omitempty"`
	Result   json.RawMessage `json:"result,omitempty"`
	// job.progress
	Phase string `json:"phase,omitempty"`
	Done  int64  `json:"done,omitempty"`
	Total int64  `json:"total,omitempty"`
	// store.corrupt: what storekeeper does about it (see Notification.Action)
	Action       string `json:"action,omitempty"`
	RestoreJobID string `json:"restore_job_id,omitempty"`
	// store.restored: the rollback window and the replaced generation
	BackupID   string    `json:"backup_id,omitempty"`
	BackupAt   time.Time `json:"backup_at,omitzero"`
	Quarantine string    `json:"quarantine,omitempty"`
	// RestoredTo: a restore to a moment (the backup plus the shipped
	// commit log): writes after it, not after BackupAt, were rolled back.
	RestoredTo time.Time `json:"restored_to,omitzero"`
	// store.lost: the node that holds the store's lease now
	Holder string `json:"holder,omitempty"`
	// backup.target_failed: the backup target
	Target string `json:"target,omitempty"`
	// Fence is the fencing token of the store lease the event's change
	// was accepted under (set on a job's start and on ends its store's
	// owner records): the change applied only while that claim still held
	// the lease, so along the stream a store's tokens never go down.
	Fence int64     `json:"fence,omitempty"`
	At    time.Time `json:"at"`
}

// HistoryStatus is how a finished job ended, per kind.
type HistoryStatus string

const (
	StatusCompacted HistoryStatus = "compacted"
	StatusSkipped   HistoryStatus = "skipped"
	StatusDryRun    HistoryStatus = "dry_run"
	StatusBackedUp  HistoryStatus = "backed_up"
	StatusVerified  HistoryStatus = "verified"
	StatusCorrupt   HistoryStatus = "corrupt"
	StatusRestored  HistoryStatus = "restored"
	StatusDrilled   HistoryStatus = "drilled" // the drill passed; a failed one is failed
	StatusAdopted   HistoryStatus = "adopted"
	StatusFailed    HistoryStatus = "failed"
	StatusCanceled  HistoryStatus = "canceled"
	StatusDelivered HistoryStatus = "delivered" // notify
)

// HistoryEntry is one finished job in the history stream: the compaction
// history log, and more. ID is the stream entry id (the paging cursor).
type HistoryEntry struct {
	ID          string        `json:"id,omitempty"`
	JobID       string        `json:"job_id"`
	Kind        Kind          `json:"kind"`
	Store       string        `json:"store"`
	Status      HistoryStatus `json:"status"`
	Reason      string        `json:"reason,omitempty"`
	Trigger     Trigger       `json:"trigger"`
	Actor       string        `json:"actor"`
	Attempts    int           `json:"attempts"`
	DurationMS  int64         `json:"duration_ms"`
	BytesBefore uint64        `json:"bytes_before"`
	BytesAfter  uint64        `json:"bytes_after"`
	BackupID    string        `json:"backup_id,omitempty"`
	Error       string        `json:"error,omitempty"`
	Node        string        `json:"node"`
	At          time.Time     `json:"at"`
}

// Control frames of the API's /ws: not events (they are never in the
// stream), but sent in the same {"type": …} shape
// (docs/design.md, "HTTP API").
const (
	// FrameLive: the connection is subscribed (after its since= replay):
	// from here on every event it matches reaches it.
	FrameLive EventType = "stream.live"
	// FrameGap: the server could not replay what a since= asked for (its
	// stream no longer holds it, or could not be read): events may be
	// missing.
	FrameGap EventType = "stream.gap"
	// FrameDropped: the server dropped events for this connection (it
	// read too slowly); a client reconnects and asks for a replay.
	FrameDropped EventType = "stream.dropped"
)
