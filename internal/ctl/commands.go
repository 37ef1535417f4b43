package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"storekeeper/client"
	"storekeeper/jobs"
)

// The ctl commands that ask and print; the ones that make jobs are in
// enqueue.go, watch in watch.go.

func ctlStores(ctx context.Context, c *ctl, fs *flag.FlagSet, args []string) error {
	if _, err := c.parse(fs, args, 0, 0); err != nil {
		return err
	}
	stores, err := c.api.Stores(c.answer(ctx))
	if err != nil || c.json {
		return err
	}
	tw := newTable(c.stdout, "STORE", "NODE", "STATE", "LIVE", "DISK", "RECLAIMABLE~", "READ AMP", "BACKUPS", "LAST BACKUP", "PAUSED", "HEALTH")
	for _, s := range stores {
		node := s.Node
		if !s.NodeUp {
			node += " (down)"
		}
		var health []string
		for _, h := range s.Health {
			health = append(health, h.Kind)
		}
		var st jobs.StoreStats // zero until the owner has published
		if s.Stats != nil {
			st = *s.Stats
		}
		tw.row(s.Name, node, orDash(string(st.State)), mib(st.LiveBytes), mib(st.DiskBytes), mib(st.ReclaimableBytes),
			st.ReadAmp, len(s.Backups), timeOr(s.LastBackup, "never"), yesNo(s.Paused), orText(strings.Join(health, ","), "ok"))
	}
	return tw.flush()
}

// storeSwitch is pause (pause true) or resume.
func storeSwitch(pause bool) func(context.Context, *ctl, *flag.FlagSet, []string) error {
	return func(ctx context.Context, c *ctl, fs *flag.FlagSet, args []string) error {
		pos, err := c.parse(fs, args, 1, 1)
		if err != nil {
			return err
		}
		op := c.api.Resume
		if pause {
			op = c.api.Pause
		}
		if err := op(c.answer(ctx), pos[0]); err != nil || c.json {
			return err
		}
		if pause {
			fmt.Fprintf(c.stdout, "store %s paused: its scheduled and automatic jobs wait until it is resumed\n", pos[0])
		} else {
			fmt.Fprintf(c.stdout, "store %s resumed\n", pos[0])
		}
		return nil
	}
}

func ctlJobs(ctx context.Context, c *ctl, fs *flag.FlagSet, args []string) error {
	var q client.JobsQuery
	for name, set := range map[string]func(string){
		"store": func(v string) { q.Store = v },
		"kind":  func(v string) { q.Kind = jobs.Kind(v) },
		"state": func(v string) { q.State = jobs.State(v) },
		"batch": func(v string) { q.Batch = v },
	} {
		fs.Func(name, "only jobs with this `"+name+"`", func(v string) error { set(v); return nil })
	}
	if _, err := c.parse(fs, args, 0, 0); err != nil {
		return err
	}
	recs, err := c.api.Jobs(c.answer(ctx), q)
	if err != nil || c.json {
		return err
	}
	if len(recs) == 0 {
		what := "no jobs in flight"
		if q != (client.JobsQuery{}) {
			what = "no such jobs"
		}
		fmt.Fprintln(c.stdout, what)
		return nil
	}
	tw := newTable(c.stdout, "JOB", "KIND", "STORE", "STATE", "ATTEMPTS", "TRIGGER", "ACTOR", "ENQUEUED", "BATCH")
	for _, r := range recs {
		tw.row(r.ID, r.Kind, r.Store, r.State, fmt.Sprintf("%d/%d", r.Attempts, r.MaxRetry+1), r.Trigger, r.Actor,
			timeOr(&r.EnqueuedAt, "-"), orDash(r.BatchID))
	}
	return tw.flush()
}

func ctlJob(ctx context.Context, c *ctl, fs *flag.FlagSet, args []string) error {
	pos, err := c.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	r, err := c.api.Job(c.answer(ctx), pos[0])
	if err != nil || c.json {
		return err
	}
	printRecord(c.stdout, r)
	return nil
}

func ctlCancel(ctx context.Context, c *ctl, fs *flag.FlagSet, args []string) error {
	pos, err := c.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	r, err := c.api.Cancel(c.answer(ctx), pos[0])
	if err != nil || c.json {
		return err
	}
	fmt.Fprintf(c.stdout, "job %s (%s %s) %s\n", r.ID, r.Kind, r.Store, r.State)
	return nil
}

// printRecord prints a job's record as "field: value" lines.
func printRecord(w io.Writer, r jobs.Record) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	line := func(k string, v any) {
		if s := fmt.Sprint(v); s != "" {
			fmt.Fprintf(tw, "%s:\t%s\n", k, s)
		}
	}
	line("job", r.ID)
	line("kind", r.Kind)
	line("store", r.Store)
	line("state", r.State)
	line("reason", r.Reason)
	line("node", r.Node)
	line("queue", r.Queue)
	line("trigger", r.Trigger)
	line("actor", r.Actor)
	line("batch", r.BatchID)
	if p, _ := json.Marshal(r.Params); string(p) != "{}" {
		line("params", string(p))
	}
	line("attempts", fmt.Sprintf("%d of %d", r.Attempts, r.MaxRetry+1))
	for _, t := range []struct {
		k string
		t time.Time
	}{{"enqueued", r.EnqueuedAt}, {"started", r.StartedAt}, {"finished", r.FinishedAt}} {
		line(t.k, timeOr(&t.t, ""))
	}
	for _, e := range r.Errors {
		line(fmt.Sprintf("error (attempt %d)", e.Attempt), e.Error)
	}
	if len(r.Result) > 0 {
		line("result", resultText(r.Kind, r.Result))
	}
	tw.Flush()
	if len(r.Result) > 0 {
		var b bytes.Buffer
		if json.Indent(&b, r.Result, "  ", "  ") == nil {
			fmt.Fprintf(w, "result (JSON):\n  %s\n", b.String())
		}
	}
}

func ctlHistory(ctx context.Context, c *ctl, fs *flag.FlagSet, args []string) error {
	var q jobs.HistoryQuery
	fs.Func("store", "only this `store`'s jobs", func(v string) error { q.Store = v; return nil })
	fs.Func("kind", "only jobs of this `kind`", func(v string) error { q.Kind = jobs.Kind(v); return nil })
	fs.Func("limit", "at most `N` entries (1–500; the server's default otherwise)", func(v string) error {
		n, err := strconv.Atoi(v)
		switch {
		case err != nil:
			return errors.New("not a number")
		case n < 1:
			// 0 would mean the server's default to the client: an
			// explicit --limit asks for a number of entries.
			return errors.New("not a positive number")
		}
		q.Limit = n
		return nil
	})
	fs.Func("before", "entries older than this history `id` (the next page)", func(v string) error { q.Before = v; return nil })
	if _, err := c.parse(fs, args, 0, 0); err != nil {
		return err
	}
	page, err := c.api.History(c.answer(ctx), q)
	if err != nil || c.json {
		return err
	}
	tw := newTable(c.stdout, "AT", "STORE", "KIND", "STATUS", "TOOK", "BEFORE", "AFTER", "TRIGGER", "ACTOR", "JOB", "DETAIL")
	for _, h := range page.Entries {
		detail := h.Error
		if detail == "" {
			detail = h.Reason
		}
		if h.BackupID != "" {
			detail = strings.TrimSpace("backup " + h.BackupID + " " + detail)
		}
		tw.row(timeOr(&h.At, "-"), h.Store, h.Kind, h.Status, (time.Duration(h.DurationMS) * time.Millisecond).String(),
			mib(h.BytesBefore), mib(h.BytesAfter), h.Trigger, h.Actor, h.JobID, orDash(detail))
	}
	if err := tw.flush(); err != nil {
		return err
	}
	if page.Next != "" {
		fmt.Fprintf(c.stdout, "\nolder entries: storekeeper ctl history --before %s\n", page.Next)
	}
	return nil
}

func ctlNodes(ctx context.Context, c *ctl, fs *flag.FlagSet, args []string) error {
	if _, err := c.parse(fs, args, 0, 0); err != nil {
		return err
	}
	nodes, err := c.api.Nodes(c.answer(ctx))
	if err != nil || c.json {
		return err
	}
	tw := newTable(c.stdout, "NODE", "STATE", "HOST", "STARTED", "STORES", "LOST")
	for _, n := range nodes {
		if n.Info == nil {
			tw.row(n.Node, "down", "-", "-", "-", "-")
			continue
		}
		lost := make([]string, 0, len(n.Info.Lost))
		for st, holder := range n.Info.Lost {
			lost = append(lost, st+"(to "+holder+")")
		}
		slices.Sort(lost)
		tw.row(n.Node, "up", orDash(n.Info.Host), timeOr(&n.Info.StartedAt, "-"), orDash(strings.Join(n.Info.Stores, ",")), orDash(strings.Join(lost, ",")))
	}
	return tw.flush()
}

func ctlSchedules(ctx context.Context, c *ctl, fs *flag.FlagSet, args []string) error {
	if _, err := c.parse(fs, args, 0, 0); err != nil {
		return err
	}
	v, err := c.api.Schedules(c.answer(ctx))
	if err != nil || c.json {
		return err
	}
	tw := newTable(c.stdout, "NODE", "KIND", "SCHEDULE", "NEXT", "LAST", "STORES")
	for _, n := range v.Nodes {
		for _, k := range jobs.Kinds {
			s, ok := n.Kinds[k]
			if !ok {
				continue
			}
			tw.row(n.Node, k, s.Spec, timeOr(&s.Next, "-"), timeOr(&s.Last, "-"), strings.Join(n.Stores, ","))
		}
	}
	if err := tw.flush(); err != nil {
		return err
	}
	if len(v.Paused) == 0 {
		fmt.Fprintln(c.stdout, "\nno store is paused")
		return nil
	}
	fmt.Fprintln(c.stdout)
	tw = newTable(c.stdout, "PAUSED STORE", "BY", "SINCE")
	names := make([]string, 0, len(v.Paused))
	for n := range v.Paused {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		p := v.Paused[n]
		tw.row(n, orDash(p.Actor), timeOr(&p.At, "-"))
	}
	return tw.flush()
}
