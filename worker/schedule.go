package worker

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/robfig/cron/v3"

	"storekeeper/jobs"
	"storekeeper/jobsdb"
)

// specParser reads five-field specs, six with seconds first, and the
// descriptors (@daily, @every 6h).
var specParser = cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// schedule is a parsed spec; nil means off.
type schedule interface{ Next(time.Time) time.Time }

// epochAligned runs every Delay at multiples of Delay since the Unix
// epoch: robfig's @every counts from whenever it is asked, so two
// processes (or one process before and after a restart) would disagree
// on the slots and could both run.
type epochAligned struct{ every time.Duration }

func (e epochAligned) Next(t time.Time) time.Time {
	return t.Truncate(e.every).Add(e.every)
}

func parseSchedule(spec string) (schedule, error) {
	if spec == "off" {
		return nil, nil
	}
	s, err := specParser.Parse(spec)
	if err != nil {
		return nil, fmt.Errorf("%q is not a cron spec or off: %w", spec, err)
	}
	if d, ok := s.(cron.ConstantDelaySchedule); ok {
		if every, err := time.ParseDuration(strings.TrimSpace(strings.TrimPrefix(spec, "@every"))); err != nil || every < time.Second {
			return nil, fmt.Errorf("%q: @every needs a duration of at least 1s", spec)
		}
		return epochAligned{d.Delay}, nil
	}
	return s, nil
}

// scheduler runs each kind's schedule for the stores this node owns.
type scheduler struct {
	w     *Worker
	kinds map[jobs.Kind]schedule
	specs map[jobs.Kind]string

	mu   sync.Mutex
	info map[jobs.Kind]jobs.ScheduleInfo
}

func newScheduler(w *Worker) (*scheduler, error) {
	s := &scheduler{w: w, kinds: map[jobs.Kind]schedule{}, specs: w.cfg.Schedules, info: map[jobs.Kind]jobs.ScheduleInfo{}}
	for k, spec := range w.cfg.Schedules {
		sch, err := parseSchedule(spec)
		if err != nil {
			return nil, err
		}
		s.kinds[k] = sch
		s.info[k] = jobs.ScheduleInfo{Spec: spec}
	}
	return s, nil
}

// run fires every kind's slots until ctx ends. A slot is the time the spec
// names; slots missed while the node was down are not made up (cron's
// rule): the next one comes. With Config.ScheduleSpread each store's run
// of a slot comes at its own time within the spread (SpreadAt), so that a
// node with many stores, and a deployment with many nodes, does not
// enqueue them all at the same instant; a node that starts inside a
// slot's spread runs the stores whose time is still to come.
func (s *scheduler) run(ctx context.Context) {
	next := map[jobs.Kind]time.Time{}
	var pending []dueRun // sorted by at
	clock := s.w.clock
	now := clock.Now().UTC()
	for k, sch := range s.kinds {
		if sch == nil {
			continue
		}
		next[k] = sch.Next(now)
		if spread := s.w.cfg.ScheduleSpread; spread > 0 {
			// Only the last slot at or before now can have a spread that
			// reaches past now: a spread ends before the following slot.
			var last time.Time
			for slot := sch.Next(now.Add(-spread)); !slot.IsZero() && !slot.After(now); slot = sch.Next(slot) {
				last = slot
			}
			if !last.IsZero() {
				pending = s.expand(pending, k, last, sch.Next(last), now)
			}
		}
	}
	s.publish(ctx, next, nil)
	for {
		if len(next) == 0 && len(pending) == 0 {
			<-ctx.Done()
			return
		}
		soonest := time.Time{}
		for _, t := range next {
			if soonest.IsZero() || t.Before(soonest) {
				soonest = t
			}
		}
		if len(pending) > 0 && (soonest.IsZero() || pending[0].at.Before(soonest)) {
			soonest = pending[0].at
		}
		timer := clock.NewTimer(clock.Until(soonest))
		s.w.signals.scheduleWaiting.Signal(soonest)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.Chan():
		}
		now := clock.Now().UTC()
		fired := map[jobs.Kind]time.Time{}
		kinds := make([]jobs.Kind, 0, len(next))
		for k := range next {
			kinds = append(kinds, k)
		}
		slices.Sort(kinds) // a fixed order when several fall due together
		for _, k := range kinds {
			slot := next[k]
			if slot.After(now) {
				continue
			}
			fired[k] = slot
			following := s.kinds[k].Next(slot)
			if s.w.cfg.ScheduleSpread > 0 {
				pending = s.expand(pending, k, slot, following, slot.Add(-time.Nanosecond))
			} else {
				s.fire(ctx, k, slot, following)
			}
			next[k] = s.kinds[k].Next(maxTime(now, slot))
		}
		n := 0
		for n < len(pending) && !pending[n].at.After(now) {
			n++
		}
		if n > 0 {
			s.fireDue(ctx, pending[:n], now)
			pending = slices.Delete(pending, 0, n)
		}
		s.publish(ctx, next, fired)
	}
}

// dueRun is one store's run of a slot, at its time within the spread.
type dueRun struct {
	at              time.Time
	kind            jobs.Kind
	slot, following time.Time
	store           string
}

// SpreadAt is when store's run of kind's slot comes: a fixed fraction of
// the spread (at most the time to the following slot) after the slot, the
// same for every slot and on every node, from a hash of the store and the
// kind. Exported for make scale, which measures each scheduled job's
// lateness against it.
func SpreadAt(store string, kind jobs.Kind, slot, following time.Time, spread time.Duration) time.Time {
	window := min(spread, following.Sub(slot))
	if window <= 0 {
		return slot
	}
	h := fnv.New64a()
	h.Write([]byte(kind))
	h.Write([]byte{0})
	h.Write([]byte(store))
	// FNV alone leaves names that differ in their last byte (a, b, c)
	// within a hair of each other in the high bits; splitmix64's finalizer
	// spreads them.
	x := h.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	frac := float64(x>>11) / (1 << 53)
	return slot.Add(time.Duration(frac * float64(window)))
}

// expand adds to pending (sorted by time) the runs of kind's slot for the
// stores this node holds whose time is after after.
func (s *scheduler) expand(pending []dueRun, kind jobs.Kind, slot, following, after time.Time) []dueRun {
	for _, name := range s.w.stores.Names() {
		at := SpreadAt(name, kind, slot, following, s.w.cfg.ScheduleSpread)
		if !at.After(after) {
			continue
		}
		d := dueRun{at: at, kind: kind, slot: slot, following: following, store: name}
		i, _ := slices.BinarySearchFunc(pending, d, func(a, b dueRun) int { return a.at.Compare(b.at) })
		pending = slices.Insert(pending, i, d)
	}
	return pending
}

// fireDue runs the due runs (in time order), one Paused read for all.
func (s *scheduler) fireDue(ctx context.Context, due []dueRun, now time.Time) {
	paused, err := jobsdb.Paused(ctx, s.w.rdb)
	if err != nil {
		s.w.log.Warn("scheduled runs skipped: Redis unavailable", "runs", len(due), "err", err)
		return
	}
	for _, d := range due {
		s.fireStore(ctx, d.kind, d.slot, d.following, d.store, paused, now.Sub(d.at))
	}
}

// fire enqueues kind for every owned store that is not paused, each after
// claiming the slot's key.
func (s *scheduler) fire(ctx context.Context, kind jobs.Kind, slot, following time.Time) {
	paused, err := jobsdb.Paused(ctx, s.w.rdb)
	if err != nil {
		s.w.log.Warn("scheduled run skipped: Redis unavailable", "kind", kind, "slot", slot, "err", err)
		return
	}
	late := s.w.clock.Now().Sub(slot)
	for _, name := range s.w.stores.Names() {
		s.fireStore(ctx, kind, slot, following, name, paused, late)
	}
}

// fireStore enqueues kind's slot for one store unless it is paused or no
// longer this node's, after claiming the slot's key (so that a slot runs
// once per store, whichever node or process gets there). late is how long
// after the store's time for the slot this is.
func (s *scheduler) fireStore(ctx context.Context, kind jobs.Kind, slot, following time.Time, name string, paused map[string]jobs.PauseInfo, late time.Duration) {
	log := s.w.log.With("kind", kind, "slot", slot, "store", name)
	ttl := max(following.Sub(slot), time.Second)
	if _, ok := paused[name]; ok {
		log.Info("store paused: scheduled run skipped")
		return
	}
	if !s.w.serving(name) {
		log.Warn("store lost to another node: scheduled run skipped")
		return
	}
	won, err := jobsdb.ClaimSlot(ctx, s.w.rdb, kind, name, slot, s.w.lease.Instance, ttl)
	if err != nil {
		log.Warn("scheduled run skipped: claiming the slot failed", "err", err)
		return
	}
	if !won {
		log.Info("slot already run")
		return
	}
	res, err := s.w.jobs.Enqueue(ctx, jobs.Request{Kind: kind, Store: name, Trigger: jobs.TriggerScheduled, Actor: jobs.ActorScheduler})
	switch {
	case errors.Is(err, jobs.ErrRestoreInProgress):
		log.Info("scheduled run skipped: a restore is in progress")
	case err != nil:
		log.Warn("scheduled run failed to enqueue", "err", err)
	default:
		log.Info("scheduled run enqueued", "job", res.Record.ID, "deduplicated", res.Deduplicated, "late", late)
	}
}

func (s *scheduler) publish(ctx context.Context, next, fired map[jobs.Kind]time.Time) {
	s.mu.Lock()
	for k, inf := range s.info {
		inf.Next = next[k]
		if t, ok := fired[k]; ok {
			inf.Last = t
		}
		s.info[k] = inf
	}
	v := jobs.NodeSchedules{Node: s.w.cfg.Node, Stores: s.w.stores.Names(), Kinds: maps.Clone(s.info), At: s.w.clock.Now().UTC()}
	s.mu.Unlock()
	if err := jobsdb.PublishSchedules(ctx, s.w.rdb, v); err != nil {
		s.w.log.Warn("publishing schedules failed", "err", err)
	}
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// ValidateSchedule checks a schedule spec: a cron spec or "off".
func ValidateSchedule(spec string) error {
	_, err := parseSchedule(spec)
	return err
}
