// Package jobsdb is the operations on storekeeper's Redis data, what api,
// worker and jobmetrics call: Client enqueues (routing a job to the queue
// of the node owning its store, deduplicating it, writing the record and
// job.enqueued in one script before handing the task to asynq) and
// cancels; EnqueueBatch records a job for every store and its batch in one
// script; Apply makes a job's step (record fields, events, history, lock
// releases, notifications) atomically, guarded by the record's state, and
// is safe to send any number of times; History and ReadEvents read the two
// streams; the rest reads and writes leases, published store status,
// paused stores, node heartbeats, schedules, incidents, the automatic-
// restore breaker, the notification outbox and Web Push subscriptions.
// CheckLayout refuses data written by another layout version. With
// jobs.ClientConfig.MinReplicas, the writes that accept, cancel or end a
// job are confirmed on that many replicas before they are reported
// (confirm.go).
//
// Keys and scripts come from internal/keyspace; every type from jobs.
package jobsdb
