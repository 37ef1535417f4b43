// Package store manages named embedded Pebble stores in one data directory:
// opening and fencing them, reads and writes through handles that never
// panic, stats, rule-gated compaction, and corruption detection that tells
// damage from a disk that fails.
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
// DB panics: while a store is fenced for a restore, or did not open
// (corrupt or unavailable), its handles return ErrUnavailable, after Close
// ErrClosed, and Close waits for open iterators. The count of in-flight
// operations and iterators survives a fence that gives up (its context
// ended): the store serves again and nothing panics.
//
// # Ownership
//
// The worker holds each store through a lease with a fencing token. When
// it loses the lease it calls Store.Disown: from then on every write (Set,
// Delete, DeleteRange, Update), Compact and Restore returns an error
// matching ErrNotOwner that carries the cause; reads, Stats, Backups,
// Backup and Verify go on. Store.Own lifts it. The check is one atomic
// load per write; writes already past it are not waited for.
//
// # States
//
// A store is open, restoring, corrupt, unavailable or closed (State).
// Registry.OnStateChange (and Config.OnStateChange) is told of every
// change, in order, with the cause; Registry.OnCorrupt (and
// Config.OnCorrupt) of every store found corrupt.
//
// # Corruption and unavailability
//
// Only evidence makes a store corrupt, because the worker restores a
// corrupt store from its last backup and loses every write since:
//
//   - an error Pebble types as corruption (pebble.IsCorruptionError): a
//     checksum mismatch found by Verify (block checksums of every sstable
//     of a hard-linked checkpoint, and CheckLevels when deep), Pebble's
//     DataCorruption event on a read, or an open that fails so;
//   - storekeeper's table check before every read-write open: a read-only
//     open of the store, without Pebble's consistency check, then every
//     table its MANIFEST lists opened and measured. Missing (ENOENT) or of
//     another size is damage; so is a MANIFEST that the marker names and
//     that is missing;
//   - the torn-MANIFEST guard, which compares that read-only view with the
//     file set recorded on every flush and compaction, before any
//     read-write open can delete files.
//
// The words of an error are never evidence. Any other failure to open
// (EIO, EMFILE, ENOSPC, EACCES, EROFS, …) leaves the store in
// StateUnavailable with the error as its cause: handles return
// ErrUnavailable naming it, Stats shows it, OnCorrupt is not called, and
// the registry retries the open after 1 s, then twice as long each time up
// to 1 min (Config.Clock drives it), until it opens or the registry is
// closed; Registry.Open does not fail for it. Before Pebble's read-write
// open a write probe (a small file created, synced and removed in the
// store's directory) and a free-space check (room for the WAL replay and a
// new MANIFEST) run too, because Pebble v2.1.7 calls Logger.Fatalf, which
// exits the process, when a MANIFEST or WAL write fails during that open,
// and on a full disk with a WAL to replay it retries its flush forever
// instead: without them a restart on a full disk would exit or hang again
// and again. A WAL or MANIFEST write that fails while the store is open
// still exits the process (Pebble cannot go on); the restart then finds
// the store unavailable until the disk recovers.
//
// Pebble's default event listener turns a DataCorruption event into a
// process exit; the store installs its own, so damage becomes StateCorrupt
// and a call to Config.OnCorrupt. A full disk or an I/O error while open
// fails the operation (a read, a compaction, a verification) with that
// error; it is never corruption.
//
// # Shutdown
//
// Registry.Close waits for every store's operations and iterators;
// Registry.CloseContext gives up when its context ends, leaving the
// stores that have not drained open (and the data directory locked) and
// naming them, so a shutdown is bounded; a later Close closes them.
//
// The package knows nothing of queues or HTTP.
package store
