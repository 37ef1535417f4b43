package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"storekeeper/jobs"
)

// ErrStoppedWaiting: Follow or Wait returned before every job had ended
// (the context ended, or the feed was closed); the jobs go on.
var ErrStoppedWaiting = errors.New("stopped waiting")

// Wait follows the jobs ids name to their end and returns their final
// records, in the order of ids. A job that ended before Wait was called
// ends the wait at once: the feed is subscribed before the records are
// read, so no end passes unseen. It does not fail because a job did: the
// records say how each ended.
func (c *Client) Wait(ctx context.Context, ids ...string) ([]jobs.Record, error) {
	f, err := c.Watch(ctx, Filter{Jobs: ids})
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if err := f.WaitLive(ctx); err != nil && !errors.Is(err, ErrNotLive) {
		return nil, err
	}
	recs := make([]jobs.Record, len(ids))
	for i, id := range ids {
		if recs[i], err = c.Job(ctx, id); err != nil {
			return nil, err
		}
	}
	if err := c.Follow(ctx, f, recs, nil); err != nil {
		return nil, err
	}
	for i, r := range recs {
		if recs[i], err = c.Job(ctx, r.ID); err != nil {
			return nil, err
		}
	}
	return recs, nil
}

// Follow follows the jobs recs hold over f until each has ended, and
// passes each frame's event to fn (when not nil) with the frame as it
// came: the events of these jobs, and whatever else f's filter lets
// through. f must have been subscribed (WaitLive) before the jobs were
// asked for, so that none of their events passed before it.
//
// A job recs already give as ended ends at once. Whenever events may have
// passed unseen, the records say how the jobs stand: when a connection is
// subscribed again after a reconnection (a job may have ended while none
// was), and on stream.gap. A job found ended so is passed to fn as the
// event that ended it, made from its record, with the record's JSON.
//
// It returns nil once every job has ended, however it ended; an error
// wrapping ErrStoppedWaiting when ctx ends or f is closed first; or the
// error that stopped f or a read of a record.
func (c *Client) Follow(ctx context.Context, f *Feed, recs []jobs.Record, fn func(jobs.Event, json.RawMessage)) error {
	if fn == nil {
		fn = func(jobs.Event, json.RawMessage) {}
	}
	running := map[string]bool{}
	for _, r := range recs {
		if r.State.Terminal() {
			raw, _ := json.Marshal(r)
			fn(endEvent(r), raw)
		} else {
			running[r.ID] = true
		}
	}
	for len(running) > 0 {
		fr, err := f.Next(ctx)
		switch {
		case err != nil && ctx.Err() != nil:
			// The feed may tell its end (ErrClosed) before ctx's: the
			// caller learns both.
			return fmt.Errorf("%w: %w (%w)", ErrStoppedWaiting, ctx.Err(), err)
		case errors.Is(err, ErrClosed):
			return fmt.Errorf("%w: %w", ErrStoppedWaiting, err)
		case err != nil:
			return err
		case fr.Live(), fr.Gap(), fr.Resumed && f.noLive:
			// Subscribed again, or events may be lost (the stream was
			// trimmed, or the replay failed): the records say how the jobs
			// stand. The first live frame was WaitLive's, before the jobs
			// were asked for: this one follows a reconnection. (With a
			// server that does not say stream.live, the reconnection
			// itself.)
			if err := c.recheck(ctx, recs, running, fn); err != nil {
				return err
			}
		case fr.Resumed:
			// Not yet subscribed: the live frame that follows says when.
		default:
			fn(fr.Event, fr.Raw)
			if ends(fr.Event.Type) {
				delete(running, fr.Event.JobID)
			}
		}
	}
	return nil
}

// recheck reads the records of the jobs of recs still running and passes
// on the ends of those that ended.
func (c *Client) recheck(ctx context.Context, recs []jobs.Record, running map[string]bool, fn func(jobs.Event, json.RawMessage)) error {
	for _, rec := range recs {
		id := rec.ID
		if !running[id] {
			continue
		}
		raw, err := c.do(ctx, "GET", apiPath("/api/jobs", id), nil, nil)
		if err != nil {
			return err
		}
		var r jobs.Record
		if err := json.Unmarshal(raw, &r); err != nil {
			return fmt.Errorf("decoding job %s: %w", id, err)
		}
		if r.State.Terminal() {
			fn(endEvent(r), raw)
			delete(running, id)
		}
	}
	return nil
}

// ends reports whether an event of type t ends its job.
func ends(t jobs.EventType) bool {
	return t == jobs.EventJobSucceeded || t == jobs.EventJobFailed || t == jobs.EventJobCanceled
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
