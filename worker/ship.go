package worker

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"storekeeper/jobs"
	"storekeeper/jobsdb"
	"storekeeper/ship"
)

// shipGap handles a gap the shipper recorded in a store's commit log: it
// enqueues a backup, from which later moments can be restored again, and
// announces the gap once (store.ship_gap and its notification). It runs
// on the shipper's goroutine; a failure is logged, and the gap stays in
// the shipper's stats.
func (w *Worker) shipGap(name string, g ship.Gap) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	log := w.log.With("store", name, "timeline", g.Timeline, "from", g.From, "to", g.To)
	backup := ""
	if res, err := w.jobs.Enqueue(ctx, jobs.Request{Kind: jobs.KindBackup, Store: name, Trigger: jobs.TriggerAuto, Actor: jobs.ActorSystem}); err != nil {
		log.Error("commit log gap: the backup that re-anchors it was not enqueued", "err", err)
	} else {
		backup = res.Record.ID
	}
	what := fmt.Sprintf("writes %d to %d of timeline %s, committed from %s, were dropped on node %s before every backup target had them (a target was down past --ship-buffer); a restore to a moment between %s and the next backup is refused",
		g.From, g.To-1, g.Timeline, g.Since.UTC().Format(time.RFC3339Nano), w.cfg.Node, g.Since.UTC().Format(time.RFC3339Nano))
	now := time.Now().UTC()
	ev := jobs.Event{Type: jobs.EventShipGap, Store: name, Node: w.cfg.Node, Trigger: jobs.TriggerAuto, Actor: jobs.ActorSystem, JobID: backup, Error: what, At: now}
	n := jobs.Notification{ID: jobs.NotificationID(string(jobs.EventShipGap), name, g.Timeline, strconv.FormatUint(g.From, 10)),
		Type: jobs.EventShipGap, Store: name, Node: w.cfg.Node, Trigger: jobs.TriggerAuto, Actor: jobs.ActorSystem, JobID: backup, Error: what,
		Summary: fmt.Sprintf("store %s: part of its commit log was lost: %s; backup job %s re-anchors it", name, what, orNone(backup)), At: now}
	value, _ := json.Marshal(g)
	if err := jobsdb.AnnounceShipGap(ctx, w.rdb, name, g.Timeline, g.From, string(value), w.cfg.Jobs.EventsMaxLen, ev, &n); err != nil {
		log.Error("commit log gap not announced", "err", err)
	}
}

func orNone(s string) string {
	if s == "" {
		return "(none: enqueue one by hand)"
	}
	return s
}
