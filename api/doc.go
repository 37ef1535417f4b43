// Package api is storekeeper's HTTP surface: the Gin router, auth, the one
// error-to-status table, the Melody hub for WebSocket watchers, the
// asynqmon mount, metrics and the embedded dashboard page.
//
// It imports jobs (and jobmetrics, which imports only jobs), never store or
// worker: it learns about stores from what workers publish in Redis
// (the status each owner publishes, node heartbeats, schedules), about jobs from their
// records, and about history and events from the streams. The dashboard page and Web Push come with issue 7.
package api
