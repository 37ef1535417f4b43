package jobs

import "time"

// StoreStatus is what the node holding a store's lease publishes about it
// at every heartbeat (StatsKey, guarded by the lease): the store's stats
// and its backups, newest first, without their file lists (published
// apart, BackupFileLists: a status is rewritten at every heartbeat and
// every job's end, the file lists only when the backups change). The
// API, the metrics and ctl read it.
// The worker converts the store package's values into it; store knows
// nothing of Redis.
type StoreStatus struct {
	Node    string          `json:"node"`
	Stats   StoreStats      `json:"stats"`
	Backups []BackupSummary `json:"backups,omitempty"` // newest first; absent when the store has no backup directory
	At      time.Time       `json:"at"`
	// Fence is the fencing token of the lease the publisher held; the
	// publish applied only while that claim still held the lease.
	Fence int64 `json:"fence,omitempty"`
	// Targets: the store's copy on each backup target, as its owner knows
	// it (absent without --backup-target).
	Targets []TargetStatus `json:"targets,omitempty"`
	// Drill is the store's last restore drill (absent before the first).
	Drill *DrillStatus `json:"drill,omitempty"`
	// ShipGaps counts the gaps the owner's shipper dropped from the
	// store's commit log since it started (store.ship_gap says which).
	ShipGaps int `json:"ship_gaps,omitempty"`
	// LogStart is when the store's shipped commit log starts (its
	// timeline chain's first timeline's creation): no restore or drill to
	// a moment before it is possible. Absent when the owner does not ship
	// the log, and, for a restored store, until the owner's shipper has
	// read its parent timelines' records (locally or from the targets).
	LogStart time.Time `json:"log_start,omitzero"`
}

// DrillStatus is a store's last restore drill, and the newest backup a
// drill has proven restorable (Restorable: the store's last restorable
// point, kept across a later failed drill).
type DrillStatus struct {
	JobID      string        `json:"job_id"`
	At         time.Time     `json:"at"` // when it finished
	Target     string        `json:"target,omitempty"`
	BackupID   string        `json:"backup_id,omitempty"`
	BackupAt   time.Time     `json:"backup_at,omitzero"`
	OK         bool          `json:"ok"`
	Error      string        `json:"error,omitempty"`
	RTO        time.Duration `json:"rto,omitempty"` // measured, when it passed
	Restorable time.Time     `json:"restorable,omitzero"`
}

// TargetStatus is a store's copy on one backup target.
type TargetStatus struct {
	Target   string    `json:"target"`
	BackupID string    `json:"backup_id,omitempty"` // the newest backup the target holds; empty: none known
	BackupAt time.Time `json:"backup_at,omitzero"`
	// Error is why the last upload failed; FailingSince when uploads to
	// the target started failing (zero while they succeed).
	Error        string    `json:"error,omitempty"`
	FailingSince time.Time `json:"failing_since,omitzero"`
	// Shipping (point-in-time recovery), when on: how long ago the oldest
	// committed write the target does not hold yet was committed (0: it
	// holds every write read), and the bytes of segments waiting for it
	// on the store's node.
	ShipLag     *time.Duration `json:"ship_lag,omitempty"`
	ShipPending int64          `json:"ship_pending_bytes,omitempty"`
	// Encrypted: the node encrypts what it uploads to the target
	// (--backup-encrypt-to); nil from a node that does not say.
	Encrypted *bool `json:"encrypted,omitempty"`
}

// StoreState is a store's lifecycle state by name, as published.
type StoreState string

// The states a store publishes.
const (
	StoreOpen        StoreState = "open"
	StoreRestoring   StoreState = "restoring"
	StoreCorrupt     StoreState = "corrupt"
	StoreUnavailable StoreState = "unavailable" // did not open for a reason other than damage; retried, never restored automatically
	StoreClosed      StoreState = "closed"
)

// StoreStates lists every StoreState, in lifecycle order.
var StoreStates = []StoreState{StoreOpen, StoreRestoring, StoreCorrupt, StoreUnavailable, StoreClosed}

// StoreStats is a store's published stats. A store that is not open
// reports its state, error and disk usage only.
type StoreStats struct {
	Name  string     `json:"name"`
	State StoreState `json:"state"`
	Error string     `json:"error,omitempty"` // the cause when corrupt, unavailable or unopened
	// NotOwner is why the store refuses writes while this node does not
	// hold its lease; empty while it does.
	NotOwner string `json:"not_owner,omitempty"`

	DiskBytes     uint64       `json:"disk_bytes"`     // Pebble's disk usage (tables live and obsolete, WAL, MANIFEST, OPTIONS); a store not open: every file in its directory
	LiveBytes     uint64       `json:"live_bytes"`     // sstables of the live version
	EstimatedKeys uint64       `json:"estimated_keys"` // entries minus deletions; overwritten versions count twice until compacted
	Levels        []LevelStats `json:"levels"`
	ReadAmp       int          `json:"read_amp"`
	L0Sublevels   int          `json:"l0_sublevels"`
	Tombstones    uint64       `json:"tombstones"`

	GarbagePointBytes uint64 `json:"garbage_point_bytes"`
	GarbageRangeBytes uint64 `json:"garbage_range_bytes"`
	AboveBottomBytes  uint64 `json:"above_bottom_bytes"` // bytes above the bottom sorted run
	ReclaimableBytes  uint64 `json:"reclaimable_bytes"`  // the compaction rule's estimate
	StatsComplete     bool   `json:"stats_complete"`     // Pebble's table stats cover every table

	LastCompaction   time.Time `json:"last_compaction,omitzero"`
	LastVerify       time.Time `json:"last_verify,omitzero"`
	BackgroundErrors int64     `json:"background_errors"`
}

// LevelStats is one LSM level of StoreStats.
type LevelStats struct {
	Level     int   `json:"level"`
	Tables    int64 `json:"tables"`
	Bytes     int64 `json:"bytes"`
	Sublevels int   `json:"sublevels"`
}

// BackupSummary is one backup as listed: its manifest and what later
// checks found.
type BackupSummary struct {
	ID            string    `json:"id"`
	Store         string    `json:"store"`
	CreatedAt     time.Time `json:"created_at"`
	FormatVersion uint64    `json:"format_version"` // Pebble's FormatMajorVersion
	Keys          uint64    `json:"keys"`           // estimated from table properties
	Bytes         int64     `json:"bytes"`          // all files
	NewBytes      int64     `json:"new_bytes"`      // bytes this backup copied; the rest was shared
	// Files: the backup's files, in a backup job's result and in GET
	// /api/stores/:store/backups. A store's status, and so the store
	// listings, leave them out: its owner publishes them apart
	// (BackupFileLists).
	Files       []BackupFile `json:"files,omitempty"`
	Fingerprint string       `json:"fingerprint,omitempty"` // of its content: what a drill recomputes
	VerifiedAt  time.Time    `json:"verified_at"`           // zero: no check completed
	Bad         bool         `json:"bad,omitempty"`
	Error       string       `json:"error,omitempty"` // why it is bad
	// With the commit log shipped (point-in-time recovery): the timeline
	// the backup was taken on, a sequence number it holds every batch
	// through, and a time it holds nothing committed after.
	Timeline string    `json:"timeline,omitempty"`
	LogSeq   uint64    `json:"log_seq,omitempty"`
	LogAt    time.Time `json:"log_at,omitzero"`
}

// BackupFileLists are the file lists of a store's backups, by backup id:
// what its owner publishes apart from its status (BackupFilesKey), only
// when its backups change. A backup's files never change once it is
// published.
type BackupFileLists map[string][]BackupFile

// BackupFile is one file of a backup.
type BackupFile struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	Shared bool   `json:"shared,omitempty"` // a hard link to the content shared with other backups
	// Fingerprint of a sstable's entries or a WAL's records.
	Fingerprint string `json:"fingerprint,omitempty"`
}

// Usable reports whether a restore may use the backup: it was verified
// and has not since been found bad. Every backup is verified as it is
// made (block checksums and a read-only open before it is published), and
// again by each verify job (the newest backup not known bad) or when a
// restore finds it damaged; VerifiedAt records the last check that
// passed, Bad the one that did not.
//
// This one rule decides every restore: one that names its backup and one
// that takes the newest usable backup, one an operator asks for and one
// started automatically after corruption. The API refuses a restore it
// would reject before making a job (409 no_backup), and the worker
// applies it again when the job runs; the store itself refuses only a
// backup marked bad.
//
// Naming a backup is no exemption. A backup that is not bad but was never
// verified is one whose check did not complete (the process stopped
// between publishing it and recording its verification): nothing says it
// is good. A restore replaces the live store and drops every write made
// after the backup, so it is not done on a guess: the operator verifies
// the store (which verifies its newest backup) or names a verified one.
func (b BackupSummary) Usable() bool { return !b.Bad && !b.VerifiedAt.IsZero() }

// NewestUsable returns the first usable backup of backups (listed newest
// first), and false when none is.
func NewestUsable(backups []BackupSummary) (BackupSummary, bool) {
	for _, b := range backups {
		if b.Usable() {
			return b, true
		}
	}
	return BackupSummary{}, false
}

// NewestGood returns the newest backup not marked bad (verified or not),
// which is what "last backup" means in health checks and metrics.
func NewestGood(backups []BackupSummary) (BackupSummary, bool) {
	for _, b := range backups {
		if !b.Bad {
			return b, true
		}
	}
	return BackupSummary{}, false
}

// StoreView is a store as the API shows it (GET /api/stores): its owner,
// whether the owner is up, whether it is paused, the owner's last
// published stats and backups, and its health.
type StoreView struct {
	Name        string            `json:"name"`
	Node        string            `json:"node"`
	NodeUp      bool              `json:"node_up"`
	Paused      bool              `json:"paused"`
	Stats       *StoreStats       `json:"stats,omitempty"`       // nil until the owner has published
	Backups     []BackupSummary   `json:"backups"`               // newest first
	LastBackup  *time.Time        `json:"last_backup,omitempty"` // of the newest backup not marked bad
	PublishedAt *time.Time        `json:"published_at,omitempty"`
	Health      []HealthCondition `json:"health"`
	// Targets: the store's copy on each backup target, as its owner
	// published it (absent without --backup-target).
	Targets []TargetStatus `json:"targets,omitempty"`
	// Drill: the store's last restore drill (absent before the first).
	Drill *DrillStatus `json:"drill,omitempty"`
	// LogStart: where the store's shipped commit log starts, as its owner
	// published it (StoreStatus.LogStart): restores and drills to a
	// moment before it are refused.
	LogStart time.Time `json:"log_start,omitzero"`
}

// HealthCondition is one health finding, about a store (StoreView.Health)
// or the deployment (GET /api/dashboard's health).
type HealthCondition struct {
	Kind    string `json:"kind"` // corrupt, unavailable, lost, node_down, no_recent_backup, backup_target_failing, drill_failed, rpo_exceeded, rto_exceeded, high_fragmentation, job_failures
	Store   string `json:"store,omitempty"`
	Node    string `json:"node,omitempty"`
	Message string `json:"message"`
}
