package worker

import (
	"context"
	"sync"
	"time"

	"storekeeper/jobs"
	"storekeeper/jobsdb"
	"storekeeper/store"
)

// Progress is published as job.progress at most every progressEvery, and
// on a phase change at most every progressMin: a few events per second
// per job, whatever the store reports. Nothing is published during a
// job's first progressMin, so a job that ends quickly costs no progress
// round trip; a report held back by the throttle is published when its
// window opens, unless the job has ended or reported again by then.
const (
	progressEvery = 250 * time.Millisecond
	progressMin   = 100 * time.Millisecond
)

// progressReporter turns a store operation's progress into throttled
// job.progress events of attempt a. stop must be called when the handler
// returns: it drops what is still held back and waits for a publish in
// flight, so no progress follows the job's end. Each event is appended
// once (jobsdb.Progress: numbered, and only while a's run is the active
// one), however often Redis runs the command.
func (w *Worker) progressReporter(ctx context.Context, a attempt) (report store.ProgressFunc, stop func()) {
	var (
		mu      sync.Mutex
		clock   = w.clock
		last    = clock.Now() // the job's start: the first window opens progressMin later
		phase   string
		pending *jobs.Event
		armed   bool // a timer will call flush
		stopped bool
		wg      sync.WaitGroup
		seq     int64 // reports published so far, under mu
	)
	publish := func(e jobs.Event, n int64) {
		defer wg.Done()
		if _, err := jobsdb.Progress(context.WithoutCancel(ctx), w.rdb, a.p.JobID, a.run, n, w.cfg.Jobs.EventsMaxLen, e); err != nil {
			w.log.Warn("publishing progress failed", "job", e.JobID, "err", err)
		}
	}
	// due is when a report of phase p may go out.
	due := func(p string) time.Time {
		if p == phase {
			return last.Add(progressEvery)
		}
		return last.Add(progressMin)
	}
	var flush func()
	flush = func() {
		mu.Lock()
		armed = false
		if stopped || pending == nil {
			mu.Unlock()
			w.signals.progressFlushed.Signal(false)
			return
		}
		now := clock.Now()
		if at := due(pending.Phase); now.Before(at) { // a report went out meanwhile
			armed = true
			clock.AfterFunc(at.Sub(now), flush)
			mu.Unlock()
			w.signals.progressFlushed.Signal(false)
			return
		}
		e := *pending
		pending, last, phase = nil, now, e.Phase
		seq++
		n := seq
		wg.Add(1)
		mu.Unlock()
		publish(e, n)
		w.signals.progressFlushed.Signal(true)
	}
	report = func(p string, done, total int64) {
		now := clock.Now()
		e := a.event(jobs.EventJobProgress, w.cfg.Node)
		e.Phase, e.Done, e.Total, e.At = p, done, total, now.UTC()
		mu.Lock()
		if stopped {
			mu.Unlock()
			return
		}
		if at := due(p); now.Before(at) {
			pending = &e
			if !armed {
				armed = true
				clock.AfterFunc(at.Sub(now), flush)
			}
			mu.Unlock()
			return
		}
		pending, last, phase = nil, now, p
		seq++
		n := seq
		wg.Add(1)
		mu.Unlock()
		publish(e, n)
	}
	stop = func() {
		mu.Lock()
		stopped, pending = true, nil // a timer still armed finds nothing to do
		mu.Unlock()
		wg.Wait()
	}
	return report, stop
}
