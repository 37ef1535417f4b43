package jobs

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/oklog/ulid/v2"
)

// NewID returns a new job id: a ULID (48-bit millisecond time, then
// randomness, monotonic within a process), lower-case, so ids sort by
// creation time as strings. It is also the asynq task id.
func NewID() string { return "j" + strings.ToLower(ulid.Make().String()) }

// IDTime returns the creation time encoded in a job id.
func IDTime(id string) (time.Time, error) {
	if len(id) != 27 || id[0] != 'j' {
		return time.Time{}, fmt.Errorf("not a job id: %q", id)
	}
	u, err := ulid.ParseStrict(id[1:])
	if err != nil {
		return time.Time{}, fmt.Errorf("not a job id: %q: %w", id, err)
	}
	return ulid.Time(u.Time()).UTC(), nil
}

// Params are a job's kind-specific parameters. Two jobs of one kind on one
// store with equal Params are the same request (deduplication).
type Params struct {
	Force  bool `json:"force,omitempty"`   // compact: bypass the rule
	DryRun bool `json:"dry_run,omitempty"` // compact: decide only
	Deep   bool `json:"deep,omitempty"`    // verify: also CheckLevels
	// backup: then rewrite the store's backups on every encrypted target
	// for the current recipients (offsite.Target.Reencrypt)
	Reencrypt bool   `json:"reencrypt,omitempty"`
	BackupID  string `json:"backup_id,omitempty"` // restore, drill: empty = newest verified
	Target    string `json:"target,omitempty"`    // restore, drill, adopt: fetch the backup from this backup target
	Node      string `json:"node,omitempty"`      // adopt: the node that adopts the store
	// restore, drill: the moment to restore the store to (point-in-time
	// recovery: a backup plus the shipped commit log), or to prove it
	// can be; zero: a backup as it is
	At time.Time `json:"at,omitzero"`
}

// Payload is what a task carries. Secrets never travel here (asynqmon
// shows payloads): a notify job names its sink, the worker looks it up.
type Payload struct {
	JobID   string  `json:"job_id"`
	Kind    Kind    `json:"kind"`
	Store   string  `json:"store,omitempty"` // empty only for notify
	Trigger Trigger `json:"trigger"`
	Actor   string  `json:"actor"`
	BatchID string  `json:"batch_id,omitempty"`
	Params  Params  `json:"params"`
	// Notify jobs only: the sink's name and the notification itself.
	Sink         string          `json:"sink,omitempty"`
	Notification json.RawMessage `json:"notification,omitempty"`
}

// Validate checks a payload's fields against each other.
func (p Payload) Validate() error {
	switch {
	case !p.Kind.Valid():
		return fmt.Errorf("%w: unknown kind %q", ErrBadPayload, p.Kind)
	case p.JobID == "":
		return fmt.Errorf("%w: no job id", ErrBadPayload)
	case !p.Trigger.Valid():
		return fmt.Errorf("%w: unknown trigger %q", ErrBadPayload, p.Trigger)
	case p.Actor == "":
		return fmt.Errorf("%w: no actor", ErrBadPayload)
	}
	if p.Kind == KindNotify {
		if p.Sink == "" || len(p.Notification) == 0 {
			return fmt.Errorf("%w: notify needs a sink and a notification", ErrBadPayload)
		}
		return nil
	}
	if err := ValidateStoreName(p.Store); err != nil {
		return fmt.Errorf("%w: %w", ErrBadPayload, err)
	}
	if p.Params.Force && p.Kind != KindCompact && p.Kind != KindAdopt ||
		p.Params.DryRun && p.Kind != KindCompact ||
		p.Params.Deep && p.Kind != KindVerify ||
		p.Params.Reencrypt && p.Kind != KindBackup ||
		(p.Params.BackupID != "" || p.Params.Target != "") && p.Kind != KindRestore && p.Kind != KindDrill && p.Kind != KindAdopt ||
		(p.Params.Node != "") != (p.Kind == KindAdopt) ||
		!p.Params.At.IsZero() && (p.Kind != KindRestore && p.Kind != KindDrill || p.Params.BackupID != "" || p.Params.Target != "") {
		return fmt.Errorf("%w: parameters %+v do not apply to %s", ErrBadPayload, p.Params, p.Kind)
	}
	if p.Kind == KindAdopt && p.Params.Target == "" {
		return fmt.Errorf("%w: adopt needs a backup target", ErrBadPayload)
	}
	return nil
}

// Encode returns the task payload bytes.
func (p Payload) Encode() ([]byte, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return json.Marshal(p)
}

// Decode parses and validates task payload bytes. Its errors wrap both
// ErrBadPayload and asynq.SkipRetry: retrying cannot fix a bad payload.
func Decode(b []byte) (Payload, error) {
	var p Payload
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return p, fmt.Errorf("%w: %w: %w", ErrBadPayload, asynq.SkipRetry, err)
	}
	if err := p.Validate(); err != nil {
		return p, fmt.Errorf("%w: %w", asynq.SkipRetry, err)
	}
	return p, nil
}

// DedupeKey identifies a request for deduplication: kind, store and the
// canonical parameters.
func (p Payload) DedupeKey() string {
	b, _ := json.Marshal(p.Params) // fixed field order: canonical
	return string(p.Kind) + "|" + p.Store + "|" + string(b)
}

// ValidateTargetName checks a backup target's name (--backup-target
// NAME=URL): 1 to 32 of a-z, 0-9, _ and -, starting with a letter or digit.
func ValidateTargetName(name string) error {
	if !targetNameRE.MatchString(name) {
		return fmt.Errorf("backup target name %q: want 1-32 of a-z, 0-9, _ and -, starting with a letter or digit", name)
	}
	return nil
}

var targetNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,31}$`)
