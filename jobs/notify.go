package jobs

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Notification is what a sink receives: for a job's final failure, a store
// found corrupt, a corrupt backup, an automatic restore that completed,
// and any restore that failed. Never for a success or a successful manual
// restore, and never for a failing notify job.
type Notification struct {
	// ID is stable: the same cause always gives the same id, so a
	// receiver can drop a duplicate delivery.
	ID      string    `json:"id"`
	Type    EventType `json:"type"` // the event that caused it
	Store   string    `json:"store,omitempty"`
	JobID   string    `json:"job_id,omitempty"`
	Kind    Kind      `json:"kind,omitempty"`
	Trigger Trigger   `json:"trigger,omitempty"`
	Actor   string    `json:"actor,omitempty"`
	Node    string    `json:"node,omitempty"`
	Error   string    `json:"error,omitempty"`
	Summary string    `json:"summary"` // one human line
	// store.corrupt: what storekeeper does about it ("auto_restore", or
	// why not: "breaker_open", "policy_off", "paused", "no_backup").
	Action       string `json:"action,omitempty"`
	RestoreJobID string `json:"restore_job_id,omitempty"`
	// store.restored and backup.corrupt
	BackupID   string    `json:"backup_id,omitempty"`
	BackupAt   time.Time `json:"backup_at,omitzero"` // the rollback window: writes after it are gone
	Quarantine string    `json:"quarantine,omitempty"`
	Target     string    `json:"target,omitempty"` // backup.target_failed
	At         time.Time `json:"at"`
}

// NotificationID derives a notification's id from what caused it.
func NotificationID(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return "n" + hex.EncodeToString(h.Sum(nil)[:12])
}

// DecodeNotification parses a notify payload's notification.
func DecodeNotification(b []byte) (Notification, error) {
	var n Notification
	if err := json.Unmarshal(b, &n); err != nil {
		return n, fmt.Errorf("%w: notification: %w", ErrBadPayload, err)
	}
	if n.ID == "" || n.Type == "" {
		return n, errors.New("notification without id or type")
	}
	return n, nil
}
