// Package jobs is storekeeper's shared vocabulary: job kinds and payloads,
// job, event and history records, stream names and codecs, and the enqueue
// client that routes a job to the queue of the node owning its store.
//
// It imports only the standard library, asynq and go-redis; api and worker
// both import it and never each other. (Built in issue 4: the job
// pipeline. Nothing here yet.)
package jobs
