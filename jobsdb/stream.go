package jobsdb

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"storekeeper/internal/keyspace"
	"storekeeper/jobs"
)

// Append appends v to stream and returns its entry id.
func Append(ctx context.Context, c redis.Cmdable, stream string, maxLen int64, v any) (string, error) {
	args, err := keyspace.AppendArgs(stream, maxLen, v)
	if err != nil {
		return "", err
	}
	return c.XAdd(ctx, args).Result()
}

// ReadEvents returns up to count events after the entry id since ("0":
// from the start, "$": only new ones), waiting up to block for the first
// (0: do not wait). It returns no events and no error when the wait ends.
func ReadEvents(ctx context.Context, c redis.Cmdable, since string, count int64, block time.Duration) ([]jobs.Event, error) {
	if since != "$" {
		if _, _, err := jobs.ParseStreamID(since); err != nil {
			return nil, fmt.Errorf("%w: since: %w", jobs.ErrBadQuery, err)
		}
	}
	if block <= 0 {
		block = -1 // go-redis: no BLOCK clause
	}
	res, err := c.XRead(ctx, &redis.XReadArgs{Streams: []string{keyspace.EventsStream, since}, Count: count, Block: block}).Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, unavailable(err)
	}
	var out []jobs.Event
	for _, s := range res {
		for _, m := range s.Messages {
			e, err := keyspace.DecodeEntry(m, func(e *jobs.Event, id string) { e.ID = id })
			if err != nil {
				return nil, err
			}
			out = append(out, e)
		}
	}
	return out, nil
}

// EventsGap reports whether events after since may be missing because the
// stream was trimmed past it. maxLen is the cap the writers trim the
// stream to (ClientConfig.EventsMaxLen); 0 when unknown.
func EventsGap(ctx context.Context, c redis.Cmdable, since string, maxLen int64) (bool, error) {
	ms, seq, err := jobs.ParseStreamID(since)
	if err != nil {
		return false, fmt.Errorf("%w: since: %w", jobs.ErrBadQuery, err)
	}
	// Redis 7 counts the entries ever added: as many as the stream holds
	// means nothing was trimmed, so nothing can be missing, however old
	// since is. (It does not say which ids were trimmed: XTRIM leaves
	// max-deleted-entry-id alone.) miniredis reports no count; there, a
	// stream shorter than the cap was never trimmed either: storekeeper's
	// writers trim only in XADD MAXLEN, which leaves at least the cap.
	if info, err := c.XInfoStream(ctx, keyspace.EventsStream).Result(); err == nil {
		switch {
		case info.EntriesAdded > 0 && info.EntriesAdded == info.Length:
			return false, nil
		case info.EntriesAdded == 0 && maxLen > 0 && info.Length < maxLen:
			return false, nil
		}
	}
	// Otherwise the oldest entry is all there is to go by: a since older
	// than it counts as a gap.
	first, err := c.XRangeN(ctx, keyspace.EventsStream, "-", "+", 1).Result()
	if err != nil {
		return false, unavailable(err)
	}
	if len(first) == 0 {
		return false, nil
	}
	fms, fseq, err := jobs.ParseStreamID(first[0].ID)
	if err != nil {
		return false, err
	}
	// since itself may be gone (it was read before the trim): a gap only
	// when something between since and the oldest entry could be lost.
	return ms < fms || ms == fms && seq+1 < fseq, nil
}
