package worker

import (
	"context"
	"sync"
	"time"

	"storekeeper/jobs"
	"storekeeper/store"
)

// Progress is published as job.progress at most every progressEvery, and
// on a phase change at most every progressMin: a few events per second per
// job, whatever the store reports.
const (
	progressEvery = 250 * time.Millisecond
	progressMin   = 100 * time.Millisecond
)

// progressReporter turns a store operation's progress into throttled
// job.progress events; base builds the event's common fields.
func (w *Worker) progressReporter(ctx context.Context, base func(jobs.EventType) jobs.Event) store.ProgressFunc {
	var (
		mu    sync.Mutex
		last  time.Time
		phase string
	)
	return func(p string, done, total int64) {
		mu.Lock()
		now := time.Now()
		since := now.Sub(last)
		if since < progressMin || (p == phase && since < progressEvery) {
			mu.Unlock()
			return
		}
		last, phase = now, p
		mu.Unlock()
		e := base(jobs.EventJobProgress)
		e.Phase, e.Done, e.Total, e.At = p, done, total, now.UTC()
		if _, err := jobs.Append(context.WithoutCancel(ctx), w.rdb, jobs.EventsStream, w.cfg.Jobs.EventsMaxLen, e); err != nil {
			w.log.Warn("publishing progress failed", "job", e.JobID, "err", err)
		}
	}
}
