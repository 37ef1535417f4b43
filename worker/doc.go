// Package worker runs storekeeper's jobs: the asynq server, one handler per
// job kind calling the store engine, per-store serialisation, the lifecycle
// middleware that writes job records, events and history, automatic
// restore, notifications, schedules and the node heartbeat.
//
// It imports jobs and store. (Built in issues 4 and 5. Nothing here yet.)
package worker
