package jobsdb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"storekeeper/internal/keyspace"
	"storekeeper/internal/redistest"
	"storekeeper/jobs"
)

// readCounter is a go-redis hook counting round trips, commands and the
// stream entries their answers carried.
type readCounter struct{ trips, commands, entries atomic.Int64 }

func (*readCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (r *readCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		r.count(cmd)
		return err
	}
}

func (r *readCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		r.count(cmds...)
		return err
	}
}

func (r *readCounter) count(cmds ...redis.Cmder) {
	// A new connection's HELLO and CLIENT SETINFO are not the caller's.
	cmds = slices.DeleteFunc(slices.Clone(cmds), func(c redis.Cmder) bool { return c.Name() == "hello" || c.Name() == "client" })
	if len(cmds) == 0 {
		return
	}
	r.trips.Add(1)
	for _, c := range cmds {
		r.commands.Add(1)
		if x, ok := c.(*redis.XMessageSliceCmd); ok {
			r.entries.Add(int64(len(x.Val())))
		}
	}
}

func (r *readCounter) snapshot() [3]int64 {
	return [3]int64{r.trips.Load(), r.commands.Load(), r.entries.Load()}
}

var historyKinds = []jobs.Kind{jobs.KindCompact, jobs.KindBackup, jobs.KindVerify, jobs.KindRestore}

// testEntry is entry i of a history spread over stores stores and four
// kinds (and, every 97th, a notification without a store).
func testEntry(i, stores int) jobs.HistoryEntry {
	e := jobs.HistoryEntry{JobID: fmt.Sprintf("j%07d", i), Kind: historyKinds[i%4], Store: fmt.Sprintf("store-%04d", i%stores),
		Status: jobs.StatusCompacted, Trigger: jobs.TriggerScheduled, Actor: "system", Attempts: 1, DurationMS: int64(i),
		BytesBefore: 123456789, BytesAfter: 100000000, Node: "n1", At: time.Unix(1_800_000_000, 0).UTC()}
	if i%97 == 96 {
		e.Kind, e.Store = jobs.KindNotify, ""
	}
	return e
}

// appendAll appends entries as finishes do (AppendHistory's script), in
// pipelines, and returns their ids.
func appendAll(t testing.TB, rdb *redis.Client, maxLen int64, entries []jobs.HistoryEntry) []string {
	t.Helper()
	ctx := context.Background()
	if err := keyspace.AppendHistoryScript.Load(ctx, rdb).Err(); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for len(entries) > 0 {
		batch := entries[:min(len(entries), 2000)]
		entries = entries[len(batch):]
		pipe := rdb.Pipeline()
		cmds := make([]*redis.Cmd, len(batch))
		for i, h := range batch {
			e := keyspace.NewHistoryEntry(maxLen, h)
			cmds[i] = keyspace.AppendHistoryScript.EvalSha(ctx, pipe, append([]string{keyspace.HistoryStream, keyspace.HistoryIndexMeta}, e.Indexes...), maxLen, e.JSON)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatal(err)
		}
		for _, c := range cmds {
			ids = append(ids, c.Val().(string))
		}
	}
	return ids
}

// allHistory pages through q's view and returns the ids, checking that
// each page moves on: its next cursor is its last entry's id, or (a short
// page of a scan through unindexed entries) older.
func allHistory(t *testing.T, rdb redis.Cmdable, q jobs.HistoryQuery) []string {
	t.Helper()
	var ids []string
	for pages := 0; ; pages++ {
		limit := q.Limit
		entries, next, err := History(t.Context(), rdb, q)
		if err != nil {
			t.Fatalf("%+v: %v", q, err)
		}
		for _, e := range entries {
			if (q.Store != "" && e.Store != q.Store) || (q.Kind != "" && e.Kind != q.Kind) {
				t.Fatalf("%+v returned %+v", q, e)
			}
			ids = append(ids, e.ID)
		}
		if next == "" {
			return ids
		}
		switch {
		case len(entries) == limit && next != entries[limit-1].ID,
			len(entries) > 0 && jobs.CompareStreamIDs(next, entries[len(entries)-1].ID) > 0,
			q.Before != "" && jobs.CompareStreamIDs(next, q.Before) >= 0:
			t.Fatalf("%+v: page of %d, next %q", q, len(entries), next)
		}
		q.Before = next
		if pages > 10000 {
			t.Fatal("paging does not end")
		}
	}
}

// filterIDs is what a filtered view must hold: the global view's entries
// that match, in its order.
func filterIDs(entries []jobs.HistoryEntry, ids []string, store string, kind jobs.Kind) []string {
	var out []string
	for i, e := range entries {
		if (store == "" || e.Store == store) && (kind == "" || e.Kind == kind) {
			out = append(out, ids[i])
		}
	}
	slices.Reverse(out)
	return out
}

// A filtered query at 100,000 entries reads its page from its index: one
// round trip, the page, one entry more and the stream's two bounds,
// whatever the filter and however few entries match (the old reader
// scanned the whole stream: 201 XREVRANGEs for a store with no entries).
func TestHistoryFilteredReadsArePageSized(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	const n, stores = 100_000, 99
	entries := make([]jobs.HistoryEntry, n)
	for i := range entries {
		entries[i] = testEntry(i, stores)
	}
	ids := appendAll(t, rdb, jobs.DefaultHistoryMaxLen, entries)

	cnt := &readCounter{}
	reader := srv.Client(t)
	reader.AddHook(cnt)
	for _, limit := range []int{500, 50, 1} {
		for _, q := range []jobs.HistoryQuery{
			{Store: "store-0042"}, {Kind: jobs.KindBackup}, {Kind: jobs.KindNotify}, {Store: "store-0043", Kind: jobs.KindVerify},
			{Store: "nosuchstore"}, {Store: "nosuchstore", Kind: jobs.KindCompact}, {Store: "store-0042", Kind: jobs.KindNotify}, // no such pair
			{Store: "store-0042", Before: ids[n/2]}, {Kind: jobs.KindRestore, Before: ids[n-3]},
		} {
			q.Limit = limit
			before := cnt.snapshot()
			got, next, err := History(t.Context(), reader, q)
			if err != nil {
				t.Fatal(err)
			}
			after := cnt.snapshot()
			trips, entriesRead := after[0]-before[0], after[2]-before[2]
			if trips != 1 || entriesRead > int64(limit)+3 {
				t.Errorf("%+v: %d round trips reading %d entries; want 1, at most limit+3", q, trips, entriesRead)
			}
			// And the right page: the global view's matching entries.
			upto := n
			if q.Before != "" {
				upto = slices.Index(ids, q.Before)
			}
			want := filterIDs(entries[:upto], ids[:upto], q.Store, q.Kind)
			gotIDs := make([]string, len(got))
			for i, e := range got {
				gotIDs[i] = e.ID
			}
			wantNext := ""
			if len(want) > limit {
				want, wantNext = want[:limit], want[limit-1]
			}
			if !slices.Equal(gotIDs, want) || next != wantNext {
				t.Errorf("%+v: %d entries (next %q), want %d (next %q)", q, len(gotIDs), next, len(want), wantNext)
			}
		}
	}
	// The unfiltered view, as jobmetrics reads it: one command.
	before := cnt.snapshot()
	if got, _, err := History(t.Context(), reader, jobs.HistoryQuery{Limit: 500}); err != nil || len(got) != 500 {
		t.Fatalf("newest 500: %d, %v", len(got), err)
	}
	if after := cnt.snapshot(); after[0]-before[0] != 1 || after[2]-before[2] > 501 {
		t.Errorf("unfiltered: %d round trips reading %d entries", after[0]-before[0], after[2]-before[2])
	}
}

// Paging by before= is the same in every view: a filtered view paged to
// its end is the global view's matching entries, a cursor taken from one
// view pages any other, and the last page has no next cursor.
func TestHistoryPagingIsConsistentAcrossViews(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	const n, stores = 3000, 7
	entries := make([]jobs.HistoryEntry, n)
	for i := range entries {
		entries[i] = testEntry(i, stores)
	}
	ids := appendAll(t, rdb, jobs.DefaultHistoryMaxLen, entries)
	for _, q := range []jobs.HistoryQuery{{}, {Store: "store-0003"}, {Kind: jobs.KindVerify}, {Kind: jobs.KindNotify}, {Store: "store-0001", Kind: jobs.KindRestore}, {Store: "store-9999"}} {
		for _, limit := range []int{1, 37, 500} {
			q.Limit = limit
			if got, want := allHistory(t, rdb, q), filterIDs(entries, ids, q.Store, q.Kind); !slices.Equal(got, want) {
				t.Errorf("%+v paged %d entries, want %d", q, len(got), len(want))
			}
		}
		// A cursor from the global view, and one that is no entry's id.
		for _, before := range []string{ids[1234], ids[1234] + "9", "1", ids[0]} {
			q.Limit, q.Before = 100, before
			upto := sortSearchIDs(ids, before)
			if got, want := allHistory(t, rdb, q), filterIDs(entries[:upto], ids[:upto], q.Store, q.Kind); !slices.Equal(got, want) {
				t.Errorf("%+v paged %d entries, want %d", q, len(got), len(want))
			}
			q.Before = ""
		}
	}
}

// sortSearchIDs is the number of ids older than before.
func sortSearchIDs(ids []string, before string) int {
	c, _ := jobs.ParseHistoryCursor(before)
	i := 0
	for i < len(ids) && jobs.CompareStreamIDs(ids[i], c) < 0 {
		i++
	}
	return i
}

// A finish sent again (go-redis resending it to a stalled Redis) appends
// its history entry, and its index copies, once; the copies have the
// entry's id.
func TestHistoryReplayedFinishIndexesOnce(t *testing.T) {
	srv, plain, rec := pendingJob(t, jobs.KindBackup)
	r := &replayScripts{Match: "cancel:", Times: 4}
	c := NewClient(replayClient(t, srv, r), jobs.ClientConfig{})
	if got, err := c.Cancel(t.Context(), rec.ID, "bob"); err != nil || got.State != jobs.StateCanceled || r.runs.Load() < 4 {
		t.Fatalf("cancel sent %d times: %+v, %v", r.runs.Load(), got, err)
	}
	global, err := plain.XRange(t.Context(), keyspace.HistoryStream, "-", "+").Result()
	if err != nil || len(global) != 1 {
		t.Fatalf("history: %d entries, %v; want 1", len(global), err)
	}
	for _, key := range keyspace.HistoryIndexes("orders", jobs.KindBackup) {
		idx, err := plain.XRange(t.Context(), key, "-", "+").Result()
		if err != nil || len(idx) != 1 || idx[0].ID != global[0].ID || idx[0].Values[keyspace.StreamField] != global[0].Values[keyspace.StreamField] {
			t.Errorf("%s: %v, %v; want the entry %s once", key, idx, err, global[0].ID)
		}
	}
	if last, _ := plain.HGet(t.Context(), keyspace.HistoryIndexMeta, "last").Result(); last != global[0].ID {
		t.Errorf("index meta last = %q, want %s", last, global[0].ID)
	}
	for _, q := range []jobs.HistoryQuery{{Store: "orders"}, {Kind: jobs.KindBackup}, {Store: "orders", Kind: jobs.KindBackup}} {
		got, _, err := History(t.Context(), plain, q)
		if err != nil || len(got) != 1 || got[0].ID != global[0].ID || got[0].JobID != rec.ID || got[0].Status != jobs.StatusCanceled {
			t.Errorf("%+v: %+v, %v", q, got, err)
		}
	}
}

// An upgrade: entries appended before this version (no index copies) and,
// during a rolling upgrade, by processes still running the old one, among
// indexed ones. Every view still holds every matching entry, in order;
// the old ones are found by a bounded scan, so a page may be short, even
// empty, with a next cursor.
func TestHistoryUpgradeFindsUnindexedEntries(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	ctx := t.Context()
	var all []jobs.HistoryEntry
	var ids []string
	old := func(from, to int) {
		for i := from; i < to; i++ {
			e := testEntry(i, 5)
			id, err := Append(ctx, rdb, keyspace.HistoryStream, jobs.DefaultHistoryMaxLen, e)
			if err != nil {
				t.Fatal(err)
			}
			all, ids = append(all, e), append(ids, id)
		}
	}
	indexed := func(from, to int) {
		var es []jobs.HistoryEntry
		for i := from; i < to; i++ {
			es = append(es, testEntry(i, 5))
		}
		all, ids = append(all, es...), append(ids, appendAll(t, rdb, jobs.DefaultHistoryMaxLen, es)...)
	}
	check := func(stage string) {
		t.Helper()
		for _, q := range []jobs.HistoryQuery{{Store: "store-0002"}, {Kind: jobs.KindRestore}, {Store: "store-0004", Kind: jobs.KindBackup}, {Kind: jobs.KindNotify}} {
			for _, limit := range []int{7, 500} {
				q.Limit = limit
				if got, want := allHistory(t, rdb, q), filterIDs(all, ids, q.Store, q.Kind); !slices.Equal(got, want) {
					t.Errorf("%s: %+v: %d entries, want %d", stage, q, len(got), len(want))
				}
			}
		}
	}
	old(0, 2500)
	check("before any indexed entry")
	indexed(2500, 2600)
	if below, _ := rdb.HGet(ctx, keyspace.HistoryIndexMeta, "below").Result(); below != ids[2499] {
		t.Fatalf("below = %q, want the last unindexed entry %s", below, ids[2499])
	}
	check("after the upgrade")
	old(2600, 2610) // an old process, still running
	check("an old process appended since")
	indexed(2610, 2700)
	if below, _ := rdb.HGet(ctx, keyspace.HistoryIndexMeta, "below").Result(); below != ids[2609] {
		t.Fatalf("below = %q, want the last unindexed entry %s", below, ids[2609])
	}
	check("indexed again")

	// The scan is bounded: store-0000 has no entry among the 2,400 newest
	// unindexed ones (all store-0001), so its first pages are short.
	rdb.Del(ctx, keyspace.HistoryStream, keyspace.HistoryIndexMeta)
	all, ids = nil, nil
	old(0, 5)
	for i := 5; i < 2500; i++ {
		e := testEntry(1, 5)
		id, _ := Append(ctx, rdb, keyspace.HistoryStream, jobs.DefaultHistoryMaxLen, e)
		all, ids = append(all, e), append(ids, id)
	}
	indexed(2500, 2510)
	cnt := &readCounter{}
	rdb.AddHook(cnt)
	got, next, err := History(ctx, rdb, jobs.HistoryQuery{Store: "store-0000", Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if s := cnt.snapshot(); s[2] > jobs.HistoryLegacyScan+10+3 {
		t.Errorf("first page read %d entries, want at most %d", s[2], jobs.HistoryLegacyScan+13)
	}
	if len(got) != 2 || next == "" { // 2 indexed entries, then the budget ran out
		t.Fatalf("first page: %d entries, next %q", len(got), next)
	}
	if got, want := allHistory(t, rdb, jobs.HistoryQuery{Store: "store-0000", Limit: 10}), filterIDs(all, ids, "store-0000", ""); !slices.Equal(got, want) {
		t.Errorf("store-0000: %d entries, want %d", len(got), len(want))
	}
}

// Indexes are trimmed with the history stream, and a view never shows an
// entry the stream no longer holds, even from an index that stopped
// growing (its store gone).
func TestHistoryIndexesFollowTrimming(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	ctx := t.Context()
	gone := jobs.HistoryEntry{JobID: "jgone", Kind: jobs.KindCompact, Store: "gone", Status: jobs.StatusCompacted, At: time.Now().UTC()}
	if _, err := AppendHistory(ctx, rdb, 100, gone); err != nil {
		t.Fatal(err)
	}
	var entries []jobs.HistoryEntry
	for i := range 5000 {
		entries = append(entries, testEntry(i, 3))
	}
	appendAll(t, rdb, 100, entries)
	glen := rdb.XLen(ctx, keyspace.HistoryStream).Val()
	if glen > 1000 {
		t.Fatalf("history holds %d entries, trimmed to about 100", glen)
	}
	for _, key := range append(keyspace.HistoryIndexes("store-0001", jobs.KindVerify), keyspace.HistoryIndexKey("", jobs.KindNotify)) {
		// Approximate trimming drops whole nodes: a node's worth of slack.
		if l := rdb.XLen(ctx, key).Val(); l > glen+200 {
			t.Errorf("%s holds %d entries; the history %d", key, l, glen)
		}
	}
	for _, q := range []jobs.HistoryQuery{{Store: "gone"}, {Kind: jobs.KindCompact, Limit: 500}} {
		got, _, err := History(ctx, rdb, q)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range got {
			if e.JobID == "jgone" {
				t.Errorf("%+v shows an entry the history trimmed", q)
			}
		}
	}
}

// Every cursor that is not an entry id, or is 0-0, is ErrBadCursor (and
// ErrBadQuery); a valid one past the oldest entry is an empty last page.
func TestHistoryCursors(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	id, err := AppendHistory(t.Context(), rdb, 100, testEntry(1, 1))
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"0-0", "00-0", "0", "0-00", "000", "nope", "-1", "1-", "-", "1-2-3", " 1", "1 ", "+1", "1-+2", "0x10",
		"18446744073709551616", "1-18446744073709551616", "99999999999999999999999-0", "1.5", "１", "1_000"} {
		for _, q := range []jobs.HistoryQuery{{Before: bad}, {Before: bad, Store: "store-0000"}, {Before: bad, Kind: jobs.KindBackup}} {
			if _, _, err := History(t.Context(), rdb, q); !errors.Is(err, jobs.ErrBadCursor) || !errors.Is(err, jobs.ErrBadQuery) {
				t.Errorf("History(%+v) = %v, want ErrBadCursor", q, err)
			}
		}
	}
	for _, good := range []string{"1", "0-1", "01-0", "18446744073709551615-18446744073709551615", "18446744073709551615", id} {
		for _, q := range []jobs.HistoryQuery{{Before: good}, {Before: good, Store: "store-0000"}, {Before: good, Kind: jobs.KindBackup}} {
			got, next, err := History(t.Context(), rdb, q)
			if err != nil {
				t.Errorf("History(%+v): %v", q, err)
			}
			past := good == "18446744073709551615-18446744073709551615" || good == "18446744073709551615"
			if (past && len(got) != 1) || (!past && len(got) != 0) || next != "" {
				t.Errorf("History(%+v) = %d entries, next %q", q, len(got), next)
			}
		}
	}
}

// BenchmarkHistoryQuery: jobsdb.History (no HTTP) on 100,000 entries over 99
// stores and four kinds, limit 500, one query at a time: the latency
// percentiles, Redis round trips and the entries read per query.
//
//	go test -run '^$' -bench BenchmarkHistoryQuery -benchtime 2000x ./jobs/
func BenchmarkHistoryQuery(b *testing.B) {
	srv := redistest.Start(b, redistest.RequireReal())
	rdb := srv.Client(b)
	const n, stores = 100_000, 99
	entries := make([]jobs.HistoryEntry, n)
	for i := range entries {
		entries[i] = testEntry(i, stores)
	}
	appendAll(b, rdb, jobs.DefaultHistoryMaxLen, entries)
	cnt := &readCounter{}
	reader := srv.Client(b)
	reader.AddHook(cnt)
	for _, v := range []struct {
		name string
		q    func(i int) jobs.HistoryQuery
	}{
		{"store", func(i int) jobs.HistoryQuery { return jobs.HistoryQuery{Store: fmt.Sprintf("store-%04d", i%stores)} }},
		{"kind", func(i int) jobs.HistoryQuery { return jobs.HistoryQuery{Kind: historyKinds[i%4]} }},
		{"store+kind", func(i int) jobs.HistoryQuery {
			return jobs.HistoryQuery{Store: fmt.Sprintf("store-%04d", i%stores), Kind: historyKinds[(i/stores)%4]}
		}},
		{"nosuchstore", func(int) jobs.HistoryQuery { return jobs.HistoryQuery{Store: "nosuchstore"} }},
		{"unfiltered", func(int) jobs.HistoryQuery { return jobs.HistoryQuery{} }},
	} {
		b.Run(v.name, func(b *testing.B) {
			lat := make([]time.Duration, 0, b.N)
			s0 := cnt.snapshot()
			b.ResetTimer()
			for i := range b.N {
				q := v.q(i)
				q.Limit = 500
				t0 := time.Now()
				if _, _, err := History(context.Background(), reader, q); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(t0))
			}
			b.StopTimer()
			s := cnt.snapshot()
			slices.Sort(lat)
			at := func(q float64) float64 { return float64(lat[min(len(lat)-1, int(q*float64(len(lat))))]) / 1e6 }
			b.ReportMetric(at(0.5), "p50-ms")
			b.ReportMetric(at(0.99), "p99-ms")
			b.ReportMetric(float64(s[0]-s0[0])/float64(b.N), "round-trips/op")
			b.ReportMetric(float64(s[2]-s0[2])/float64(b.N), "entries-read/op")
		})
	}
}

// Every field of a history entry as storekeeper writes it takes the fast
// path (a field added to HistoryEntry and not to FastHistoryEntry would be
// decoded, but slowly), and decodes as json.Unmarshal does.
func TestHistoryDecodeFastPath(t *testing.T) {
	e := jobs.HistoryEntry{ID: "1-2", JobID: "j1", Kind: jobs.KindRestore, Store: "orders", Status: jobs.StatusFailed, Reason: "r", Trigger: jobs.TriggerAuto,
		Actor: "ops", Attempts: 3, DurationMS: -5, BytesBefore: 1 << 63, BytesAfter: 7, BackupID: "b1", Error: "disk full", Node: "n1",
		At: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)}
	v := reflect.ValueOf(e)
	for i := range v.NumField() {
		if v.Field(i).IsZero() {
			t.Fatalf("set HistoryEntry.%s in this test", v.Type().Field(i).Name)
		}
	}
	b, _ := json.Marshal(e)
	got, ok := keyspace.FastHistoryEntry(string(b))
	if !ok || !reflect.DeepEqual(got, e) {
		t.Fatalf("fast path: %v %+v\nwant %+v", ok, got, e)
	}
	for _, s := range []string{`{}`, ` { "kind" : "compact" , "attempts":-0 } `, `{"store":null,"at":null}`, `{"error":"x \"y\""}`, `{"Store":"a"}`,
		`{"attempts":1.0}`, `{"attempts":01}`, `{"bytes_after":-1}`, `{"x":[1,{"y":2}]}`, `null`, `{"at":"nope"}`, `{"kind":"a"} x`, `{"kind":"é"}`} {
		checkDecode(t, s)
	}
}

func checkDecode(t *testing.T, s string) {
	t.Helper()
	got, err := keyspace.DecodeHistoryJSON(s)
	var want jobs.HistoryEntry
	wantErr := json.Unmarshal([]byte(s), &want)
	if (err == nil) != (wantErr == nil) || (err == nil && !reflect.DeepEqual(got, want)) {
		t.Fatalf("decode %q: %+v, %v\njson.Unmarshal: %+v, %v", s, got, err, want, wantErr)
	}
}

// FuzzDecodeHistoryJSON: the fast decoder agrees with json.Unmarshal.
func FuzzDecodeHistoryJSON(f *testing.F) {
	b, _ := json.Marshal(testEntry(3, 5))
	for _, s := range []string{string(b), `{}`, `{"attempts":-0,"at":null}`, `{"error":"a\nb"}`, `{"kind":1}`, `{"Kind":"compact"}`} {
		f.Add(s)
	}
	f.Fuzz(checkDecode)
}
