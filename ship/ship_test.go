package ship

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"storekeeper/internal/testsignal"
	"storekeeper/offsite"
	"storekeeper/store"
)

// node is one registry with a shipper over a file target.
type node struct {
	reg    *store.Registry
	sh     *Shipper
	target *offsite.Target
	dirs   nodeDirs
}

type nodeDirs struct{ data, backups, ship, target string }

func newDirs(t *testing.T) nodeDirs {
	return nodeDirs{data: t.TempDir(), backups: t.TempDir(), ship: t.TempDir(), target: t.TempDir()}
}

// targetDown makes d's file target fail: its directory becomes a file
// (an error, not a test failure, so the crash tests' children can call
// it). targetBack undoes it.
func (d nodeDirs) targetDown() error {
	if err := os.Rename(d.target, d.target+".away"); err != nil {
		return err
	}
	return os.WriteFile(d.target, nil, 0o644)
}

func (d nodeDirs) targetBack(t *testing.T) {
	t.Helper()
	if err := os.Remove(d.target); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(d.target+".away", d.target); err != nil {
		t.Fatal(err)
	}
}

// waitingSegment is the one segment of d's store waiting locally.
func (d nodeDirs) waitingSegment(t *testing.T) string {
	t.Helper()
	waiting, _ := filepath.Glob(filepath.Join(d.ship, "orders", "pending", "*", "*"))
	waiting = slices.DeleteFunc(waiting, func(p string) bool { return strings.HasSuffix(p, ".json") })
	if len(waiting) != 1 {
		t.Fatalf("segments waiting: %v, want one", waiting)
	}
	return waiting[0]
}

func logger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.DiscardHandler)
}

func startNode(t *testing.T, d nodeDirs, cfg Config) *node {
	t.Helper()
	reg, err := store.Open(store.Config{
		DataDir: d.data, BackupDir: d.backups, Stores: []string{"orders"}, Ship: true, NoSync: true,
		Retention:     store.Retention{Last: 100},
		PebbleOptions: func(string) *pebble.Options { return &pebble.Options{MemTableSize: 256 << 10} },
		Logger:        logger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	tg, err := offsite.Open(context.Background(), "t1", "file://"+d.target, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Dir, cfg.Targets, cfg.Logger = d.ship, []*offsite.Target{tg}, logger(t)
	sh, err := New(cfg, reg)
	if err != nil {
		t.Fatal(err)
	}
	n := &node{reg: reg, sh: sh, target: tg, dirs: d}
	t.Cleanup(func() { _ = reg.Close(); _ = tg.Close() })
	return n
}

func (n *node) store(t *testing.T) *store.Store {
	s, err := n.reg.Store("orders")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// content is a store's keys and values.
func content(t *testing.T, s *store.Store) map[string]string {
	t.Helper()
	out := map[string]string{}
	if err := s.Scan(context.Background(), nil, nil, func(k, v []byte) error {
		out[string(k)] = string(v)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// model is what a writer's keys hold, op by op.
type model struct {
	mu    sync.Mutex
	state map[string]string
}

func (m *model) apply(ops []op) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, o := range ops {
		switch o.kind {
		case "set":
			m.state[o.key] = o.value
		case "delete":
			delete(m.state, o.key)
		case "range":
			for k := range m.state {
				if k >= o.key && k < o.end {
					delete(m.state, k)
				}
			}
		}
	}
}

func (m *model) snapshot() map[string]string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return maps.Clone(m.state)
}

type op struct{ kind, key, end, value string }

// randomOps makes one commit's operations on writer w's keys.
func randomOps(rng *rand.Rand, w, n int) []op {
	key := func() string { return fmt.Sprintf("w%d/%03d", w, rng.IntN(60)) }
	var ops []op
	for range 1 + rng.IntN(4) {
		switch r := rng.IntN(10); {
		case r < 6:
			ops = append(ops, op{kind: "set", key: key(), value: fmt.Sprintf("v%d-%d", w, n)})
		case r < 9:
			ops = append(ops, op{kind: "delete", key: key()})
		default:
			a, b := key(), key()
			if a > b {
				a, b = b, a
			}
			ops = append(ops, op{kind: "range", key: a, end: b})
		}
	}
	return ops
}

func commit(s *store.Store, ops []op) error {
	if len(ops) == 1 && ops[0].kind == "set" {
		return s.Set([]byte(ops[0].key), []byte(ops[0].value))
	}
	return s.Update(func(b *store.Batch) error {
		for _, o := range ops {
			var err error
			switch o.kind {
			case "set":
				err = b.Set([]byte(o.key), []byte(o.value))
			case "delete":
				err = b.Delete([]byte(o.key))
			case "range":
				err = b.DeleteRange([]byte(o.key), []byte(o.end))
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
}

// moment is a point where no commit was in flight, and what every
// writer's keys held then.
type moment struct {
	at    time.Time
	state map[string]string
}

// TestRestoreToAnyMomentMatchesTheModel is the model-based proof: writers
// commit random sets, deletes, range deletes and batches concurrently
// (each on its own keys, so the model needs no order between writers,
// while their commits interleave in the log); at random moments every
// writer is paused between commits and the model's state recorded;
// backups are taken along the way. Then the store is restored to each
// moment, in random order, and must hold exactly the model's state then:
// every write committed before it, none after, across many segment
// boundaries, several backups and the timelines the restores start.
// make test runs a short version; make chaos a long one
// (STOREKEEPER_LONG=1).
func TestRestoreToAnyMomentMatchesTheModel(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	n := startNode(t, newDirs(t), Config{Interval: 5 * time.Millisecond, SegmentSize: 2048})
	s := n.store(t)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	shipped := make(chan struct{})
	go func() { defer close(shipped); n.sh.Run(ctx) }()

	writers, moments, commits := 3, 12, 1500
	if os.Getenv("STOREKEEPER_LONG") == "1" {
		writers, moments, commits = 6, 80, 40000
	}
	m := &model{state: map[string]string{}}
	if _, err := s.Backup(context.Background()); err != nil {
		t.Fatal(err)
	}
	var pause sync.RWMutex // writers hold it shared per commit; a moment takes it whole
	var wg sync.WaitGroup
	done := make(chan struct{})
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			for i := range commits {
				select {
				case <-done:
					return
				default:
				}
				ops := randomOps(rng, w, i)
				pause.RLock()
				err := commit(s, ops)
				if err == nil {
					m.apply(ops)
				}
				pause.RUnlock()
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	rng := rand.New(rand.NewPCG(seed, 99))
	var ms []moment
	for i := range moments {
		// Let writes pile up across several segments between moments.
		for range 50 + rng.IntN(100) {
			if err := s.Set([]byte("filler"), fmt.Appendf(nil, "%d", i)); err != nil {
				t.Fatal(err)
			}
		}
		pause.Lock()
		// The filler key is written by this goroutine only, outside the
		// writers' keys: the model holds it too.
		m.apply([]op{{kind: "set", key: "filler", value: fmt.Sprint(i)}})
		ms = append(ms, moment{at: time.Now(), state: m.snapshot()})
		pause.Unlock()
		if i%4 == 1 {
			if _, err := s.Backup(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
	}
	close(done)
	wg.Wait()
	if t.Failed() {
		return
	}
	// Every write shipped, however far the shipper fell behind.
	wctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := s.WaitShipped(wctx); err != nil {
		t.Fatalf("WaitShipped: %v (%+v)", err, n.sh.Stats("orders"))
	}
	stop()
	<-shipped
	st := n.sh.Stats("orders")
	t.Logf("shipped %d segments (%d bytes), %d pending", st.Shipped, st.ShippedBytes, st.Pending)
	if st.Shipped < 10 {
		t.Fatalf("only %d segments shipped: the test crossed too few boundaries", st.Shipped)
	}

	// The target holds the whole log: no hole, through the last commit.
	tl, last := s.LastCommitted()
	segs, err := n.target.Segments(context.Background(), "orders", tl)
	if err != nil || len(segs) == 0 {
		t.Fatalf("segments: %d, %v", len(segs), err)
	}
	next := segs[0].First
	for _, sg := range segs {
		if sg.First > next {
			t.Fatalf("hole in the shipped log: nothing from %d to %d", next, sg.First)
		}
		next = max(next, sg.Next)
	}
	if next != last+1 {
		t.Fatalf("the shipped log ends before %d; the last commit is %d", next, last)
	}
	// Restore to each moment, in random order: each restore starts a new
	// timeline, so the later ones find the moments on the parent.
	for _, i := range rng.Perm(len(ms)) {
		mo := ms[i]
		res, plan, err := n.sh.RestoreAt(context.Background(), "orders", "", mo.at)
		if err != nil {
			t.Fatalf("moment %d: %v", i, err)
		}
		got := content(t, s)
		if !maps.Equal(got, mo.state) {
			t.Fatalf("moment %d (backup %s, %d steps): restored %d keys, the model held %d; first difference: %s",
				i, plan.Backup.ID, len(plan.Steps), len(got), len(mo.state), firstDiff(got, mo.state))
		}
		if res.Log == nil || res.Log.LastWriteAt.After(mo.at) {
			t.Fatalf("moment %d: replay result %+v", i, res.Log)
		}
	}
}

func firstDiff(a, b map[string]string) string {
	keys := slices.Sorted(maps.Keys(a))
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		va, oka := a[k]
		vb, okb := b[k]
		if va != vb || oka != okb {
			return fmt.Sprintf("%s: restored %q (%v), model %q (%v)", k, va, oka, vb, okb)
		}
	}
	return "none"
}

// TestRestoreFollowsTheNewTimeline: restore to a past point, keep
// writing, then restore to a point after the first restore: the result
// is the first restore's state plus the writes made since, not the old
// timeline's later writes.
func TestRestoreFollowsTheNewTimeline(t *testing.T) {
	n := startNode(t, newDirs(t), Config{Interval: time.Millisecond, SegmentSize: 1024})
	s := n.store(t)
	ctx := context.Background()
	set := func(k, v string) {
		t.Helper()
		if err := s.Set([]byte(k), []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	set("a", "1")
	if _, err := s.Backup(ctx); err != nil {
		t.Fatal(err)
	}
	set("b", "1")
	t1 := time.Now()
	set("c", "old-timeline")
	if err := n.sh.Drain(ctx, "orders"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := n.sh.RestoreAt(ctx, "orders", "", t1); err != nil {
		t.Fatal(err)
	}
	if got := content(t, s); !maps.Equal(got, map[string]string{"a": "1", "b": "1"}) {
		t.Fatalf("first restore: %v", got)
	}
	set("d", "new-timeline")
	t2 := time.Now()
	set("e", "after-t2")
	if err := n.sh.Drain(ctx, "orders"); err != nil {
		t.Fatal(err)
	}
	_, plan, err := n.sh.RestoreAt(ctx, "orders", "", t2)
	if err != nil {
		t.Fatal(err)
	}
	if got := content(t, s); !maps.Equal(got, map[string]string{"a": "1", "b": "1", "d": "new-timeline"}) {
		t.Fatalf("second restore (plan %+v): %v", plan.Steps, got)
	}
	// And the old timeline is still there for a moment before the first
	// restore.
	if _, _, err := n.sh.RestoreAt(ctx, "orders", "", time.Now().Add(-time.Hour)); !errors.Is(err, ErrNoPoint) {
		t.Fatalf("restore to before the log began: %v, want ErrNoPoint", err)
	}
}

// TestWaitShippedReturnsOnceOnTheTarget: WaitShipped returns only when
// the write is in a segment on the target, without forcing a seal.
func TestWaitShippedReturnsOnceOnTheTarget(t *testing.T) {
	n := startNode(t, newDirs(t), Config{Interval: 20 * time.Millisecond})
	s := n.store(t)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	go n.sh.Run(ctx)
	if err := s.Set([]byte("k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := s.WaitShipped(ctx); err != nil {
		t.Fatal(err)
	}
	tl, _ := s.Timeline()
	segs, err := n.target.Segments(ctx, "orders", tl.ID)
	if err != nil || len(segs) == 0 {
		t.Fatalf("after WaitShipped the target holds %d segments (%v)", len(segs), err)
	}
	found := false
	for _, sg := range segs {
		data, err := n.target.ReadSegment(ctx, "orders", sg)
		if err != nil {
			t.Fatal(err)
		}
		_ = eachBatch(data, func(b store.LogBatch) error {
			if b.Count > 0 {
				found = true
			}
			return nil
		})
	}
	if !found {
		t.Fatal("the write is in no segment on the target")
	}
}

// Retention: once the timeline and a backup are older than the window,
// the segments before the backup and those of older timelines go from the
// target; a restore to any moment inside the window still works.
func TestCollectKeepsWhatTheWindowNeeds(t *testing.T) {
	now := time.Now()
	clock := func() time.Time { return now }
	n := startNode(t, newDirs(t), Config{Interval: time.Millisecond, SegmentSize: 512, Window: time.Hour, CollectEvery: 1000 * time.Hour, Now: clock})
	s := n.store(t)
	ctx := context.Background()
	write := func(prefix string, count int) {
		t.Helper()
		for i := range count {
			if err := s.Set(fmt.Appendf(nil, "%s%03d", prefix, i), []byte("v")); err != nil {
				t.Fatal(err)
			}
		}
		if err := n.sh.Drain(ctx, "orders"); err != nil {
			t.Fatal(err)
		}
	}
	write("a", 50)
	if _, err := s.Backup(ctx); err != nil {
		t.Fatal(err)
	}
	// A restore starts a second timeline; the first keeps its segments.
	if _, _, err := n.sh.RestoreAt(ctx, "orders", "", time.Now()); err != nil {
		t.Fatal(err)
	}
	write("b", 50)
	b2, err := s.Backup(ctx)
	if err != nil {
		t.Fatal(err)
	}
	write("c", 50)
	tl, _ := s.Timeline()
	count := func() (cur, other int) {
		ids, err := n.target.LogTimelines(ctx, "orders")
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range ids {
			segs, _ := n.target.Segments(ctx, "orders", id)
			if id == tl.ID {
				cur += len(segs)
			} else {
				other += len(segs)
			}
		}
		return cur, other
	}
	cur0, other0 := count()
	if other0 == 0 || cur0 == 0 {
		t.Fatalf("before: %d segments on the current timeline, %d on the first", cur0, other0)
	}
	// Inside the window nothing goes.
	if c, err := n.sh.Collect(ctx, "orders"); err != nil || c.Segments != 0 {
		t.Fatalf("collect inside the window: %+v, %v", c, err)
	}
	// An hour and a bit later: the second backup anchors the window.
	now = now.Add(time.Hour + time.Minute)
	c, err := n.sh.Collect(ctx, "orders")
	if err != nil {
		t.Fatal(err)
	}
	cur1, other1 := count()
	if other1 != 0 || cur1 >= cur0 || c.Segments != other0+cur0-cur1 {
		t.Fatalf("after: %d/%d segments left (were %d/%d), collected %+v", cur1, other1, cur0, other0, c)
	}
	segs, _ := n.target.Segments(ctx, "orders", tl.ID)
	if segs[0].Next <= b2.Backup.LogSeq+1 {
		t.Fatalf("a segment before the anchor (%d) is left: %+v", b2.Backup.LogSeq, segs[0])
	}
	// A restore to the moment after the "b" writes still works.
	res, _, err := n.sh.RestoreAt(ctx, "orders", "", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if got := content(t, s); len(got) != 150 || res.Log == nil {
		t.Fatalf("restore after collection: %d keys, %+v", len(got), res.Log)
	}
}

// The lag counts writes the shipper has not read yet: while reading
// stalls, it grows from the last read, not from the last segment.
func TestLagCountsUnreadWrites(t *testing.T) {
	now := time.Now()
	n := startNode(t, newDirs(t), Config{Now: func() time.Time { return now }})
	s := n.store(t)
	ctx := context.Background()
	if err := n.sh.Drain(ctx, "orders"); err != nil {
		t.Fatal(err)
	}
	if lag := n.sh.Stats("orders").Lag["t1"]; lag != 0 {
		t.Fatalf("lag %v with everything shipped", lag)
	}
	if err := s.Set([]byte("k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	now = now.Add(10 * time.Second) // no tick meanwhile: the write is not read
	if lag := n.sh.Stats("orders").Lag["t1"]; lag < 10*time.Second {
		t.Fatalf("lag %v with a write unread for 10 s", lag)
	}
	if err := n.sh.Drain(ctx, "orders"); err != nil {
		t.Fatal(err)
	}
	if lag := n.sh.Stats("orders").Lag["t1"]; lag != 0 {
		t.Fatalf("lag %v after the write was shipped", lag)
	}
}

// stallClock is an injected clock for the stall tests.
type stallClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *stallClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

func (c *stallClock) advance(d time.Duration) { c.mu.Lock(); defer c.mu.Unlock(); c.now = c.now.Add(d) }

// stallNode starts a node whose shipper runs on an injected clock, with a
// backup of its store taken (a restore's base).
func stallNode(t *testing.T) (*stallClock, nodeDirs, *node, *store.Store) {
	t.Helper()
	clock := &stallClock{now: time.Now()}
	d := newDirs(t)
	n := startNode(t, d, Config{Now: clock.Now, SegmentSize: 1 << 20})
	s := n.store(t)
	if _, err := s.Backup(context.Background()); err != nil {
		t.Fatal(err)
	}
	return clock, d, n, s
}

// restartShipper starts a second shipper on n's registry, directories
// and target, as a process started again would, on clock. announced
// returns the gaps it has announced so far.
func restartShipper(t *testing.T, d nodeDirs, n *node, clock *stallClock) (sh *Shipper, announced func() []Gap) {
	t.Helper()
	sh, err := New(Config{Dir: d.ship, Targets: []*offsite.Target{n.target}, Now: clock.Now, SegmentSize: 1 << 20, Logger: logger(t)}, n.reg)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var gaps []Gap
	sh.OnGap(func(_ string, g Gap) error { mu.Lock(); defer mu.Unlock(); gaps = append(gaps, g); return nil })
	return sh, func() []Gap { mu.Lock(); defer mu.Unlock(); return slices.Clone(gaps) }
}

// stallPastTheLimit drains sh, whose log stalls, once, and again
// logStallLimit later: the first tick must not fail yet, and the second
// must go on.
func stallPastTheLimit(t *testing.T, sh *Shipper, clock *stallClock) {
	t.Helper()
	if err := sh.Drain(context.Background(), "orders"); err != nil {
		t.Fatalf("a stall shorter than the limit fails the tick: %v", err)
	}
	clock.advance(logStallLimit)
	if err := sh.Drain(context.Background(), "orders"); err != nil {
		t.Fatalf("after %v stalled the tick fails instead of going on: %v", logStallLimit, err)
	}
}

// writeKeys sets count keys named prefix and a number, 1000-byte values.
func writeKeys(t *testing.T, s *store.Store, prefix string, count int) {
	t.Helper()
	val := make([]byte, 1000)
	for i := range count {
		if err := s.Set(fmt.Appendf(nil, "%s%05d", prefix, i), val); err != nil {
			t.Fatal(err)
		}
	}
}

// shipUntilOneWAL drains sh until the store keeps only its newest WAL
// (Pebble archives a flushed WAL some time after its flush, and only an
// archived one is trimmed). A drain may fail (a target down): the WALs
// are trimmed once sealed locally, shipped or not.
func shipUntilOneWAL(t *testing.T, sh *Shipper, s *store.Store) {
	t.Helper()
	testsignal.WaitFor(t, "every WAL but the newest trimmed", func() bool {
		_ = sh.Drain(context.Background(), "orders")
		live, _ := filepath.Glob(filepath.Join(s.Dir(), "*.log"))
		archived, _ := filepath.Glob(filepath.Join(s.Dir(), "archive", "*.log"))
		return len(live)+len(archived) == 1
	})
}

// shippedThrough is the sequence number after the newest segment of the
// store's current timeline on n's target.
func shippedThrough(t *testing.T, n *node, s *store.Store) uint64 {
	t.Helper()
	tl, err := s.Timeline()
	if err != nil {
		t.Fatal(err)
	}
	segs, err := n.target.Segments(context.Background(), "orders", tl.ID)
	if err != nil {
		t.Fatal(err)
	}
	var next uint64
	for _, sg := range segs {
		next = max(next, sg.Next)
	}
	return next
}

// Reads that stop short of what the log synced are not progress: the lag
// grows from the last read that was complete. Once they have stopped at
// the same place for logStallLimit, the log does not go on from the
// cursor, and the shipper goes on from where it does. Seen with a cursor
// lost (state.json removed by hand, or torn by a crash before it was
// replaced whole): the new cursor's first batch is in no WAL kept, every
// read stopped there, and the shipper shipped nothing while its lag read
// as zero; then, once the lag said so, it failed every tick for good.
// Nothing is lost here (the target holds every batch before the first
// one kept), so no gap is announced, and a restore to now has every
// write.
func TestALostCursorStallsThenShippingGoesOn(t *testing.T) {
	t.Run("removed", func(t *testing.T) {
		lostCursorGoesOn(t, func(path string) error { return os.Remove(path) })
	})
	// A cursor torn by an older version (it rewrote the file in place)
	// used to fail every tick; it is moved aside and counts as lost.
	t.Run("torn", func(t *testing.T) {
		var cursor string
		lostCursorGoesOn(t, func(path string) error {
			cursor = path
			return os.WriteFile(path, []byte(`{"sealed":{"timel`), 0o644)
		})
		if b, err := os.ReadFile(cursor + ".unreadable"); err != nil || string(b) != `{"sealed":{"timel` {
			t.Fatalf("the torn cursor was not kept aside: %q, %v", b, err)
		}
	})
}

func lostCursorGoesOn(t *testing.T, lose func(path string) error) {
	clock, d, n, s := stallNode(t)
	ctx := context.Background()
	writeKeys(t, s, "a", 2000) // WALs rotate, and go once read and shipped
	shipUntilOneWAL(t, n.sh, s)
	if err := lose(filepath.Join(d.ship, "orders", stateFile)); err != nil {
		t.Fatal(err)
	}
	sh, announced := restartShipper(t, d, n, clock)
	writeKeys(t, s, "b", 10)
	for range 2 {
		if err := sh.Drain(ctx, "orders"); err != nil {
			t.Fatalf("a stall shorter than the limit fails the tick: %v", err)
		}
	}
	clock.advance(10 * time.Second)
	if err := sh.Drain(ctx, "orders"); err != nil {
		t.Fatalf("a stall shorter than the limit fails the tick: %v", err)
	}
	if st := sh.Stats("orders"); st.Sealed != 0 {
		t.Fatalf("%d segments sealed from a log whose cursor's batch is gone: the test no longer shows what it is about", st.Sealed)
	}
	if lag := sh.Stats("orders").Lag["t1"]; lag < 10*time.Second {
		t.Fatalf("lag %v with nothing read for 10 s", lag)
	}
	before := shippedThrough(t, n, s)
	clock.advance(logStallLimit)
	if err := sh.Drain(ctx, "orders"); err != nil {
		t.Fatalf("after %v stalled the tick fails instead of going on: %v", 10*time.Second+logStallLimit, err)
	}
	if got := shippedThrough(t, n, s); got != before+10 {
		t.Fatalf("the target holds the log through %d, want %d: the ten writes after the stall, no more, no less", got, before+10)
	}
	if gaps, st := announced(), sh.Stats("orders"); len(gaps) != 0 || len(st.Gaps) != 0 || st.Lag["t1"] != 0 {
		t.Fatalf("gaps announced %+v, stats %+v: nothing was lost, and everything is shipped", gaps, st)
	}
	want := content(t, s)
	if _, _, err := sh.RestoreAt(ctx, "orders", "", time.Now()); err != nil {
		t.Fatal(err)
	}
	if got := content(t, s); !maps.Equal(got, want) {
		t.Fatalf("restored to now: %d keys, want %d (%s)", len(got), len(want), firstDiff(got, want))
	}
}

// When the shipping directory is lost with segments no target took yet
// (the target down, the WALs let go once the segments were sealed
// locally), those writes are gone: the stalled shipper goes on from the
// first batch the WALs keep and announces the hole between what the
// target holds and it as a gap, which a restore then refuses to cross.
func TestALostShippingDirectoryIsAGap(t *testing.T) {
	clock, d, n, s := stallNode(t)
	ctx := context.Background()
	writeKeys(t, s, "a", 10)
	if err := n.sh.Drain(ctx, "orders"); err != nil {
		t.Fatal(err)
	}
	held := shippedThrough(t, n, s)
	if err := d.targetDown(); err != nil {
		t.Fatal(err)
	}
	writeKeys(t, s, "c", 2000)
	shipUntilOneWAL(t, n.sh, s)
	if err := os.RemoveAll(filepath.Join(d.ship, "orders")); err != nil {
		t.Fatal(err)
	}
	d.targetBack(t)
	sh, announced := restartShipper(t, d, n, clock)
	writeKeys(t, s, "d", 10)
	stallPastTheLimit(t, sh, clock)
	gaps := announced()
	if len(gaps) != 1 || gaps[0].From != held || gaps[0].To <= held || !strings.Contains(gaps[0].Cause, "cursor") || gaps[0].Before.IsZero() {
		t.Fatalf("gaps announced: %+v, want one from %d, where the target's log ends", gaps, held)
	}
	tl, _ := s.Timeline()
	segs, err := n.target.Segments(ctx, "orders", tl.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(segs, func(sg offsite.Segment) bool { return sg.First == gaps[0].To }) {
		t.Fatalf("the target holds %+v: shipping did not go on from the first batch kept, %d", segs, gaps[0].To)
	}
	if _, _, err := sh.RestoreAt(ctx, "orders", "", time.Now()); !errors.Is(err, ErrGap) {
		t.Fatalf("a restore across the gap: %v, want ErrGap", err)
	}
}

// A timeline's local record (pending/<timeline>/timeline.json) torn by an
// older version, which rewrote it in place, made every send of the
// timeline's first segment to a target fail after a restart, so nothing
// shipped until the buffer filled and dropped it as a gap. The first tick
// of a process writes the current timeline's record whole again, from
// the store's own.
func TestATornTimelineRecordIsWrittenAgain(t *testing.T) {
	d := newDirs(t)
	n := startNode(t, d, Config{})
	s := n.store(t)
	ctx := context.Background()
	writeKeys(t, s, "a", 10)
	if err := n.sh.Drain(ctx, "orders"); err != nil {
		t.Fatal(err)
	}
	tl, err := s.Timeline()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d.ship, "orders", "pending", tl.ID, "timeline.json"), []byte(`{"id":"20`), 0o644); err != nil {
		t.Fatal(err)
	}
	sh, err := New(Config{Dir: d.ship, Targets: []*offsite.Target{n.target}, Logger: logger(t)}, n.reg)
	if err != nil {
		t.Fatal(err)
	}
	writeKeys(t, s, "b", 10)
	if err := sh.Drain(ctx, "orders"); err != nil {
		t.Fatalf("after a restart with the timeline's record torn: %v", err)
	}
	if got := shippedThrough(t, n, s); got != tl.Start+20 {
		t.Fatalf("the target's log ends at %d, want %d", got, tl.Start+20)
	}
}

// WALs removed by hand from the middle of the log (archived ones, not
// yet read) leave a hole after the cursor: the shipper reads up to it,
// stalls, and then goes on from the first batch kept after it, announcing
// the hole, and not from the first batch kept anywhere (that one is
// before the cursor, and going on from there went nowhere).
func TestWALsRemovedByHandAreAGap(t *testing.T) {
	clock, _, n, s := stallNode(t)
	var gaps []Gap
	n.sh.OnGap(func(_ string, g Gap) error { gaps = append(gaps, g); return nil })
	ctx := context.Background()
	writeKeys(t, s, "a", 10)
	if err := n.sh.Drain(ctx, "orders"); err != nil {
		t.Fatal(err)
	}
	held := shippedThrough(t, n, s)
	writeKeys(t, s, "c", 2000) // several WALs, not read yet
	archive := filepath.Join(s.Dir(), "archive")
	var archived []string
	testsignal.WaitFor(t, "three WALs archived", func() bool {
		archived, _ = filepath.Glob(filepath.Join(archive, "*.log"))
		return len(archived) >= 3
	})
	slices.Sort(archived) // by number: the first holds the cursor's batch
	for _, p := range archived[1:] {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
	stallPastTheLimit(t, n.sh, clock)
	if len(gaps) != 1 || gaps[0].From <= held || gaps[0].To <= gaps[0].From {
		t.Fatalf("gaps announced: %+v, want one after %d, the target's log before the c writes", gaps, held)
	}
	tl, _ := s.Timeline()
	segs, err := n.target.Segments(ctx, "orders", tl.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(segs, func(sg offsite.Segment) bool { return sg.Next == gaps[0].From }) ||
		!slices.ContainsFunc(segs, func(sg offsite.Segment) bool { return sg.First == gaps[0].To }) {
		t.Fatalf("the target holds %+v: want the log up to the gap's start, %d, and on from its end, %d", segs, gaps[0].From, gaps[0].To)
	}
	if got := shippedThrough(t, n, s); got != held+2000 {
		t.Fatalf("the target's log ends at %d, want %d: every c write but the lost ones", got, held+2000)
	}
}

// The shipper holds a store's writes (store.Store.HoldWrites) only while
// every target takes its segments: a write made while shipping is behind
// waits for the next tick; once a target fails, writes are not held.
func TestWritesHeldOnlyWhileShippingWorks(t *testing.T) {
	d := newDirs(t)
	n := startNode(t, d, Config{MaxLag: time.Nanosecond})
	s := n.store(t)
	ctx := context.Background()
	if err := n.sh.Drain(ctx, "orders"); err != nil {
		t.Fatal(err)
	}
	if err := s.Set([]byte("a"), []byte("v")); err != nil { // nothing unshipped before it: not held
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Set([]byte("b"), []byte("v")) }()
	testsignal.WaitFor(t, "the write held", func() bool { return s.HeldWrites() == 1 })
	if err := n.sh.Drain(ctx, "orders"); err != nil { // ships a
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// The target fails (its directory becomes a file): the next tick
	// fails, and from then on writes go through unheld, b unshipped.
	if err := d.targetDown(); err != nil {
		t.Fatal(err)
	}
	if err := n.sh.Drain(ctx, "orders"); err == nil {
		t.Fatal("a tick to a failed target succeeded")
	}
	for i := range 3 {
		if err := s.Set(fmt.Appendf(nil, "c%d", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.HeldWrites(); n != 1 {
		t.Fatalf("%d writes held, want only b: none while a target fails", n)
	}
}
