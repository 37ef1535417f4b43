package worker

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"storekeeper/internal/keyspace"
	"storekeeper/internal/testsignal"
	"storekeeper/jobs"
	"storekeeper/jobsdb"
)

func TestParseSchedule(t *testing.T) {
	for _, bad := range []string{"", "daily", "* * *", "61 * * * *", "@every -1s"} {
		if _, err := parseSchedule(bad); err == nil {
			t.Errorf("parseSchedule(%q) accepted", bad)
		}
	}
	if s, err := parseSchedule("off"); err != nil || s != nil {
		t.Fatalf("off = %v, %v", s, err)
	}
	at := time.Date(2026, 11, 22, 10, 17, 3, 0, time.UTC)
	for spec, want := range map[string]time.Time{
		"0 3 * * *":     time.Date(2026, 11, 23, 3, 0, 0, 0, time.UTC),
		"0 */6 * * *":   time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC),
		"*/5 * * * * *": time.Date(2026, 11, 22, 10, 17, 5, 0, time.UTC),
		"@every 6h":     time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC), // epoch-aligned, not 16:17:03
		"@daily":        time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC),
	} {
		s, err := parseSchedule(spec)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.Next(at); !got.Equal(want) {
			t.Errorf("%s: next after %s = %s, want %s", spec, at, got, want)
		}
	}
	if _, err := New(Config{Redis: nil}); err == nil {
		t.Fatal("New without Redis accepted")
	}
}

// A seconds-scale schedule fires once per slot, with trigger scheduled and
// actor scheduler, even with a second scheduler racing it (another
// process of the node, or the same one restarted inside the slot). The
// clock is fake: each step moves it to the next slot, and both schedulers
// say when they have fired what was due and wait for the next one.
func TestScheduleFiresOncePerSlot(t *testing.T) {
	start := time.Date(2026, 11, 22, 10, 17, 3, 500*int(time.Millisecond), time.UTC)
	clock := clockwork.NewFakeClockAt(start)
	b := setupWith(t, options{worker: func(c *Config) {
		c.Schedules = map[jobs.Kind]string{jobs.KindVerify: "* * * * * *"}
		c.Clock = clock
	}}, func(w *Worker) { w.signals.scheduleWaiting.Init(t) }, "orders")
	second, err := newScheduler(b.w)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Go(func() { second.run(ctx) })

	// waitBoth waits for both schedulers to wait for slot.
	waitBoth := func(slot time.Time) {
		t.Helper()
		for range 2 {
			if got := b.w.signals.scheduleWaiting.Wait(); !got.Equal(slot) {
				t.Fatalf("a scheduler waits for %s, want %s", got, slot)
			}
		}
	}
	slot := start.Truncate(time.Second).Add(time.Second)
	waitBoth(slot)
	if runs := b.jobsOf(t, jobs.KindVerify, "orders"); len(runs) != 0 {
		t.Fatalf("%d runs before the first slot", len(runs))
	}
	const slots = 3
	for i := 1; i <= slots; i++ {
		clock.Advance(slot.Sub(clock.Now()))
		slot = slot.Add(time.Second)
		waitBoth(slot)
		runs := b.jobsOf(t, jobs.KindVerify, "orders")
		if len(runs) != i {
			t.Fatalf("%d scheduled runs after %d slot(s) of two schedulers, want %d", len(runs), i, i)
		}
		// Done before the next slot: an in-flight job would absorb the
		// next run as a duplicate.
		b.waitState(t, runs[i-1].ID, jobs.StateSucceeded)
	}
	for _, r := range b.jobsOf(t, jobs.KindVerify, "orders") {
		if r.Trigger != jobs.TriggerScheduled || r.Actor != jobs.ActorScheduler {
			t.Fatalf("scheduled job %+v", r)
		}
	}
	all, err := jobsdb.Schedules(t.Context(), b.rdb)
	if err != nil || len(all) != 1 || all[0].Node != "n1" {
		t.Fatalf("published schedules %+v, %v", all, err)
	}
	v := all[0].Kinds[jobs.KindVerify]
	if !v.Next.Equal(slot) || !v.Last.Equal(slot.Add(-time.Second)) || v.Spec != "* * * * * *" ||
		all[0].Kinds[jobs.KindCompact].Spec != DefaultSchedules[jobs.KindCompact] {
		t.Fatalf("verify schedule %+v, want next %s", all[0].Kinds, slot)
	}
}

// A slot runs once, restarts included; a paused store gets no scheduled
// job until it is resumed.
func TestScheduleSlotAndPause(t *testing.T) {
	b := setup(t, nil, "orders")
	s := b.w.sched
	slot := time.Now().UTC().Truncate(time.Hour)
	s.fire(t.Context(), jobs.KindVerify, slot, slot.Add(time.Hour))
	first := b.jobsOf(t, jobs.KindVerify, "orders")
	if len(first) != 1 {
		t.Fatalf("%d jobs after the first run of a slot", len(first))
	}
	b.waitState(t, first[0].ID, jobs.StateSucceeded)
	restarted, _ := newScheduler(b.w)
	restarted.fire(t.Context(), jobs.KindVerify, slot, slot.Add(time.Hour))
	if n := len(b.jobsOf(t, jobs.KindVerify, "orders")); n != 1 {
		t.Fatalf("the slot ran again: %d jobs", n)
	}

	if err := jobsdb.Pause(t.Context(), b.rdb, "orders", "alice"); err != nil {
		t.Fatal(err)
	}
	if err := jobsdb.Pause(t.Context(), b.rdb, "nosuch", "alice"); err == nil {
		t.Fatal("paused an unknown store")
	}
	s.fire(t.Context(), jobs.KindVerify, slot.Add(time.Hour), slot.Add(2*time.Hour))
	if n := len(b.jobsOf(t, jobs.KindVerify, "orders")); n != 1 {
		t.Fatalf("a paused store got a scheduled job")
	}
	// Manual jobs still run on a paused store.
	b.run(t, jobs.KindVerify, "orders", jobs.Params{})
	if err := jobsdb.Resume(t.Context(), b.rdb, "orders"); err != nil {
		t.Fatal(err)
	}
	s.fire(t.Context(), jobs.KindVerify, slot.Add(2*time.Hour), slot.Add(3*time.Hour))
	if n := len(b.jobsOf(t, jobs.KindVerify, "orders")); n != 3 {
		t.Fatalf("%d verify jobs after resume, want 3", n)
	}
}

// node.up when a node starts; node.down once when its heartbeat expires,
// however many processes notice.
func TestNodeEvents(t *testing.T) {
	b := setup(t, nil, "orders")
	b.waitEvent(t, jobs.EventNodeUp, "", func(e jobs.Event) bool { return e.Node == "n1" })
	gone := jobs.NodeInfo{Node: "n2", Host: "elsewhere", Instance: "x", At: time.Now().UTC()}
	if err := jobsdb.NodeUp(t.Context(), b.rdb, gone, 10*time.Millisecond, 1000); err != nil {
		t.Fatal(err)
	}
	// Redis expires the heartbeat on its own clock.
	testsignal.WaitFor(t, "n2's heartbeat expiring", func() bool {
		return b.rdb.Exists(t.Context(), keyspace.NodeKey("n2")).Val() == 0
	})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			if _, err := jobsdb.CheckNodes(t.Context(), b.rdb, 1000); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	evs, _ := jobsdb.ReadEvents(t.Context(), b.rdb, "0", 1000, 0)
	downs := 0
	for _, e := range evs {
		if e.Type == jobs.EventNodeDown {
			if e.Node != "n2" {
				t.Fatalf("node.down for %s", e.Node)
			}
			downs++
		}
	}
	if downs != 1 {
		t.Fatalf("%d node.down events, want 1", downs)
	}
	nodes, err := jobsdb.Nodes(t.Context(), b.rdb)
	if err != nil || len(nodes) != 2 {
		t.Fatalf("nodes %+v, %v", nodes, err)
	}
	for _, n := range nodes {
		if n.Up != (n.Node == "n1") {
			t.Fatalf("node %+v", n)
		}
	}
}

// With a spread, each store's run of a slot comes at its own time after
// the slot, in the order of those times; a scheduler that starts inside a
// slot's spread runs the stores whose time is still to come, and only
// those (the ones before it were missed while it was down: cron's rule).
func TestScheduleSpread(t *testing.T) {
	start := time.Date(2026, 11, 22, 10, 47, 3, 0, time.UTC) // past the 10:00 slot's spread
	clock := clockwork.NewFakeClockAt(start)
	const spread = 30 * time.Minute
	stores := []string{"a", "b", "c", "d"}
	b := setupWith(t, options{worker: func(c *Config) {
		c.Schedules = map[jobs.Kind]string{jobs.KindVerify: "off", jobs.KindBackup: "off", jobs.KindCompact: "off", jobs.KindDrill: "off"}
		c.ScheduleSpread = spread
		c.Clock = clock
	}}, func(w *Worker) { w.signals.scheduleWaiting.Init(t) }, stores...)
	hourly := func(ctx context.Context) (wait func()) {
		s, err := newScheduler(b.w)
		if err != nil {
			t.Fatal(err)
		}
		s.kinds[jobs.KindVerify] = epochAligned{time.Hour}
		done := make(chan struct{})
		go func() { defer close(done); s.run(ctx) }()
		return func() { <-done }
	}
	// The stores in the order of their times within slot.
	order := func(slot time.Time) ([]string, map[string]time.Time) {
		at := map[string]time.Time{}
		for _, name := range stores {
			at[name] = SpreadAt(name, jobs.KindVerify, slot, slot.Add(time.Hour), spread)
			if at[name].Before(slot) || !at[name].Before(slot.Add(spread)) {
				t.Fatalf("%s's time %s is outside the spread after %s", name, at[name], slot)
			}
		}
		names := slices.Clone(stores)
		slices.SortFunc(names, func(x, y string) int { return at[x].Compare(at[y]) })
		return names, at
	}
	expect := func(want time.Time) {
		t.Helper()
		if got := b.w.signals.scheduleWaiting.Wait(); !got.Equal(want) {
			t.Fatalf("the scheduler waits for %s, want %s", got, want)
		}
	}
	count := func(name string) int { return len(b.jobsOf(t, jobs.KindVerify, name)) }

	ctx, stop := context.WithCancel(t.Context())
	wait := hourly(ctx)
	slot := start.Truncate(time.Hour).Add(time.Hour)
	expect(slot)
	clock.Advance(slot.Sub(clock.Now()))
	names, at := order(slot)
	for i, name := range names {
		expect(at[name])
		for _, later := range names[i:] {
			if n := count(later); n != 0 {
				t.Fatalf("%s has %d runs before its time %s", later, n, at[later])
			}
		}
		clock.Advance(at[name].Sub(clock.Now()))
	}
	expect(slot.Add(time.Hour))
	for _, name := range stores {
		runs := b.jobsOf(t, jobs.KindVerify, name)
		if len(runs) != 1 {
			t.Fatalf("%s: %d runs of the first slot, want 1", name, len(runs))
		}
		b.waitState(t, runs[0].ID, jobs.StateSucceeded)
	}
	stop()
	wait()

	// Down over the next slot and the first two stores' times in it.
	slot = slot.Add(time.Hour)
	names, at = order(slot)
	clock.Advance(at[names[1]].Add(time.Second).Sub(clock.Now()))
	ctx, stop = context.WithCancel(t.Context())
	defer stop()
	hourly(ctx)
	for _, name := range names[2:] {
		expect(at[name])
		clock.Advance(at[name].Sub(clock.Now()))
	}
	expect(slot.Add(time.Hour))
	for i, name := range names {
		want := 1
		if i >= 2 {
			want = 2
		}
		if n := count(name); n != want {
			t.Fatalf("%s: %d runs, want %d (its time %s, the scheduler started at %s)", name, n, want, at[name], at[names[1]].Add(time.Second))
		}
	}
}

// SpreadAt spreads stores flatly over the window, whatever their names
// (a fleet's names differ in a digit or two), and caps it at the time to
// the following slot.
func TestSpreadAtIsFlat(t *testing.T) {
	slot := time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)
	const n, buckets = 20000, 20
	var count [buckets]int
	for i := range n {
		at := SpreadAt(fmt.Sprintf("store-%05d", i), jobs.KindBackup, slot, slot.Add(6*time.Hour), time.Hour)
		off := at.Sub(slot)
		if off < 0 || off >= time.Hour {
			t.Fatalf("offset %s outside the hour", off)
		}
		count[int(off*buckets/time.Hour)]++
	}
	for i, c := range count {
		if c < n/buckets*8/10 || c > n/buckets*12/10 {
			t.Fatalf("bucket %d of %d holds %d of %d stores: %v", i, buckets, c, n, count)
		}
	}
	if off := SpreadAt("a", jobs.KindVerify, slot, slot.Add(time.Minute), time.Hour).Sub(slot); off >= time.Minute {
		t.Fatalf("offset %s with a minute to the next slot", off)
	}
}
