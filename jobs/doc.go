// Package jobs is storekeeper's shared vocabulary: job kinds, triggers and
// payloads (Decode wraps asynq.SkipRetry, so a bad payload is never
// retried), time-sortable job ids that are also asynq task ids, the job
// record kept in Redis (the truth about a job, not asynq's task state),
// event and history records, and the two Redis streams with their readers:
// history newest first, paged by entry id and filtered by store and kind;
// events tailed from an entry id, with gap detection after trimming.
//
// Client enqueues: it routes a job to the queue of the node owning its
// store, deduplicates it and writes the record and job.enqueued in one
// script before handing the task to asynq (two round trips), and cancels;
// EnqueueBatch records a job for every store and its batch in one script.
// queries.go holds the reads the API and the metrics make (stores, their
// published status, jobs in flight or in a batch), so that no package
// but this one spells a key. The key layout has a version kept in Redis
// (layout.go): a node refuses to start on another version's data;
// keys_test.go pins every key.
// Apply makes a job's step (record fields, events, history, lock releases,
// notifications) atomically, guarded by the record's state. The automation
// keys live here too, so that the API can read them: paused stores, node
// heartbeats and node.up/node.down, published schedules, schedule slots,
// incidents, the automatic-restore breaker, the notification outbox, and
// Web Push: the VAPID key pair (made once, SET NX, so every node signs
// alike) and the browsers' subscriptions (push.go).
//
// It imports only the standard library, asynq and go-redis; api and worker
// both import it and never each other.
package jobs
