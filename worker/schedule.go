package worker

import (
	"context"
	"errors"
	"fmt"
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
// rule): the next one comes.
func (s *scheduler) run(ctx context.Context) {
	next := map[jobs.Kind]time.Time{}
	clock := s.w.clock
	now := clock.Now().UTC()
	for k, sch := range s.kinds {
		if sch != nil {
			next[k] = sch.Next(now)
		}
	}
	s.publish(ctx, next, nil)
	for {
		if len(next) == 0 {
			<-ctx.Done()
			return
		}
		soonest := time.Time{}
		for _, t := range next {
			if soonest.IsZero() || t.Before(soonest) {
				soonest = t
			}
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
			s.fire(ctx, k, slot, s.kinds[k].Next(slot))
			next[k] = s.kinds[k].Next(maxTime(now, slot))
		}
		s.publish(ctx, next, fired)
	}
}

// fire enqueues kind for every owned store that is not paused, each after
// claiming the slot's key.
func (s *scheduler) fire(ctx context.Context, kind jobs.Kind, slot, following time.Time) {
	log := s.w.log.With("kind", kind, "slot", slot)
	ttl := max(following.Sub(slot), time.Second)
	paused, err := jobsdb.Paused(ctx, s.w.rdb)
	if err != nil {
		log.Warn("scheduled run skipped: Redis unavailable", "err", err)
		return
	}
	for _, name := range s.w.cfg.Registry.Names() {
		if _, ok := paused[name]; ok {
			log.Info("store paused: scheduled run skipped", "store", name)
			continue
		}
		if !s.w.serving(name) {
			log.Warn("store lost to another node: scheduled run skipped", "store", name)
			continue
		}
		won, err := jobsdb.ClaimSlot(ctx, s.w.rdb, kind, name, slot, s.w.lease.Instance, ttl)
		if err != nil {
			log.Warn("scheduled run skipped: claiming the slot failed", "store", name, "err", err)
			continue
		}
		if !won {
			log.Info("slot already run", "store", name)
			continue
		}
		res, err := s.w.jobs.Enqueue(ctx, jobs.Request{Kind: kind, Store: name, Trigger: jobs.TriggerScheduled, Actor: jobs.ActorScheduler})
		switch {
		case errors.Is(err, jobs.ErrRestoreInProgress):
			log.Info("scheduled run skipped: a restore is in progress", "store", name)
		case err != nil:
			log.Warn("scheduled run failed to enqueue", "store", name, "err", err)
		default:
			log.Info("scheduled run enqueued", "store", name, "job", res.Record.ID, "deduplicated", res.Deduplicated)
		}
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
	v := jobs.NodeSchedules{Node: s.w.cfg.Node, Stores: s.w.cfg.Registry.Names(), Kinds: maps.Clone(s.info), At: s.w.clock.Now().UTC()}
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
