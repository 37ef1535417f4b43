// Package worker runs storekeeper's jobs on one node: it claims the
// registry's stores (owner leases, refused when another live node holds
// one), renews the leases and publishes every store's stats on a
// heartbeat, consumes the node's asynq queue (polling every 20 ms instead
// of asynq's 1 s), runs one maintenance job per store at a time, and wraps
// every attempt in the lifecycle that writes the job record, job.started /
// job.retrying / job.succeeded / job.failed events and exactly one history
// entry per finished job, atomically and never over a cancel. Cancel is
// final: jobs.Client.Cancel marks the record first and the worker cancels
// the running handler's context on the cancel message; a later attempt of
// a canceled job exits without running. Shutdown follows DESIGN.md's order.
//
// Store operations report progress through store.WithProgress; the
// worker publishes it as job.progress, a few events a second at most. A
// node restarting under its own name requeues the tasks its previous
// process left active (asynqkeys.go), so a crash costs seconds, not
// asynq's 60–120 s.
//
// A reconciler (every 15 s) settles the jobs asynq ended without any
// middleware: a task it archived (its recoverer does, on a lease that
// expired on the last attempt; so can an operator in asynqmon) or that is
// gone ends as failed, with its locks released, job.failed and history.
//
// It imports jobs and store. Not built yet (issue 4 continues): the notify
// queue's handler (issue 5) and the benchmarks against raw asynq.
package worker
