package jobs

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// History and its filtered views.
//
// Every finished job appends one entry to HistoryStream. The same finish
// (changeScript's history operation, or AppendHistory) appends a copy of
// the entry, under the very same stream id, to the index streams of its
// store, its kind, and its store and kind together (HistoryIndexes). So a
// query by store, by kind or by both is one XREVRANGE of one index, which
// reads the page and no more, and a cursor (before=) means the same in
// every view: an id of HistoryStream.
//
// Each index is trimmed (MINID ~) to HistoryStream's oldest entry whenever
// it is appended to, so together the indexes hold about three copies of
// what HistoryStream holds. An index that gets no more entries (a store
// that is gone) keeps what it had; readers ignore its entries older than
// HistoryStream's oldest, so no view shows an entry the others cannot.
//
// HistoryIndexMeta says how far the indexes can be trusted. "last" is the
// newest entry whose copies were written; "below", when set, is the newest
// entry that may lack them: entries appended before this version (or by a
// process still running an older one during an upgrade) are not indexed.
// A finish that finds HistoryStream's newest entry is not "last" (someone
// appended without indexing) moves "below" up to it. Readers treat entries
// at or below "below" as unindexed (all of them while HistoryStream's
// newest is not "last") and find those by a bounded scan of HistoryStream,
// HistoryLegacyScan entries per query: such a page may be short, or even
// empty, with a next cursor. Once HistoryStream has been trimmed past
// "below", no query scans.
const (
	HistoryIndexMeta   = "storekeeper:history:index"
	historyStorePrefix = "storekeeper:history:store:"
	historyKindPrefix  = "storekeeper:history:kind:"
	historyBothPrefix  = "storekeeper:history:sk:"
)

// HistoryLegacyScan bounds the entries of HistoryStream that one filtered
// query scans when it reaches entries the indexes do not hold.
const HistoryLegacyScan = 1000

// HistoryIndexKey is the index stream that answers a query by store, by
// kind, or by both (store names cannot contain ':'). Keys are derived from
// the store and kind only, so a later layout can add a hash tag.
func HistoryIndexKey(store string, kind Kind) string {
	switch {
	case store != "" && kind != "":
		return historyBothPrefix + store + ":" + string(kind)
	case store != "":
		return historyStorePrefix + store
	case kind != "":
		return historyKindPrefix + string(kind)
	}
	return HistoryStream
}

// HistoryIndexes are the index streams an entry of store and kind is
// copied to (an entry without a store, a notification's, has only its
// kind's).
func HistoryIndexes(store string, kind Kind) []string {
	if store == "" {
		return []string{HistoryIndexKey("", kind)}
	}
	return []string{HistoryIndexKey(store, ""), HistoryIndexKey("", kind), HistoryIndexKey(store, kind)}
}

// NewHistoryEntry returns the stream entry appending h to HistoryStream,
// trimmed to about maxLen, and to h's index streams.
func NewHistoryEntry(maxLen int64, h HistoryEntry) StreamEntry {
	e := NewEntry(HistoryStream, maxLen, h)
	e.Indexes = HistoryIndexes(h.Store, h.Kind)
	return e
}

// historyAddLua appends a history entry and its index copies; changeScript
// and appendHistoryScript both use it. The index XADDs cannot fail on a
// sane stream (their ids are HistoryStream's, which only grow), but an
// error there must not abort a finish half done: it is caught, and the
// entry counted as unindexed.
const historyAddLua = `
local function history_add(stream, maxlen, json, meta, idx)
  local last = redis.call('HGET', meta, 'last')
  local newer = redis.call('XREVRANGE', stream, '+', last and '(' .. last or '-', 'COUNT', 1)[1]
  if newer then redis.call('HSET', meta, 'below', newer[1]) end
  local id = redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'json', json)
  local first = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)[1][1]
  for _, k in ipairs(idx) do
    local r = redis.pcall('XADD', k, 'MINID', '~', first, id, 'json', json)
    if type(r) == 'table' and r.err then redis.call('HSET', meta, 'below', id) end
  end
  redis.call('HSET', meta, 'last', id)
  return id
end
`

// appendHistoryScript: KEYS[1] HistoryStream, KEYS[2] HistoryIndexMeta,
// KEYS[3…] the indexes; ARGV maxLen, JSON.
var appendHistoryScript = redis.NewScript(historyAddLua + `
return history_add(KEYS[1], ARGV[1], ARGV[2], KEYS[2], {unpack(KEYS, 3)})
`)

// AppendHistory appends h to HistoryStream and its indexes, as a job's
// finish does, and returns its id. (A finish appends its entry within its
// Change: Change.End.)
func AppendHistory(ctx context.Context, rdb redis.Scripter, maxLen int64, h HistoryEntry) (string, error) {
	e := NewHistoryEntry(maxLen, h)
	id, err := appendHistoryScript.Run(ctx, rdb, append([]string{HistoryStream, HistoryIndexMeta}, e.Indexes...), maxLen, e.JSON).Text()
	if err != nil {
		return "", unavailable(err)
	}
	return id, nil
}

// HistoryQuery selects history entries, newest first.
type HistoryQuery struct {
	Store  string // empty: every store
	Kind   Kind   // empty: every kind
	Limit  int    // 1..500; 0 means 50
	Before string // an entry id: only older entries (the paging cursor)
}

// ErrBadCursor: a history cursor that is not an entry id (it is also an
// ErrBadQuery).
var ErrBadCursor = fmt.Errorf("%w: bad cursor", ErrBadQuery)

// ParseHistoryCursor checks a paging cursor: a stream entry id "<ms>-<seq>"
// or "<ms>" (meaning "<ms>-0"), each part decimal digits within 64 bits,
// and not 0-0 (nothing is older). It returns the id in canonical form.
func ParseHistoryCursor(s string) (string, error) {
	msPart, seqPart, hasSeq := strings.Cut(s, "-")
	ms, ok := parseDecimal(msPart)
	seq := uint64(0)
	if ok && hasSeq {
		seq, ok = parseDecimal(seqPart)
	}
	if !ok {
		return "", fmt.Errorf("%w: before %q is not a history entry id (<ms>-<seq>)", ErrBadCursor, s)
	}
	if ms == 0 && seq == 0 {
		return "", fmt.Errorf("%w: before %q: no entry is older", ErrBadCursor, s)
	}
	return strconv.FormatUint(ms, 10) + "-" + strconv.FormatUint(seq, 10), nil
}

// parseDecimal parses digits only (no sign, no spaces) within 64 bits.
func parseDecimal(s string) (uint64, bool) {
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 10, 64)
	return n, err == nil
}

// History returns entries matching q, newest first, and the cursor for the
// next page ("" when there is none). An unfiltered query reads the page
// from HistoryStream; a filtered one from its index (HistoryIndexKey), in
// one round trip that reads the page, one entry more and two bounds. Only
// entries the indexes do not hold are scanned for (see HistoryIndexMeta).
func History(ctx context.Context, c redis.Cmdable, q HistoryQuery) ([]HistoryEntry, string, error) {
	msgs, next, err := historyPage(ctx, c, q)
	if err != nil {
		return nil, "", err
	}
	var out []HistoryEntry
	for _, m := range msgs {
		e, err := decodeHistory(m)
		if err != nil {
			return nil, "", err
		}
		out = append(out, e)
	}
	return out, next, nil
}

// RawHistoryEntry is a history entry as HistoryStream holds it: its id
// and its JSON (a HistoryEntry without its id).
type RawHistoryEntry struct {
	ID   string
	JSON string
}

// HistoryRaw is History without decoding: the page's entries as stored,
// for a caller that only passes them on (the API's GET /api/history,
// where decoding and encoding 500 entries was most of a query's time).
func HistoryRaw(ctx context.Context, c redis.Cmdable, q HistoryQuery) ([]RawHistoryEntry, string, error) {
	msgs, next, err := historyPage(ctx, c, q)
	if err != nil {
		return nil, "", err
	}
	out := make([]RawHistoryEntry, len(msgs))
	for i, m := range msgs {
		s, _ := m.Values[StreamField].(string)
		out[i] = RawHistoryEntry{ID: m.ID, JSON: s}
	}
	return out, next, nil
}

// historyPage is the stream entries of History's page and its next
// cursor.
func historyPage(ctx context.Context, c redis.Cmdable, q HistoryQuery) ([]redis.XMessage, string, error) {
	if q.Limit == 0 {
		q.Limit = 50
	}
	if q.Limit < 1 || q.Limit > 500 {
		return nil, "", fmt.Errorf("%w: limit %d is outside 1..500", ErrBadQuery, q.Limit)
	}
	if q.Kind != "" && !q.Kind.Valid() {
		return nil, "", fmt.Errorf("%w: unknown kind %q", ErrBadQuery, q.Kind)
	}
	if q.Store != "" {
		if err := ValidateStoreName(q.Store); err != nil {
			return nil, "", fmt.Errorf("%w: %w", ErrBadQuery, err)
		}
	}
	end := "+"
	if q.Before != "" {
		before, err := ParseHistoryCursor(q.Before)
		if err != nil {
			return nil, "", err
		}
		q.Before, end = before, "("+before
	}
	if q.Store == "" && q.Kind == "" {
		msgs, err := c.XRevRangeN(ctx, HistoryStream, end, "-", int64(q.Limit)+1).Result()
		if err != nil {
			return nil, "", unavailable(err)
		}
		return page(msgs, q.Limit)
	}

	// One snapshot: the stream's bounds, how far the indexes hold, and the
	// page from the index.
	pipe := c.TxPipeline()
	firstCmd := pipe.XRangeN(ctx, HistoryStream, "-", "+", 1)
	lastCmd := pipe.XRevRangeN(ctx, HistoryStream, "+", "-", 1)
	metaCmd := pipe.HMGet(ctx, HistoryIndexMeta, "last", "below")
	idxCmd := pipe.XRevRangeN(ctx, HistoryIndexKey(q.Store, q.Kind), end, "-", int64(q.Limit)+1)
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
	if below != "" && CompareStreamIDs(below, first) >= 0 {
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
		return CompareStreamIDs(id, f) > 0
	}
	return CompareStreamIDs(id, floor) >= 0
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
func legacyScan(ctx context.Context, c redis.Cmdable, q HistoryQuery, below string, out []redis.XMessage) ([]redis.XMessage, string, error) {
	if len(out) == q.Limit {
		return out, out[q.Limit-1].ID, nil
	}
	end := below
	if q.Before != "" && CompareStreamIDs(q.Before, below) <= 0 {
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
	for budget := HistoryLegacyScan; budget > 0; {
		n := min(budget, 500)
		msgs, err := c.XRevRangeN(ctx, HistoryStream, end, "-", int64(n)).Result()
		if err != nil {
			return nil, "", unavailable(err)
		}
		budget -= len(msgs)
		for _, m := range msgs {
			s, _ := m.Values[StreamField].(string)
			if !containsAll(s, needles) {
				continue
			}
			e, err := decodeHistory(m)
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

// decodeHistory is the entry m of HistoryStream or an index.
func decodeHistory(m redis.XMessage) (HistoryEntry, error) {
	s, _ := m.Values[StreamField].(string)
	e, err := decodeHistoryJSON(s)
	if err != nil {
		return e, fmt.Errorf("stream entry %s: %w", m.ID, err)
	}
	e.ID = m.ID
	return e, nil
}

func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
