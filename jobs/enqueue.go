package jobs

import (
	"errors"
	"time"
)

// Enqueue errors; api maps them to status codes.
var (
	// ErrUnknownStore: no node owns (or ever owned) the store. 404.
	ErrUnknownStore = errors.New("unknown store")
	// ErrRestoreInProgress: a restore of another backup is pending or
	// running on the store. 409.
	ErrRestoreInProgress = errors.New("restore in progress")
	// ErrUnavailable: Redis could not be reached; nothing was enqueued. 503.
	ErrUnavailable = errors.New("job queue unavailable")
	// ErrUnknownJob: no record for that job id. 404.
	ErrUnknownJob = errors.New("unknown job")
	// ErrStoreHeld: an adoption was refused because the store's owner may
	// still be serving it: its lease is held (adopt with force once its
	// node is down), or the node that owns it is up. 409.
	ErrStoreHeld = errors.New("store held by another node")
)

// ReasonStoreMoved is the reason of a job settled failed because its
// store was adopted by another node while the job waited for the old
// owner. Such a failure is not notified: the adoption is the news.
const ReasonStoreMoved = "store_moved"

// Request asks for one job.
type Request struct {
	Kind    Kind
	Store   string
	Params  Params
	Trigger Trigger
	Actor   string
	BatchID string
	// JobID is the id to give the job; empty: a new one. A caller that
	// must be able to repeat an enqueue after a failure (the automatic
	// restore of an incident) chooses it, and a repeat finds the job.
	JobID string
}

// Enqueued is the answer: the job's record, and whether it is an existing
// job that was already pending or running with the same parameters.
type Enqueued struct {
	Record       Record
	Deduplicated bool
}

// ClientConfig configures a Client; zero values take the defaults.
type ClientConfig struct {
	EventsMaxLen    int64                  // default DefaultEventsMaxLen
	HistoryMaxLen   int64                  // default DefaultHistoryMaxLen
	MaxRetry        map[Kind]int           // default DefaultMaxRetry
	Timeout         map[Kind]time.Duration // default DefaultTimeout
	RecordRetention time.Duration          // default DefaultRecordRetention
	// Autopipeline sends the enqueue script through go-redis's
	// autopipeliner (see Client.batched). It pays where many callers
	// enqueue at once, as at the API; a caller alone, or a closed loop of
	// a few (a worker, the schedules), only pays the hand-over to the
	// flusher and its wait for stragglers.
	Autopipeline bool
	// MinReplicas, when at least 1, has every write that accepts a job
	// (Enqueue, EnqueueBatch, EnqueueNotify), cancels one, or ends one
	// in a worker confirmed on that many Redis replicas (WAIT) before
	// anyone is told: Redis replicates asynchronously, and a replica
	// promoted after a failover can lack writes the old primary
	// acknowledged. A shortfall is an error wrapping ErrUnavailable. 0
	// (the default): no confirmation, no extra round trip. See "Durable
	// acceptance across failover" in docs/design.md.
	MinReplicas int
	// MinReplicasTimeout bounds each WAIT; default
	// DefaultMinReplicasTimeout. Unused when MinReplicas is 0.
	MinReplicasTimeout time.Duration
}

// DefaultMinReplicasTimeout bounds the WAIT that confirms a write when
// ClientConfig.MinReplicas is at least 1.
const DefaultMinReplicasTimeout = time.Second

// WithDefaults fills the zero fields.
func (cfg ClientConfig) WithDefaults() ClientConfig {
	if cfg.EventsMaxLen == 0 {
		cfg.EventsMaxLen = DefaultEventsMaxLen
	}
	if cfg.HistoryMaxLen == 0 {
		cfg.HistoryMaxLen = DefaultHistoryMaxLen
	}
	if cfg.MaxRetry == nil {
		cfg.MaxRetry = DefaultMaxRetry
	}
	if cfg.Timeout == nil {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.RecordRetention == 0 {
		cfg.RecordRetention = DefaultRecordRetention
	}
	if cfg.MinReplicasTimeout == 0 {
		cfg.MinReplicasTimeout = DefaultMinReplicasTimeout
	}
	return cfg
}

// DefaultTimeout bounds one attempt per kind. asynq keeps whole seconds.
var DefaultTimeout = map[Kind]time.Duration{
	KindCompact: 2 * time.Hour,
	KindBackup:  2 * time.Hour,
	KindRestore: 2 * time.Hour,
	KindVerify:  time.Hour,
	KindDrill:   2 * time.Hour,
	KindAdopt:   2 * time.Hour,
	KindNotify:  time.Minute,
}
