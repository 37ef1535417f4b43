package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Stream names. Each entry has one field, StreamField, holding the JSON
// of an Event or a HistoryEntry; the entry id is its id.
const (
	EventsStream  = "storekeeper:events"
	HistoryStream = "storekeeper:history"
	StreamField   = "json"
)

// Default stream bounds (trimmed approximately, as Redis does cheaply).
const (
	DefaultEventsMaxLen  = 100_000
	DefaultHistoryMaxLen = 100_000
)

// AppendArgs returns the XADD arguments that append v (an Event or a
// HistoryEntry, without its ID) to stream, trimmed to about maxLen, so a
// caller can pipeline it with the record update it belongs to.
func AppendArgs(stream string, maxLen int64, v any) (*redis.XAddArgs, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return &redis.XAddArgs{Stream: stream, MaxLen: maxLen, Approx: true, Values: []any{StreamField, b}}, nil
}

// Append appends v to stream and returns its entry id.
func Append(ctx context.Context, c redis.Cmdable, stream string, maxLen int64, v any) (string, error) {
	args, err := AppendArgs(stream, maxLen, v)
	if err != nil {
		return "", err
	}
	return c.XAdd(ctx, args).Result()
}

func decodeEntry[T any](m redis.XMessage, setID func(*T, string)) (T, error) {
	var v T
	s, _ := m.Values[StreamField].(string)
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		return v, fmt.Errorf("stream entry %s: %w", m.ID, err)
	}
	setID(&v, m.ID)
	return v, nil
}

// ErrBadQuery: a history query or stream id that cannot be used.
var ErrBadQuery = errors.New("bad query")

// ReadEvents returns up to count events after the entry id since ("0":
// from the start, "$": only new ones), waiting up to block for the first
// (0: do not wait). It returns no events and no error when the wait ends.
func ReadEvents(ctx context.Context, c redis.Cmdable, since string, count int64, block time.Duration) ([]Event, error) {
	if since != "$" {
		if _, _, err := parseStreamID(since); err != nil {
			return nil, fmt.Errorf("%w: since: %w", ErrBadQuery, err)
		}
	}
	if block <= 0 {
		block = -1 // go-redis: no BLOCK clause
	}
	res, err := c.XRead(ctx, &redis.XReadArgs{Streams: []string{EventsStream, since}, Count: count, Block: block}).Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, unavailable(err)
	}
	var out []Event
	for _, s := range res {
		for _, m := range s.Messages {
			e, err := decodeEntry(m, func(e *Event, id string) { e.ID = id })
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
	ms, seq, err := parseStreamID(since)
	if err != nil {
		return false, fmt.Errorf("%w: since: %w", ErrBadQuery, err)
	}
	// Redis 7 counts the entries ever added: as many as the stream holds
	// means nothing was trimmed, so nothing can be missing, however old
	// since is. (It does not say which ids were trimmed: XTRIM leaves
	// max-deleted-entry-id alone.) miniredis reports no count; there, a
	// stream shorter than the cap was never trimmed either: storekeeper's
	// writers trim only in XADD MAXLEN, which leaves at least the cap.
	if info, err := c.XInfoStream(ctx, EventsStream).Result(); err == nil {
		switch {
		case info.EntriesAdded > 0 && info.EntriesAdded == info.Length:
			return false, nil
		case info.EntriesAdded == 0 && maxLen > 0 && info.Length < maxLen:
			return false, nil
		}
	}
	// Otherwise the oldest entry is all there is to go by: a since older
	// than it counts as a gap.
	first, err := c.XRangeN(ctx, EventsStream, "-", "+", 1).Result()
	if err != nil {
		return false, unavailable(err)
	}
	if len(first) == 0 {
		return false, nil
	}
	fms, fseq, err := parseStreamID(first[0].ID)
	if err != nil {
		return false, err
	}
	// since itself may be gone (it was read before the trim): a gap only
	// when something between since and the oldest entry could be lost.
	return ms < fms || ms == fms && seq+1 < fseq, nil
}

// ValidStreamID reports whether id is a stream entry id ("<ms>-<seq>" or "<ms>").
func ValidStreamID(id string) bool { _, _, err := parseStreamID(id); return err == nil }

// CompareStreamIDs orders two valid stream entry ids: -1, 0 or 1.
func CompareStreamIDs(a, b string) int {
	ams, aseq, _ := parseStreamID(a)
	bms, bseq, _ := parseStreamID(b)
	switch {
	case ams != bms:
		return cmpU(ams, bms)
	default:
		return cmpU(aseq, bseq)
	}
}

func cmpU(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// parseStreamID parses "<ms>-<seq>" (or "<ms>").
func parseStreamID(id string) (uint64, uint64, error) {
	msPart, seqPart, hasSeq := strings.Cut(id, "-")
	ms, err := strconv.ParseUint(msPart, 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("not a stream id: %q", id)
	}
	if !hasSeq {
		return ms, 0, nil
	}
	seq, err := strconv.ParseUint(seqPart, 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("not a stream id: %q", id)
	}
	return ms, seq, nil
}
