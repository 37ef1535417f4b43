// Package jobmetrics exports storekeeper's job and store metrics to
// Prometheus: finished jobs by kind and status, their durations, bytes
// reclaimed by compaction, each store's disk size, health and newest good
// backup's age. It reads them at scrape time from what jobs keeps in Redis
// (the history stream, store owners, node heartbeats, published stats),
// so any process may serve it; it keeps only the last read, at most
// Config.MaxAge old (DefaultMaxAge, 2 s), or ten times as old as that read
// took when that is more (Snapshot), so that scrapes coming faster cost
// Redis nothing. Above Config.StoreSeries stores it exports aggregates
// only (stores per node and state, the worst backup age, lag and drill,
// counts of failing stores), which it always exports. Snapshot does the same for any
// collectors: the API serves this one and asynq's queue metrics from one
// Snapshot.
//
// An API process registers it for the whole cluster; a worker-only
// process for its own node (Config.Node): the stores it owns and the jobs
// it ran. A process running both (storekeeper serve) registers it once,
// through the API.
//
// It imports jobs only, so both api and cmd/storekeeper may use it
// without api importing worker or store.
package jobmetrics
