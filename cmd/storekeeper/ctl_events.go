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
	"os"
	"strings"
	"unicode/utf8"

	"storekeeper/jobs"
)

// The ctl commands that make jobs and follow events: compact, backup,
// verify and restore (with --wait), and watch.

const waitHelp = "follow the job(s) to their end with a progress line; exit 1 if any failed or was canceled"

// enqueueCmd is compact, backup or verify: one store, or --all.
func enqueueCmd(kind jobs.Kind) func(context.Context, *ctl, *flag.FlagSet, []string) error {
	return func(ctx context.Context, c *ctl, fs *flag.FlagSet, args []string) error {
		all := fs.Bool("all", false, "every store: one job each, under one batch id")
		wait := fs.Bool("wait", false, waitHelp)
		var force, dryRun, deep *bool
		switch kind {
		case jobs.KindCompact:
			force = fs.Bool("force", false, "compact even when the rule says it is not worth it")
			dryRun = fs.Bool("dry-run", false, "decide only: the job's result is the decision and its reason")
		case jobs.KindVerify:
			deep = fs.Bool("deep", false, "also walk the whole LSM (CheckLevels): slower")
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
		body := map[string]any{}
		for name, p := range map[string]*bool{"force": force, "dry_run": dryRun, "deep": deep} {
			if p != nil && *p {
				body[name] = true
			}
		}
		return c.enqueue(ctx, kind, store, body, *wait)
	}
}

func ctlRestore(ctx context.Context, c *ctl, fs *flag.FlagSet, args []string) error {
	backup := fs.String("backup", "", "the backup `id` to restore (see storekeeper ctl stores --json); default: the newest verified one")
	wait := fs.Bool("wait", false, waitHelp)
	pos, err := c.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	body := map[string]any{}
	if *backup != "" {
		body["backup_id"] = *backup
	}
	return c.enqueue(ctx, jobs.KindRestore, pos[0], body, *wait)
}

// enqueuedJob is the API's answer to an enqueue, or one job of a batch.
type enqueuedJob struct {
	jobs.Record
	Deduplicated bool `json:"deduplicated"`
}

// enqueue asks for a kind job on store, or on every store when store is
// "", and with wait follows the jobs to their end. The watcher is
// subscribed (the server said stream.live) before the request is sent, so
// none of the jobs' events passes unseen: it follows the store (or, for
// every store, the kind) and keeps the events of the jobs the answer
// names.
func (c *ctl) enqueue(ctx context.Context, kind jobs.Kind, store string, body map[string]any, wait bool) error {
	path, filter := "/api/admin/"+string(kind), url.Values{}
	if store != "" {
		path = apiPath(path, store)
		filter.Set("store", store)
	} else {
		filter.Set("kind", string(kind))
	}
	var f *feed
	if wait {
		var err error
		if f, err = c.api.watch(ctx, filter); err != nil {
			return err
		}
		defer f.close()
		if err := f.waitLive(ctx, c.stderr); err != nil {
			return err
		}
	}
	var b any
	if len(body) > 0 {
		b = body
	}
	raw, err := c.api.do(ctx, "POST", path, nil, b)
	if err != nil {
		return err
	}
	recs, err := c.showEnqueued(raw, kind, store == "")
	if err != nil || !wait {
		return err
	}
	return c.follow(ctx, f, recs)
}

// showEnqueued prints an enqueue's answer and returns the jobs it names.
func (c *ctl) showEnqueued(raw []byte, kind jobs.Kind, all bool) ([]jobs.Record, error) {
	var batch struct {
		BatchID string        `json:"batch_id"`
		Jobs    []enqueuedJob `json:"jobs"`
	}
	var err error
	if all {
		err = json.Unmarshal(raw, &batch)
	} else {
		batch.Jobs = make([]enqueuedJob, 1)
		err = json.Unmarshal(raw, &batch.Jobs[0])
	}
	if err != nil {
		return nil, fmt.Errorf("decoding the %s answer: %w", kind, err)
	}
	recs := make([]jobs.Record, len(batch.Jobs))
	for i, j := range batch.Jobs {
		recs[i] = j.Record
	}
	switch {
	case c.json:
		c.printRaw(raw)
	case !all:
		j := batch.Jobs[0]
		fmt.Fprintf(c.stdout, "%s %s: job %s %s%s\n", kind, j.Store, j.ID, j.State, dedupNote(j))
	case len(batch.Jobs) == 0:
		fmt.Fprintf(c.stdout, "%s: no stores\n", kind)
	default:
		fmt.Fprintf(c.stdout, "%s: batch %s, %d jobs\n", kind, batch.BatchID, len(batch.Jobs))
		tw := newTable(c.stdout, "STORE", "JOB", "STATE")
		for _, j := range batch.Jobs {
			tw.row(j.Store, j.ID, string(j.State)+dedupNote(j))
		}
		if err := tw.flush(); err != nil {
			return nil, err
		}
	}
	return recs, nil
}

func dedupNote(j enqueuedJob) string {
	if j.Deduplicated {
		return " (already asked for: the job in flight)"
	}
	return ""
}

// follow shows the jobs' events from f until every job has ended, and
// fails unless each succeeded. A job the answer already gives as ended
// (its events are past) ends at once. Whenever events may have passed
// unseen, the records say how the jobs stand: when a connection goes
// live again after a reconnection (a job may have ended while none was
// subscribed), and on stream.gap.
func (c *ctl) follow(ctx context.Context, f *feed, recs []jobs.Record) error {
	if len(recs) == 0 {
		return nil
	}
	p := newProgress(c.stdout, c.json, isTerminal(c.stdout), recs)
	defer p.clear()
	for _, r := range recs {
		if r.State.Terminal() {
			raw, _ := json.Marshal(r)
			p.event(endEvent(r), raw)
		}
	}
	for p.running() > 0 {
		var fr wsFrame
		ok := false
		select {
		case <-ctx.Done():
		case fr, ok = <-f.frames:
		}
		switch {
		case !ok && len(recs) == 1:
			return fmt.Errorf("stopped waiting; job %s goes on (storekeeper ctl job %s)", recs[0].ID, recs[0].ID)
		case !ok:
			return fmt.Errorf("stopped waiting; the jobs go on (storekeeper ctl jobs --batch %s)", recs[0].BatchID)
		case fr.err != nil:
			return fr.err
		case fr.live, fr.ev.Type == frameGap, fr.resumed && f.noLive:
			// Subscribed again, or events may be lost (the stream was
			// trimmed, or the replay failed): the records say how the jobs
			// stand. The first live frame was waitLive's, before the
			// enqueue: this one follows a reconnection. (With a server
			// that does not say stream.live, the reconnection itself.)
			if err := c.recheck(ctx, p); err != nil {
				return err
			}
		case fr.resumed:
			// Not yet subscribed: the live frame that follows says when.
		default:
			p.event(fr.ev, fr.raw)
		}
	}
	return p.outcome()
}

// recheck reads the records of the jobs still running and shows those
// that ended.
func (c *ctl) recheck(ctx context.Context, p *progress) error {
	for _, j := range p.jobs {
		if j.state.Terminal() {
			continue
		}
		raw, err := c.api.do(ctx, "GET", apiPath("/api/jobs", j.id), nil, nil)
		if err != nil {
			return err
		}
		var r jobs.Record
		if err := json.Unmarshal(raw, &r); err != nil {
			return fmt.Errorf("decoding job %s: %w", j.id, err)
		}
		if r.State.Terminal() {
			p.event(endEvent(r), raw)
		}
	}
	return nil
}

// endEvent is the event that ended the job r records.
func endEvent(r jobs.Record) jobs.Event {
	e := jobs.Event{JobID: r.ID, Kind: r.Kind, Store: r.Store, Node: r.Node, Trigger: r.Trigger, Attempt: r.Attempts,
		MaxRetry: r.MaxRetry, Result: r.Result, At: r.FinishedAt}
	switch r.State {
	case jobs.StateSucceeded:
		e.Type = jobs.EventJobSucceeded
	case jobs.StateFailed:
		e.Type, e.Error = jobs.EventJobFailed, r.Reason
		if n := len(r.Errors); n > 0 {
			e.Error = r.Errors[n-1].Error
		}
	case jobs.StateCanceled:
		e.Type = jobs.EventJobCanceled
		e.Actor, _ = strings.CutPrefix(r.Reason, "canceled by ")
	}
	return e
}

// progress shows the jobs a --wait follows: with --json their events as
// they come, one per line; on a terminal one status line rewritten in
// place, and a line of its own for each job's end and other news;
// otherwise one line per event.
type progress struct {
	w         io.Writer
	json, tty bool
	jobs      []*jobProgress
	byID      map[string]*jobProgress
	stores    map[string]bool
	shown     int // runes of the status line on the terminal
}

type jobProgress struct {
	id, store string
	kind      jobs.Kind
	status    string     // for the status line: a state or a phase
	state     jobs.State // once ended
	err       string
}

// statusWidth keeps the status line on one row of a common terminal: a
// line that wraps cannot be rewritten with \r.
const statusWidth = 79

func newProgress(w io.Writer, json, tty bool, recs []jobs.Record) *progress {
	p := &progress{w: w, json: json, tty: tty, byID: map[string]*jobProgress{}, stores: map[string]bool{}}
	for _, r := range recs {
		j := &jobProgress{id: r.ID, store: r.Store, kind: r.Kind, status: string(r.State)}
		p.jobs = append(p.jobs, j)
		p.byID[r.ID] = j
		p.stores[r.Store] = true
	}
	return p
}

func (p *progress) running() int {
	n := 0
	for _, j := range p.jobs {
		if !j.state.Terminal() {
			n++
		}
	}
	return n
}

// event takes in one event; raw is what to print with --json.
func (p *progress) event(e jobs.Event, raw []byte) {
	j := p.byID[e.JobID]
	switch {
	case j == nil && e.JobID == "" && p.stores[e.Store]: // store.corrupt
		p.show(e, raw, true)
		return
	case j == nil || j.state.Terminal():
		return
	}
	news := true
	switch e.Type {
	case jobs.EventJobEnqueued:
		j.status, news = "pending", false
	case jobs.EventJobStarted:
		j.status, news = "started", false
	case jobs.EventJobProgress:
		j.status, news = phaseText(e), false
	case jobs.EventJobRetrying:
		j.status = "retrying"
	case jobs.EventJobSucceeded:
		j.state = jobs.StateSucceeded
	case jobs.EventJobFailed:
		j.state, j.err = jobs.StateFailed, e.Error
	case jobs.EventJobCanceled:
		j.state, j.err = jobs.StateCanceled, "canceled"
		if e.Actor != "" {
			j.err += " by " + e.Actor
		}
	}
	if j.state != "" {
		j.status = string(j.state)
	}
	p.show(e, raw, news)
}

func (p *progress) show(e jobs.Event, raw []byte, news bool) {
	switch {
	case p.json:
		fmt.Fprintf(p.w, "%s\n", bytes.TrimSpace(raw))
	case !p.tty:
		fmt.Fprintln(p.w, eventLine(e))
	default:
		if news {
			p.clear()
			fmt.Fprintln(p.w, eventLine(e))
		}
		p.draw()
	}
}

// draw rewrites the status line.
func (p *progress) draw() {
	if p.running() == 0 {
		p.clear()
		return
	}
	line := p.statusLine()
	if r := []rune(line); len(r) > statusWidth {
		line = string(r[:statusWidth-1]) + "…"
	}
	n := utf8.RuneCountInString(line)
	fmt.Fprint(p.w, "\r"+line+strings.Repeat(" ", max(0, p.shown-n)))
	p.shown = n
}

// clear erases the status line, if one is shown.
func (p *progress) clear() {
	if p.shown > 0 {
		fmt.Fprint(p.w, "\r"+strings.Repeat(" ", p.shown)+"\r")
		p.shown = 0
	}
}

func (p *progress) statusLine() string {
	if len(p.jobs) == 1 {
		j := p.jobs[0]
		return fmt.Sprintf("%s %s %s: %s", j.kind, j.store, j.id, j.status)
	}
	parts := []string{fmt.Sprintf("%s: %d of %d ended", p.jobs[0].kind, len(p.jobs)-p.running(), len(p.jobs))}
	for _, j := range p.jobs {
		if !j.state.Terminal() {
			parts = append(parts, j.store+" "+j.status)
		}
	}
	return strings.Join(parts, " · ")
}

// outcome is nil when every job succeeded.
func (p *progress) outcome() error {
	var bad []string
	for _, j := range p.jobs {
		if j.state != jobs.StateSucceeded {
			s := fmt.Sprintf("job %s (%s %s) %s", j.id, j.kind, j.store, j.state)
			if j.err != "" && j.state == jobs.StateFailed {
				s += ": " + j.err
			}
			bad = append(bad, s)
		}
	}
	switch {
	case len(bad) == 0:
		return nil
	case len(p.jobs) == 1:
		return errors.New(bad[0])
	}
	return fmt.Errorf("%d of %d jobs did not succeed: %s", len(bad), len(p.jobs), strings.Join(bad, "; "))
}

// isTerminal reports whether w is a terminal (a character device: good
// enough to choose between \r and one line per event).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func ctlWatch(ctx context.Context, c *ctl, fs *flag.FlagSet, args []string) error {
	q := url.Values{}
	for _, name := range []string{"store", "kind", "job"} {
		fs.Func(name, "only events of this `"+name+"` (repeatable)", func(v string) error { q.Add(name, v); return nil })
	}
	fs.Func("since", "first replay the events after this event `id`", func(v string) error { q.Set("since", v); return nil })
	if _, err := c.parse(fs, args, 0, 0); err != nil {
		return err
	}
	f, err := c.api.watch(ctx, q)
	if err != nil {
		return err
	}
	defer f.close()
	fmt.Fprintln(c.stderr, "storekeeper: watching events; interrupt to stop")
	for {
		var fr wsFrame
		ok := false
		select {
		case <-ctx.Done():
		case fr, ok = <-f.frames:
		}
		switch {
		case !ok:
			return nil // interrupted: the normal end
		case fr.err != nil:
			return fr.err
		case fr.resumed && fr.since == "":
			fmt.Fprintf(c.stderr, "storekeeper: reconnected after %v; events meanwhile may be missing\n", fr.cause)
		case fr.resumed:
			fmt.Fprintf(c.stderr, "storekeeper: reconnected after %v; resuming after event %s\n", fr.cause, fr.since)
		case c.json:
			c.printRaw(fr.raw) // the server's frames as they are, stream.live and stream.gap too
		case fr.live:
			// Subscribed (after any replay): not an event.
		case fr.ev.Type == frameGap:
			fmt.Fprintln(c.stderr, "storekeeper: some events may have been missed: the server could not replay them (its stream no longer holds them, or could not be read)")
		default:
			fmt.Fprintln(c.stdout, eventLine(fr.ev))
		}
	}
}

// eventLine is one event on one line: when, what it is about, and what
// happened.
func eventLine(e jobs.Event) string {
	at := "--:--:--"
	if !e.At.IsZero() {
		at = e.At.Local().Format("15:04:05")
	}
	subject := string(e.Type)
	switch {
	case e.JobID != "":
		subject = fmt.Sprintf("%s %s %s", e.Kind, e.Store, e.JobID)
	case e.Store != "":
		subject = "store " + e.Store
	case e.Node != "":
		subject = "node " + e.Node
	}
	return at + "  " + subject + ": " + describe(e)
}

// describe says what an event tells, in words.
func describe(e jobs.Event) string {
	by := ""
	if e.Actor != "" {
		by = " by " + e.Actor
	}
	switch e.Type {
	case jobs.EventJobEnqueued:
		return fmt.Sprintf("enqueued (%s%s)", e.Trigger, by)
	case jobs.EventJobStarted:
		return fmt.Sprintf("started on %s, attempt %d of %d", e.Node, e.Attempt, e.MaxRetry+1)
	case jobs.EventJobProgress:
		return phaseText(e)
	case jobs.EventJobRetrying:
		return fmt.Sprintf("attempt %d of %d failed; retrying: %s", e.Attempt, e.MaxRetry+1, e.Error)
	case jobs.EventJobSucceeded:
		return strings.TrimSuffix("succeeded: "+resultText(e.Kind, e.Result), ": ")
	case jobs.EventJobFailed:
		return "failed: " + e.Error
	case jobs.EventJobCanceled:
		return "canceled" + by
	case jobs.EventStoreCorrupt:
		if e.Action == "auto_restore" {
			return fmt.Sprintf("corrupt (%s); restoring from backup %s (job %s)", e.Error, e.BackupID, e.RestoreJobID)
		}
		return fmt.Sprintf("corrupt (%s); no automatic restore: %s", e.Error, e.Action)
	case jobs.EventStoreRestored:
		return fmt.Sprintf("restored from backup %s (taken %s): writes after it are gone; the replaced generation is in %s",
			e.BackupID, timeOr(&e.BackupAt, "?"), orText(e.Quarantine, "no quarantine (there was no live store)"))
	case jobs.EventBackupCorrupt:
		return fmt.Sprintf("backup %s is corrupt and marked bad: %s", e.BackupID, e.Error)
	case jobs.EventNodeUp:
		return "up"
	case jobs.EventNodeDown:
		return "down: its stores' jobs wait until it returns"
	}
	return string(e.Type)
}

// phaseText is a job's phase, with how far it is when known (done and
// total are bytes or files, depending on the phase: a share says both).
func phaseText(e jobs.Event) string {
	if e.Total > 0 && e.Done > 0 {
		return fmt.Sprintf("%s %d%%", e.Phase, min(100, e.Done*100/e.Total))
	}
	return e.Phase
}

// resultText is a job's result in a few words; `storekeeper ctl job ID`
// and --json show all of it.
func resultText(kind jobs.Kind, raw json.RawMessage) string {
	if len(raw) == 0 {
		return ""
	}
	switch kind {
	case jobs.KindCompact:
		var r struct {
			Outcome  string `json:"outcome"`
			Decision struct {
				Compact bool   `json:"compact"`
				Reason  string `json:"reason"`
			} `json:"decision"`
			BytesBefore uint64 `json:"bytes_before"`
			BytesAfter  uint64 `json:"bytes_after"`
		}
		if json.Unmarshal(raw, &r) != nil {
			return ""
		}
		switch {
		case r.Outcome == "compacted":
			return fmt.Sprintf("compacted, %s → %s", mib(r.BytesBefore), mib(r.BytesAfter))
		case r.Outcome == "dry_run" && r.Decision.Compact:
			return "dry run: would compact (" + r.Decision.Reason + ")"
		case r.Outcome == "dry_run":
			return "dry run: would skip (" + r.Decision.Reason + ")"
		case r.Decision.Reason != "":
			return r.Outcome + " (" + r.Decision.Reason + ")"
		}
		return r.Outcome
	case jobs.KindBackup:
		var r struct {
			Backup struct {
				ID    string `json:"id"`
				Bytes int64  `json:"bytes"`
			} `json:"backup"`
			Copied int `json:"copied"`
			Shared int `json:"shared"`
		}
		if json.Unmarshal(raw, &r) != nil {
			return ""
		}
		return fmt.Sprintf("backup %s, %s: %d files copied, %d shared with earlier backups", r.Backup.ID, mib(uint64(r.Backup.Bytes)), r.Copied, r.Shared)
	case jobs.KindVerify:
		var r struct {
			Corrupt string `json:"corrupt"`
			Live    struct {
				Files int    `json:"files"`
				Bytes uint64 `json:"bytes"`
			} `json:"live"`
			Backup struct {
				ID    string `json:"id"`
				Files int    `json:"files"`
				Bad   string `json:"bad"`
			} `json:"backup"`
		}
		if json.Unmarshal(raw, &r) != nil {
			return ""
		}
		if r.Corrupt != "" {
			return "the store is corrupt: " + r.Corrupt
		}
		s := fmt.Sprintf("%d files, %s: checksums good", r.Live.Files, mib(r.Live.Bytes))
		switch {
		case r.Backup.Bad != "":
			s += fmt.Sprintf("; backup %s is corrupt and was marked bad: %s", r.Backup.ID, r.Backup.Bad)
		case r.Backup.ID != "":
			s += fmt.Sprintf("; backup %s good (%d files)", r.Backup.ID, r.Backup.Files)
		}
		return s
	case jobs.KindRestore:
		var r struct {
			BackupID string `json:"backup_id"`
		}
		if json.Unmarshal(raw, &r) != nil {
			return ""
		}
		return "restored from backup " + r.BackupID
	}
	return ""
}
