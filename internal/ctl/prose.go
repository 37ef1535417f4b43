package ctl

import (
	"fmt"
	"strings"

	"storekeeper/jobs"
)

// eventLine is one event on one line: when, what it is about, and what
// happened.
func eventLine(e jobs.Event) string {
	at := "--:--:--"
	if !e.At.IsZero() {
		at = e.At.Local().Format("15:04:05")
	}
	subject := string(e.Type)
	switch {
	case e.JobID != "":
		subject = fmt.Sprintf("%s %s %s", e.Kind, e.Store, e.JobID)
	case e.Store != "":
		subject = "store " + e.Store
	case e.Node != "":
		subject = "node " + e.Node
	}
	return at + "  " + subject + ": " + describe(e)
}

// describe says what an event tells, in words.
func describe(e jobs.Event) string {
	by := ""
	if e.Actor != "" {
		by = " by " + e.Actor
	}
	switch e.Type {
	case jobs.EventJobEnqueued:
		return fmt.Sprintf("enqueued (%s%s)", e.Trigger, by)
	case jobs.EventJobStarted:
		return fmt.Sprintf("started on %s, attempt %d of %d", e.Node, e.Attempt, e.MaxRetry+1)
	case jobs.EventJobProgress:
		return phaseText(e)
	case jobs.EventJobRetrying:
		return fmt.Sprintf("attempt %d of %d failed; retrying: %s", e.Attempt, e.MaxRetry+1, e.Error)
	case jobs.EventJobSucceeded:
		return strings.TrimSuffix("succeeded: "+resultText(e.Kind, e.Result), ": ")
	case jobs.EventJobFailed:
		return "failed: " + e.Error
	case jobs.EventJobCanceled:
		return "canceled" + by
	case jobs.EventStoreCorrupt:
		if e.Action == "auto_restore" {
			return fmt.Sprintf("corrupt (%s); restoring from backup %s (job %s)", e.Error, e.BackupID, e.RestoreJobID)
		}
		return fmt.Sprintf("corrupt (%s); no automatic restore: %s", e.Error, e.Action)
	case jobs.EventStoreRestored:
		if !e.RestoredTo.IsZero() {
			return fmt.Sprintf("restored to %s (backup %s plus the shipped commit log): writes after it are gone; the replaced generation is in %s",
				timeOr(&e.RestoredTo, "?"), e.BackupID, orText(e.Quarantine, "no quarantine (there was no live store)"))
		}
		return fmt.Sprintf("restored from backup %s (taken %s): writes after it are gone; the replaced generation is in %s",
			e.BackupID, timeOr(&e.BackupAt, "?"), orText(e.Quarantine, "no quarantine (there was no live store)"))
	case jobs.EventBackupCorrupt:
		return fmt.Sprintf("backup %s is corrupt and marked bad: %s", e.BackupID, e.Error)
	case jobs.EventBackupTargetFailed:
		return fmt.Sprintf("backup %s not uploaded to target %s (the backup is kept locally; later uploads catch up): %s", e.BackupID, e.Target, e.Error)
	case jobs.EventShipGap:
		return "commit log dropped before every target had it: " + e.Error
	case jobs.EventNodeUp:
		return "up"
	case jobs.EventNodeDown:
		return "down: its stores' jobs wait until it returns"
	}
	return string(e.Type)
}

// phaseText is a job's phase, with how far it is when known (done and
// total are bytes or files, depending on the phase: a share says both).
func phaseText(e jobs.Event) string {
	if e.Total > 0 && e.Done > 0 {
		return fmt.Sprintf("%s %d%%", e.Phase, min(100, e.Done*100/e.Total))
	}
	return e.Phase
}
