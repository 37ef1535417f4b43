package jobs

import "time"

// A job's result is kept as JSON in its record (Record.Result), its
// job.succeeded event and its history entry. There is one result type per
// kind; the worker fills them from the store package's reports.

// CompactOutcome is what a compact job did.
type CompactOutcome string

// The outcomes of a compaction.
const (
	OutcomeCompacted CompactOutcome = "compacted"
	OutcomeSkipped   CompactOutcome = "skipped" // the rule said it was not worth it
	OutcomeDryRun    CompactOutcome = "dry_run"
)

// CompactResult is a compact job's result. BytesBefore and BytesAfter are
// the store directory's size on disk.
type CompactResult struct {
	Outcome     CompactOutcome  `json:"outcome"`
	Decision    CompactDecision `json:"decision"`
	BytesBefore uint64          `json:"bytes_before"`
	BytesAfter  uint64          `json:"bytes_after"`
	Duration    time.Duration   `json:"duration"`
}

// CompactDecision is the compaction rule's answer and the stats it read.
type CompactDecision struct {
	Compact bool       `json:"compact"`
	Reason  string     `json:"reason"`
	Stats   StoreStats `json:"stats"`
}

// BackupResult is a backup job's result.
type BackupResult struct {
	Backup BackupSummary `json:"backup"`
	Copied int           `json:"copied"` // files copied; the rest were shared
	Shared int           `json:"shared"`
	Reread int           `json:"reread"` // shared, but read to learn so: the hash cache did not know them
	Pruned []string      `json:"pruned,omitempty"`
	Timing BackupTiming  `json:"timing"`
	Took   time.Duration `json:"took"`
	// Targets: the upload to each backup target, after the local backup.
	Targets []TargetUpload `json:"targets,omitempty"`
}

// TargetUpload is a backup's upload to one backup target.
type TargetUpload struct {
	Target   string        `json:"target"`
	Objects  int           `json:"objects"` // sent
	Skipped  int           `json:"skipped"` // already on the target (shared with other backups or stores)
	Bytes    int64         `json:"bytes"`   // sent
	Took     time.Duration `json:"took"`
	Error    string        `json:"error,omitempty"`  // the upload failed; the next backup's sends what is missing
	Complete bool          `json:"complete"`         // the backup is listed on the target
	Pruned   []string      `json:"pruned,omitempty"` // backups the target dropped after it, by the store's retention
	// A backup asked to reencrypt: the store's backups and objects on the
	// target rewritten for the current recipients.
	ReencryptedBackups int `json:"reencrypted_backups,omitempty"`
	ReencryptedObjects int `json:"reencrypted_objects,omitempty"`
}

// BackupTiming breaks a backup's time down.
type BackupTiming struct {
	Checkpoint time.Duration `json:"checkpoint"`
	Copy       time.Duration `json:"copy"`      // copying new files, hash and fsync included
	Hash       time.Duration `json:"hash"`      // of Copy: inside SHA-256
	FileSync   time.Duration `json:"file_sync"` // of Copy: fsync of the copied files
	Validate   time.Duration `json:"validate"`  // block checksums (during Copy, summed over copiers), then a read-only open
	Publish    time.Duration `json:"publish"`   // manifest, directory fsyncs, rename
}

// VerifyResult is a verify job's result: either the live store is
// corrupt (Corrupt, and nothing else was checked), or Live holds its check
// and Backup that of its newest backup not known bad (absent when there
// is none).
type VerifyResult struct {
	Corrupt string          `json:"corrupt,omitempty"`
	Live    *VerifyCheck    `json:"live,omitempty"`
	Backup  *VerifiedBackup `json:"backup,omitempty"`
}

// VerifyCheck is what one verification read.
type VerifyCheck struct {
	Files    int           `json:"files"`
	Bytes    uint64        `json:"bytes"`
	Points   int64         `json:"points,omitempty"` // keys visited by a deep check
	Deep     bool          `json:"deep"`
	Duration time.Duration `json:"duration"`
}

// VerifiedBackup is the check of one backup: Bad says why it is corrupt
// (it was marked bad), or the embedded check says what was read.
type VerifiedBackup struct {
	ID           string `json:"id"`
	Bad          string `json:"bad,omitempty"`
	*VerifyCheck        // nil when Bad
}

// RestoreResult is a restore job's result. BackupAt is the rollback
// window: writes made after it are not in the restored store; the
// replaced generation is kept in Quarantine (relative to the data
// directory).
type RestoreResult struct {
	// Replayed: an earlier attempt of this job made the restore (and could
	// not record it); this attempt found it done and changed nothing.
	Replayed   bool      `json:"replayed,omitempty"`
	BackupID   string    `json:"backup_id"`
	BackupAt   time.Time `json:"backup_at"`
	Quarantine string    `json:"quarantine,omitempty"` // empty when there was no live directory
	// Log: a restore to a moment (Params.At) replayed the shipped commit
	// log onto the backup.
	Log    *RestoredLog  `json:"log,omitempty"`
	Timing RestoreTiming `json:"timing"`
	Took   time.Duration `json:"took"`
}

// RestoredLog is what a restore to a moment replayed onto its backup:
// how many batches and writes, the last write included (its sequence
// number on its timeline and its commit time), and the timeline the
// restored store started.
type RestoredLog struct {
	At          time.Time `json:"at"` // the moment asked for
	Batches     int       `json:"batches"`
	Writes      int       `json:"writes"`
	Through     uint64    `json:"through"`
	LastWriteAt time.Time `json:"last_write_at,omitzero"`
	Timeline    string    `json:"timeline"`
}

// AdoptResult is an adoption's result: the backup the store was made
// from and where it came from, the node that held the store before (empty
// when none did), the fencing token of the adopter's claim, and the jobs
// still queued for the old owner that were settled failed (store_moved).
type AdoptResult struct {
	Replayed     bool          `json:"replayed,omitempty"`
	Target       string        `json:"target"`
	BackupID     string        `json:"backup_id"`
	BackupAt     time.Time     `json:"backup_at"`
	PreviousNode string        `json:"previous_node,omitempty"`
	Token        int64         `json:"token"`
	Moved        []string      `json:"moved,omitempty"`
	Timing       RestoreTiming `json:"timing"`
	Took         time.Duration `json:"took"`
}

// DrillResult is a passing drill's result: which backup, from where
// (Target; empty for the local backup directory), what it read, and the
// measured RTO: from the drill's start to a fetched, fingerprinted,
// checked store.
type DrillResult struct {
	Target             string        `json:"target,omitempty"`
	BackupID           string        `json:"backup_id"`
	BackupAt           time.Time     `json:"backup_at"`
	Files              int           `json:"files"`
	Bytes              int64         `json:"bytes"`
	Points             int64         `json:"points"`
	Fingerprint        string        `json:"fingerprint,omitempty"`
	FingerprintChecked bool          `json:"fingerprint_checked"` // false for a backup made before fingerprints
	RTO                time.Duration `json:"rto"`
	Fetch              time.Duration `json:"fetch"`
	Check              time.Duration `json:"check"`
	// Log: a drill at a moment (Params.At) replayed the shipped commit
	// log onto the proven backup, and CheckLevels passed again; its
	// Timeline is the one the moment is on (nothing new is started).
	Log *RestoredLog `json:"log,omitempty"`
}

// RestoreTiming breaks a restore's time down.
type RestoreTiming struct {
	Fence  time.Duration `json:"fence"`
	Stage  time.Duration `json:"stage"`            // copy from the backup, hash and fsync included
	Hash   time.Duration `json:"hash"`             // of Stage: inside SHA-256
	Sync   time.Duration `json:"sync"`             // of Stage: fsync of the staged files
	Replay time.Duration `json:"replay,omitempty"` // a restore to a moment: the commit log replayed onto the staged copy
	Verify time.Duration `json:"verify"`
	Swap   time.Duration `json:"swap"`
	Reopen time.Duration `json:"reopen"`
}
