package jobsdb

import (
	"errors"
	"testing"

	"storekeeper/internal/redistest"
	"storekeeper/jobs"
)

// A primary that may not write now (min-replicas-to-write with no replica,
// as after a failover until the old primary rejoins) answers NOREPLICAS:
// that is Redis unavailable (the API's 503), not an internal error (the
// chaos run found the API answering 500 to it).
func TestNoReplicasIsUnavailable(t *testing.T) {
	srv := redistest.Start(t, redistest.RequireReal())
	rdb := srv.Client(t)
	ownedBy(t, rdb, "n1", "orders")
	if err := rdb.ConfigSet(t.Context(), "min-replicas-to-write", "1").Err(); err != nil {
		t.Fatal(err)
	}
	c := NewClient(rdb, jobs.ClientConfig{})
	_, err := c.Enqueue(t.Context(), jobs.Request{Kind: jobs.KindBackup, Store: "orders", Trigger: jobs.TriggerManual, Actor: "alice"})
	if !errors.Is(err, jobs.ErrUnavailable) {
		t.Fatalf("Enqueue on a primary without its replica: %v; want ErrUnavailable", err)
	}
	for _, msg := range []string{"READONLY You can't write against a read only replica.", "LOADING Redis is loading the dataset in memory", "MASTERDOWN Link with MASTER is down", "ERR Protocol error: unauthenticated multibulk length"} {
		if !transientReply(msg) {
			t.Errorf("%q is not taken for unavailable", msg)
		}
	}
	if transientReply("ERR wrong number of arguments") || transientReply("WRONGTYPE Operation against a key") {
		t.Error("a request error is taken for unavailable")
	}
}
