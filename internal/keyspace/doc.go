// Package keyspace is storekeeper's Redis layout: every key name, every
// Lua script, and the stream entry encodings. It imports only the
// vocabulary (jobs); the operations that run the scripts are in jobsdb,
// the one package besides worker (for Change, the guarded write of a job's
// step) that imports this one. keys_test.go pins every key, and the
// layout's version (LayoutVersion, kept in Redis under LayoutKey) changes
// with any change to them; layering_test.go keeps every other package from
// spelling a key. docs/design.md, "Redis", lists each key and what it
// holds.
package keyspace
