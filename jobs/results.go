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
	Replayed   bool          `json:"replayed,omitempty"`
	BackupID   string        `json:"backup_id"`
	BackupAt   time.Time     `json:"backup_at"`
	Quarantine string        `json:"quarantine,omitempty"` // empty when there was no live directory
	Timing     RestoreTiming `json:"timing"`
	Took       time.Duration `json:"took"`
}

// RestoreTiming breaks a restore's time down.
type RestoreTiming struct {
	Fence  time.Duration `json:"fence"`
	Stage  time.Duration `json:"stage"` // copy from the backup, hash and fsync included
	Hash   time.Duration `json:"hash"`  // of Stage: inside SHA-256
	Sync   time.Duration `json:"sync"`  // of Stage: fsync of the staged files
	Verify time.Duration `json:"verify"`
	Swap   time.Duration `json:"swap"`
	Reopen time.Duration `json:"reopen"`
}
