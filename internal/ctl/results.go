package ctl

import (
	"encoding/json"
	"fmt"
	"time"

	"storekeeper/jobs"
)

// resultText is a job's result in a few words; `storekeeper ctl job ID`
// and --json show all of it.
func resultText(kind jobs.Kind, raw json.RawMessage) string {
	if len(raw) == 0 {
		return ""
	}
	switch kind {
	case jobs.KindCompact:
		var r jobs.CompactResult
		if json.Unmarshal(raw, &r) != nil {
			return ""
		}
		switch {
		case r.Outcome == jobs.OutcomeCompacted:
			return fmt.Sprintf("compacted, %s → %s", mib(r.BytesBefore), mib(r.BytesAfter))
		case r.Outcome == jobs.OutcomeDryRun && r.Decision.Compact:
			return "dry run: would compact (" + r.Decision.Reason + ")"
		case r.Outcome == jobs.OutcomeDryRun:
			return "dry run: would skip (" + r.Decision.Reason + ")"
		case r.Decision.Reason != "":
			return string(r.Outcome) + " (" + r.Decision.Reason + ")"
		}
		return string(r.Outcome)
	case jobs.KindBackup:
		var r jobs.BackupResult
		if json.Unmarshal(raw, &r) != nil {
			return ""
		}
		return fmt.Sprintf("backup %s, %s: %d files copied, %d shared with earlier backups", r.Backup.ID, mib(uint64(r.Backup.Bytes)), r.Copied, r.Shared)
	case jobs.KindVerify:
		var r jobs.VerifyResult
		if json.Unmarshal(raw, &r) != nil {
			return ""
		}
		if r.Corrupt != "" {
			return "the store is corrupt: " + r.Corrupt
		}
		var live jobs.VerifyCheck
		if r.Live != nil {
			live = *r.Live
		}
		s := fmt.Sprintf("%d files, %s: checksums good", live.Files, mib(live.Bytes))
		switch b := r.Backup; {
		case b == nil:
		case b.Bad != "":
			s += fmt.Sprintf("; backup %s is corrupt and was marked bad: %s", b.ID, b.Bad)
		case b.ID != "":
			files := 0
			if b.VerifyCheck != nil {
				files = b.Files
			}
			s += fmt.Sprintf("; backup %s good (%d files)", b.ID, files)
		}
		return s
	case jobs.KindRestore:
		var r jobs.RestoreResult
		if json.Unmarshal(raw, &r) != nil {
			return ""
		}
		if l := r.Log; l != nil {
			return fmt.Sprintf("restored to %s: backup %s plus %d writes of the commit log, the last committed at %s (sequence %d); new timeline %s",
				l.At.UTC().Format(time.RFC3339Nano), r.BackupID, l.Writes, l.LastWriteAt.UTC().Format(time.RFC3339Nano), l.Through, l.Timeline)
		}
		return "restored from backup " + r.BackupID
	case jobs.KindAdopt:
		var r jobs.AdoptResult
		if json.Unmarshal(raw, &r) != nil {
			return ""
		}
		s := fmt.Sprintf("adopted from backup %s on target %s", r.BackupID, r.Target)
		if r.PreviousNode != "" {
			s += ", moved from node " + r.PreviousNode
		}
		if len(r.Moved) > 0 {
			s += fmt.Sprintf("; %d job(s) queued there failed store_moved", len(r.Moved))
		}
		return s
	case jobs.KindDrill:
		var r jobs.DrillResult
		if json.Unmarshal(raw, &r) != nil {
			return ""
		}
		from := "the local backups"
		if r.Target != "" {
			from = "target " + r.Target
		}
		if l := r.Log; l != nil {
			return fmt.Sprintf("restorable to %s: backup %s from %s plus %d writes of the commit log (the last committed at %s), CheckLevels passed; RTO %s",
				l.At.UTC().Format(time.RFC3339Nano), r.BackupID, from, l.Writes, l.LastWriteAt.UTC().Format(time.RFC3339Nano), r.RTO.Round(time.Millisecond))
		}
		fp := "fingerprint matches"
		if !r.FingerprintChecked {
			fp = "no fingerprint recorded (an older backup)"
		}
		return fmt.Sprintf("backup %s from %s restores: %d files, %s, %d points, %s; RTO %s",
			r.BackupID, from, r.Files, mib(uint64(r.Bytes)), r.Points, fp, r.RTO.Round(time.Millisecond))
	}
	return ""
}
