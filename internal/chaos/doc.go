// Package chaos is storekeeper's soak under random faults (make chaos): a
// cluster of real processes on loopback — a Redis primary with a replica
// and three Sentinels, three worker nodes (chaosnode: the store registry,
// the worker and a writer with a ledger of its acknowledged writes), two
// API nodes — a load generator, faults drawn from a printed seed, and a
// checker of the invariants docs/CHAOS.md lists: every accepted job
// reaches exactly one terminal state with exactly one history entry and a
// valid event sequence, no false failure notification, no acknowledged
// synced write lost (except what a restore names as rolled back), watchers
// that resume miss nothing silently, and the system converges once the
// faults stop.
//
// It is a test harness, not part of the shipped binary: it reads Redis
// keys directly (internal/keyspace) to check what the API shows.
package chaos
