// Package store manages named embedded Pebble stores in one data directory:
// opening and fencing them, reads and writes through handles that never
// panic, stats, rule-gated compaction and corruption detection.
//
// # Layout on disk
//
// <data-dir>/<name>/ is a live store; every valid subdirectory name is a
// store (see NamePattern). <data-dir>/.storekeeper/ is storekeeper's own:
// the instance lock (an flock; one process per data directory), the
// torn-MANIFEST guard records and work areas such as verification
// checkpoints, which must share the live stores' filesystem to hard-link.
// Dot-directories and lost+found are never stores.
//
// # Handles
//
// An application that owns the stores opens the Registry with its own
// Pebble options (Config.PebbleOptions) and reads and writes through
// *Store: Get, Set, Delete, DeleteRange, Update (atomic batches), NewIter
// and Scan. The raw *pebble.DB never leaves the package, because a closed
// DB panics: while a store is fenced for a restore its handles return
// ErrUnavailable, after Close ErrClosed, and Close waits for open
// iterators.
//
// # Corruption
//
// Pebble's default event listener turns a DataCorruption event into a
// process exit; the store installs its own, so damage becomes StateCorrupt
// and a call to Config.OnCorrupt. Damage is found by Verify (block
// checksums of every sstable of a hard-linked checkpoint, and CheckLevels
// when deep), by the DataCorruption event on reads, by an open that fails
// for a missing or mis-sized table, and by the torn-MANIFEST guard, which
// compares a read-only open with the file set recorded on every flush and
// compaction before any read-write open can delete files. A full disk or
// an I/O error fails the operation; it is never corruption.
//
// The package knows nothing of queues or HTTP.
package store
