package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Reads and writes for the application that owns the stores. They never
// panic: while the store is fenced for a restore, or did not open (corrupt
// or unavailable), they return ErrUnavailable, after Close ErrClosed.
// Writes are synced to the WAL unless the registry was configured with
// NoSync; an Update chooses for its own batch with Batch.Sync.
//
// Ownership: the worker holds each store through a lease. When it loses
// the lease it calls Disown, and from then on every write (Set, Delete,
// DeleteRange, Update) returns ErrNotOwner, with the cause given, until
// Own; so do Compact and Restore. Reads (Get, NewIter, Scan), Stats,
// Backups, Backup and Verify go on. The check is one atomic load per
// write. Disown does not wait for writes already past it: a write that
// checked ownership before Disown may still commit (an Update checks again
// just before it commits).

// Disown marks the store as no longer owned by this process: writes,
// compactions and restores are refused with an error that matches
// ErrNotOwner and carries cause (its text, and cause for errors.Is). It
// takes effect at once and changes nothing else; Own lifts it. Calling it
// again replaces the cause.
func (s *Store) Disown(cause error) {
	if cause == nil {
		cause = errors.New("disowned")
	}
	s.notOwner.Store(&cause)
	s.log.Warn("store disowned: writes refused", "cause", cause)
}

// Own lifts Disown: writes, compactions and restores are accepted again.
func (s *Store) Own() {
	if s.notOwner.Swap(nil) != nil {
		s.log.Info("store owned again: writes accepted")
	}
}

// Owned reports whether the store is owned (not disowned).
func (s *Store) Owned() bool { return s.notOwner.Load() == nil }

// owned returns the ErrNotOwner error while the store is disowned, nil
// otherwise.
func (s *Store) owned() error {
	if p := s.notOwner.Load(); p != nil {
		return fmt.Errorf("store %s: %w: %w", s.name, ErrNotOwner, *p)
	}
	return nil
}

// Get returns a copy of the value stored under key, or ErrNotFound.
func (s *Store) Get(key []byte) ([]byte, error) {
	db, err := s.acquire()
	if err != nil {
		return nil, err
	}
	defer s.release()
	v, closer, err := db.Get(key)
	if err != nil {
		if errors.Is(err, pebble.ErrNotFound) {
			return nil, ErrNotFound
		}
		return nil, fmt.Errorf("store %s: get: %w", s.name, err)
	}
	out := append([]byte(nil), v...)
	closer.Close()
	return out, nil
}

// Set stores value under key.
func (s *Store) Set(key, value []byte) error {
	if err := s.owned(); err != nil {
		return err
	}
	db, err := s.acquire()
	if err != nil {
		return err
	}
	defer s.release()
	defer s.changes.Add(1)
	return s.wrap("set", s.commit(db, nil, func(b *pebble.Batch) error { return b.Set(key, value, nil) }, nil))
}

// Delete removes key.
func (s *Store) Delete(key []byte) error {
	if err := s.owned(); err != nil {
		return err
	}
	db, err := s.acquire()
	if err != nil {
		return err
	}
	defer s.release()
	defer s.changes.Add(1)
	return s.wrap("delete", s.commit(db, nil, func(b *pebble.Batch) error { return b.Delete(key, nil) }, nil))
}

// DeleteRange removes every key in [start, end).
func (s *Store) DeleteRange(start, end []byte) error {
	if err := s.owned(); err != nil {
		return err
	}
	db, err := s.acquire()
	if err != nil {
		return err
	}
	defer s.release()
	defer s.changes.Add(1)
	return s.wrap("delete range", s.commit(db, nil, func(b *pebble.Batch) error { return b.DeleteRange(start, end, nil) }, nil))
}

// Batch collects writes that Update commits atomically.
type Batch struct {
	b *pebble.Batch
	// wo is the commit's write options when Sync chose them; nil commits
	// with the registry's (synced unless Config.NoSync).
	wo *pebble.WriteOptions
}

// Sync chooses how this one batch commits, over Config.NoSync:
// Sync(true) makes Update return only once the WAL is fsynced (the batch
// survives a crash of the process or the machine); Sync(false) makes it
// return without waiting for the fsync, so a crash may lose the batch
// until a later synced write, or a flush, makes it durable. Without a call
// the batch commits as every handle write does: synced unless the
// registry has NoSync. The last call before fn returns wins.
func (b *Batch) Sync(sync bool) {
	if sync {
		b.wo = pebble.Sync
	} else {
		b.wo = pebble.NoSync
	}
}

// Set adds a set of key to value to the batch.
func (b *Batch) Set(key, value []byte) error { return b.b.Set(key, value, nil) }

// Delete adds a deletion of key to the batch.
func (b *Batch) Delete(key []byte) error { return b.b.Delete(key, nil) }

// DeleteRange adds a deletion of [start, end) to the batch.
func (b *Batch) DeleteRange(start, end []byte) error { return b.b.DeleteRange(start, end, nil) }

// Len returns the number of operations in the batch.
func (b *Batch) Len() int { return int(b.b.Count()) }

// Update runs fn with a new batch and commits it atomically when fn
// returns nil. The batch must not be used after fn returns. A store
// disowned while fn runs does not commit.
func (s *Store) Update(fn func(*Batch) error) error {
	if err := s.owned(); err != nil {
		return err
	}
	db, err := s.acquire()
	if err != nil {
		return err
	}
	defer s.release()
	pb := db.NewBatch()
	defer pb.Close()
	b := &Batch{b: pb}
	if err := fn(b); err != nil {
		return err
	}
	if err := s.owned(); err != nil {
		return err
	}
	defer s.changes.Add(1)
	return s.wrap("commit batch", s.commit(db, pb, nil, b.wo))
}

// commit commits one handle write: pb, or a new batch fill writes, with
// wo (nil: the registry's). A shipping store stamps the batch with its
// commit time and records its sequence numbers (log.go).
func (s *Store) commit(db *pebble.DB, pb *pebble.Batch, fill func(*pebble.Batch) error, wo *pebble.WriteOptions) error {
	if pb == nil {
		pb = db.NewBatch()
		defer pb.Close()
		if err := fill(pb); err != nil {
			return err
		}
	}
	opts := s.reg.writeOpts
	if wo != nil {
		opts = wo
	}
	if !s.reg.cfg.Ship {
		return pb.Commit(opts)
	}
	now := time.Now()
	if s.holdWrite(now) {
		now = time.Now()
	}
	stamp(pb, now)
	if err := pb.Commit(opts); err != nil {
		return err
	}
	s.committed(pb, now)
	return nil
}

func (s *Store) wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("store %s: %s: %w", s.name, op, err)
}

// Iterator walks keys in order. It holds the store open: a restore or Close
// waits until every iterator is closed, so close them promptly.
type Iterator struct {
	s      *Store
	it     *pebble.Iterator
	closed bool
}

// NewIter returns an iterator over [lower, upper); nil bounds are open.
func (s *Store) NewIter(lower, upper []byte) (*Iterator, error) {
	db, err := s.acquire()
	if err != nil {
		return nil, err
	}
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		s.release()
		return nil, s.wrap("new iterator", err)
	}
	return &Iterator{s: s, it: it}, nil
}

// First moves to the first key and reports whether there is one.
func (it *Iterator) First() bool { return it.it.First() }

// Last moves to the last key and reports whether there is one.
func (it *Iterator) Last() bool { return it.it.Last() }

// Next moves to the next key and reports whether there is one.
func (it *Iterator) Next() bool { return it.it.Next() }

// Prev moves to the previous key and reports whether there is one.
func (it *Iterator) Prev() bool { return it.it.Prev() }

// SeekGE moves to the first key >= key and reports whether there is one.
func (it *Iterator) SeekGE(key []byte) bool { return it.it.SeekGE(key) }

// Valid reports whether the iterator is at a key.
func (it *Iterator) Valid() bool { return it.it.Valid() }

// Key returns the current key, valid until the next move.
func (it *Iterator) Key() []byte { return it.it.Key() }

// Value returns the current value, valid until the next move.
func (it *Iterator) Value() []byte { return it.it.Value() }

// Error returns the error the iterator met, if any.
func (it *Iterator) Error() error { return it.s.wrap("iterate", it.it.Error()) }

// Close releases the iterator and lets a pending restore or Close proceed.
// It is safe to call twice.
func (it *Iterator) Close() error {
	if it.closed {
		return nil
	}
	it.closed = true
	err := it.it.Close()
	it.s.release()
	return it.s.wrap("close iterator", err)
}

// Scan calls fn for every key in [lower, upper) in order, stopping at the
// first error fn returns or when ctx is done. key and value are valid only
// during the call.
func (s *Store) Scan(ctx context.Context, lower, upper []byte, fn func(key, value []byte) error) error {
	it, err := s.NewIter(lower, upper)
	if err != nil {
		return err
	}
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(it.Key(), it.Value()); err != nil {
			return err
		}
	}
	return it.Error()
}
