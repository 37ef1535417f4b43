package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/batchrepr"
	"github.com/cockroachdb/pebble/v2/record"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/wal"

	"storekeeper/internal/durable"
)

// The commit log: what point-in-time recovery ships (see docs/design.md,
// "Point-in-time recovery"). With Config.Ship, the store keeps every WAL
// Pebble is done with in <store>/archive/ (pebble.ArchiveCleaner, which
// also turns WAL recycling off, so no WAL is overwritten) until the
// shipper has read it, and every write through a handle carries, in a
// LogData entry of its batch, the time it was committed (its stamp). The
// WALs' records are then exactly the committed batches, in sequence
// order, each with its time: ReadLog hands them out, TrimLog lets go of
// what was read.
//
// A store's WAL history is one timeline. A restore starts a new one (the
// restored store's sequence numbers are not the old store's), recorded in
// the TimelineFile of the store's directory, which moves with the
// directory in a restore's swap.

// archiveDir is the directory, in a store's, where pebble.ArchiveCleaner
// moves what Pebble is done with.
const archiveDir = "archive"

// TimelineFile is the file in a store's directory naming its timeline.
const TimelineFile = "STOREKEEPER-TIMELINE"

// Timeline is one history of a store's writes.
type Timeline struct {
	ID      string    `json:"id"`
	Store   string    `json:"store"`
	Created time.Time `json:"created"`
	// Start is the sequence number of the timeline's first batch: the
	// marker its first open committed (0 until then).
	Start uint64 `json:"start"`
	// Parent is where a restore branched this timeline off; nil for a
	// store's first.
	Parent *Branch `json:"parent,omitempty"`
	// Earlier are the timelines the store had before this one, newest
	// first (at most maxEarlier): what pruning must keep backups for
	// while a moment of theirs is within the PITR window.
	Earlier []EarlierTimeline `json:"earlier,omitempty"`
}

// EarlierTimeline is a timeline a restore replaced: when it began and
// ended, and the backup it was branched from ("" for a store's first).
type EarlierTimeline struct {
	ID      string    `json:"id"`
	Created time.Time `json:"created"`
	Ended   time.Time `json:"ended"`
	Backup  string    `json:"backup,omitempty"`
}

// maxEarlier bounds Timeline.Earlier.
const maxEarlier = 64

// LogStart is when the commit log that can rebuild the store starts: the
// creation of its first timeline, while tl is that timeline. A restore to
// a moment before it finds no timeline to replay (ship's ErrNoPoint). ok
// is false once the store has been restored: the start then lies back
// through parent timelines, which may be known only to the targets.
func (tl Timeline) LogStart() (start time.Time, ok bool) {
	if tl.Parent != nil || tl.Created.IsZero() {
		return time.Time{}, false
	}
	return tl.Created, true
}

// root is the backup a restore branched tl from; "" for a first timeline.
func (tl Timeline) root() string {
	if tl.Parent == nil {
		return ""
	}
	return tl.Parent.Backup
}

// followedBy returns next with tl (replaced now) at the head of its
// earlier timelines.
func (tl Timeline) followedBy(next Timeline, now time.Time) Timeline {
	if tl.ID == "" {
		return next
	}
	next.Earlier = append([]EarlierTimeline{{ID: tl.ID, Created: tl.Created, Ended: now, Backup: tl.root()}}, tl.Earlier...)
	next.Earlier = next.Earlier[:min(len(next.Earlier), maxEarlier)]
	return next
}

// Branch is the point of a parent timeline a restore rebuilt: the store
// as it was on Timeline at At, made from Backup with Replayed replayed
// onto it (nothing for a restore of a backup alone).
type Branch struct {
	Timeline string       `json:"timeline"`
	At       time.Time    `json:"at,omitzero"`
	Backup   string       `json:"backup"`
	Replayed []ReplayStep `json:"replayed,omitempty"`
}

// ReplayStep is one run of a timeline's commit log replayed by a restore:
// its batches from sequence number From on, in order, up to (not
// including) the first stamped after Until.
type ReplayStep struct {
	Timeline string    `json:"timeline"`
	From     uint64    `json:"from"`
	Until    time.Time `json:"until"`
}

// LogBatch is one committed batch as its WAL record holds it.
type LogBatch struct {
	Seq   uint64    // sequence number of its first operation
	Count uint32    // operations; 0 for a batch of LogData only
	Stamp time.Time // when it was committed (zero: written without a stamp)
	Repr  []byte    // Pebble's batch representation
}

// Next is the sequence number the batch after b starts at.
func (b LogBatch) Next() uint64 { return b.Seq + uint64(b.Count) }

// LogCursor is how far ReadLog has read a timeline: the next record is in
// WAL Log at byte Offset or later, and no batch before sequence number
// Next is handed out again.
type LogCursor struct {
	Timeline string `json:"timeline"`
	Log      uint64 `json:"log"`
	Offset   int64  `json:"offset"`
	Next     uint64 `json:"next"`
}

// ErrNotShipping is returned by the commit-log methods of a registry
// configured without Config.Ship.
var ErrNotShipping = errors.New("store: the commit log is not kept (shipping is off)")

// ErrTimelineChanged is returned by ReadLog when the store's timeline is
// not the cursor's: a restore replaced its history.
var ErrTimelineChanged = errors.New("store: the timeline changed (the store was restored)")

// stampPrefix marks the LogData entry that carries a batch's commit time.
var stampPrefix = []byte("storekeeper.t1:")

// stamp adds the commit time to a batch about to commit.
func stamp(b *pebble.Batch, now time.Time) {
	var buf [32]byte
	n := copy(buf[:], stampPrefix)
	binary.BigEndian.PutUint64(buf[n:], uint64(now.UnixNano()))
	_ = b.LogData(buf[:n+8], nil)
}

// DecodeBatch reads a batch representation's header and stamp, checking
// the whole batch as it goes: Pebble's batch reader trusts its input (on
// a damaged batch it reads past the end or panics, and a batch whose
// count is wrong is half applied before Pebble notices), and a batch read
// back from a shipped segment is only as sound as the segment. A batch
// passes if every entry lies within it, is of a kind a commit writes
// (not an ingestion's or an excise's, which cannot be replayed), and
// the entries that take a sequence number are as many as its count.
func DecodeBatch(repr []byte) (LogBatch, error) {
	h, ok := batchrepr.ReadHeader(repr)
	if !ok {
		return LogBatch{}, fmt.Errorf("store: batch of %d bytes has no header", len(repr))
	}
	b := LogBatch{Seq: uint64(h.SeqNum), Count: h.Count, Repr: repr}
	var keys uint64
	for r := repr[batchrepr.HeaderLen:]; len(r) > 0; {
		kind := pebble.InternalKeyKind(r[0])
		var key []byte
		if r, key, ok = batchString(r[1:]); !ok {
			return b, fmt.Errorf("store: batch at %d: an entry's key is cut short", b.Seq)
		}
		switch kind {
		case pebble.InternalKeyKindSet, pebble.InternalKeyKindMerge, pebble.InternalKeyKindRangeDelete,
			pebble.InternalKeyKindRangeKeySet, pebble.InternalKeyKindRangeKeyUnset, pebble.InternalKeyKindRangeKeyDelete,
			pebble.InternalKeyKindDeleteSized:
			if r, _, ok = batchString(r); !ok {
				return b, fmt.Errorf("store: batch at %d: an entry's value is cut short", b.Seq)
			}
			keys++
		case pebble.InternalKeyKindDelete, pebble.InternalKeyKindSingleDelete:
			keys++
		case pebble.InternalKeyKindLogData:
			if b.Stamp.IsZero() && len(key) == len(stampPrefix)+8 && bytes.HasPrefix(key, stampPrefix) {
				b.Stamp = time.Unix(0, int64(binary.BigEndian.Uint64(key[len(stampPrefix):]))).UTC()
			}
		default:
			return b, fmt.Errorf("store: batch at %d: an entry of kind %d, which a commit does not write", b.Seq, kind)
		}
	}
	if keys != uint64(b.Count) {
		return b, fmt.Errorf("store: batch at %d counts %d entries and holds %d", b.Seq, b.Count, keys)
	}
	return b, nil
}

// batchString splits a length-prefixed string off the front of data.
func batchString(data []byte) (rest, s []byte, ok bool) {
	n, k := binary.Uvarint(data)
	if k <= 0 || n > uint64(len(data)-k) {
		return nil, nil, false
	}
	return data[k+int(n):], data[k : k+int(n)], true
}

// logState is what a shipping store knows of its commit log.
type logState struct {
	mu       sync.Mutex
	timeline Timeline
	last     atomic.Uint64 // highest sequence number committed through this store's handles (or found at open)
	shipped  uint64        // every batch through it is on every target (MarkShipped), on timeline
	changed  chan struct{}
	// unshipped is when the oldest write not on every target was
	// committed, in Unix ns (0: none), as far as the store can tell: a
	// MarkShipped that leaves writes behind restarts it (HoldWrites).
	unshipped atomic.Int64
	// holdAfter, in ns, is HoldWrites' bound (0: writes are not held);
	// held counts the writes it held.
	holdAfter atomic.Int64
	held      atomic.Uint64
	progress  atomic.Int64 // Unix ns of the shipper's last progress (holdNeedsProgress)
}

// broadcastLocked wakes WaitShipped's waiters. l.mu must be held.
func (l *logState) broadcastLocked() {
	if l.changed != nil {
		close(l.changed)
	}
	l.changed = make(chan struct{})
}

// committed records a committed batch's sequence numbers; at is its
// stamp.
func (s *Store) committed(b *pebble.Batch, at time.Time) {
	if !s.reg.cfg.Ship {
		return
	}
	if s.clog.unshipped.Load() == 0 {
		s.clog.unshipped.CompareAndSwap(0, at.UnixNano())
	}
	last := uint64(b.SeqNum()) + uint64(b.Count())
	if last > 0 {
		last-- // a batch of LogData only leaves last at the one before it
	}
	for {
		cur := s.clog.last.Load()
		if last <= cur || s.clog.last.CompareAndSwap(cur, last) {
			return
		}
	}
}

// startLog runs when a shipping store opens: it loads or creates the
// timeline and commits a marker batch, synced, which tells the highest
// sequence number the database holds.
func (s *Store) startLog(db *pebble.DB) error {
	tl, err := readTimeline(s.dir)
	if errors.Is(err, os.ErrNotExist) {
		tl, err = newTimeline(s.name, nil), nil
	}
	if err != nil {
		return fmt.Errorf("store %s: timeline: %w", s.name, err)
	}
	if err := s.opts.FS.MkdirAll(filepath.Join(s.dir, archiveDir), 0o755); err != nil {
		return fmt.Errorf("store %s: %w", s.name, err)
	}
	b := db.NewBatch()
	defer b.Close()
	stamp(b, time.Now())
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("store %s: commit-log marker: %w", s.name, err)
	}
	if tl.Start == 0 {
		// A new timeline starts at this marker. A crash before the record
		// is written leaves none, and the next open starts another.
		tl.Start = uint64(b.SeqNum())
		if err := writeTimeline(s.dir, tl); err != nil {
			return fmt.Errorf("store %s: timeline: %w", s.name, err)
		}
	}
	s.clog.mu.Lock()
	if s.clog.timeline.ID != tl.ID {
		s.clog.shipped = 0
		s.clog.unshipped.Store(0) // the old timeline's writes are not this one's to wait for
	}
	s.clog.timeline = tl
	s.clog.last.Store(uint64(b.SeqNum()) - 1)
	s.clog.broadcastLocked()
	s.clog.mu.Unlock()
	return nil
}

func newTimeline(store string, parent *Branch) Timeline {
	var id [8]byte
	_, _ = rand.Read(id[:])
	now := time.Now().UTC()
	return Timeline{ID: now.Format("20060102T150405Z") + "-" + hex.EncodeToString(id[:]), Store: store, Created: now, Parent: parent}
}

func readTimeline(dir string) (Timeline, error) {
	var tl Timeline
	b, err := os.ReadFile(filepath.Join(dir, TimelineFile))
	if err != nil {
		return tl, err
	}
	if err := json.Unmarshal(b, &tl); err != nil || tl.ID == "" {
		return tl, fmt.Errorf("%s: not a timeline record", filepath.Join(dir, TimelineFile))
	}
	return tl, nil
}

// writeTimeline writes the timeline record durably: a synced temporary
// file renamed over the old one, then the directory synced.
func writeTimeline(dir string, tl Timeline) error {
	if err := writeJSONAtomic(vfs.Default, filepath.Join(dir, TimelineFile), tl); err != nil {
		return err
	}
	return durable.SyncDir(vfs.Default, dir)
}

// Timeline returns the store's current timeline.
func (s *Store) Timeline() (Timeline, error) {
	if !s.reg.cfg.Ship {
		return Timeline{}, ErrNotShipping
	}
	s.clog.mu.Lock()
	defer s.clog.mu.Unlock()
	if s.clog.timeline.ID == "" {
		// Not opened by this process (corrupt or unavailable at open):
		// the record in its directory says.
		tl, err := readTimeline(s.dir)
		if err != nil {
			return Timeline{}, fmt.Errorf("store %s: timeline: %w: %w", s.name, ErrUnavailable, err)
		}
		return tl, nil
	}
	return s.clog.timeline, nil
}

// ReadLog calls fn, in sequence order, for every committed batch after
// cur on the store's timeline (a zero cursor starts at the timeline's
// first batch) up to sequence number through, with the cursor after it,
// and returns the cursor after the last one fn accepted. The
// newest WAL's unwritten tail, or a batch past through, ends a call; the
// next call goes on from there. fn must not keep Repr. It returns
// ErrTimelineChanged when a restore replaced the timeline.
//
// A shipper passes the sequence number SyncLog returned: the WAL file
// can hold batches past it that are not synced yet (Pebble writes a full
// 32 KiB block out without syncing it), and a batch shipped before the
// machine syncs it could be lost locally on power loss while a target
// holds it.
func (s *Store) ReadLog(ctx context.Context, cur LogCursor, through uint64, fn func(LogBatch, LogCursor) error) (LogCursor, error) {
	if !s.reg.cfg.Ship {
		return cur, ErrNotShipping
	}
	if _, err := s.acquire(); err != nil {
		return cur, err
	}
	defer s.release()
	tl, err := s.Timeline()
	if err != nil {
		return cur, err
	}
	if cur.Timeline == "" {
		cur = LogCursor{Timeline: tl.ID, Next: tl.Start}
	}
	if cur.Timeline != tl.ID {
		return cur, ErrTimelineChanged
	}
	// A WAL Pebble moves into archive/ between the listing and its open
	// is listed again, there: a caller that reads once (a shipper's
	// Drain) must get every synced batch, not stop short at the move.
	for relists := 0; ; relists++ {
		moved, err := s.readListed(ctx, &cur, through, fn)
		if err != nil || !moved || relists == maxRelists {
			return cur, err
		}
	}
}

// maxRelists bounds how many times a read lists the WALs again after one
// moved to archive/ under it. Pebble moves each WAL once, so the lists
// end; the bound is for writers that rotate WALs faster than a read
// reads.
const maxRelists = 8

// FirstKept returns the sequence number and commit time of the first
// batch at or after sequence number from, and at most through, that the
// store's kept WALs hold (ok false when none does). Unlike ReadLog it
// reads each WAL on its own, so it looks past a hole in the WALs: what a
// shipper whose log does not go on from its cursor (the cursor lost, WALs
// removed) needs, to go on from the next batch kept.
func (s *Store) FirstKept(ctx context.Context, from, through uint64) (seq uint64, stamp time.Time, ok bool, err error) {
	if !s.reg.cfg.Ship {
		return 0, time.Time{}, false, ErrNotShipping
	}
	if _, err := s.acquire(); err != nil {
		return 0, time.Time{}, false, err
	}
	defer s.release()
	tl, err := s.Timeline()
	if err != nil {
		return 0, time.Time{}, false, err
	}
	errFound := errors.New("found")
	for relists := 0; relists <= maxRelists; relists++ {
		logs, err := s.listWALs()
		if err != nil {
			return 0, time.Time{}, false, fmt.Errorf("store %s: list WALs: %w", s.name, err)
		}
		moved := false
		for i, ll := range logs {
			cur := LogCursor{Timeline: tl.ID}
			_, err := s.readWAL(ctx, ll, &cur, i == len(logs)-1, through, func(b LogBatch, _ LogCursor) error {
				if b.Seq < from {
					return nil
				}
				seq, stamp, ok = b.Seq, b.Stamp, true
				return errFound
			})
			if errors.Is(err, errFound) {
				return seq, stamp, true, nil
			}
			if errors.Is(err, errWALMoved) {
				moved = true
				break
			}
			if err != nil {
				return 0, time.Time{}, false, err
			}
		}
		if !moved {
			return 0, time.Time{}, false, nil
		}
	}
	return 0, time.Time{}, false, fmt.Errorf("store %s: the WALs kept moving while listed", s.name)
}

// readListed lists the WALs and reads them from cur on, as ReadLog does
// once. moved is true when it stopped at a WAL that moved to archive/
// since the listing.
func (s *Store) readListed(ctx context.Context, cur *LogCursor, through uint64, fn func(LogBatch, LogCursor) error) (moved bool, err error) {
	logs, err := s.listWALs()
	if err != nil {
		return false, fmt.Errorf("store %s: list WALs: %w", s.name, err)
	}
	for i, ll := range logs {
		if uint64(ll.Num) < cur.Log {
			continue
		}
		done, err := s.readWAL(ctx, ll, cur, i == len(logs)-1, through, fn)
		switch {
		case errors.Is(err, errWALMoved):
			return true, nil
		case err != nil || !done:
			return false, err
		}
	}
	return false, nil
}

// errWALMoved is readWAL's answer when the WAL is no longer where it was
// listed: Pebble moved it into archive/ since.
var errWALMoved = errors.New("store: the WAL moved to archive/ since it was listed")

// listWALs lists the WALs in the store's directory and in archive/, in
// that order: a WAL Pebble moves to archive/ between the two listings is
// then seen twice (and kept once, there), never missed.
func (s *Store) listWALs() (wal.Logs, error) {
	fs := s.opts.FS
	archive := filepath.Join(s.dir, archiveDir)
	live, err := fs.List(s.dir)
	if err != nil {
		return nil, err
	}
	archived, err := fs.List(archive)
	if err != nil {
		return nil, err
	}
	var acc wal.FileAccumulator
	seen := map[string]bool{}
	for _, name := range archived {
		seen[name] = true
		if _, err := acc.MaybeAccumulate(fs, filepath.Join(archive, name)); err != nil {
			return nil, err
		}
	}
	for _, name := range live {
		if seen[name] {
			continue
		}
		if _, err := acc.MaybeAccumulate(fs, filepath.Join(s.dir, name)); err != nil {
			return nil, err
		}
	}
	return acc.Finish(), nil
}

// readWAL reads one WAL from cur on. done is false when it stopped short
// of the WAL's end: at an unwritten tail of the newest WAL, or at a batch
// whose predecessor has not been read (the next WAL is not complete yet).
// It returns errWALMoved, with cur after what it read, when the WAL moved
// to archive/ since it was listed.
func (s *Store) readWAL(ctx context.Context, ll wal.LogicalLog, cur *LogCursor, newest bool, through uint64, fn func(LogBatch, LogCursor) error) (done bool, err error) {
	num := uint64(ll.Num)
	r, err := s.openWAL(ll, cur)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return false, errWALMoved
		}
		return false, fmt.Errorf("store %s: read WAL %s: %w", s.name, ll.Num, err)
	}
	defer r.Close()
	var buf bytes.Buffer
	for {
		if err := ctx.Err(); err != nil {
			return false, err
		}
		rec, off, err := r.NextRecord()
		switch {
		case errors.Is(err, io.EOF):
			return !newest, nil
		case record.IsInvalidRecord(err) || errors.Is(err, record.ErrInvalidChunk):
			// A tail not written yet (or torn by a crash: Pebble stops
			// there too). Only the newest WAL is still being written.
			return !newest, nil
		case errors.Is(err, os.ErrNotExist):
			return false, errWALMoved
		case err != nil:
			return false, fmt.Errorf("store %s: read WAL %s: %w", s.name, ll.Num, err)
		}
		if num == cur.Log && off.Physical < cur.Offset {
			continue
		}
		buf.Reset()
		if _, err := io.Copy(&buf, rec); err != nil {
			if record.IsInvalidRecord(err) {
				return !newest, nil
			}
			return false, fmt.Errorf("store %s: read WAL %s: %w", s.name, ll.Num, err)
		}
		b, err := DecodeBatch(buf.Bytes())
		if err != nil {
			return false, err
		}
		after := *cur
		after.Log, after.Offset = num, off.Physical+1
		switch {
		case b.Count == 0:
			// LogData only (a marker, SyncLog's): nothing to hand out.
		case cur.Next != 0 && b.Seq < cur.Next:
			// Replayed into this WAL again (or read before): already handed out.
		case cur.Next != 0 && b.Seq > cur.Next:
			// A batch is missing before this one: an earlier WAL was still
			// being written when listed. Read again later.
			if newest {
				return false, nil
			}
			return false, fmt.Errorf("store %s: WAL %s starts at sequence %d, expected %d: %w", s.name, ll.Num, b.Seq, cur.Next, ErrLogGap)
		case b.Seq > through:
			return false, nil // not known synced yet
		default:
			after.Next = b.Next()
			if err := fn(b, after); err != nil {
				return false, err
			}
		}
		*cur = after
	}
}

// openWAL opens a WAL for reading from cur: from its start through
// Pebble's WAL reader, or, when cur is inside it, from the 32 KiB block
// where cur's last record began, through Pebble's record reader, so a
// shipper that reads every 250 ms does not reread the whole WAL each
// time. A record reader started at a block boundary skips the tail of a
// record begun in an earlier block.
func (s *Store) openWAL(ll wal.LogicalLog, cur *LogCursor) (walReader, error) {
	if uint64(ll.Num) != cur.Log || cur.Offset <= 0 || ll.NumSegments() != 1 {
		return ll.OpenForRead(), nil
	}
	fs, path := ll.SegmentLocation(0)
	f, err := fs.Open(path)
	if err != nil {
		return nil, err
	}
	const block = 32 << 10
	base := (cur.Offset - 1) / block * block
	return &blockReader{f: f, base: base, path: path, r: newRecordReader(io.NewSectionReader(f, base, 1<<62), uint64(ll.Num))}, nil
}

// walReader is what readWAL reads a WAL through.
type walReader interface {
	NextRecord() (io.Reader, wal.Offset, error)
	Close() error
}

// blockReader reads a WAL's records from a block boundary.
type blockReader struct {
	f    vfs.File
	base int64
	path string
	r    *record.Reader
}

func (b *blockReader) NextRecord() (io.Reader, wal.Offset, error) {
	off := wal.Offset{PhysicalFile: b.path, Physical: b.base + b.r.Offset()}
	rec, err := b.r.Next()
	return rec, off, err
}

func (b *blockReader) Close() error { return b.f.Close() }

// ErrLogGap is returned by ReadLog when committed batches are missing from
// the WALs kept: the commit log cannot be continued from the cursor.
var ErrLogGap = errors.New("store: the commit log has a gap")

// TrimLog lets go of archived files: every WAL before cur's (read through)
// and everything else Pebble archived (obsolete tables, MANIFESTs, blob
// files). It returns the bytes archive/ still holds.
func (s *Store) TrimLog(cur LogCursor) (int64, error) {
	if !s.reg.cfg.Ship {
		return 0, ErrNotShipping
	}
	if _, err := s.acquire(); err != nil {
		return 0, err
	}
	defer s.release()
	current := s.clog.timelineIs(cur.Timeline)
	dir := filepath.Join(s.dir, archiveDir)
	entries, err := os.ReadDir(dir)
	if err != nil {
		if os.IsNotExist(err) {
			return 0, nil
		}
		return 0, err
	}
	var kept int64
	for _, e := range entries {
		num, _, isLog := wal.ParseLogFilename(e.Name())
		if isLog && (uint64(num) >= cur.Log || !current) {
			if info, err := e.Info(); err == nil {
				kept += info.Size()
			}
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !os.IsNotExist(err) {
			return kept, err
		}
	}
	return kept, nil
}

func (l *logState) timelineIs(id string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.timeline.ID == id
}

// SyncLog makes every write committed so far durable and readable by
// ReadLog, and returns the sequence number it holds through. Pebble keeps
// an unsynced write in its WAL writer's memory until a block of 32 KiB
// fills or a synced write comes; SyncLog commits a synced batch of
// LogData only (which writes the block out and fsyncs it, and which the
// log does not hand out), but only when a write through the handles is
// newer than next, the cursor's next sequence number. Every batch through
// the returned number precedes that batch in the WAL, so it is synced.
func (s *Store) SyncLog(next uint64) (uint64, error) {
	if !s.reg.cfg.Ship {
		return 0, ErrNotShipping
	}
	through := s.clog.last.Load()
	if through < next {
		return through, nil // everything read so far was synced by an earlier call
	}
	db, err := s.acquire()
	if err != nil {
		return 0, err
	}
	defer s.release()
	b := db.NewBatch()
	defer b.Close()
	stamp(b, time.Now())
	if err := s.wrap("sync the WAL", b.Commit(pebble.Sync)); err != nil {
		return 0, err
	}
	return through, nil
}

// LastCommitted is the highest sequence number committed on the store's
// timeline (through its handles, or found at open).
func (s *Store) LastCommitted() (string, uint64) {
	s.clog.mu.Lock()
	defer s.clog.mu.Unlock()
	return s.clog.timeline.ID, s.clog.last.Load()
}

// MarkShipped records that every batch of timeline through sequence
// number seq is on every target, waking WaitShipped. oldest is when the
// oldest write after seq was committed, as far as the caller knows (at
// or after it; zero: unknown, taken as now), for HoldWrites.
func (s *Store) MarkShipped(timeline string, seq uint64, oldest time.Time) {
	s.clog.mu.Lock()
	defer s.clog.mu.Unlock()
	if timeline != s.clog.timeline.ID {
		return
	}
	s.clog.progress.Store(time.Now().UnixNano())
	switch {
	case seq >= s.clog.last.Load():
		s.clog.unshipped.Store(0)
	case seq <= s.clog.shipped:
	case oldest.IsZero():
		s.clog.unshipped.Store(time.Now().UnixNano())
	default:
		s.clog.unshipped.Store(oldest.UnixNano())
	}
	s.clog.shipped = max(s.clog.shipped, seq)
	s.clog.broadcastLocked()
}

// holdNeedsProgress: HoldWrites holds writes only while the shipper
// made progress (a MarkShipped, or a HoldWrites after a tick that
// worked) within it, and holds none for longer. A target that hangs
// rather than fails must not stop the store: its writes then flow, and
// the lag grows until the target fails (its segments queue, then become
// a gap) or takes them.
var holdNeedsProgress = 2 * time.Second // a variable for the tests

// HoldWrites makes the store's handle writes wait while the oldest write
// not yet on every target was committed more than after ago (0: never
// hold): a write that finds shipping that far behind waits, before it
// commits, until shipping is back within after, as Pebble stalls writes
// when its compactions fall behind. So writers faster than shipping slow
// to its pace, and what a loss of the machine could lose stays about
// twice after. The shipper sets it after every tick in which every
// target took its segments, and clears it when one does not (a target
// outage must not stop the store: its segments queue, then become a
// gap) and when it stops; a write is never held while the shipper makes
// no progress, nor longer than holdNeedsProgress in all.
func (s *Store) HoldWrites(after time.Duration) {
	if after > 0 {
		s.clog.progress.Store(time.Now().UnixNano())
	}
	if prev := s.clog.holdAfter.Swap(int64(max(after, 0))); prev > 0 && after <= 0 {
		// Wake the writes held now.
		s.clog.mu.Lock()
		s.clog.broadcastLocked()
		s.clog.mu.Unlock()
	}
}

// holdWrite is HoldWrites' wait, for a write about to commit at now; it
// reports whether it waited.
func (s *Store) holdWrite(now time.Time) bool {
	if !s.behind(now) {
		return false
	}
	s.clog.held.Add(1)
	// However the shipper fares, no write waits longer than this: a
	// write holds the store open, and a restore's fence waits for it.
	t := time.NewTimer(holdNeedsProgress)
	defer t.Stop()
	for {
		s.clog.mu.Lock()
		if s.clog.changed == nil {
			s.clog.changed = make(chan struct{})
		}
		ch := s.clog.changed
		s.clog.mu.Unlock()
		if !s.behind(time.Now()) {
			return true
		}
		select {
		case <-ch:
		case <-t.C:
			return true
		}
	}
}

// HeldWrites is how many writes HoldWrites has held since the store was
// opened.
func (s *Store) HeldWrites() uint64 { return s.clog.held.Load() }

// behind reports whether HoldWrites holds a write made at now.
func (s *Store) behind(now time.Time) bool {
	after := s.clog.holdAfter.Load()
	if after <= 0 {
		return false
	}
	u, n := s.clog.unshipped.Load(), now.UnixNano()
	return u != 0 && n-u > after && n-s.clog.progress.Load() <= int64(holdNeedsProgress)
}

// WaitShipped returns when every write committed through the store's
// handles before the call is on every backup target. It never makes
// anything ship sooner: waiters share the shipper's seals. It returns
// ctx's error when ctx ends first, ErrTimelineChanged when a restore
// replaced the writes it waited for, and ErrNotShipping when shipping is
// off.
func (s *Store) WaitShipped(ctx context.Context) error {
	if !s.reg.cfg.Ship {
		return ErrNotShipping
	}
	s.clog.mu.Lock()
	tl, want := s.clog.timeline.ID, s.clog.last.Load()
	s.clog.mu.Unlock()
	if tl == "" {
		return fmt.Errorf("store %s: %w", s.name, ErrUnavailable)
	}
	for {
		s.clog.mu.Lock()
		if s.clog.changed == nil {
			s.clog.changed = make(chan struct{})
		}
		ch, cur, shipped := s.clog.changed, s.clog.timeline.ID, s.clog.shipped
		s.clog.mu.Unlock()
		if cur != tl {
			return fmt.Errorf("store %s: %w", s.name, ErrTimelineChanged)
		}
		if shipped >= want {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

// replayOnto applies r's batches to the staged copy of a restore and
// flushes them, so the copy holds them in sstables.
func (s *Store) replayOnto(ctx context.Context, staged string, r *Replay) (ReplayResult, error) {
	opts := s.reg.pebbleOptions(s.name)
	opts.Cleaner = nil
	opts.EnsureDefaults()
	db, err := pebble.Open(staged, opts)
	if err != nil {
		return ReplayResult{}, fmt.Errorf("restore %s: open the staged copy to replay: %w", s.name, err)
	}
	var applied, writes int
	rr, err := r.Batches(ctx, func(b LogBatch) error {
		if b.Count == 0 {
			return nil
		}
		pb := db.NewBatch()
		defer pb.Close()
		if err := pb.SetRepr(append([]byte(nil), b.Repr...)); err != nil {
			return err
		}
		if err := db.Apply(pb, pebble.NoSync); err != nil {
			return err
		}
		if applied == 0 {
			crashPoint("restore.replaying")
		}
		applied++
		writes += int(b.Count)
		return nil
	})
	if err == nil {
		err = db.Flush()
	}
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return rr, fmt.Errorf("restore %s: replay the commit log: %w", s.name, err)
	}
	rr.Batches, rr.Writes, rr.At = applied, writes, r.Branch.At
	return rr, nil
}
