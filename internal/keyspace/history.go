package keyspace

import (
	"fmt"

	"github.com/redis/go-redis/v9"

	"storekeeper/jobs"
)

// History and its filtered views.
//
// Every finished job appends one entry to HistoryStream. The same finish
// (ChangeScript's history operation, or AppendHistory) appends a copy of
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

// HistoryIndexKey is the index stream that answers a query by store, by
// kind, or by both (store names cannot contain ':'). Keys are derived from
// the store and kind only, so a later layout can add a hash tag.
func HistoryIndexKey(store string, kind jobs.Kind) string {
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
func HistoryIndexes(store string, kind jobs.Kind) []string {
	if store == "" {
		return []string{HistoryIndexKey("", kind)}
	}
	return []string{HistoryIndexKey(store, ""), HistoryIndexKey("", kind), HistoryIndexKey(store, kind)}
}

// NewHistoryEntry returns the stream entry appending h to HistoryStream,
// trimmed to about maxLen, and to h's index streams.
func NewHistoryEntry(maxLen int64, h jobs.HistoryEntry) StreamEntry {
	e := NewEntry(HistoryStream, maxLen, h)
	e.Indexes = HistoryIndexes(h.Store, h.Kind)
	return e
}

// historyAddLua appends a history entry and its index copies; ChangeScript
// and AppendHistoryScript both use it. The index XADDs cannot fail on a
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

// AppendHistoryScript: KEYS[1] HistoryStream, KEYS[2] HistoryIndexMeta,
// KEYS[3…] the indexes; ARGV maxLen, JSON.
var AppendHistoryScript = redis.NewScript(historyAddLua + `
return history_add(KEYS[1], ARGV[1], ARGV[2], KEYS[2], {unpack(KEYS, 3)})
`)

// DecodeHistory is the entry m of HistoryStream or an index.
func DecodeHistory(m redis.XMessage) (jobs.HistoryEntry, error) {
	s, _ := m.Values[StreamField].(string)
	e, err := DecodeHistoryJSON(s)
	if err != nil {
		return e, fmt.Errorf("stream entry %s: %w", m.ID, err)
	}
	e.ID = m.ID
	return e, nil
}
