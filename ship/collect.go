package ship

import (
	"context"
	"fmt"
	"time"

	"storekeeper/store"
)

// Retention of the shipped log. A restore to a moment T at or after
// W = now - Window uses the newest backup of T's timeline with LogAt <= T
// and the log after it. So once the current timeline began at or before W
// and has a local backup B with LogAt <= W, no such restore needs a
// segment of it that ends at or before B's position, nor any segment of
// another timeline: Collect deletes those from every target. Until then
// it deletes nothing. It runs on the shipper's goroutine (never beside a
// send of the same store) and only when it can hold the store's use lock
// whole, so never beside a restore reading segments.

// Collected is what one collection deleted.
type Collected struct {
	Segments int
	Bytes    int64
}

// Collect runs a collection of one store's shipped log now.
func (sh *Shipper) Collect(ctx context.Context, name string) (Collected, error) {
	s, err := sh.reg.Store(name)
	if err != nil {
		return Collected{}, err
	}
	tl, err := s.Timeline()
	if err != nil {
		return Collected{}, err
	}
	ss := sh.storeShip(name)
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return sh.collect(ctx, s, ss, tl)
}

func (sh *Shipper) collect(ctx context.Context, s *store.Store, ss *storeShip, tl store.Timeline) (Collected, error) {
	var c Collected
	w := sh.cfg.Now().Add(-sh.cfg.Window)
	if tl.Created.After(w) {
		return c, nil // moments in the window may be on an older timeline
	}
	backups, err := s.Backups()
	if err != nil {
		return c, err
	}
	var anchor *store.BackupInfo
	for i := range backups {
		b := &backups[i]
		if !b.Bad && b.Timeline == tl.ID && !b.LogAt.IsZero() && !b.LogAt.After(w) && (anchor == nil || b.LogSeq > anchor.LogSeq) {
			anchor = b
		}
	}
	if anchor == nil {
		return c, nil
	}
	if !ss.use.TryLock() {
		// A restore is reading segments (and may wait for ss.mu, which
		// the caller holds): collect at the next tick.
		ss.collected = time.Time{}
		return c, nil
	}
	defer ss.use.Unlock()
	var errs []error
	for _, t := range sh.cfg.Targets {
		timelines, err := t.LogTimelines(ctx, ss.name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, id := range timelines {
			segs, err := t.Segments(ctx, ss.name, id)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			for _, sg := range segs {
				if id == tl.ID && sg.Next > anchor.LogSeq+1 {
					continue
				}
				if err := t.DeleteSegment(ctx, ss.name, sg); err != nil {
					errs = append(errs, err)
					continue
				}
				c.Segments++
				c.Bytes += sg.Size
			}
		}
	}
	if c.Segments > 0 {
		sh.log.Info("shipped segments collected", "store", ss.name, "segments", c.Segments, "bytes", c.Bytes,
			"window", sh.cfg.Window, "anchor", anchor.ID)
	}
	if len(errs) > 0 {
		return c, fmt.Errorf("collect %s: %w (and %d more)", ss.name, errs[0], len(errs)-1)
	}
	return c, nil
}
