package jobsdb

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"storekeeper/internal/keyspace"
	"storekeeper/internal/redistest"
	"storekeeper/jobs"
)

func TestHistoryPagingAndFilters(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	ctx := t.Context()
	kinds := []jobs.Kind{jobs.KindCompact, jobs.KindBackup, jobs.KindVerify}
	var all []string
	for i := range 120 {
		e := jobs.HistoryEntry{JobID: fmt.Sprintf("job%03d", i), Kind: kinds[i%3], Store: []string{"a", "b"}[i%2],
			Status: jobs.StatusCompacted, Trigger: jobs.TriggerManual, Actor: "x", Attempts: 1, DurationMS: int64(i), Node: "n1", At: time.Now().UTC()}
		if _, err := Append(ctx, rdb, keyspace.HistoryStream, jobs.DefaultHistoryMaxLen, e); err != nil {
			t.Fatal(err)
		}
		all = append(all, e.JobID)
	}
	slices.Reverse(all)

	// Paging through everything, 25 at a time, newest first.
	var got []string
	cursor := ""
	for page := 0; ; page++ {
		entries, next, err := History(ctx, rdb, jobs.HistoryQuery{Limit: 25, Before: cursor})
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
	entries, _, err := History(ctx, rdb, jobs.HistoryQuery{Store: "a", Kind: jobs.KindBackup, Limit: 500})
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 20 { // i%2==0 && i%3==1: i = 4, 10, ..., 118
		t.Fatalf("store a, backup: %d entries, want 20", len(entries))
	}
	for _, e := range entries {
		if e.Store != "a" || e.Kind != jobs.KindBackup {
			t.Fatalf("filter leaked %+v", e)
		}
	}
	for _, q := range []jobs.HistoryQuery{{Limit: 501}, {Limit: -1}, {Kind: "x"}, {Store: "../a"}, {Before: "nope"}} {
		if _, _, err := History(ctx, rdb, q); !errors.Is(err, jobs.ErrBadQuery) {
			t.Errorf("History(%+v) = %v, want ErrBadQuery", q, err)
		}
	}
}

func TestEventsTailAndGap(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	ctx := t.Context()
	var ids []string
	for i, typ := range []jobs.EventType{jobs.EventJobEnqueued, jobs.EventJobStarted, jobs.EventJobSucceeded} {
		id, err := Append(ctx, rdb, keyspace.EventsStream, 3, jobs.Event{Type: typ, JobID: "j1", Attempt: i, At: time.Now().UTC()})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	evs, err := ReadEvents(ctx, rdb, "0", 10, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 3 || evs[0].Type != jobs.EventJobEnqueued || evs[2].Type != jobs.EventJobSucceeded || evs[1].ID != ids[1] {
		t.Fatalf("events = %+v", evs)
	}
	evs, _ = ReadEvents(ctx, rdb, ids[1], 10, 0)
	if len(evs) != 1 || evs[0].ID != ids[2] {
		t.Fatalf("events after %s = %+v", ids[1], evs)
	}
	// A blocking read wakes for a new event.
	got := make(chan []jobs.Event, 1)
	go func() {
		evs, _ := ReadEvents(ctx, rdb, ids[2], 10, 5*time.Second)
		got <- evs
	}()
	id, _ := Append(ctx, rdb, keyspace.EventsStream, 1000, jobs.Event{Type: jobs.EventNodeUp, Node: "n1", At: time.Now().UTC()})
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
	if err := rdb.XTrimMaxLen(ctx, keyspace.EventsStream, 1).Err(); err != nil {
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
	if _, err := ReadEvents(ctx, rdb, "bogus", 1, 0); !errors.Is(err, jobs.ErrBadQuery) {
		t.Fatalf("ReadEvents(bogus) = %v", err)
	}
}
