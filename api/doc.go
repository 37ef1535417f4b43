// Package api is storekeeper's HTTP surface: the Gin router, auth, the one
// error-to-status table, the Melody hub for WebSocket watchers, the
// asynqmon mount, metrics and the embedded dashboard page.
//
// It imports jobs only, never store or worker: it learns about stores from
// what workers publish in Redis. (Built in issue 6. Nothing here yet.)
package api
