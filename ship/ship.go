// Package ship ships every store's commit log to the backup targets and
// restores a store to a moment: point-in-time recovery.
//
// A Shipper reads each store's committed batches (store.ReadLog), seals
// them into segments every Interval or at SegmentSize, whichever comes
// first (nothing is sealed while nothing is written), keeps each sealed
// segment in its local directory until every target holds it, and sends
// segments to each target in order. The local copy is written (and
// fsynced) before the cursor that says it was read is saved, and the
// store's archived WALs are let go only up to that cursor, so a crash at
// any point loses nothing and a segment sealed again after a crash only
// overlaps one already sealed (restores skip batches they applied).
package ship

import (
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/klauspost/compress/s2"
	"golang.org/x/sync/errgroup"

	"storekeeper/internal/durable"
	"storekeeper/offsite"
	"storekeeper/store"
)

// Config configures a Shipper.
type Config struct {
	// Dir holds the shipper's state and the segments not yet on every
	// target, one subdirectory per store.
	Dir     string
	Targets []*offsite.Target
	// Interval is the longest a committed write waits to be sealed into a
	// segment (default 250 ms).
	Interval time.Duration
	// SegmentSize seals a segment early when it reaches it (default 4 MiB).
	SegmentSize int
	// Buffer bounds the bytes of segments a store keeps locally while a
	// target does not take them (default 1 GiB).
	Buffer int64
	// Window is how far back a store can be restored to a moment
	// (--pitr-window, default 7 days): Collect deletes the segments no
	// restore to a moment within it needs. CollectEvery is how often the
	// shipper collects (default 1 h).
	Window       time.Duration
	CollectEvery time.Duration
	Logger       *slog.Logger
	// MaxLag holds a store's handle writes while the oldest write not on
	// every target is older than it and every target takes segments
	// (store.Store.HoldWrites; --ship-max-lag): writers faster than
	// shipping slow to its pace instead of leaving it ever further
	// behind. Default 2 × Interval; negative: never hold.
	MaxLag time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// DefaultWindow is Config.Window's default (--pitr-window).
const DefaultWindow = 7 * 24 * time.Hour

func (c *Config) defaults() {
	if c.Interval <= 0 {
		c.Interval = 250 * time.Millisecond
	}
	if c.MaxLag == 0 {
		c.MaxLag = 2 * c.Interval
	}
	if c.SegmentSize <= 0 {
		c.SegmentSize = 4 << 20
	}
	if c.Buffer <= 0 {
		c.Buffer = 1 << 30
	}
	if c.Window <= 0 {
		c.Window = DefaultWindow
	}
	if c.CollectEvery <= 0 {
		c.CollectEvery = time.Hour
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Shipper ships the commit logs of a registry's stores.
type Shipper struct {
	cfg Config
	reg *store.Registry
	log *slog.Logger

	mu     sync.Mutex
	stores map[string]*storeShip
	onGap  []func(store string, g Gap) error
}

// OnGap registers fn to be called, outside any lock of the shipper but on
// its goroutine, with every gap it records: part of a store's log it
// dropped before every target had it. A gap is recorded on disk before
// its segments are dropped, and stays recorded until every fn has
// returned nil for it: one that fails (Redis down) is offered again
// gapRetry later, and one the process did not live to announce is
// offered after it starts again. So fn may see a gap more than once, and
// must make a second announcement of it a no-op.
func (sh *Shipper) OnGap(fn func(store string, g Gap) error) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.onGap = append(sh.onGap, fn)
}

// New returns a Shipper for reg, which must have been opened with
// store.Config.Ship.
func New(cfg Config, reg *store.Registry) (*Shipper, error) {
	cfg.defaults()
	if !reg.Shipping() {
		return nil, store.ErrNotShipping
	}
	if len(cfg.Targets) == 0 {
		return nil, errors.New("ship: no backup target to ship to")
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, err
	}
	return &Shipper{cfg: cfg, reg: reg, log: cfg.Logger.With("component", "ship"), stores: map[string]*storeShip{}}, nil
}

// Run ships until ctx ends, then seals and sends what was read once more.
func (sh *Shipper) Run(ctx context.Context) {
	t := time.NewTicker(sh.cfg.Interval / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			final, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			for _, name := range sh.reg.Names() {
				_ = sh.Drain(final, name)
				if s, err := sh.reg.Store(name); err == nil {
					s.HoldWrites(0) // nothing ships any more
				}
			}
			cancel()
			return
		case <-t.C:
		}
		for _, name := range sh.reg.Names() {
			err := sh.tick(ctx, name, false)
			if ctx.Err() == nil {
				sh.storeShip(name).logTick(sh.log, err)
			}
		}
	}
}

// Drain reads the store's log to its end, seals what it read and tries
// to send every segment now. It returns the first target's error, if any;
// what a target did not take stays local.
func (sh *Shipper) Drain(ctx context.Context, name string) error {
	return sh.tick(ctx, name, true)
}

// logTick logs a tick's error once, when it first fails or its error
// changes, and that ticks work again: a store that is being restored or
// is unavailable fails every tick until it serves (logged at debug
// level only), and a log that cannot be read stops shipping, which the
// operator must see.
func (ss *storeShip) logTick(log *slog.Logger, err error) {
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	if errors.Is(err, store.ErrUnavailable) || errors.Is(err, store.ErrClosed) {
		// Restoring, closing, or not open: its state says so already.
		log.Debug("shipping waits for the store", "store", ss.name, "err", err)
		msg = ""
	}
	ss.mu.Lock()
	prev := ss.lastErr
	ss.lastErr = msg
	ss.mu.Unlock()
	switch {
	case msg != "" && msg != prev:
		log.Warn("shipping the commit log fails; retried every tick", "store", ss.name, "err", err)
	case msg == "" && prev != "":
		log.Info("shipping the commit log works again", "store", ss.name)
	}
}

// storeShip is one store's shipping state. mu serialises its ticks.
type storeShip struct {
	name string
	dir  string

	mu sync.Mutex
	// use is held shared by a restore reading the store's segments and
	// whole by Collect deleting them.
	use       sync.RWMutex
	collected time.Time // when Collect last ran for the store
	// readAt is when the last complete read began (or, before one was,
	// when the first did), syncAt when it synced the log: every write
	// not read was committed after them. A read is complete when it
	// reached every batch its SyncLog synced; one that stops short (a
	// WAL not readable yet, or a log that does not go on) leaves both
	// where they were, so the lag grows while reads stall.
	readAt  time.Time
	syncAt  time.Time
	stalled time.Time // since when reads have stopped short at the same cursor (zero: they do not)
	lastErr string    // the last tick's error, for logTick
	loaded  bool
	// recorded is the timeline whose local record (timeline.json) this
	// process wrote.
	recorded string
	sealed   store.LogCursor // saved: every batch before it is in a local segment
	read     store.LogCursor // read into open
	open     []byte          // batches read, not sealed (length-prefixed, uncompressed)
	sealBuf  []byte          // the last sealed segment's storage, reused
	first    uint64          // open's first batch
	since    time.Time       // when open got its first batch
	stamp    time.Time       // its commit time
	pending  []pendingSeg    // sealed, not yet on every target, in order
	// sent: target -> segment path -> on it; timelines: target ->
	// timelines recorded on it.
	sent      map[string]map[string]bool
	timelines map[string]map[string]bool
	down      map[string]error // target -> its last error, while failing
	// logStart is where the log of timeline starts (its chain's first
	// timeline's creation), once found; tried is when finding it last
	// failed (a parent's record unreadable).
	logStart struct {
		timeline string
		at       time.Time
		tried    time.Time
	}
	// unannounced: gaps recorded (in gapsFile) that some OnGap function
	// has not taken yet; announceAfter: not offered again before then
	// (the last offer failed).
	unannounced   []Gap
	announceAfter time.Time

	stats Stats
}

// gapsFile, in a store's ship directory, holds its unannounced gaps.
const gapsFile = "gaps.json"

// stateFile, in a store's shipping directory, is the shipping cursor:
// every batch before it is in a local segment (state).
const stateFile = "state.json"

// gapRetry is how long a gap whose announcement failed waits before it is
// offered again.
const gapRetry = 30 * time.Second

// recordGap adds g to the store's gaps, on disk first (gapsFile), so that
// a process that stops before announcing it announces it when it starts
// again: call it before dropping g's segments. A gap already recorded
// (the same timeline and first write: a segment found damaged again after
// a restart) is not added twice. If the file cannot be written, g is
// still announced by this process; it is logged.
func (ss *storeShip) recordGap(log *slog.Logger, g Gap) {
	if slices.ContainsFunc(ss.unannounced, g.same) {
		return
	}
	ss.unannounced = append(ss.unannounced, g)
	ss.stats.Gaps = append(ss.stats.Gaps, g)
	ss.announceAfter = time.Time{}
	if err := ss.saveGaps(); err != nil {
		log.Error("a gap in the commit log could not be recorded on disk; it is announced, unless this process stops first", "store", ss.name, "timeline", g.Timeline, "from", g.From, "err", err)
	}
}

// forgetGap takes back a gap recorded before its segment was to be
// dropped, when the segment could not be.
func (ss *storeShip) forgetGap(log *slog.Logger, g Gap) {
	ss.unannounced = slices.DeleteFunc(ss.unannounced, g.same)
	ss.stats.Gaps = slices.DeleteFunc(ss.stats.Gaps, g.same)
	if err := ss.saveGaps(); err != nil {
		log.Warn("recording the commit log's gaps", "store", ss.name, "err", err)
	}
}

// saveGaps writes the unannounced gaps to gapsFile, durably (or removes
// it when there are none).
func (ss *storeShip) saveGaps() error {
	path := filepath.Join(ss.dir, gapsFile)
	if len(ss.unannounced) == 0 {
		if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
			return err
		}
		return nil
	}
	b, err := json.Marshal(ss.unannounced)
	if err != nil {
		return err
	}
	return durable.Replace(vfs.Default, ss.dir, gapsFile, b, nil)
}

// same reports whether g and o are one gap: the same timeline and first
// write.
func (g Gap) same(o Gap) bool { return g.Timeline == o.Timeline && g.From == o.From }

// gap is the gap dropping p at dropped leaves, for cause (empty: the
// buffer was full).
func (p pendingSeg) gap(dropped time.Time, cause string) Gap {
	return Gap{Timeline: p.timeline, From: p.first, To: p.next, Since: p.stamp, Dropped: dropped.UTC(), Cause: cause}
}

// pendingSeg is a sealed segment held locally.
type pendingSeg struct {
	timeline    string
	first, next uint64
	path        string
	size        int64
	stamp       time.Time // its first batch's commit time
}

type state struct {
	Sealed store.LogCursor `json:"sealed"`
}

func (sh *Shipper) storeShip(name string) *storeShip {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	ss := sh.stores[name]
	if ss == nil {
		ss = &storeShip{name: name, dir: filepath.Join(sh.cfg.Dir, name),
			sent: map[string]map[string]bool{}, timelines: map[string]map[string]bool{}, down: map[string]error{}}
		sh.stores[name] = ss
	}
	return ss
}

func (sh *Shipper) tick(ctx context.Context, name string, drain bool) (err error) {
	s, err := sh.reg.Store(name)
	if err != nil {
		return err
	}
	defer func() {
		// Writes are held only while shipping works.
		if err != nil || ctx.Err() != nil || sh.cfg.MaxLag < 0 {
			s.HoldWrites(0)
		} else {
			s.HoldWrites(sh.cfg.MaxLag)
		}
	}()
	ss := sh.storeShip(name)
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if !ss.loaded {
		if err := ss.load(sh.log); err != nil {
			return err
		}
		ss.loaded = true
	}
	tl, err := s.Timeline()
	if err != nil {
		// Not open (restoring, corrupt, closed): send what is sealed.
		_ = sh.send(ctx, s, ss, "")
		sh.announce(ss)
		return err
	}
	if ss.read.Timeline != tl.ID || ss.recorded != tl.ID {
		// A new timeline, or the first tick of this process on this one:
		// its local record is written (again) whole, which also mends
		// one an older version tore by rewriting it in place.
		if err := ss.startTimeline(sh, tl); err != nil {
			return err
		}
	}
	ss.findLogStart(ctx, sh, tl)
	syncAt := time.Now() // the store's clock, which its commit stamps are on (not cfg.Now)
	if ss.readAt.IsZero() {
		ss.readAt, ss.syncAt = sh.cfg.Now(), syncAt
	}
	through, err := s.SyncLog(ss.read.Next)
	if err != nil {
		return err
	}
	stallErr, err := ss.readLog(ctx, sh, s, tl.ID, through, syncAt)
	if err == nil && stallErr != nil {
		// The log does not go on from the cursor: go on from where it
		// does, recording what is in no WAL kept and on no target as a
		// gap, and read from there now.
		if rerr := ss.reanchor(ctx, sh, s, tl, through); rerr != nil {
			stallErr = fmt.Errorf("%w; shipping cannot go on from elsewhere yet: %w", stallErr, rerr)
		} else {
			stallErr, err = ss.readLog(ctx, sh, s, tl.ID, through, syncAt)
		}
	}
	if errors.Is(err, store.ErrTimelineChanged) {
		return nil // the next tick starts the new timeline
	}
	if err != nil {
		return err
	}
	if len(ss.open) > 0 && (drain || sh.cfg.Now().Sub(ss.since) >= sh.cfg.Interval) {
		if err := ss.seal(tl.ID); err != nil {
			return err
		}
	}
	if _, err := s.TrimLog(ss.sealed); err != nil {
		sh.log.Warn("trimming the commit log", "store", name, "err", err)
	}
	ss.bound(sh)
	if err = sh.send(ctx, s, ss, tl.ID); err == nil {
		err = stallErr
	}
	if now := sh.cfg.Now(); err == nil && now.Sub(ss.collected) >= sh.cfg.CollectEvery {
		ss.collected = now
		if _, cerr := sh.collect(ctx, s, ss, tl); cerr != nil {
			sh.log.Warn("collecting shipped segments", "store", name, "err", cerr)
		}
	}
	sh.announce(ss)
	return err
}

// readLog reads the store's log from ss.read through through into the
// open segment, sealing as it fills, and records how the read ended
// (readEnded): stalled is not nil once reads have stopped short at the
// same cursor for logStallLimit. A gap in the WALs kept (store.ErrLogGap)
// is a read that stopped short, not a failure of the tick: it is what a
// stall is, and re-anchoring is its remedy.
func (ss *storeShip) readLog(ctx context.Context, sh *Shipper, s *store.Store, timeline string, through uint64, syncAt time.Time) (stalled, err error) {
	readStart, before := sh.cfg.Now(), ss.read
	cur, err := s.ReadLog(ctx, ss.read, through, func(b store.LogBatch, after store.LogCursor) error {
		if len(ss.open) > 0 && len(ss.open)+len(b.Repr)+binary.MaxVarintLen64 > sh.cfg.SegmentSize {
			if err := ss.seal(timeline); err != nil {
				return err
			}
		}
		if len(ss.open) == 0 {
			ss.first, ss.since, ss.stamp = b.Seq, sh.cfg.Now(), b.Stamp
		}
		ss.open = binary.AppendUvarint(ss.open, uint64(len(b.Repr)))
		ss.open = append(ss.open, b.Repr...)
		ss.read = after
		return nil
	})
	if err != nil && !errors.Is(err, store.ErrLogGap) {
		return nil, err
	}
	// Past what the callback saw: batches of LogData only, and, on a new
	// timeline, its start (without this the cursor stayed empty while
	// nothing was written, and every tick started the timeline again).
	ss.read = cur
	return ss.readEnded(sh, before, through, readStart, syncAt), nil
}

// reanchor moves the cursor of a store whose log does not go on from it
// (its batch is in no WAL kept: the cursor was lost or moved back, or
// WALs were removed) to where shipping can go on without shipping
// anything twice that every target holds: the first batch the WALs keep,
// or, when every target (with the segments waiting locally) already
// holds more, the least any of them holds. What lies between what a
// target holds and the first batch kept is lost: it is recorded as a gap
// (announced, and restores refuse to cross it). The targets are listed to
// know what they hold; if one cannot be, nothing moves.
//
// What a target holds is judged by its newest segment of the timeline,
// and is at least the timeline's start and what this shipper read: a
// timeline whose every segment Collect deleted (nothing written for a
// whole --pitr-window) counts as holding nothing, so losing its cursor
// then reports a gap back to the timeline's start.
func (ss *storeShip) reanchor(ctx context.Context, sh *Shipper, s *store.Store, tl store.Timeline, through uint64) error {
	// The first batch kept at or past the cursor (not before it: those are
	// read, or, below the timeline's start, an earlier timeline's that a
	// restore replayed into the WALs).
	from := max(ss.read.Next, tl.Start)
	first, firstAt, ok, err := s.FirstKept(ctx, from, through)
	if err != nil {
		return fmt.Errorf("finding the first batch the WALs keep: %w", err)
	}
	if !ok {
		first, firstAt = through+1, time.Time{} // no synced batch kept
	}
	held := from
	for _, p := range ss.pending {
		if p.timeline == tl.ID {
			held = max(held, p.next)
		}
	}
	least := uint64(0)
	for i, t := range sh.cfg.Targets {
		segs, err := t.Segments(ctx, ss.name, tl.ID)
		if err != nil {
			return err
		}
		h := held
		for _, sg := range segs {
			h = max(h, sg.Next)
		}
		if i == 0 || h < least {
			least = h
		}
	}
	next := max(first, least)
	if next <= ss.read.Next {
		return fmt.Errorf("the WALs keep the cursor's batch %d, and no target holds more: nothing to go on from but the cursor", first)
	}
	if len(ss.open) > 0 {
		if err := ss.seal(tl.ID); err != nil {
			return err
		}
	}
	if least < first {
		ss.recordGap(sh.log, Gap{Timeline: tl.ID, From: least, To: first, Before: firstAt.UTC(), Dropped: sh.cfg.Now().UTC(),
			Cause: "in no WAL kept and on no target when shipping went on from the first batch kept (the shipping cursor was lost or moved back, or WALs were removed)"})
		sh.log.Error("commit log lost: shipping stopped at a batch no WAL keeps and goes on from the first one kept; restores cannot cross this gap until a new backup",
			"store", ss.name, "timeline", tl.ID, "from", least, "to", first)
	}
	ss.read = store.LogCursor{Timeline: tl.ID, Next: next}
	if err := ss.saveCursor(nil); err != nil {
		return err
	}
	ss.sealed, ss.stalled = ss.read, time.Time{}
	sh.log.Warn("shipping went on from elsewhere: the commit log did not go on from its cursor", "store", ss.name, "timeline", tl.ID,
		"stopped_at", from, "goes_on_at", next, "first_kept", first, "least_on_a_target", least)
	return nil
}

// logStallLimit is how long reads of a store's log may stop short at the
// same cursor before the tick fails: a WAL not readable yet is read on
// the next tick, a log that does not go on (its next batch in no WAL
// kept) never is.
const logStallLimit = 30 * time.Second

// readEnded records how a read from before ended, the log synced through
// through at syncAt and the read begun at readStart: a complete read
// moves readAt and syncAt on. It returns an error once reads have stopped
// short at the same cursor for logStallLimit: shipping has stopped, and
// only the lag, growing, would say so.
func (ss *storeShip) readEnded(sh *Shipper, before store.LogCursor, through uint64, readStart, syncAt time.Time) error {
	if ss.read.Next > through {
		ss.readAt, ss.syncAt, ss.stalled = readStart, syncAt, time.Time{}
		return nil
	}
	now := sh.cfg.Now()
	if ss.read != before || ss.stalled.IsZero() {
		ss.stalled = now
		return nil
	}
	if d := now.Sub(ss.stalled); d >= logStallLimit {
		return fmt.Errorf("ship %s: the commit log stops at sequence %d: writes through %d are synced, but no WAL kept goes on from it (stalled %s), "+
			"so nothing after it ships; the shipping cursor %s may have been removed or moved back",
			ss.name, ss.read.Next, through, d.Round(time.Second), filepath.Join(ss.dir, stateFile))
	}
	return nil
}

// announce offers the store's unannounced gaps to the OnGap functions,
// outside ss's lock (held by the caller, and held again on return). A gap
// every function took is no longer recorded; if one failed, the gaps left
// are offered again gapRetry later.
func (sh *Shipper) announce(ss *storeShip) {
	now := sh.cfg.Now()
	if len(ss.unannounced) == 0 || now.Before(ss.announceAfter) {
		return
	}
	sh.mu.Lock()
	fns := slices.Clone(sh.onGap)
	sh.mu.Unlock()
	if len(fns) == 0 {
		return // nobody to tell yet: a gap is taken only by a function
	}
	gaps := slices.Clone(ss.unannounced)
	var taken []Gap
	failed := false
	ss.mu.Unlock()
	for _, g := range gaps {
		ok := true
		for _, fn := range fns {
			if err := fn(ss.name, g); err != nil {
				ok = false
			}
		}
		if ok {
			taken = append(taken, g)
		} else {
			failed = true
		}
	}
	ss.mu.Lock()
	if failed {
		ss.announceAfter = now.Add(gapRetry)
	}
	if len(taken) == 0 {
		return
	}
	ss.unannounced = slices.DeleteFunc(ss.unannounced, func(g Gap) bool { return slices.ContainsFunc(taken, g.same) })
	if err := ss.saveGaps(); err != nil {
		sh.log.Warn("recording the commit log's gaps", "store", ss.name, "err", err)
	}
}

// logStartRetry is how long a log start not found (a parent timeline's
// record unreadable: its targets down) is left before it is looked for
// again.
const logStartRetry = time.Minute

// findLogStart finds, once per timeline, where the store's log starts:
// for a restored store, by following its timeline's parents, as a
// restore to a moment would (Plan), to the first one. It reads the
// parents' records, locally or from the targets, so it runs on the
// shipper's goroutine, and Stats only reports what it found.
func (ss *storeShip) findLogStart(ctx context.Context, sh *Shipper, tl store.Timeline) {
	if ss.logStart.timeline == tl.ID || sh.cfg.Now().Sub(ss.logStart.tried) < logStartRetry {
		return
	}
	first, err := sh.walkBack(ctx, ss.name, tl, func(store.Timeline) bool { return false })
	if err != nil {
		level := slog.LevelDebug // a parent's record not readable yet: tried again
		if errors.Is(err, store.ErrBadBackup) {
			level = slog.LevelWarn // the timelines loop: only a planted record does that
		}
		sh.log.Log(ctx, level, "where the store's log starts is not known; it is not published", "store", ss.name, "err", err)
		ss.logStart.tried = sh.cfg.Now()
		return
	}
	ss.logStart.timeline, ss.logStart.at, ss.logStart.tried = tl.ID, first.Created, time.Time{}
}

// startTimeline switches to the store's new timeline: what was read of
// the old one is sealed under it, and the new one's record is kept with
// its segments. On the timeline already being shipped (a process's first
// tick) it only writes that record again.
func (ss *storeShip) startTimeline(sh *Shipper, tl store.Timeline) error {
	if len(ss.open) > 0 {
		if err := ss.seal(ss.read.Timeline); err != nil {
			return err
		}
	}
	if ss.sealed.Timeline != tl.ID {
		if ss.sealed.Timeline != "" {
			sh.log.Info("store restored: shipping its new timeline", "store", ss.name, "timeline", tl.ID, "previous", ss.sealed.Timeline)
		}
		ss.sealed = store.LogCursor{}
	}
	ss.read = ss.sealed
	dir := filepath.Join(ss.dir, "pending", tl.ID)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, _ := json.Marshal(tl)
	if err := durable.Replace(vfs.Default, dir, "timeline.json", b, nil); err != nil {
		return err
	}
	ss.recorded = tl.ID
	return nil
}

// A segment is a magic line, then its batches, each preceded by its
// length as a uvarint. segmentMagic starts a segment whose batches follow
// as they are (segments sealed before compression was added);
// segmentMagicS2 one whose batches follow as one S2 block
// (github.com/klauspost/compress/s2) after the CRC-32C of the batches
// (4 bytes, little-endian), which is what seal writes. S2 passes bytes
// that do not compress at about 10 GB/s (BenchmarkSegmentEncode).
//
// The CRC covers the local copy between seal and send: a target's tag is
// computed over what is read back, so without it a byte flipped on the
// local disk would ship, and be replayed, as if written.
const (
	segmentMagic   = "storekeeper-log-1\n"
	segmentMagicS2 = "storekeeper-log-2\n"
)

// maxCompressed is the most a compressed segment holds once decoded:
// larger runs of batches (one batch larger than --ship-segment-size,
// itself at most 1G, can make one) are sealed uncompressed, and a segment
// that claims more is refused, so a damaged one cannot make a restore
// allocate without limit.
const maxCompressed = 1 << 30

// sealBufKept is about the largest segment whose storage seal keeps for
// the next: the default --ship-segment-size.
const sealBufKept = 4 << 20

// encodeSegment returns the segment of the open batches, compressed when
// they are not too large for it, in buf's storage when that is large
// enough.
func encodeSegment(buf, open []byte) []byte {
	if len(open) > maxCompressed {
		return append(append(buf[:0], segmentMagic...), open...)
	}
	const head = len(segmentMagicS2) + 4
	n := head + s2.MaxEncodedLen(len(open))
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	copy(buf, segmentMagicS2)
	binary.LittleEndian.PutUint32(buf[len(segmentMagicS2):], crc32.Checksum(open, castagnoli))
	enc := s2.Encode(buf[head:], open)
	return buf[:head+len(enc)]
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// seal writes the open batches as a local segment. The segment is
// written and fsynced under a temporary name, then the cursor after it is
// saved, then it is renamed: load finishes a rename the cursor already
// counts, and drops a segment it does not.
func (ss *storeShip) seal(timeline string) error {
	dir := filepath.Join(ss.dir, "pending", timeline)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	path := filepath.Join(dir, offsite.SegmentName(ss.first, ss.read.Next))
	data := encodeSegment(ss.sealBuf, ss.open)
	if cap(data) <= 2*sealBufKept {
		ss.sealBuf = data // not an outsized one's, kept for good
	}
	if err := durable.WriteFileSync(vfs.Default, path+".tmp", data); err != nil {
		return err
	}
	crashPoint("ship.segment-written")
	if err := ss.saveCursor(func() { crashPoint("ship.cursor-writing") }); err != nil {
		return err
	}
	crashPoint("ship.cursor-saved")
	if err := os.Rename(path+".tmp", path); err != nil {
		return err
	}
	if err := durable.SyncDir(vfs.Default, dir); err != nil {
		return err
	}
	crashPoint("ship.sealed")
	ss.sealed = ss.read
	ss.pending = append(ss.pending, pendingSeg{timeline: timeline, first: ss.first, next: ss.read.Next, path: path, size: int64(len(data)), stamp: ss.stamp})
	ss.open, ss.first = ss.open[:0], 0
	ss.stats.Sealed++
	return nil
}

// saveCursor saves ss.read as the shipping cursor (stateFile), replaced
// whole; created runs once the new file exists, before it is written (a
// crash point).
func (ss *storeShip) saveCursor(created func()) error {
	b, _ := json.Marshal(state{Sealed: ss.read})
	return durable.Replace(vfs.Default, ss.dir, stateFile, b, created)
}

// load reads the saved cursor and the local segments.
func (ss *storeShip) load(log *slog.Logger) error {
	if err := os.MkdirAll(filepath.Join(ss.dir, "pending"), 0o755); err != nil {
		return err
	}
	var st state
	statePath := filepath.Join(ss.dir, stateFile)
	if b, err := os.ReadFile(statePath); err == nil {
		if err := json.Unmarshal(b, &st); err != nil {
			// Torn (by a version that rewrote it in place) or damaged: it
			// is moved aside, kept for whoever looks, and shipping goes on
			// as with no cursor, re-anchoring if the log it names is gone.
			aside := statePath + ".unreadable"
			if rerr := os.Rename(statePath, aside); rerr != nil {
				return fmt.Errorf("ship %s: the shipping cursor %s is unreadable (%w) and cannot be moved aside: %w", ss.name, statePath, err, rerr)
			}
			log.Error("the shipping cursor is unreadable: moved aside; shipping goes on from the start of the log the WALs keep, or, once that has stalled for stall_limit, from where the targets' log ends",
				"store", ss.name, "cursor", statePath, "moved_to", aside, "stall_limit", logStallLimit, "err", err)
			st = state{}
		}
	} else if !os.IsNotExist(err) {
		return err
	}
	ss.sealed, ss.read = st.Sealed, st.Sealed
	// Gaps recorded and not announced before the process stopped (kept
	// only if their segments did go: below).
	if b, err := os.ReadFile(filepath.Join(ss.dir, gapsFile)); err == nil {
		if err := json.Unmarshal(b, &ss.unannounced); err != nil {
			log.Error("the commit log's unannounced gaps are unreadable; restores still find them, but they are not announced", "store", ss.name, "file", filepath.Join(ss.dir, gapsFile), "err", err)
			ss.unannounced = nil
		}
	} else if !os.IsNotExist(err) {
		return err
	}
	timelines, err := os.ReadDir(filepath.Join(ss.dir, "pending"))
	if err != nil {
		return err
	}
	for _, d := range timelines {
		dir := filepath.Join(ss.dir, "pending", d.Name())
		entries, err := os.ReadDir(dir)
		if err != nil {
			return err
		}
		for _, e := range entries {
			name := e.Name()
			if tmp, ok := strings.CutSuffix(name, ".tmp"); ok {
				_, next, ok := offsite.ParseSegmentName(tmp)
				if ok && d.Name() == st.Sealed.Timeline && next == st.Sealed.Next {
					// Sealed and counted by the cursor; the rename did not happen.
					if err := os.Rename(filepath.Join(dir, name), filepath.Join(dir, tmp)); err != nil {
						return err
					}
					name = tmp
				} else {
					_ = os.Remove(filepath.Join(dir, name))
					continue
				}
			}
			first, next, ok := offsite.ParseSegmentName(name)
			if !ok {
				continue
			}
			info, err := os.Stat(filepath.Join(dir, name))
			if err != nil {
				return err
			}
			p := pendingSeg{timeline: d.Name(), first: first, next: next, path: filepath.Join(dir, name), size: info.Size()}
			if data, err := os.ReadFile(p.path); err == nil {
				err = eachBatch(data, func(b store.LogBatch) error { p.stamp = b.Stamp; return errStop })
				if err != nil {
					// Sending checks it again, and drops it as a gap.
					log.Error("a local segment is damaged; it is dropped as a gap in the shipped log when it would be sent", "store", ss.name, "segment", p.path, "err", err)
				}
			}
			ss.pending = append(ss.pending, p)
		}
	}
	// Timelines are named from their creation time: this is their order.
	slices.SortStableFunc(ss.pending, func(a, b pendingSeg) int {
		if c := strings.Compare(a.timeline, b.timeline); c != 0 {
			return c
		}
		return cmp.Compare(a.first, b.first)
	})
	// A gap is recorded just before its segment is dropped: if the process
	// stopped in between, the segment is still here, nothing was lost, and
	// announcing the gap would be false. It is dropped again if it must be.
	if n := len(ss.unannounced); n > 0 {
		ss.unannounced = slices.DeleteFunc(ss.unannounced, func(g Gap) bool {
			return slices.ContainsFunc(ss.pending, func(p pendingSeg) bool { return g.same(p.gap(time.Time{}, "")) })
		})
		if len(ss.unannounced) < n {
			if err := ss.saveGaps(); err != nil {
				return err
			}
		}
		ss.stats.Gaps = append(ss.stats.Gaps, ss.unannounced...)
	}
	return nil
}

var errStop = errors.New("stop")

// eachBatch calls fn for each batch of a segment's content, in order.
func eachBatch(data []byte, fn func(store.LogBatch) error) error {
	switch magic := string(data[:min(len(data), len(segmentMagic))]); magic {
	case segmentMagic:
		data = data[len(segmentMagic):]
	case segmentMagicS2:
		data = data[len(segmentMagicS2):]
		if len(data) < 4 {
			return fmt.Errorf("%w: a segment is cut short", store.ErrBadBackup)
		}
		sum := binary.LittleEndian.Uint32(data)
		data = data[4:]
		n, err := s2.DecodedLen(data)
		if err != nil || n > maxCompressed {
			return fmt.Errorf("%w: a segment's compressed batches are damaged", store.ErrBadBackup)
		}
		if data, err = s2.Decode(nil, data); err != nil {
			return fmt.Errorf("%w: a segment's compressed batches are damaged: %w", store.ErrBadBackup, err)
		}
		if crc32.Checksum(data, castagnoli) != sum {
			return fmt.Errorf("%w: a segment's batches do not match its checksum", store.ErrBadBackup)
		}
	default:
		return fmt.Errorf("%w: not a commit-log segment", store.ErrBadBackup)
	}
	for len(data) > 0 {
		n, k := binary.Uvarint(data)
		if k <= 0 || uint64(len(data)-k) < n {
			return fmt.Errorf("%w: a segment's batch is cut short", store.ErrBadBackup)
		}
		b, err := store.DecodeBatch(data[k : k+int(n)])
		if err != nil {
			return fmt.Errorf("%w: %w", store.ErrBadBackup, err)
		}
		if err := fn(b); err != nil {
			if errors.Is(err, errStop) {
				return nil
			}
			return err
		}
		data = data[k+int(n):]
	}
	return nil
}

// sendParallel is how many segments go to one target at once.
const sendParallel = 4

// send sends the local segments to every target, in order, several at a
// time; a target that fails is sent no later segment this tick (one
// already under way may land after a hole, which the next tick fills). A
// segment every target holds is removed locally and, in order, marked
// shipped on the current timeline.
func (sh *Shipper) send(ctx context.Context, s *store.Store, ss *storeShip, current string) error {
	var mu sync.Mutex
	var first error
	var wg sync.WaitGroup
	damaged := map[string]error{} // path -> why, under mu
	for _, t := range sh.cfg.Targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := sh.sendTo(ctx, ss, t, &mu, damaged)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if ss.down[t.Name] == nil {
					sh.log.Warn("shipping to a target failed; segments stay local until it takes them", "store", ss.name, "target", t.Name, "err", err)
				}
				ss.down[t.Name] = err
				if first == nil {
					first = err
				}
			} else if ss.down[t.Name] != nil {
				sh.log.Info("shipping to a target works again", "store", ss.name, "target", t.Name)
				delete(ss.down, t.Name)
			}
		}()
	}
	wg.Wait()
	ss.dropDamaged(sh, damaged)

	kept := ss.pending[:0]
	inOrder := true
	for i, p := range ss.pending {
		all := inOrder
		for _, t := range sh.cfg.Targets {
			all = all && ss.sent[t.Name][p.path]
		}
		if all {
			if err := os.Remove(p.path); err != nil && !os.IsNotExist(err) {
				all = false
			}
		}
		if !all {
			inOrder = false
			kept = append(kept, p)
			continue
		}
		for _, t := range sh.cfg.Targets {
			delete(ss.sent[t.Name], p.path)
		}
		ss.stats.Shipped++
		ss.stats.ShippedBytes += p.size
		if p.timeline == current {
			s.MarkShipped(current, p.next-1, ss.oldestAfter(i))
		}
	}
	ss.pending = kept
	if current != "" && ss.read.Timeline == current && len(ss.open) == 0 && !slices.ContainsFunc(ss.pending, func(p pendingSeg) bool { return p.timeline == current }) {
		// Everything read is on every target (a new timeline with no
		// write yet too).
		if ss.read.Next > 0 {
			s.MarkShipped(current, ss.read.Next-1, ss.syncAt)
		}
	}
	return first
}

// dropDamaged takes the segments sending found damaged (path -> why) off
// the pending list and moves them aside (the damaged directory, kept for
// whoever looks into the disk). One no target holds is a gap in the
// shipped log, as one the buffer dropped is (Gap.Cause says why), so that
// it is announced and re-anchored now, not found when a restore needs it.
// One a target took before it was damaged is not lost: the targets that
// lack it are named.
func (ss *storeShip) dropDamaged(sh *Shipper, damaged map[string]error) {
	if len(damaged) == 0 {
		return
	}
	kept := ss.pending[:0]
	for _, p := range ss.pending {
		why, bad := damaged[p.path]
		if !bad {
			kept = append(kept, p)
			continue
		}
		var holders, lacking []string
		for _, t := range sh.cfg.Targets {
			if ss.sent[t.Name][p.path] {
				holders = append(holders, t.Name)
			} else {
				lacking = append(lacking, t.Name)
			}
			delete(ss.sent[t.Name], p.path)
		}
		if len(holders) == 0 {
			// Recorded before the segment goes: a process that stops in
			// between announces it when it starts again.
			ss.recordGap(sh.log, p.gap(sh.cfg.Now(), "damaged on the local disk: "+why.Error()))
		}
		aside := filepath.Join(ss.dir, "damaged", p.timeline+"-"+filepath.Base(p.path))
		if os.MkdirAll(filepath.Dir(aside), 0o755) != nil || os.Rename(p.path, aside) != nil {
			aside = ""
			if err := os.Remove(p.path); err != nil && !os.IsNotExist(err) {
				sh.log.Error("a damaged local segment could not be moved aside or removed", "store", ss.name, "segment", p.path, "err", err)
			}
		}
		if len(holders) > 0 {
			sh.log.Error("a local segment was damaged after some targets took it; the others lack it",
				"store", ss.name, "timeline", p.timeline, "from", p.first, "to", p.next, "held_by", holders, "lacking", lacking, "moved_to", aside, "err", why)
			continue
		}
		sh.log.Error("commit log lost: a local segment is damaged and no target has it; restores cannot cross this gap until a new backup",
			"store", ss.name, "timeline", p.timeline, "from", p.first, "to", p.next, "moved_to", aside, "err", why)
	}
	ss.pending = kept
}

// oldestAfter is when the oldest write after pending segment i was
// committed, as far as ss knows: the next segment's first, the open
// segment's first, or one the last read did not reach (committed after
// it synced the log).
func (ss *storeShip) oldestAfter(i int) time.Time {
	if i+1 < len(ss.pending) {
		return ss.pending[i+1].stamp
	}
	if len(ss.open) > 0 {
		return ss.stamp
	}
	return ss.syncAt
}

// sendTo sends target t the local segments it lacks, in order, up to
// sendParallel at a time, each timeline's record before its first
// segment; it stops starting more at the first failure. It sends none it
// finds damaged, adding them to damaged (path -> why) instead. mu guards
// ss's maps and damaged.
func (sh *Shipper) sendTo(ctx context.Context, ss *storeShip, t *offsite.Target, mu *sync.Mutex, damaged map[string]error) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(sendParallel)
	for _, p := range ss.pending {
		mu.Lock()
		sent, known := ss.sent[t.Name][p.path], ss.timelines[t.Name][p.timeline]
		mu.Unlock()
		if sent {
			continue
		}
		if !known {
			// Wait for what is under way: a record goes before its segments.
			if err := g.Wait(); err != nil {
				return err
			}
			g, gctx = errgroup.WithContext(ctx)
			g.SetLimit(sendParallel)
			if err := sh.putTimeline(gctx, t, p); err != nil {
				return err
			}
			mu.Lock()
			mark(ss.timelines, t.Name, p.timeline)
			mu.Unlock()
		}
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error {
			data, err := os.ReadFile(p.path)
			if err != nil {
				return err
			}
			// What is sent is what a restore can replay: a segment is
			// checked (its checksum, every batch) before it leaves. One
			// that fails (a bad disk, a file changed under the shipper)
			// is not the target's failure: the others go on.
			if err := eachBatch(data, func(store.LogBatch) error { return nil }); err != nil {
				mu.Lock()
				damaged[p.path] = err
				mu.Unlock()
				return nil
			}
			if err := t.PutSegment(gctx, ss.name, p.timeline, p.first, p.next, data); err != nil {
				return err
			}
			mu.Lock()
			mark(ss.sent, t.Name, p.path)
			mu.Unlock()
			crashPoint("ship.sent")
			return nil
		})
	}
	return g.Wait()
}

// putTimeline records p's timeline on t, from the record kept beside it.
func (sh *Shipper) putTimeline(ctx context.Context, t *offsite.Target, p pendingSeg) error {
	b, err := os.ReadFile(filepath.Join(filepath.Dir(p.path), "timeline.json"))
	if err != nil {
		return fmt.Errorf("timeline record: %w", err)
	}
	var tl store.Timeline
	if err := json.Unmarshal(b, &tl); err != nil {
		return fmt.Errorf("timeline record: %w", err)
	}
	return t.PutTimeline(ctx, tl)
}

func mark(m map[string]map[string]bool, a, b string) {
	if m[a] == nil {
		m[a] = map[string]bool{}
	}
	m[a][b] = true
}

// bound drops the oldest local segments while they hold more than
// Buffer bytes: the store keeps taking writes, and what is dropped is a
// gap in its shipped log (Stats.Gaps), which restores refuse to cross.
func (ss *storeShip) bound(sh *Shipper) {
	var total int64
	for _, p := range ss.pending {
		total += p.size
	}
	for total > sh.cfg.Buffer && len(ss.pending) > 0 {
		p := ss.pending[0]
		// Recorded before the segment goes: a process that stops in
		// between announces it when it starts again.
		g := p.gap(sh.cfg.Now(), "")
		ss.recordGap(sh.log, g)
		crashPoint("ship.gap-recorded")
		if err := os.Remove(p.path); err != nil && !os.IsNotExist(err) {
			ss.forgetGap(sh.log, g)
			return
		}
		crashPoint("ship.gap-dropped")
		total -= p.size
		ss.pending = ss.pending[1:]
		sh.log.Error("commit log dropped: a target did not take it and the local buffer is full; restores cannot cross this gap until a new backup",
			"store", ss.name, "timeline", p.timeline, "from", p.first, "to", p.next, "since", p.stamp, "buffer", sh.cfg.Buffer)
	}
}

// Gap is a run of the commit log that was dropped before every target
// had it.
type Gap struct {
	Timeline string    `json:"timeline"`
	From     uint64    `json:"from"`
	To       uint64    `json:"to"`
	Since    time.Time `json:"since"` // its first write's commit time; zero when unknown (a damaged segment, a re-anchoring)
	// Before, when known, is a time its writes were all committed before:
	// the first kept write's, for a gap a re-anchoring found.
	Before  time.Time `json:"before,omitzero"`
	Dropped time.Time `json:"dropped"`
	// Cause is why, when not the buffer (--ship-buffer) running full while
	// a target was down: a local segment found damaged before any target
	// took it, or writes a re-anchoring found in no WAL and on no target.
	Cause string `json:"cause,omitempty"`
}

// Stats is what a store's shipping did and where it stands.
type Stats struct {
	Sealed       int   `json:"sealed"`
	Shipped      int   `json:"shipped"`
	ShippedBytes int64 `json:"shipped_bytes"` // as stored: compressed, before encryption
	Gaps         []Gap `json:"gaps,omitempty"`
	// Pending and PendingBytes: sealed segments not on every target yet.
	Pending      int   `json:"pending"`
	PendingBytes int64 `json:"pending_bytes"`
	// Lag per target: how long ago the oldest write it does not hold yet
	// was committed (for writes not read yet: since the last read of the
	// log began); 0 when it holds every committed write.
	Lag map[string]time.Duration `json:"lag"`
	// LogStart is when the store's commit log starts: its first
	// timeline's creation (store.Timeline.LogStart), or, for a restored
	// store, its timeline chain's first, once the shipper has read the
	// parents' records. No moment before it can be restored to.
	LogStart time.Time `json:"log_start,omitzero"`
}

// Stats returns a store's shipping state.
func (sh *Shipper) Stats(name string) Stats {
	ss := sh.storeShip(name)
	ss.mu.Lock()
	defer ss.mu.Unlock()
	st := ss.stats
	st.Gaps = slices.Clone(st.Gaps)
	st.Lag = map[string]time.Duration{}
	now := sh.cfg.Now()
	// Writes committed but not read yet were committed after the last
	// read began: while reading stalls, the lag grows from then.
	var unread time.Time
	if s, err := sh.reg.Store(name); err == nil {
		if tl, last := s.LastCommitted(); !ss.readAt.IsZero() && tl == ss.read.Timeline && last >= ss.read.Next {
			unread = ss.readAt
		}
		if tl, err := s.Timeline(); err == nil {
			if st.LogStart, _ = tl.LogStart(); ss.logStart.timeline == tl.ID {
				st.LogStart = ss.logStart.at // a restored store's, found by following its parents
			}
		}
	}
	// Without a sealed segment the target lacks, the oldest write it lacks
	// is the open segment's first, or one not read yet.
	notSealed := unread
	if len(ss.open) > 0 && (notSealed.IsZero() || ss.stamp.Before(notSealed)) {
		notSealed = ss.stamp
	}
	for _, t := range sh.cfg.Targets {
		oldest := notSealed
		for _, p := range ss.pending {
			if !ss.sent[t.Name][p.path] && !p.stamp.IsZero() {
				oldest = p.stamp // sealed before anything open or unread
				break
			}
		}
		if !oldest.IsZero() {
			st.Lag[t.Name] = max(0, now.Sub(oldest))
		} else {
			st.Lag[t.Name] = 0
		}
	}
	for _, p := range ss.pending {
		st.Pending++
		st.PendingBytes += p.size
	}
	return st
}

// crashHook, when set, is called at every named crash point; the crash
// tests set it in a child process to kill it there.
var crashHook func(point string)

func crashPoint(point string) {
	if crashHook != nil {
		crashHook(point)
	}
}
