// Package worker runs storekeeper's jobs on one node: it claims the
// registry's stores (owner leases, refused when another live node holds
// one), renews the leases and publishes every store's stats on a
// heartbeat, consumes the node's asynq queue (polling every 20 ms instead
// of asynq's 1 s), runs one maintenance job per store at a time, and wraps
// every attempt in the lifecycle that writes the job record, job.started /
// job.retrying / job.succeeded / job.failed events and exactly one history
// entry per finished job, atomically and never over a cancel. Cancel is
// final: jobsdb.Client.Cancel marks the record first and the worker cancels
// the running handler's context on the cancel message; a later attempt of
// a canceled job exits without running. Shutdown follows docs/design.md's order.
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
// Automation (issue 5):
//
//   - Schedules (schedule.go): a cron spec per kind or off (defaults:
//     verify daily, backup every 6 h, compact daily), for the stores this
//     node owns and that are not paused; each run claims a slot key first,
//     so no run is doubled by a second process or a restart in the slot.
//   - Corruption (incident.go), from a verify, Pebble's corruption event,
//     a failing job or an open that failed, becomes one incident per store:
//     store.corrupt with the evidence and the action taken, a notification,
//     and an automatic restore from the newest verified backup unless the
//     policy is off, the store is paused, there is no backup, or the 24 h
//     breaker (AutoRestoreLimit) is open.
//   - Notifications (notify.go) are written to an outbox in the same atomic
//     step as their cause and dispatched as notify jobs, one per sink: each
//     webhook, signed with HMAC-SHA256 (Sign), and each browser subscribed
//     to Web Push (push.go: the same bytes, encrypted and VAPID-signed by
//     webpush-go; a subscription the push service answers 404 or 410 to is
//     forgotten). Sent for a job's final failure, a
//     store found corrupt, a corrupt backup, a completed automatic restore
//     and any failed restore; never for a success, a manual restore, or a
//     failing notify job (counted in Redis instead: jobsdb.CountNotifyFailed).
//   - node.up when a worker starts; node.down once, when a heartbeat
//     expires, from whichever process sees it first.
//
// # Embedding
//
// An application that owns its stores opens them with store.Open (passing
// its own Pebble options through Config.PebbleOptions), reads and writes
// through Registry.Store handles, and runs New(Config{Redis, Registry}) and
// Start in the same process; Shutdown, then Registry.Close, on the way
// out. A handle answers store.ErrUnavailable while a restore holds the
// store. examples/embed is a complete service.
//
// It imports jobs and store.
package worker
