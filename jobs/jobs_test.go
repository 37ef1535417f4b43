package jobs

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"

	"storekeeper/internal/redistest"
	"storekeeper/internal/testsignal"
)

func TestIDsSortByTimeAndAreUnique(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]bool{}
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 1000 {
				id := NewID()
				mu.Lock()
				if seen[id] {
					t.Errorf("duplicate id %s", id)
				}
				seen[id] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	before := time.Now().Add(-time.Millisecond)
	a := NewID()
	// Ids sort by their millisecond, and within one by the order they
	// were made.
	if b := NewID(); a >= b {
		t.Fatalf("ids of one millisecond do not sort by creation: %s >= %s", a, b)
	}
	testsignal.WaitFor(t, "the next millisecond", func() bool { return time.Since(before) > 2*time.Millisecond })
	if b := NewID(); a >= b {
		t.Fatalf("ids do not sort by time: %s >= %s", a, b)
	}
	at, err := IDTime(a)
	if err != nil || at.Before(before.Truncate(time.Millisecond)) || at.After(time.Now()) {
		t.Fatalf("IDTime(%s) = %v, %v", a, at, err)
	}
	for _, bad := range []string{"", "x", "J01ARZ3NDEKTSV4RRFFQ69G5FAV", "j" + "zzzzzzzzzzzzzzzzzzzzzzzzzz"} {
		if _, err := IDTime(bad); err == nil {
			t.Errorf("IDTime(%q) accepted", bad)
		}
	}
}

func validPayload() Payload {
	return Payload{JobID: NewID(), Kind: KindCompact, Store: "orders", Trigger: TriggerManual, Actor: "alice", Params: Params{Force: true}}
}

func TestPayloadRoundTrip(t *testing.T) {
	p := validPayload()
	b, err := p.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(p, got); diff != "" {
		t.Fatalf("round trip (-want +got):\n%s", diff)
	}
}

// A payload that cannot be decoded or is invalid is never retried.
func TestDecodeRejectsBadPayloads(t *testing.T) {
	mutate := func(f func(*Payload)) []byte {
		p := validPayload()
		f(&p)
		b, _ := json.Marshal(p)
		return b
	}
	cases := map[string][]byte{
		"not json":         []byte("{"),
		"unknown field":    []byte(`{"job_id":"j1","kind":"compact","store":"a","trigger":"manual","actor":"x","params":{},"extra":1}`),
		"unknown kind":     mutate(func(p *Payload) { p.Kind = "explode" }),
		"hostile store":    mutate(func(p *Payload) { p.Store = "../etc" }),
		"no job id":        mutate(func(p *Payload) { p.JobID = "" }),
		"bad trigger":      mutate(func(p *Payload) { p.Trigger = "whim" }),
		"no actor":         mutate(func(p *Payload) { p.Actor = "" }),
		"foreign params":   mutate(func(p *Payload) { p.Kind = KindBackup }),
		"notify sinkless":  mutate(func(p *Payload) { p.Kind, p.Params = KindNotify, Params{} }),
		"restore deep":     mutate(func(p *Payload) { p.Kind, p.Params = KindRestore, Params{Deep: true} }),
		"verify backup id": mutate(func(p *Payload) { p.Kind, p.Params = KindVerify, Params{BackupID: "b"} }),
	}
	for name, b := range cases {
		_, err := Decode(b)
		if !errors.Is(err, ErrBadPayload) || !errors.Is(err, asynq.SkipRetry) {
			t.Errorf("%s: Decode = %v, want ErrBadPayload and asynq.SkipRetry", name, err)
		}
	}
}

func TestDedupeKey(t *testing.T) {
	a, b := validPayload(), validPayload()
	b.Actor, b.Trigger = "bob", TriggerScheduled // who asked does not matter
	if a.DedupeKey() != b.DedupeKey() {
		t.Fatal("same request, different keys")
	}
	b.Params.DryRun = true
	if a.DedupeKey() == b.DedupeKey() {
		t.Fatal("different parameters, same key")
	}
}

func TestRecordRoundTripThroughRedis(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	now := time.Now().UTC()
	r := Record{
		ID: NewID(), Kind: KindRestore, Store: "orders", Node: "n1", Queue: "node.n1", State: StateRetry,
		Reason: "interrupted", Trigger: TriggerAuto, Actor: ActorSystem, BatchID: "b1",
		Params: Params{BackupID: "20261122T000000.000Z-abc"}, Attempts: 2, MaxRetry: 2,
		Errors:     []AttemptError{{Attempt: 1, Error: "disk full", At: now}},
		Result:     json.RawMessage(`{"bytes":12}`),
		EnqueuedAt: now.Add(-time.Second), StartedAt: now,
	}
	if err := rdb.HSet(t.Context(), RecordKey(r.ID), r.Fields()).Err(); err != nil {
		t.Fatal(err)
	}
	h, err := rdb.HGetAll(t.Context(), RecordKey(r.ID)).Result()
	if err != nil {
		t.Fatal(err)
	}
	got, err := RecordFromHash(h)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(r, got); diff != "" {
		t.Fatalf("record round trip (-want +got):\n%s", diff)
	}
	// Numbers stay numbers when the record leaves as JSON.
	b, _ := json.Marshal(got)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	if _, ok := m["attempts"].(float64); !ok {
		t.Fatalf("attempts is not a JSON number: %s", b)
	}
	if _, err := RecordFromHash(map[string]string{}); err == nil {
		t.Fatal("empty hash decoded")
	}
}

func TestHistoryPagingAndFilters(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	ctx := t.Context()
	kinds := []Kind{KindCompact, KindBackup, KindVerify}
	var all []string
	for i := range 120 {
		e := HistoryEntry{JobID: fmt.Sprintf("job%03d", i), Kind: kinds[i%3], Store: []string{"a", "b"}[i%2],
			Status: StatusCompacted, Trigger: TriggerManual, Actor: "x", Attempts: 1, DurationMS: int64(i), Node: "n1", At: time.Now().UTC()}
		if _, err := Append(ctx, rdb, HistoryStream, DefaultHistoryMaxLen, e); err != nil {
			t.Fatal(err)
		}
		all = append(all, e.JobID)
	}
	slices.Reverse(all)

	// Paging through everything, 25 at a time, newest first.
	var got []string
	cursor := ""
	for page := 0; ; page++ {
		entries, next, err := History(ctx, rdb, HistoryQuery{Limit: 25, Before: cursor})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			got = append(got, e.JobID)
			if e.ID == "" {
				t.Fatal("entry without its stream id")
			}
		}
		if next == "" {
			break
		}
		cursor = next
		if page > 10 {
			t.Fatal("paging does not end")
		}
	}
	if !slices.Equal(got, all) {
		t.Fatalf("paged %d entries, want %d in newest-first order", len(got), len(all))
	}

	// Filters by store and kind, across chunk boundaries.
	entries, _, err := History(ctx, rdb, HistoryQuery{Store: "a", Kind: KindBackup, Limit: 500})
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 20 { // i%2==0 && i%3==1: i = 4, 10, ..., 118
		t.Fatalf("store a, backup: %d entries, want 20", len(entries))
	}
	for _, e := range entries {
		if e.Store != "a" || e.Kind != KindBackup {
			t.Fatalf("filter leaked %+v", e)
		}
	}
	for _, q := range []HistoryQuery{{Limit: 501}, {Limit: -1}, {Kind: "x"}, {Store: "../a"}, {Before: "nope"}} {
		if _, _, err := History(ctx, rdb, q); !errors.Is(err, ErrBadQuery) {
			t.Errorf("History(%+v) = %v, want ErrBadQuery", q, err)
		}
	}
}

func TestEventsTailAndGap(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	ctx := t.Context()
	var ids []string
	for i, typ := range []EventType{EventJobEnqueued, EventJobStarted, EventJobSucceeded} {
		id, err := Append(ctx, rdb, EventsStream, 3, Event{Type: typ, JobID: "j1", Attempt: i, At: time.Now().UTC()})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	evs, err := ReadEvents(ctx, rdb, "0", 10, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 3 || evs[0].Type != EventJobEnqueued || evs[2].Type != EventJobSucceeded || evs[1].ID != ids[1] {
		t.Fatalf("events = %+v", evs)
	}
	evs, _ = ReadEvents(ctx, rdb, ids[1], 10, 0)
	if len(evs) != 1 || evs[0].ID != ids[2] {
		t.Fatalf("events after %s = %+v", ids[1], evs)
	}
	// A blocking read wakes for a new event.
	got := make(chan []Event, 1)
	go func() {
		evs, _ := ReadEvents(ctx, rdb, ids[2], 10, 5*time.Second)
		got <- evs
	}()
	id, _ := Append(ctx, rdb, EventsStream, 1000, Event{Type: EventNodeUp, Node: "n1", At: time.Now().UTC()})
	select {
	case evs := <-got:
		if len(evs) != 1 || evs[0].ID != id {
			t.Fatalf("blocking read = %+v", evs)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("blocking read did not wake")
	}
	// Nothing trimmed yet: no gap from the start of the stream. Redis
	// counts what was added; miniredis does not, but the stream is shorter
	// than the writers' cap. Without the cap, miniredis cannot tell.
	if gap, err := EventsGap(ctx, rdb, "0", 1000); err != nil || gap {
		t.Fatalf("EventsGap(0) before any trim = %v, %v; want none", gap, err)
	}
	if gap, err := EventsGap(ctx, rdb, "0", 0); err != nil || gap != !srv.Real() {
		t.Fatalf("EventsGap(0) before any trim, cap unknown = %v, %v; want %v", gap, err, !srv.Real())
	}
	// Trim to a cap of 1, as XADD MAXLEN 1 would: reading from the first id
	// now has a gap; from the last, none.
	if err := rdb.XTrimMaxLen(ctx, EventsStream, 1).Err(); err != nil {
		t.Fatal(err)
	}
	if gap, err := EventsGap(ctx, rdb, ids[0], 1); err != nil || !gap {
		t.Fatalf("EventsGap(first) = %v, %v; want a gap", gap, err)
	}
	if gap, err := EventsGap(ctx, rdb, "0", 1); err != nil || !gap {
		t.Fatalf("EventsGap(0) = %v, %v; want a gap", gap, err)
	}
	if gap, err := EventsGap(ctx, rdb, id, 1); err != nil || gap {
		t.Fatalf("EventsGap(newest) = %v, %v; want none", gap, err)
	}
	if _, err := ReadEvents(ctx, rdb, "bogus", 1, 0); !errors.Is(err, ErrBadQuery) {
		t.Fatalf("ReadEvents(bogus) = %v", err)
	}
}
