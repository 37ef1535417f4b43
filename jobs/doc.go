// Package jobs is storekeeper's vocabulary: every message that crosses a
// process boundary, and the rules about them, with no Redis in it. Job
// kinds, triggers and payloads (Decode wraps asynq.SkipRetry, so a bad
// payload is never retried); time-sortable job ids that are also asynq
// task ids; the job record (the truth about a job, not asynq's task
// state) and its hash encoding; events and history entries; store status
// and stats as workers publish them, with the one rule for a usable backup
// (BackupSummary.Usable); one result type per job kind; leases, node,
// schedule, pause and incident records; notifications and Web Push
// subscriptions with their validation.
//
// The Redis layer sits on top, in two floors, as asynq's does:
// internal/keyspace holds every key name and Lua script (it imports only
// this package), and jobsdb the operations that api, worker and jobmetrics
// call (enqueue, cancel, apply a step, read history and events, leases,
// nodes, schedules, pause, outbox, Web Push). docs/design.md, "Layout" and
// "Redis", describes both.
package jobs
