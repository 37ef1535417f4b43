package ctl

import (
	"context"
	"errors"
	"flag"
	"fmt"

	"storekeeper/client"
	"storekeeper/jobs"
)

func ctlWatch(ctx context.Context, c *ctl, fs *flag.FlagSet, args []string) error {
	var filter client.Filter
	fs.Func("store", "only events of this `store` (repeatable)", func(v string) error { filter.Stores = append(filter.Stores, v); return nil })
	fs.Func("kind", "only events of this `kind` (repeatable)", func(v string) error { filter.Kinds = append(filter.Kinds, jobs.Kind(v)); return nil })
	fs.Func("job", "only events of this `job` (repeatable)", func(v string) error { filter.Jobs = append(filter.Jobs, v); return nil })
	fs.Func("since", "first replay the events after this event `id`", func(v string) error { filter.Since = v; return nil })
	if _, err := c.parse(fs, args, 0, 0); err != nil {
		return err
	}
	f, err := c.api.Watch(ctx, filter)
	if err != nil {
		return err
	}
	defer f.Close()
	fmt.Fprintln(c.stderr, "storekeeper: watching events; interrupt to stop")
	for {
		fr, err := f.Next(ctx)
		switch {
		case errors.Is(err, client.ErrClosed), err != nil && ctx.Err() != nil:
			return nil // interrupted: the normal end
		case err != nil:
			return err
		case fr.Resumed && fr.Since == "":
			fmt.Fprintf(c.stderr, "storekeeper: reconnected after %v; events meanwhile may be missing\n", fr.Cause)
		case fr.Resumed:
			fmt.Fprintf(c.stderr, "storekeeper: reconnected after %v; resuming after event %s\n", fr.Cause, fr.Since)
		case c.json:
			c.printRaw(fr.Raw) // the server's frames as they are, stream.live and stream.gap too
		case fr.Live():
			// Subscribed (after any replay): not an event.
		case fr.Gap():
			fmt.Fprintln(c.stderr, "storekeeper: some events may have been missed: the server could not replay them (its stream no longer holds them, or could not be read)")
		default:
			fmt.Fprintln(c.stdout, eventLine(fr.Event))
		}
	}
}
