package jobsdb

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/hibiken/asynq"

	"storekeeper/internal/redistest"
	"storekeeper/jobs"
)

// The enqueue script writes the job's asynq task itself
// (keyspace.AsynqTask, asynqEnqueue). It must be the very task asynq's own
// client writes for the same options: if this fails, asynq changed its
// task message or layout, and jobs would not run.
func TestEnqueueWritesAsynqTask(t *testing.T) {
	plain := redistest.Start(t).Client(t)
	// A queue name of 128 bytes or more takes a two-byte length.
	long := strings.Repeat("n", 140)
	ownedBy(t, plain, "n1", "orders")
	ownedBy(t, plain, long, "big")
	cfg := jobs.ClientConfig{Timeout: map[jobs.Kind]time.Duration{jobs.KindBackup: 90 * time.Minute}}
	c := NewClient(plain, cfg)
	insp := asynq.NewInspectorFromRedisClient(plain)
	aq := asynq.NewClientFromRedisClient(plain)
	for _, tc := range []struct {
		store string
		kind  jobs.Kind
	}{{"orders", jobs.KindBackup}, {"orders", jobs.KindVerify}, {"big", jobs.KindCompact}} {
		got, err := c.Enqueue(t.Context(), jobs.Request{Kind: tc.kind, Store: tc.store, Trigger: jobs.TriggerManual, Actor: "a"})
		if err != nil {
			t.Fatal(err)
		}
		rec := got.Record
		mine, err := insp.GetTaskInfo(rec.Queue, rec.ID)
		if err != nil {
			t.Fatalf("%s: the job's task is not in asynq: %v", tc.kind, err)
		}
		payload, err := jobs.Payload{JobID: rec.ID, Kind: rec.Kind, Store: rec.Store, Trigger: rec.Trigger, Actor: rec.Actor}.Encode()
		if err != nil {
			t.Fatal(err)
		}
		// What handOver used to send: asynq's client with the same options.
		ref, err := aq.Enqueue(asynq.NewTask(string(rec.Kind), payload), asynq.TaskID("ref-"+rec.ID), asynq.Queue(rec.Queue),
			asynq.MaxRetry(rec.MaxRetry), asynq.Timeout(cfg.WithDefaults().Timeout[rec.Kind]))
		if err != nil {
			t.Fatal(err)
		}
		ref, err = insp.GetTaskInfo(rec.Queue, ref.ID)
		if err != nil {
			t.Fatal(err)
		}
		ref.ID = rec.ID
		// NextProcessAt is the inspection's own clock, in seconds.
		if d := cmp.Diff(ref, mine, cmpopts.IgnoreUnexported(asynq.TaskInfo{}), cmpopts.IgnoreFields(asynq.TaskInfo{}, "NextProcessAt")); d != "" {
			t.Errorf("%s on %s: the script's task differs from asynq's (-asynq +script):\n%s", tc.kind, tc.store, d)
		}
		if string(mine.Payload) != string(payload) || mine.Type != string(rec.Kind) || mine.State != asynq.TaskStatePending {
			t.Errorf("%s: task %+v", tc.kind, mine)
		}
		pending, err := plain.HGet(t.Context(), "asynq:{"+rec.Queue+"}:t:"+rec.ID, "pending_since").Int64()
		if err != nil || time.Since(time.Unix(0, pending)).Abs() > time.Minute {
			t.Errorf("%s: pending_since %d, %v: not Redis's clock in nanoseconds", tc.kind, pending, err)
		}
	}
	queues, err := insp.Queues()
	if err != nil || !cmp.Equal(queues, []string{jobs.NodeQueue(long), jobs.NodeQueue("n1")}, cmpopts.SortSlices(strings.Compare)) {
		t.Errorf("asynq's queues %v, %v; want both nodes' queues published", queues, err)
	}
}

// A job is recorded and queued together or not at all: when asynq's keys
// refuse its task (its queue's pending list is not a list), the enqueue
// fails and writes nothing (no record, lock, restore lock, event or
// delivery), so the same request can be sent again.
func TestEnqueueWritesNothingWhenAsynqRefuses(t *testing.T) {
	plain := redistest.Start(t).Client(t)
	ownedBy(t, plain, "n1", "orders")
	for _, q := range []string{jobs.NodeQueue("n1"), jobs.NotifyQueue} {
		plain.Set(t.Context(), "asynq:{"+q+"}:pending", "not a list", 0)
	}
	c := NewClient(plain, jobs.ClientConfig{})
	if _, err := c.Enqueue(t.Context(), jobs.Request{Kind: jobs.KindRestore, Store: "orders", Trigger: jobs.TriggerManual, Actor: "a"}); err == nil ||
		!strings.Contains(err.Error(), "WRONGTYPE") {
		t.Fatalf("enqueue: %v, want asynq's refusal", err)
	}
	if _, made, err := c.EnqueueNotify(t.Context(), jobs.Notification{ID: "n1", Type: "job.failed"}, "hook"); err == nil || made {
		t.Fatalf("notify: made %v, %v; want asynq's refusal", made, err)
	}
	if keys := plain.Keys(t.Context(), "storekeeper:*").Val(); !cmp.Equal(keys, []string{"storekeeper:stores"}) {
		t.Fatalf("keys after refused enqueues: %v; want only the stores", keys)
	}
	// Once asynq's key is sane, the same request succeeds.
	plain.Del(t.Context(), "asynq:{"+jobs.NodeQueue("n1")+"}:pending")
	if _, err := c.Enqueue(t.Context(), jobs.Request{Kind: jobs.KindRestore, Store: "orders", Trigger: jobs.TriggerManual, Actor: "a"}); err != nil {
		t.Fatal(err)
	}
}
