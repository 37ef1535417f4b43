// Package jobs is storekeeper's shared vocabulary: job kinds, triggers and
// payloads (Decode wraps asynq.SkipRetry, so a bad payload is never
// retried), time-sortable job ids that are also asynq task ids, the job
// record kept in Redis (the truth about a job, not asynq's task state),
// event and history records, and the two Redis streams with their readers:
// history newest first, paged by entry id and filtered by store and kind;
// events tailed from an entry id, with gap detection after trimming.
//
// It imports only the standard library, asynq and go-redis; api and worker
// both import it and never each other.
//
// Still to come with the job pipeline (issue 4): the enqueue client that
// routes a job to the queue of the node owning its store, deduplicates it
// and appends job.enqueued before handing the task to asynq.
package jobs
