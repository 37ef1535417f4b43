package ctl

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"time"

	"storekeeper/client"
	"storekeeper/jobs"
)

// The ctl commands that make jobs: compact, backup, verify and restore,
// and their --wait.

const waitHelp = "follow the job(s) to their end with a progress line; exit 1 if any failed or was canceled"

// enqueueCmd is compact, backup, verify or drill: one store, or --all.
func enqueueCmd(kind jobs.Kind) func(context.Context, *ctl, *flag.FlagSet, []string) error {
	return func(ctx context.Context, c *ctl, fs *flag.FlagSet, args []string) error {
		all := fs.Bool("all", false, "every store: one job each, under one batch id")
		wait := fs.Bool("wait", false, waitHelp)
		var p jobs.Params
		switch kind {
		case jobs.KindCompact:
			fs.BoolVar(&p.Force, "force", false, "compact even when the rule says it is not worth it")
			fs.BoolVar(&p.DryRun, "dry-run", false, "decide only: the job's result is the decision and its reason")
		case jobs.KindVerify:
			fs.BoolVar(&p.Deep, "deep", false, "also walk the whole LSM (CheckLevels): slower")
		case jobs.KindBackup:
			fs.BoolVar(&p.Reencrypt, "reencrypt", false, "then rewrite the store's backups on every encrypted target for the current --backup-encrypt-to recipients (after a rotation; its node needs --backup-identity)")
		case jobs.KindDrill:
			fs.StringVar(&p.Target, "target", "", "drill the copy on this backup `target` (--backup-target NAME); default: each target in turn, or the local backups when there is none")
			fs.StringVar(&p.BackupID, "backup", "", "the backup `id` to drill; default: the newest")
			fs.Func("at", "prove the store restorable to this `moment` (RFC 3339 time or a duration ago) from a backup plus the shipped commit log", func(v string) error {
				at, err := parseMoment(v, time.Now())
				p.At = at
				return err
			})
		}
		pos, err := c.parse(fs, args, 0, 1)
		if err != nil {
			return err
		}
		if *all == (len(pos) == 1) {
			return usagef("give a STORE or --all")
		}
		store := ""
		if len(pos) == 1 {
			store = pos[0]
		}
		return c.enqueue(ctx, kind, store, p, *wait)
	}
}

func ctlRestore(ctx context.Context, c *ctl, fs *flag.FlagSet, args []string) error {
	var p jobs.Params
	fs.StringVar(&p.BackupID, "backup", "", "the backup `id` to restore (see storekeeper ctl stores --json); default: the newest verified one")
	fs.StringVar(&p.Target, "target", "", "fetch the backup from this backup `target` (--backup-target NAME): its newest there, or --backup ID")
	at := fs.String("at", "", "restore the store as it was at this `moment`: an RFC 3339 time (2026-12-04T10:30:00Z) or a duration ago (15m); needs the commit log shipped (--ship-interval on its node)")
	wait := fs.Bool("wait", false, waitHelp)
	pos, err := c.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	if *at != "" {
		if p.At, err = parseMoment(*at, time.Now()); err != nil {
			return usagef("--at: %v", err)
		}
	}
	return c.enqueue(ctx, jobs.KindRestore, pos[0], p, *wait)
}

// parseMoment reads --at: an RFC 3339 time, or a duration before now.
func parseMoment(v string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t.UTC(), nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return time.Time{}, fmt.Errorf("%q: want an RFC 3339 time (2026-12-04T10:30:00Z) or a duration ago (15m)", v)
	}
	return now.Add(-d).UTC(), nil
}

func ctlAdopt(ctx context.Context, c *ctl, fs *flag.FlagSet, args []string) error {
	var p jobs.Params
	fs.StringVar(&p.Node, "node", "", "the `node` that adopts the store (it must be up)")
	fs.StringVar(&p.Target, "target", "", "the backup `target` (--backup-target NAME) to make the store from")
	fs.StringVar(&p.BackupID, "backup", "", "the backup `id` to adopt; default: the newest the target holds")
	fs.BoolVar(&p.Force, "force", false, "adopt though the old owner's lease is still held (its node must be down)")
	wait := fs.Bool("wait", false, waitHelp)
	pos, err := c.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	if p.Node == "" || p.Target == "" {
		return usagef("adopt needs --node and --target")
	}
	return c.enqueue(ctx, jobs.KindAdopt, pos[0], p, *wait)
}

// enqueue asks for a kind job on store, or on every store when store is
// "", and with wait follows the jobs to their end. The watcher is
// subscribed (the server said stream.live) before the request is sent, so
// none of the jobs' events passes unseen: it follows the store (or, for
// every store, the kind) and keeps the events of the jobs the answer
// names.
func (c *ctl) enqueue(ctx context.Context, kind jobs.Kind, store string, p jobs.Params, wait bool) error {
	var f *client.Feed
	if wait {
		filter := client.Filter{Kinds: []jobs.Kind{kind}}
		if store != "" {
			filter = client.Filter{Stores: []string{store}}
		}
		var err error
		if f, err = c.api.Watch(ctx, filter); err != nil {
			return err
		}
		defer f.Close()
		if err := f.WaitLive(ctx); errors.Is(err, client.ErrNotLive) {
			fmt.Fprintf(c.stderr, "storekeeper: %v; going on without\n", err)
		} else if err != nil {
			return err
		}
	}
	recs, err := c.ask(ctx, kind, store, p)
	if err != nil || !wait {
		return err
	}
	return c.follow(ctx, f, recs)
}

// ask sends the enqueue, prints its answer and returns the jobs it names.
func (c *ctl) ask(ctx context.Context, kind jobs.Kind, store string, p jobs.Params) ([]jobs.Record, error) {
	var batch client.Batch
	if store != "" {
		j, err := c.api.Enqueue(c.answer(ctx), kind, store, p)
		if err != nil {
			return nil, err
		}
		batch.Jobs = []client.Enqueued{j}
	} else {
		var err error
		if batch, err = c.api.EnqueueAll(c.answer(ctx), kind, p); err != nil {
			return nil, err
		}
	}
	recs := make([]jobs.Record, len(batch.Jobs))
	for i, j := range batch.Jobs {
		recs[i] = j.Record
	}
	if batch.Total > len(batch.Jobs) { // the answer listed the first ones
		var err error
		if recs, err = c.api.BatchJobs(ctx, batch.BatchID); err != nil {
			return nil, fmt.Errorf("batch %s: %d jobs asked for; reading their list: %w", batch.BatchID, batch.Total, err)
		}
	}
	switch {
	case c.json:
		// printed as it came
	case store != "":
		j := batch.Jobs[0]
		fmt.Fprintf(c.stdout, "%s %s: job %s %s%s\n", kind, j.Store, j.ID, j.State, dedupNote(j))
	case len(batch.Jobs) == 0:
		fmt.Fprintf(c.stdout, "%s: no stores\n", kind)
	default:
		fmt.Fprintf(c.stdout, "%s: batch %s, %d jobs (%d new, %d already in flight)\n", kind, batch.BatchID, batch.Total, batch.New, batch.Deduplicated)
		tw := newTable(c.stdout, "STORE", "JOB", "STATE")
		for _, j := range batch.Jobs {
			tw.row(j.Store, j.ID, string(j.State)+dedupNote(j))
		}
		if err := tw.flush(); err != nil {
			return nil, err
		}
		if more := batch.Total - len(batch.Jobs); more > 0 {
			fmt.Fprintf(c.stdout, "… and %d more (storekeeper ctl jobs --batch %s)\n", more, batch.BatchID)
		}
	}
	return recs, nil
}

func dedupNote(j client.Enqueued) string {
	if j.Deduplicated {
		return " (already asked for: the job in flight)"
	}
	return ""
}

// follow shows the jobs' events from f until every job has ended
// (client.Follow), and fails unless each succeeded.
func (c *ctl) follow(ctx context.Context, f *client.Feed, recs []jobs.Record) error {
	if len(recs) == 0 {
		return nil
	}
	p := newProgress(c.stdout, c.json, isTerminal(c.stdout), recs)
	defer p.clear()
	err := c.api.Follow(ctx, f, recs, p.event)
	switch {
	case errors.Is(err, client.ErrStoppedWaiting) && len(recs) == 1:
		return fmt.Errorf("stopped waiting; job %s goes on (storekeeper ctl job %s)", recs[0].ID, recs[0].ID)
	case errors.Is(err, client.ErrStoppedWaiting):
		return fmt.Errorf("stopped waiting; the jobs go on (storekeeper ctl jobs --batch %s)", recs[0].BatchID)
	case err != nil:
		return err
	}
	return p.outcome()
}
