package jobsdb

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"

	"storekeeper/internal/keyspace"
	"storekeeper/jobs"
)

// AppendHistory appends h to HistoryStream and its indexes, as a job's
// finish does, and returns its id. (A finish appends its entry within its
// Change: Change.End.)
func AppendHistory(ctx context.Context, rdb redis.Scripter, maxLen int64, h jobs.HistoryEntry) (string, error) {
	e := keyspace.NewHistoryEntry(maxLen, h)
	id, err := keyspace.AppendHistoryScript.Run(ctx, rdb, append([]string{keyspace.HistoryStream, keyspace.HistoryIndexMeta}, e.Indexes...), maxLen, e.JSON).Text()
	if err != nil {
		return "", unavailable(err)
	}
	return id, nil
}

// History returns entries matching q, newest first, and the cursor for the
// next page ("" when there is none). An unfiltered query reads the page
// from HistoryStream; a filtered one from its index (HistoryIndexKey), in
// one round trip that reads the page, one entry more and two bounds. Only
// entries the indexes do not hold are scanned for (see HistoryIndexMeta).
func History(ctx context.Context, c redis.Cmdable, q jobs.HistoryQuery) ([]jobs.HistoryEntry, string, error) {
	msgs, next, err := historyPage(ctx, c, q)
	if err != nil {
		return nil, "", err
	}
	var out []jobs.HistoryEntry
	for _, m := range msgs {
		e, err := keyspace.DecodeHistory(m)
		if err != nil {
			return nil, "", err
		}
		out = append(out, e)
	}
	return out, next, nil
}

// HistoryRaw is History without decoding: the page's entries as stored,
// for a caller that only passes them on (the API's GET /api/history,
// where decoding and encoding 500 entries was most of a query's time).
func HistoryRaw(ctx context.Context, c redis.Cmdable, q jobs.HistoryQuery) ([]jobs.RawHistoryEntry, string, error) {
	msgs, next, err := historyPage(ctx, c, q)
	if err != nil {
		return nil, "", err
	}
	out := make([]jobs.RawHistoryEntry, len(msgs))
	for i, m := range msgs {
		s, _ := m.Values[keyspace.StreamField].(string)
		out[i] = jobs.RawHistoryEntry{ID: m.ID, JSON: s}
	}
	return out, next, nil
}

// historyPage is the stream entries of History's page and its next
// cursor.
func historyPage(ctx context.Context, c redis.Cmdable, q jobs.HistoryQuery) ([]redis.XMessage, string, error) {
	if q.Limit == 0 {
		q.Limit = 50
	}
	if q.Limit < 1 || q.Limit > 500 {
		return nil, "", fmt.Errorf("%w: limit %d is outside 1..500", jobs.ErrBadQuery, q.Limit)
	}
	if q.Kind != "" && !q.Kind.Valid() {
		return nil, "", fmt.Errorf("%w: unknown kind %q", jobs.ErrBadQuery, q.Kind)
	}
	if q.Store != "" {
		if err := jobs.ValidateStoreName(q.Store); err != nil {
			return nil, "", fmt.Errorf("%w: %w", jobs.ErrBadQuery, err)
		}
	}
	end := "+"
	if q.Before != "" {
		before, err := jobs.ParseHistoryCursor(q.Before)
		if err != nil {
			return nil, "", err
		}
		q.Before, end = before, "("+before
	}
	if q.Store == "" && q.Kind == "" {
		msgs, err := c.XRevRangeN(ctx, keyspace.HistoryStream, end, "-", int64(q.Limit)+1).Result()
		if err != nil {
			return nil, "", unavailable(err)
		}
		return page(msgs, q.Limit)
	}

	// One snapshot: the stream's bounds, how far the indexes hold, and the
	// page from the index.
	pipe := c.TxPipeline()
	firstCmd := pipe.XRangeN(ctx, keyspace.HistoryStream, "-", "+", 1)
	lastCmd := pipe.XRevRangeN(ctx, keyspace.HistoryStream, "+", "-", 1)
	metaCmd := pipe.HMGet(ctx, keyspace.HistoryIndexMeta, "last", "below")
	idxCmd := pipe.XRevRangeN(ctx, keyspace.HistoryIndexKey(q.Store, q.Kind), end, "-", int64(q.Limit)+1)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, "", unavailable(err)
	}
	if len(firstCmd.Val()) == 0 {
		return nil, "", nil // no history at all
	}
	first, last := firstCmd.Val()[0].ID, lastCmd.Val()[0].ID
	meta := metaCmd.Val()
	indexed, _ := meta[0].(string)
	below, _ := meta[1].(string)
	if indexed != last {
		// Entries were appended without their copies (by an older
		// version) since the last indexed one: trust no index until a
		// finish of this version moves "below" past them.
		below = last
	}
	// The index holds the entries after below, back to HistoryStream's
	// oldest.
	floor := first
	if below != "" && jobs.CompareStreamIDs(below, first) >= 0 {
		floor = "(" + below
	}
	var msgs []redis.XMessage
	for _, m := range idxCmd.Val() {
		if !afterFloor(m.ID, floor) {
			break
		}
		msgs = append(msgs, m)
	}
	if len(msgs) > q.Limit || floor == first {
		return page(msgs, q.Limit)
	}
	return legacyScan(ctx, c, q, below, msgs)
}

// afterFloor reports whether id is at or after floor ("<id>": at or
// after; "(<id>": after).
func afterFloor(id, floor string) bool {
	if f, ok := strings.CutPrefix(floor, "("); ok {
		return jobs.CompareStreamIDs(id, f) > 0
	}
	return jobs.CompareStreamIDs(id, floor) >= 0
}

// page is msgs (newest first, up to limit and one more) cut to limit,
// and the next cursor when there is one more.
func page(msgs []redis.XMessage, limit int) ([]redis.XMessage, string, error) {
	if len(msgs) > limit {
		return msgs[:limit], msgs[limit-1].ID, nil
	}
	return msgs, "", nil
}

// legacyScan completes a filtered page (out so far) from HistoryStream's
// entries at or below below, older than q.Before, that the indexes may not
// hold, reading at most HistoryLegacyScan of them. When that budget runs
// out first, the page may be short and the cursor is the last entry read.
func legacyScan(ctx context.Context, c redis.Cmdable, q jobs.HistoryQuery, below string, out []redis.XMessage) ([]redis.XMessage, string, error) {
	if len(out) == q.Limit {
		return out, out[q.Limit-1].ID, nil
	}
	end := below
	if q.Before != "" && jobs.CompareStreamIDs(q.Before, below) <= 0 {
		end = "(" + q.Before
	}
	// Cheap test first: an entry of store s has "s" in its JSON.
	var needles []string
	if q.Store != "" {
		needles = append(needles, `"`+q.Store+`"`)
	}
	if q.Kind != "" {
		needles = append(needles, `"`+string(q.Kind)+`"`)
	}
	for budget := jobs.HistoryLegacyScan; budget > 0; {
		n := min(budget, 500)
		msgs, err := c.XRevRangeN(ctx, keyspace.HistoryStream, end, "-", int64(n)).Result()
		if err != nil {
			return nil, "", unavailable(err)
		}
		budget -= len(msgs)
		for _, m := range msgs {
			s, _ := m.Values[keyspace.StreamField].(string)
			if !containsAll(s, needles) {
				continue
			}
			e, err := keyspace.DecodeHistory(m)
			if err != nil {
				return nil, "", err
			}
			if (q.Store != "" && e.Store != q.Store) || (q.Kind != "" && e.Kind != q.Kind) {
				continue
			}
			out = append(out, m)
			if len(out) == q.Limit {
				return out, m.ID, nil
			}
		}
		if len(msgs) < n {
			return out, "", nil
		}
		end = "(" + msgs[len(msgs)-1].ID
	}
	return out, strings.TrimPrefix(end, "("), nil
}

func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
