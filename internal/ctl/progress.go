package ctl

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"unicode/utf8"

	"storekeeper/jobs"
)

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
func (p *progress) event(e jobs.Event, raw json.RawMessage) {
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

func (p *progress) show(e jobs.Event, raw json.RawMessage, news bool) {
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
