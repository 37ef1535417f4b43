package jobs

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"time"
)

// State is a job's state in its record, which is the truth (asynq's own
// task state is not: its "archived" means failed or canceled, and its
// recoverer moves tasks without middleware).
type State string

const (
	StatePending   State = "pending"
	StateActive    State = "active"
	StateRetry     State = "retry"
	StateSucceeded State = "succeeded"
	StateFailed    State = "failed"
	StateCanceled  State = "canceled"
)

// Terminal reports whether no attempt follows this state.
func (s State) Terminal() bool {
	return s == StateSucceeded || s == StateFailed || s == StateCanceled
}

// AttemptError is one failed attempt.
type AttemptError struct {
	Attempt int       `json:"attempt"`
	Error   string    `json:"error"`
	At      time.Time `json:"at"`
}

// Record is a job as storekeeper knows it.
type Record struct {
	ID         string          `json:"job_id"`
	Kind       Kind            `json:"kind"`
	Store      string          `json:"store,omitempty"`
	Node       string          `json:"node,omitempty"`
	Queue      string          `json:"queue"`
	State      State           `json:"state"`
	Reason     string          `json:"reason,omitempty"` // why the state, e.g. "interrupted"
	Trigger    Trigger         `json:"trigger"`
	Actor      string          `json:"actor"`
	BatchID    string          `json:"batch_id,omitempty"`
	Params     Params          `json:"params"`
	Attempts   int             `json:"attempts"`
	MaxRetry   int             `json:"max_retry"`
	Errors     []AttemptError  `json:"errors"`
	Result     json.RawMessage `json:"result,omitempty"`
	EnqueuedAt time.Time       `json:"enqueued_at"`
	StartedAt  time.Time       `json:"started_at,omitzero"`
	FinishedAt time.Time       `json:"finished_at,omitzero"`

	// Run is the token of the attempt that started last; guards compare
	// it so that a late copy of a command never undoes a later step.
	Run string `json:"-"`
	// EnqueuedMS is when the record was written, on Redis's clock (ms):
	// the reconciler measures its grace against it, not against the
	// clock of whichever process enqueued.
	EnqueuedMS int64 `json:"-"`
}

// Fields returns the record as Redis hash fields (HSET key Fields()...).
// Times are RFC 3339 with nanoseconds; structured fields are JSON.
func (r Record) Fields() map[string]any {
	f := make(map[string]any, recordFields)
	for _, kv := range r.fields() {
		f[kv[0]] = kv[1]
	}
	return f
}

// AppendFields appends the record's non-empty fields as HSET arguments,
// leaving out skip (an absent field reads as empty). It is on every
// enqueue's path, so it goes from the fixed list straight to arguments.
func (r Record) AppendFields(args []any, skip ...string) []any {
	for _, kv := range r.fields() {
		if kv[1] != "" && !slices.Contains(skip, kv[0]) {
			args = append(args, kv[0], kv[1])
		}
	}
	return args
}

const recordFields = 18

// fields lists the record's hash fields and their values, in one order.
func (r Record) fields() [recordFields][2]string {
	params, _ := json.Marshal(r.Params)
	errs := "[]"
	if len(r.Errors) > 0 {
		b, _ := json.Marshal(r.Errors)
		errs = string(b)
	}
	return [recordFields][2]string{
		{"id", r.ID}, {"kind", string(r.Kind)}, {"store", r.Store}, {"node", r.Node}, {"queue", r.Queue},
		{"state", string(r.State)}, {"reason", r.Reason}, {"trigger", string(r.Trigger)}, {"actor", r.Actor},
		{"batch_id", r.BatchID}, {"params", string(params)}, {"attempts", strconv.Itoa(r.Attempts)},
		{"max_retry", strconv.Itoa(r.MaxRetry)}, {"errors", errs}, {"result", string(r.Result)},
		{"enqueued_at", FormatTime(r.EnqueuedAt)}, {"started_at", FormatTime(r.StartedAt)}, {"finished_at", FormatTime(r.FinishedAt)},
	}
}

// RecordFromHash decodes what HGETALL returned.
func RecordFromHash(h map[string]string) (Record, error) {
	if h["id"] == "" {
		return Record{}, fmt.Errorf("job record has no id")
	}
	r := Record{
		ID: h["id"], Kind: Kind(h["kind"]), Store: h["store"], Node: h["node"], Queue: h["queue"],
		State: State(h["state"]), Reason: h["reason"], Trigger: Trigger(h["trigger"]), Actor: h["actor"],
		BatchID: h["batch_id"], Run: h["run"],
	}
	var err error
	if r.Attempts, err = atoi(h["attempts"]); err != nil {
		return r, fmt.Errorf("job %s: attempts: %w", r.ID, err)
	}
	if r.MaxRetry, err = atoi(h["max_retry"]); err != nil {
		return r, fmt.Errorf("job %s: max_retry: %w", r.ID, err)
	}
	if s := h["enq_ms"]; s != "" {
		if r.EnqueuedMS, err = strconv.ParseInt(s, 10, 64); err != nil {
			return r, fmt.Errorf("job %s: enq_ms: %w", r.ID, err)
		}
	}
	if s := h["params"]; s != "" {
		if err := json.Unmarshal([]byte(s), &r.Params); err != nil {
			return r, fmt.Errorf("job %s: params: %w", r.ID, err)
		}
	}
	r.Errors = []AttemptError{}
	if s := h["errors"]; s != "" && s != "null" {
		if err := json.Unmarshal([]byte(s), &r.Errors); err != nil {
			return r, fmt.Errorf("job %s: errors: %w", r.ID, err)
		}
	}
	if s := h["result"]; s != "" {
		r.Result = json.RawMessage(s)
	}
	for _, t := range []struct {
		field string
		dst   *time.Time
	}{{"enqueued_at", &r.EnqueuedAt}, {"started_at", &r.StartedAt}, {"finished_at", &r.FinishedAt}} {
		if *t.dst, err = parseTime(h[t.field]); err != nil {
			return r, fmt.Errorf("job %s: %s: %w", r.ID, t.field, err)
		}
	}
	return r, nil
}

func atoi(s string) (int, error) {
	if s == "" {
		return 0, nil
	}
	return strconv.Atoi(s)
}

func FormatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func parseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	return time.Parse(time.RFC3339Nano, s)
}
