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
// announces the gap once (store.ship_gap and its notification: a second
// announcement of the same gap is a no-op). It runs on the shipper's
// goroutine. An announcement that fails is logged and returned: the
// shipper keeps the gap recorded and offers it again (Shipper.OnGap). A
// backup that could not be enqueued is only logged; the announcement
// says there is none.
func (w *Worker) shipGap(name string, g ship.Gap) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	log := w.log.With("store", name, "timeline", g.Timeline, "from", g.From, "to", g.To)
	backup := ""
	if res, err := w.jobs.Enqueue(ctx, jobs.Request{Kind: jobs.KindBackup, Store: name, Trigger: jobs.TriggerAuto, Actor: jobs.ActorSystem}); err != nil {
		log.Error("commit log gap: the backup that re-anchors it was not enqueued", "err", err)
	} else {
		backup = res.Record.ID
	}
	what := gapText(g, w.cfg.Node)
	now := time.Now().UTC()
	ev := jobs.Event{Type: jobs.EventShipGap, Store: name, Node: w.cfg.Node, Trigger: jobs.TriggerAuto, Actor: jobs.ActorSystem, JobID: backup, Error: what, At: now}
	n := jobs.Notification{ID: jobs.NotificationID(string(jobs.EventShipGap), name, g.Timeline, strconv.FormatUint(g.From, 10)),
		Type: jobs.EventShipGap, Store: name, Node: w.cfg.Node, Trigger: jobs.TriggerAuto, Actor: jobs.ActorSystem, JobID: backup, Error: what,
		Summary: fmt.Sprintf("store %s: part of its commit log was lost: %s; backup job %s re-anchors it", name, what, orNone(backup)), At: now}
	value, _ := json.Marshal(g)
	if err := jobsdb.AnnounceShipGap(ctx, w.rdb, name, g.Timeline, g.From, string(value), w.cfg.Jobs.EventsMaxLen, ev, &n); err != nil {
		log.Error("commit log gap not announced yet; the shipper offers it again", "err", err)
		return err
	}
	return nil
}

// gapText says what gap g of a store's commit log lost, found on node,
// and which restores it refuses.
func gapText(g ship.Gap, node string) string {
	at := g.Since.UTC().Format(time.RFC3339Nano)
	since, refused := "committed from "+at, "between "+at+" and the next backup"
	switch {
	case g.Since.IsZero() && !g.Before.IsZero(): // a re-anchoring: the lost writes are not here to read
		since, refused = "committed before "+g.Before.UTC().Format(time.RFC3339Nano), "from their first write to the next backup"
	case g.Since.IsZero(): // a damaged segment's first write cannot be read
		since, refused = "committed at a time the damage hides", "from their first write to the next backup"
	}
	why := fmt.Sprintf("were dropped on node %s before every backup target had them (a target was down past --ship-buffer)", node)
	if g.Cause != "" {
		why = fmt.Sprintf("were lost on node %s before any backup target had them (%s)", node, g.Cause)
	}
	return fmt.Sprintf("writes %d to %d of timeline %s, %s, %s; a restore to a moment %s is refused", g.From, g.To-1, g.Timeline, since, why, refused)
}

func orNone(s string) string {
	if s == "" {
		return "(none: enqueue one by hand)"
	}
	return s
}
