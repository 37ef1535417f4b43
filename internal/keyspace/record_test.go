package keyspace

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"storekeeper/internal/redistest"
	"storekeeper/jobs"
)

func TestRecordRoundTripThroughRedis(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	now := time.Now().UTC()
	r := jobs.Record{
		ID: jobs.NewID(), Kind: jobs.KindRestore, Store: "orders", Node: "n1", Queue: "node.n1", State: jobs.StateRetry,
		Reason: "interrupted", Trigger: jobs.TriggerAuto, Actor: jobs.ActorSystem, BatchID: "b1",
		Params: jobs.Params{BackupID: "20261122T000000.000Z-abc"}, Attempts: 2, MaxRetry: 2,
		Errors:     []jobs.AttemptError{{Attempt: 1, Error: "disk full", At: now}},
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
	got, err := jobs.RecordFromHash(h)
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
	if _, err := jobs.RecordFromHash(map[string]string{}); err == nil {
		t.Fatal("empty hash decoded")
	}
}
