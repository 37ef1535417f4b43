package jobsdb

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"storekeeper/internal/keyspace"
	"storekeeper/internal/redistest"
	"storekeeper/jobs"
)

// confirmTimeout is the tests' MinReplicasTimeout: short, so that a
// paused replica costs little, and well under the client's 3 s read
// timeout, so that a WAIT that falls short is answered, not timed out.
const confirmTimeout = 300 * time.Millisecond

// replicated is a redis-server with one replica: clients of both, and the
// replica to pause.
type replicated struct {
	rdb, replicaRDB *redis.Client
	replica         *redistest.Server
	trips           *redistest.RoundTrips // every command rdb sends
}

func startReplicated(t *testing.T) *replicated {
	t.Helper()
	srv := redistest.Start(t)
	rep := srv.StartReplica(t)
	r := &replicated{rdb: srv.Client(t), replicaRDB: rep.Client(t), replica: rep, trips: &redistest.RoundTrips{}}
	r.rdb.AddHook(r.trips)
	return r
}

func (r *replicated) pause(t *testing.T) {
	t.Helper()
	if err := r.replica.Pause(); err != nil {
		t.Fatal(err)
	}
}

func (r *replicated) resume(t *testing.T) {
	t.Helper()
	if err := r.replica.Resume(); err != nil {
		t.Fatal(err)
	}
}

// onReplica checks that job id's record, in state want, and (unless
// noTask) its asynq task are on the replica. It reads once: after a
// confirmed call they must be there already.
func (r *replicated) onReplica(t *testing.T, id string, want jobs.State, queue string) {
	t.Helper()
	st, err := r.replicaRDB.HGet(t.Context(), keyspace.RecordKey(id), "state").Result()
	if err != nil || jobs.State(st) != want {
		t.Fatalf("job %s on the replica: state %q, %v; want %s", id, st, err, want)
	}
	if queue == "" {
		return
	}
	if _, err := asynq.NewInspectorFromRedisClient(r.replicaRDB).GetTaskInfo(queue, id); err != nil {
		t.Fatalf("job %s's task is not on the replica: %v", id, err)
	}
}

// unconfirmed checks that err is a confirmation that fell short, told as
// Redis unavailable (503), within about the confirmation's timeout.
func unconfirmed(t *testing.T, what string, err error, took time.Duration, says ...string) {
	t.Helper()
	if !errors.Is(err, ErrUnconfirmed) || !errors.Is(err, jobs.ErrUnavailable) {
		t.Fatalf("%s with the replica paused: %v; want ErrUnconfirmed (jobs.ErrUnavailable)", what, err)
	}
	for _, s := range append(says, "0 of the 1 replicas required confirmed within 300ms") {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("%s: the error %q does not say %q", what, err, s)
		}
	}
	// One WAIT, answered at its timeout: not the client's read timeout
	// (3 s), after which go-redis would send the pipeline again.
	if took < confirmTimeout || took > confirmTimeout+2*time.Second {
		t.Errorf("%s took %v; want about %v", what, took, confirmTimeout)
	}
}

// With MinReplicas 1, an enqueue whose replica does not confirm is
// answered ErrUnavailable (the API's 503) saying the job may or may not
// have been accepted; the same request sent again is deduplicated to that
// job, and once the replica is back it is confirmed: record and task are
// on the replica when Enqueue returns.
func TestEnqueueConfirmedOnReplicas(t *testing.T) {
	r := startReplicated(t)
	ownedBy(t, r.rdb, "n1", "orders")
	c := NewClient(r.rdb, jobs.ClientConfig{MinReplicas: 1, MinReplicasTimeout: confirmTimeout})
	req := jobs.Request{Kind: jobs.KindCompact, Store: "orders", Trigger: jobs.TriggerManual, Actor: "alice"}

	r.pause(t)
	start := time.Now()
	_, first := c.Enqueue(t.Context(), req)
	unconfirmed(t, "Enqueue", first, time.Since(start), "may or may not have been accepted", "the same request sent again returns this job")
	// The job is on the primary, recorded and queued.
	keys, err := r.rdb.Keys(t.Context(), keyspace.RecordKey("*")).Result()
	if err != nil || len(keys) != 1 {
		t.Fatalf("records on the primary: %v, %v; want the one job", keys, err)
	}
	id := strings.TrimPrefix(keys[0], keyspace.RecordKey(""))
	if !strings.Contains(first.Error(), id) {
		t.Errorf("the error does not name job %s", id)
	}
	if _, err := asynq.NewInspectorFromRedisClient(r.rdb).GetTaskInfo("node.n1", id); err != nil {
		t.Fatalf("the unconfirmed job's task: %v", err)
	}
	// Sent again, still unconfirmed: the same job, not a second one.
	start = time.Now()
	_, err = c.Enqueue(t.Context(), req)
	unconfirmed(t, "Enqueue sent again", err, time.Since(start), id)

	r.resume(t)
	got, err := c.Enqueue(t.Context(), req)
	if err != nil || !got.Deduplicated || got.Record.ID != id {
		t.Fatalf("Enqueue with the replica back: %+v, %v; want job %s, deduplicated", got, err, id)
	}
	r.onReplica(t, id, jobs.StatePending, "node.n1")

	// A new job with the replica up is confirmed at once.
	got, err = c.Enqueue(t.Context(), jobs.Request{Kind: jobs.KindBackup, Store: "orders", Trigger: jobs.TriggerManual, Actor: "alice"})
	if err != nil || got.Deduplicated {
		t.Fatalf("Enqueue: %+v, %v", got, err)
	}
	r.onReplica(t, got.Record.ID, jobs.StatePending, "node.n1")
}

// A batch, a notify job and a cancel are confirmed the same way.
func TestBatchNotifyCancelConfirmedOnReplicas(t *testing.T) {
	r := startReplicated(t)
	ownedBy(t, r.rdb, "n1", "a", "b")
	c := NewClient(r.rdb, jobs.ClientConfig{MinReplicas: 1, MinReplicasTimeout: confirmTimeout})
	breq := jobs.BatchRequest{Kind: jobs.KindVerify, Trigger: jobs.TriggerManual, Actor: "alice"}
	note := jobs.Notification{ID: "n-1", Type: jobs.EventJobFailed, Summary: "x"}

	r.pause(t)
	start := time.Now()
	_, err := c.EnqueueBatch(t.Context(), breq)
	unconfirmed(t, "EnqueueBatch", err, time.Since(start), "may or may not have been accepted")
	start = time.Now()
	_, _, err = c.EnqueueNotify(t.Context(), note, "webhook-1")
	unconfirmed(t, "EnqueueNotify", err, time.Since(start), "may or may not have been queued")
	// Dispatched again: the delivery key finds the job made, and it is
	// still not confirmed.
	start = time.Now()
	_, made, err := c.EnqueueNotify(t.Context(), note, "webhook-1")
	unconfirmed(t, "EnqueueNotify sent again", err, time.Since(start))
	if made {
		t.Fatal("a second notify job was made")
	}

	r.resume(t)
	b, err := c.EnqueueBatch(t.Context(), breq)
	if err != nil || len(b.Jobs) != 2 || !b.Jobs[0].Deduplicated || !b.Jobs[1].Deduplicated {
		t.Fatalf("EnqueueBatch with the replica back: %+v, %v; want the two jobs of the first, deduplicated", b, err)
	}
	for _, e := range b.Jobs {
		r.onReplica(t, e.Record.ID, jobs.StatePending, "node.n1")
	}
	if _, made, err := c.EnqueueNotify(t.Context(), note, "webhook-1"); err != nil || made {
		t.Fatalf("EnqueueNotify with the replica back: made %v, %v; want the job found and confirmed", made, err)
	}

	// A cancel: unconfirmed while the replica is paused, but in effect on
	// the primary, and confirmed once it is back.
	id := b.Jobs[0].Record.ID
	r.pause(t)
	start = time.Now()
	rec, err := c.Cancel(t.Context(), id, "alice")
	unconfirmed(t, "Cancel", err, time.Since(start), "job "+id+" is canceled on the Redis primary")
	if rec.State != jobs.StateCanceled {
		t.Fatalf("Cancel returned %+v", rec)
	}
	r.resume(t)
	if err := ConfirmEnded(t.Context(), r.rdb, id, 1, confirmTimeout); err != nil {
		t.Fatal(err)
	}
	r.onReplica(t, id, jobs.StateCanceled, "")
}

// ConfirmEnded confirms only a record that is ended on the primary that
// answers: one found unfinished or missing there (its end, or the job,
// lost in a failover) is not confirmed, whatever the replicas say.
func TestConfirmEnded(t *testing.T) {
	r := startReplicated(t)
	ownedBy(t, r.rdb, "n1", "orders")
	c := NewClient(r.rdb, jobs.ClientConfig{})
	got, err := c.Enqueue(t.Context(), jobs.Request{Kind: jobs.KindCompact, Store: "orders", Trigger: jobs.TriggerManual, Actor: "a"})
	if err != nil {
		t.Fatal(err)
	}
	id := got.Record.ID
	if err := ConfirmEnded(t.Context(), r.rdb, id, 1, confirmTimeout); !errors.Is(err, ErrUnconfirmed) || !strings.Contains(err.Error(), "is pending on the Redis primary that answered, not ended") {
		t.Fatalf("ConfirmEnded of a pending job: %v", err)
	}
	if err := ConfirmEnded(t.Context(), r.rdb, "jnope", 1, confirmTimeout); !errors.Is(err, ErrUnconfirmed) || !strings.Contains(err.Error(), "no record") {
		t.Fatalf("ConfirmEnded of no job: %v", err)
	}
	if _, err := c.Cancel(t.Context(), id, "a"); err != nil {
		t.Fatal(err)
	}
	if err := ConfirmEnded(t.Context(), r.rdb, id, 1, confirmTimeout); err != nil {
		t.Fatalf("ConfirmEnded of a canceled job: %v", err)
	}
	// Two replicas required, one there: short.
	if err := ConfirmEnded(t.Context(), r.rdb, id, 2, confirmTimeout); !errors.Is(err, ErrUnconfirmed) || !strings.Contains(err.Error(), "1 of the 2 replicas") {
		t.Fatalf("ConfirmEnded with 2 replicas required: %v", err)
	}
}

// ConfirmClaim confirms a lease claim only while the primary that answers
// holds exactly that claim, and the replicas have it.
func TestConfirmClaim(t *testing.T) {
	r := startReplicated(t)
	ctx := t.Context()
	v, ok, err := ClaimLease(ctx, r.rdb, "orders", jobs.Lease{Node: "n1", Host: "h", Instance: "i1"}, time.Minute)
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	if err := ConfirmClaim(ctx, r.rdb, "orders", v, 1, confirmTimeout); err != nil {
		t.Fatalf("a claim on the replica: %v", err)
	}
	if err := ConfirmClaim(ctx, r.rdb, "orders", v, 2, confirmTimeout); !errors.Is(err, ErrUnconfirmed) || !strings.Contains(err.Error(), "1 of the 2 replicas") {
		t.Fatalf("two replicas required, one there: %v", err)
	}
	if err := ConfirmClaim(ctx, r.rdb, "orders", `{"node":"n1","token":99}`, 1, confirmTimeout); !errors.Is(err, ErrUnconfirmed) || !strings.Contains(err.Error(), "another claim") {
		t.Fatalf("a claim the primary does not hold: %v", err)
	}
	if err := ConfirmClaim(ctx, r.rdb, "users", v, 1, confirmTimeout); !errors.Is(err, ErrUnconfirmed) || !strings.Contains(err.Error(), "no lease") {
		t.Fatalf("a claim lost in a failover: %v", err)
	}
	if err := ConfirmClaim(ctx, r.rdb, "users", v, 0, confirmTimeout); err != nil {
		t.Fatalf("nothing asked: %v", err)
	}
}

// MinReplicas 0 (the default) sends no WAIT and no PUBLISH: not one
// command more than before. With 1, each accepting or ending call sends
// exactly one WAIT.
func TestConfirmationCostsNothingUnlessAsked(t *testing.T) {
	r := startReplicated(t)
	ownedBy(t, r.rdb, "n1", "orders", "other")
	note := jobs.Notification{ID: "n-1", Type: jobs.EventJobFailed, Summary: "x"}
	calls := func(c *Client, params jobs.Params) {
		t.Helper()
		got, err := c.Enqueue(t.Context(), jobs.Request{Kind: jobs.KindCompact, Store: "orders", Params: params, Trigger: jobs.TriggerManual, Actor: "a"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Enqueue(t.Context(), jobs.Request{Kind: jobs.KindCompact, Store: "orders", Params: params, Trigger: jobs.TriggerManual, Actor: "a"}); err != nil {
			t.Fatal(err) // deduplicated
		}
		if _, err := c.EnqueueBatch(t.Context(), jobs.BatchRequest{Kind: jobs.KindVerify, Params: jobs.Params{Deep: params.Force}, Trigger: jobs.TriggerManual, Actor: "a"}); err != nil {
			t.Fatal(err)
		}
		if _, _, err := c.EnqueueNotify(t.Context(), note, "sink-"+got.Record.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Cancel(t.Context(), got.Record.ID, "a"); err != nil {
			t.Fatal(err)
		}
	}
	// sent returns the WAITs and PUBLISHes sent since it was last called.
	var waits, publishes int64
	sent := func() (w, p int64) {
		w, p = r.trips.Named("wait")-waits, r.trips.Named("publish")-publishes
		waits, publishes = waits+w, publishes+p
		return w, p
	}
	sent()
	calls(NewClient(r.rdb, jobs.ClientConfig{}), jobs.Params{})
	if err := ConfirmEnded(t.Context(), r.rdb, "jnope", 0, confirmTimeout); err != nil {
		t.Fatalf("ConfirmEnded with n 0: %v", err)
	}
	if w, p := sent(); w != 0 || p != 0 {
		t.Fatalf("MinReplicas 0: %d WAIT and %d PUBLISH sent; want none", w, p)
	}
	calls(NewClient(r.rdb, jobs.ClientConfig{MinReplicas: 1, MinReplicasTimeout: confirmTimeout}), jobs.Params{Force: true})
	if w, p := sent(); w != 5 || p != 5 {
		t.Fatalf("MinReplicas 1: %d WAIT and %d PUBLISH for 5 calls; want one each per call", w, p)
	}
}

// BenchmarkEnqueueConfirmed is the cost of --redis-min-replicas on one
// caller's enqueue, against a local redis-server with one local replica:
// min0 is the default (no confirmation), min1 adds the confirming round
// trip and the replica's acknowledgement. Run it alone:
//
//	go test -run '^$' -bench EnqueueConfirmed -benchtime 500x ./jobsdb
func BenchmarkEnqueueConfirmed(b *testing.B) {
	srv := redistest.Start(b, redistest.RequireReal())
	srv.StartReplica(b)
	rdb := srv.Client(b)
	if err := LoadScripts(b.Context(), rdb); err != nil {
		b.Fatal(err)
	}
	for _, n := range []int{0, 1} {
		b.Run(fmt.Sprintf("min%d", n), func(b *testing.B) {
			c := NewClient(rdb, jobs.ClientConfig{MinReplicas: n, MinReplicasTimeout: time.Second})
			stores := make([]string, b.N)
			for i := range stores {
				stores[i] = fmt.Sprintf("b%d-%d", n, i) // one job per store: none deduplicated
				if err := rdb.HSet(b.Context(), keyspace.StoresKey, stores[i], "n1").Err(); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			for i := range b.N {
				if _, err := c.Enqueue(b.Context(), jobs.Request{Kind: jobs.KindCompact, Store: stores[i], Trigger: jobs.TriggerManual, Actor: "a"}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
