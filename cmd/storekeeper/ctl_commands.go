package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"storekeeper/jobs"
)

// The ctl commands that ask and print; enqueueing and events are in
// ctl_wait.go.

// storeRow is the part of GET /api/stores a table shows.
type storeRow struct {
	Name       string     `json:"name"`
	Node       string     `json:"node"`
	NodeUp     bool       `json:"node_up"`
	Paused     bool       `json:"paused"`
	LastBackup *time.Time `json:"last_backup"`
	Backups    []struct {
		ID string `json:"id"`
	} `json:"backups"`
	Stats struct {
		State            string `json:"state"`
		LiveBytes        uint64 `json:"live_bytes"`
		DiskBytes        uint64 `json:"disk_bytes"`
		ReclaimableBytes uint64 `json:"reclaimable_bytes"`
		ReadAmp          int    `json:"read_amp"`
	} `json:"stats"`
	Health []struct {
		Kind string `json:"kind"`
	} `json:"health"`
}

func ctlStores(ctx context.Context, c *ctl, fs *flag.FlagSet, args []string) error {
	if _, err := c.parse(fs, args, 0, 0); err != nil {
		return err
	}
	var v struct {
		Stores []storeRow `json:"stores"`
	}
	if done, err := c.call(ctx, "GET", "/api/stores", nil, nil, &v); done || err != nil {
		return err
	}
	tw := newTable(c.stdout, "STORE", "NODE", "STATE", "LIVE", "DISK", "RECLAIMABLE~", "READ AMP", "BACKUPS", "LAST BACKUP", "PAUSED", "HEALTH")
	for _, s := range v.Stores {
		node := s.Node
		if !s.NodeUp {
			node += " (down)"
		}
		var health []string
		for _, h := range s.Health {
			health = append(health, h.Kind)
		}
		tw.row(s.Name, node, orDash(s.Stats.State), mib(s.Stats.LiveBytes), mib(s.Stats.DiskBytes), mib(s.Stats.ReclaimableBytes),
			s.Stats.ReadAmp, len(s.Backups), timeOr(s.LastBackup, "never"), yesNo(s.Paused), orText(strings.Join(health, ","), "ok"))
	}
	return tw.flush()
}

// storeSwitch is pause or resume.
func storeSwitch(verb string) func(context.Context, *ctl, *flag.FlagSet, []string) error {
	return func(ctx context.Context, c *ctl, fs *flag.FlagSet, args []string) error {
		pos, err := c.parse(fs, args, 1, 1)
		if err != nil {
			return err
		}
		var v struct {
			Store  string `json:"store"`
			Paused bool   `json:"paused"`
		}
		if done, err := c.call(ctx, "POST", apiPath("/api/stores", pos[0])+"/"+verb, nil, nil, &v); done || err != nil {
			return err
		}
		if v.Paused {
			fmt.Fprintf(c.stdout, "store %s paused: its scheduled and automatic jobs wait until it is resumed\n", v.Store)
		} else {
			fmt.Fprintf(c.stdout, "store %s resumed\n", v.Store)
		}
		return nil
	}
}

func ctlJobs(ctx context.Context, c *ctl, fs *flag.FlagSet, args []string) error {
	q := url.Values{}
	for _, name := range []string{"store", "kind", "state", "batch"} {
		fs.Func(name, "only jobs with this `"+name+"`", func(v string) error { q.Set(name, v); return nil })
	}
	if _, err := c.parse(fs, args, 0, 0); err != nil {
		return err
	}
	var v struct {
		Jobs []jobs.Record `json:"jobs"`
	}
	if done, err := c.call(ctx, "GET", "/api/jobs", q, nil, &v); done || err != nil {
		return err
	}
	if len(v.Jobs) == 0 {
		what := "no jobs in flight"
		if len(q) > 0 {
			what = "no such jobs"
		}
		fmt.Fprintln(c.stdout, what)
		return nil
	}
	tw := newTable(c.stdout, "JOB", "KIND", "STORE", "STATE", "ATTEMPTS", "TRIGGER", "ACTOR", "ENQUEUED", "BATCH")
	for _, r := range v.Jobs {
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
	var r jobs.Record
	if done, err := c.call(ctx, "GET", apiPath("/api/jobs", pos[0]), nil, nil, &r); done || err != nil {
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
	var r jobs.Record
	if done, err := c.call(ctx, "DELETE", apiPath("/api/jobs", pos[0]), nil, nil, &r); done || err != nil {
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
	q := url.Values{}
	fs.Func("store", "only this `store`'s jobs", func(v string) error { q.Set("store", v); return nil })
	fs.Func("kind", "only jobs of this `kind`", func(v string) error { q.Set("kind", v); return nil })
	fs.Func("limit", "at most `N` entries (1–500; the server's default otherwise)", func(v string) error {
		if _, err := strconv.Atoi(v); err != nil {
			return errors.New("not a number")
		}
		q.Set("limit", v)
		return nil
	})
	fs.Func("before", "entries older than this history `id` (the next page)", func(v string) error { q.Set("before", v); return nil })
	if _, err := c.parse(fs, args, 0, 0); err != nil {
		return err
	}
	var v struct {
		History []jobs.HistoryEntry `json:"history"`
		Next    string              `json:"next"`
	}
	if done, err := c.call(ctx, "GET", "/api/history", q, nil, &v); done || err != nil {
		return err
	}
	tw := newTable(c.stdout, "AT", "STORE", "KIND", "STATUS", "TOOK", "BEFORE", "AFTER", "TRIGGER", "ACTOR", "JOB", "DETAIL")
	for _, h := range v.History {
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
	if v.Next != "" {
		fmt.Fprintf(c.stdout, "\nolder entries: storekeeper ctl history --before %s\n", v.Next)
	}
	return nil
}

func ctlSchedules(ctx context.Context, c *ctl, fs *flag.FlagSet, args []string) error {
	if _, err := c.parse(fs, args, 0, 0); err != nil {
		return err
	}
	var v struct {
		Nodes  []jobs.NodeSchedules      `json:"nodes"`
		Paused map[string]jobs.PauseInfo `json:"paused"`
	}
	if done, err := c.call(ctx, "GET", "/api/schedules", nil, nil, &v); done || err != nil {
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

// table is a tabwriter with a header.
type table struct{ tw *tabwriter.Writer }

func newTable(w io.Writer, header ...string) table {
	t := table{tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)}
	fmt.Fprintln(t.tw, strings.Join(header, "\t"))
	return t
}

func (t table) row(cells ...any) {
	s := make([]string, len(cells))
	for i, c := range cells {
		s[i] = fmt.Sprint(c)
	}
	fmt.Fprintln(t.tw, strings.Join(s, "\t"))
}

func (t table) flush() error { return t.tw.Flush() }

// timeOr formats t in local time, or says none when it is nil or zero.
func timeOr(t *time.Time, none string) string {
	if t == nil || t.IsZero() {
		return none
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

func orText(s, none string) string {
	if s == "" {
		return none
	}
	return s
}

func orDash(s string) string { return orText(s, "-") }

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
