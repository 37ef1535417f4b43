// Package client is a Go client of a storekeeper server's HTTP API and
// its WebSocket of events, typed with the vocabulary of package jobs.
//
// New makes a Client for a server's base URL and an API token. Its
// methods ask for jobs (Enqueue one store, EnqueueAll for every store
// under one batch id), read them (Job, Jobs, History), cancel them, and
// read and switch the stores (Stores, Pause, Resume, Schedules). An error
// answer of the API is an *Error carrying its code (unknown_store,
// forbidden, …).
//
// Events come over a Feed (Watch): it reconnects after a drop with
// since= the last event it passed on, so the server replays what was
// missed, and says so when events may be missing anyway. Wait follows
// jobs to their end and returns their final records; Follow does the
// same over a Feed subscribed before the jobs were asked for, passing
// each event on as it comes (storekeeper ctl --wait draws its progress
// line from them).
//
// WithAnswer hands the API's answers to a function as they came, for a
// caller that shows or keeps the server's JSON itself.
//
// storekeeper ctl (internal/ctl) is built on this package.
package client
