package jobs

import "errors"

// Sentinel errors of the shared vocabulary. api maps them to HTTP status
// codes in its one error table.
var (
	// ErrInvalidStore: a store name that breaks StoreNamePattern.
	ErrInvalidStore = errors.New("invalid store name")
	// ErrBadPayload: a task payload that cannot be decoded or is invalid.
	// Decode wraps asynq.SkipRetry with it, so such a task is not retried.
	ErrBadPayload = errors.New("bad job payload")
)
