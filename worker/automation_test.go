package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"storekeeper/internal/keyspace"
	"storekeeper/internal/testsignal"
	"storekeeper/jobs"
	"storekeeper/jobsdb"
	"storekeeper/store"
)

// receiver is a webhook endpoint that checks every signature and keeps
// what it was sent. fail decides, per request, the status to answer.
type receiver struct {
	t      *testing.T
	srv    *httptest.Server
	secret string
	fail   func(n jobs.Notification, attempt int) int

	mu       sync.Mutex
	got      []jobs.Notification // accepted deliveries
	attempts map[string]int      // notification id -> requests
}

func newReceiver(t *testing.T, fail func(jobs.Notification, int) int) *receiver {
	r := &receiver{t: t, secret: "s3cret", fail: fail, attempts: map[string]int{}}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) webhook() Webhook { return Webhook{URL: r.srv.URL + "/hook", Secret: r.secret} }

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	sig := req.Header.Get(SignatureHeader)
	ts, _, _ := strings.Cut(strings.TrimPrefix(sig, "t="), ",")
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || sig != Sign(r.secret, time.Unix(sec, 0), body) || time.Since(time.Unix(sec, 0)) > time.Minute {
		r.t.Errorf("bad signature %q on %s", sig, body)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	var n jobs.Notification
	if err := json.Unmarshal(body, &n); err != nil || req.Method != http.MethodPost || req.Header.Get("Content-Type") != "application/json" {
		r.t.Errorf("bad delivery %s %s: %v", req.Method, body, err)
	}
	r.mu.Lock()
	r.attempts[n.ID]++
	attempt := r.attempts[n.ID]
	r.mu.Unlock()
	code := http.StatusOK
	if r.fail != nil {
		code = r.fail(n, attempt)
	}
	if code == http.StatusOK {
		r.mu.Lock()
		r.got = append(r.got, n)
		r.mu.Unlock()
	}
	w.WriteHeader(code)
}

func (r *receiver) notifications() []jobs.Notification {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

// waitFor waits until the receiver accepted a notification of typ
// matching ok.
func (r *receiver) waitFor(t *testing.T, typ jobs.EventType, ok func(jobs.Notification) bool) jobs.Notification {
	t.Helper()
	var found jobs.Notification
	testsignal.WaitFor(t, fmt.Sprintf("a %s notification", typ), func() bool {
		for _, n := range r.notifications() {
			if n.Type == typ && (ok == nil || ok(n)) {
				found = n
				return true
			}
		}
		return false
	})
	return found
}

// waitEvent waits for an event of typ on store matching ok.
func (b *bundle) waitEvent(t *testing.T, typ jobs.EventType, st string, ok func(jobs.Event) bool) jobs.Event {
	t.Helper()
	var found jobs.Event
	testsignal.WaitFor(t, fmt.Sprintf("a %s event for %q", typ, st), func() bool {
		evs, err := jobsdb.ReadEvents(t.Context(), b.rdb, "0", 100000, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs {
			if e.Type == typ && e.Store == st && (ok == nil || ok(e)) {
				found = e
				return true
			}
		}
		return false
	})
	return found
}

// jobsOf returns the records of every job of kind on store, oldest first.
func (b *bundle) jobsOf(t *testing.T, kind jobs.Kind, st string) []jobs.Record {
	t.Helper()
	evs, err := jobsdb.ReadEvents(t.Context(), b.rdb, "0", 100000, 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []jobs.Record
	for _, e := range evs {
		if e.Type == jobs.EventJobEnqueued && e.Kind == kind && e.Store == st {
			r, err := b.client.Get(t.Context(), e.JobID)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, r)
		}
	}
	return out
}

func (b *bundle) run(t *testing.T, kind jobs.Kind, st string, params jobs.Params) jobs.Record {
	t.Helper()
	return b.waitState(t, b.enqueue(t, kind, st, params).ID, jobs.StateSucceeded)
}

func writeKeys(t *testing.T, s *store.Store, from, to int, tag string) {
	t.Helper()
	for i := from; i < to; i++ {
		if err := s.Set(fmt.Appendf(nil, "key%06d", i), fmt.Appendf(nil, "%s-%06d-%s", tag, i, strings.Repeat("v", 80))); err != nil {
			t.Fatal(err)
		}
	}
}

// largestSST flips a byte in the middle of the store's biggest sstable.
func corruptLargestSST(t *testing.T, dir string) string {
	t.Helper()
	ssts, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
	if len(ssts) == 0 {
		t.Fatalf("no sstables in %s", dir)
	}
	size := func(p string) int64 { fi, _ := os.Stat(p); return fi.Size() }
	victim := slices.MaxFunc(ssts, func(a, b string) int { return int(size(a) - size(b)) })
	fh, err := os.OpenFile(victim, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	b := make([]byte, 1)
	off := int64(512)
	if _, err := fh.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := fh.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
	return victim
}

// End to end: a verify finds a flipped byte; store.corrupt says an
// automatic restore follows; the restore runs from the newest verified
// backup; the notifications say so, with the rollback window; history has
// both jobs; the content is the backup's. With the breaker at 1 a day, the
// second corruption is left alone and notified.
func TestAutoRestore(t *testing.T) {
	rcv := newReceiver(t, nil)
	b := setupWith(t, options{worker: func(c *Config) {
		c.Webhooks = []Webhook{rcv.webhook()}
		c.AutoRestoreLimit = 1
	}}, nil, "orders")
	s, _ := b.reg.Store("orders")
	writeKeys(t, s, 0, 20000, "v1")
	b.run(t, jobs.KindCompact, "orders", jobs.Params{Force: true}) // into sstables
	backup := b.run(t, jobs.KindBackup, "orders", jobs.Params{})
	writeKeys(t, s, 20000, 20100, "after-backup") // inside the rollback window: lost by the restore

	victim := corruptLargestSST(t, filepath.Join(b.reg.DataDir(), "orders"))
	verify := b.run(t, jobs.KindVerify, "orders", jobs.Params{})
	if h := b.history(t, verify.ID); len(h) != 1 || h[0].Status != jobs.StatusCorrupt {
		t.Fatalf("verify history %+v", h)
	}
	corrupt := b.waitEvent(t, jobs.EventStoreCorrupt, "orders", nil)
	if corrupt.Action != ActionAutoRestore || corrupt.RestoreJobID == "" || !strings.Contains(corrupt.Error, filepath.Base(victim)) {
		t.Fatalf("store.corrupt %+v (victim %s)", corrupt, victim)
	}
	restore := b.waitState(t, corrupt.RestoreJobID, jobs.StateSucceeded)
	if restore.Trigger != jobs.TriggerAuto || restore.Actor != jobs.ActorSystem || restore.Kind != jobs.KindRestore {
		t.Fatalf("restore record %+v", restore)
	}
	restored := b.waitEvent(t, jobs.EventStoreRestored, "orders", nil)
	var bres jobs.BackupResult
	_ = json.Unmarshal(backup.Result, &bres)
	if restored.BackupID != bres.Backup.ID || restored.BackupAt.IsZero() || restored.Quarantine == "" {
		t.Fatalf("store.restored %+v, backup %s", restored, bres.Backup.ID)
	}
	if h := b.history(t, restore.ID); len(h) != 1 || h[0].Status != jobs.StatusRestored || h[0].Trigger != jobs.TriggerAuto {
		t.Fatalf("restore history %+v", h)
	}
	nc := rcv.waitFor(t, jobs.EventStoreCorrupt, nil)
	if nc.Action != ActionAutoRestore || nc.RestoreJobID != restore.ID || nc.Summary == "" {
		t.Fatalf("corrupt notification %+v", nc)
	}
	nr := rcv.waitFor(t, jobs.EventStoreRestored, nil)
	if nr.BackupID != bres.Backup.ID || !nr.BackupAt.Equal(restored.BackupAt) || nr.Quarantine == "" || !strings.Contains(nr.Summary, "gone") {
		t.Fatalf("restored notification %+v", nr)
	}
	// The content is the backup's: every key before it, none after.
	for i := 0; i < 20100; i += 997 {
		v, err := s.Get(fmt.Appendf(nil, "key%06d", i))
		switch {
		case i < 20000 && (err != nil || !bytes.HasPrefix(v, []byte("v1-"))):
			t.Fatalf("key %d after restore: %q, %v", i, v, err)
		case i >= 20000 && err == nil:
			t.Fatalf("key %d written after the backup survived the restore", i)
		}
	}
	if st, _ := s.State(); st != store.StateOpen {
		t.Fatalf("store state after restore: %v", st)
	}

	// Again: the breaker (1 a day) keeps the store corrupt and says why.
	corruptLargestSST(t, filepath.Join(b.reg.DataDir(), "orders"))
	b.run(t, jobs.KindVerify, "orders", jobs.Params{})
	open := rcv.waitFor(t, jobs.EventStoreCorrupt, func(n jobs.Notification) bool { return n.Action == ActionBreakerOpen })
	if open.RestoreJobID != "" || !strings.Contains(open.Summary, "limit") {
		t.Fatalf("breaker notification %+v", open)
	}
	// The notification is written by the step that decided against a
	// restore (a restore is enqueued before it, under the decision), and
	// any later finding joins this incident, whose action is not a
	// restore: none can follow.
	if rs := b.jobsOf(t, jobs.KindRestore, "orders"); len(rs) != 1 {
		t.Fatalf("%d restores; the breaker should have stopped the second", len(rs))
	}
	if st, _ := s.State(); st != store.StateCorrupt {
		t.Fatalf("store state with the breaker open: %v", st)
	}
	// Exactly these notifications: nothing for the compaction, backup and
	// verifies that succeeded.
	var types []string
	for _, n := range rcv.notifications() {
		types = append(types, string(n.Type)+"/"+n.Action)
	}
	if want := []string{"store.corrupt/auto_restore", "store.restored/", "store.corrupt/breaker_open"}; !slices.Equal(types, want) {
		t.Fatalf("notifications %v, want %v", types, want)
	}
}

// With the policy off, or no backup, the store stays corrupt and the
// notification says why.
func TestCorruptWithoutAutoRestore(t *testing.T) {
	for _, c := range []struct {
		name, policy, action string
		backup               bool
	}{{"policy off", "off", ActionPolicyOff, true}, {"no backup", "on", ActionNoBackup, false}} {
		t.Run(c.name, func(t *testing.T) {
			rcv := newReceiver(t, nil)
			b := setupWith(t, options{worker: func(cfg *Config) {
				cfg.Webhooks = []Webhook{rcv.webhook()}
				cfg.AutoRestore = c.policy
			}}, nil, "orders")
			s, _ := b.reg.Store("orders")
			writeKeys(t, s, 0, 20000, "v1")
			b.run(t, jobs.KindCompact, "orders", jobs.Params{Force: true})
			if c.backup {
				b.run(t, jobs.KindBackup, "orders", jobs.Params{})
			}
			corruptLargestSST(t, filepath.Join(b.reg.DataDir(), "orders"))
			b.run(t, jobs.KindVerify, "orders", jobs.Params{})
			n := rcv.waitFor(t, jobs.EventStoreCorrupt, nil)
			if n.Action != c.action || n.RestoreJobID != "" {
				t.Fatalf("notification %+v", n)
			}
			if rs := b.jobsOf(t, jobs.KindRestore, "orders"); len(rs) != 0 {
				t.Fatalf("restored: %+v", rs)
			}
		})
	}
}

// A corrupt backup is marked bad and notified; the live store is not
// touched and no restore runs.
func TestCorruptBackup(t *testing.T) {
	rcv := newReceiver(t, nil)
	b := setupWith(t, options{worker: func(c *Config) { c.Webhooks = []Webhook{rcv.webhook()} }}, nil, "orders")
	s, _ := b.reg.Store("orders")
	writeKeys(t, s, 0, 20000, "v1")
	b.run(t, jobs.KindCompact, "orders", jobs.Params{Force: true})
	b.run(t, jobs.KindBackup, "orders", jobs.Params{})
	backups, _ := s.Backups()
	objects, _ := filepath.Glob(filepath.Join(b.reg.BackupDir(), "orders", "backups", backups[0].ID, "*.sst"))
	if len(objects) == 0 {
		t.Fatalf("no sstables in backup %s under %s", backups[0].ID, b.reg.BackupDir())
	}
	corruptLargestSST(t, filepath.Dir(objects[0]))
	v := b.run(t, jobs.KindVerify, "orders", jobs.Params{})
	n := rcv.waitFor(t, jobs.EventBackupCorrupt, nil)
	if n.BackupID != backups[0].ID || n.JobID != v.ID {
		t.Fatalf("notification %+v", n)
	}
	b.waitEvent(t, jobs.EventBackupCorrupt, "orders", nil)
	if st, _ := s.State(); st != store.StateOpen {
		t.Fatalf("live store state %v", st)
	}
	if after, _ := s.Backups(); !after[0].Bad {
		t.Fatal("backup not marked bad")
	}
	if rs := b.jobsOf(t, jobs.KindRestore, "orders"); len(rs) != 0 {
		t.Fatal("a corrupt backup restored the live store")
	}
}

// Disk full during a compaction fails the job (after its retries) and
// notifies the failure; it is not corruption and never restores.
func TestENOSPCDuringCompaction(t *testing.T) {
	var full atomic.Bool
	inj := errorfs.InjectorFunc(func(op errorfs.Op) error {
		if full.Load() && op.Kind.ReadOrWrite() == errorfs.OpIsWrite && strings.HasSuffix(op.Path, ".sst") {
			return &os.PathError{Op: "write", Path: op.Path, Err: syscall.ENOSPC}
		}
		return nil
	})
	rcv := newReceiver(t, nil)
	b := setupWith(t, options{
		worker: func(c *Config) { c.Webhooks = []Webhook{rcv.webhook()} },
		store: func(c *store.Config) {
			c.PebbleOptions = func(string) *pebble.Options {
				return &pebble.Options{FS: errorfs.Wrap(vfs.Default, inj), DisableAutomaticCompactions: true}
			}
		},
	}, nil, "orders")
	t.Cleanup(func() { full.Store(false) })
	s, _ := b.reg.Store("orders")
	writeKeys(t, s, 0, 20000, "v1")
	b.run(t, jobs.KindBackup, "orders", jobs.Params{})
	writeKeys(t, s, 0, 20000, "v2")
	b.run(t, jobs.KindBackup, "orders", jobs.Params{}) // two overlapping flushed tables
	full.Store(true)
	rec := b.enqueue(t, jobs.KindCompact, "orders", jobs.Params{Force: true})
	failed := b.waitState(t, rec.ID, jobs.StateFailed)
	full.Store(false)
	if failed.Attempts != 4 || !strings.Contains(failed.Errors[len(failed.Errors)-1].Error, "no space") {
		t.Fatalf("record %+v", failed)
	}
	n := rcv.waitFor(t, jobs.EventJobFailed, nil)
	if n.JobID != rec.ID || n.Kind != jobs.KindCompact || n.Store != "orders" {
		t.Fatalf("notification %+v", n)
	}
	// Corruption changes the store's state before any hook hears of it,
	// and only a corruption hook starts an incident (and its restore): a
	// store still open after the job failed was never taken for corrupt.
	if st, _ := s.State(); st != store.StateOpen {
		t.Fatalf("store state %v", st)
	}
	if rs := b.jobsOf(t, jobs.KindRestore, "orders"); len(rs) != 0 {
		t.Fatal("ENOSPC triggered a restore")
	}
	if got := rcv.notifications(); len(got) != 1 {
		t.Fatalf("notifications %+v", got)
	}
}

// Webhooks: a receiver failing twice gets the notification on the third
// try; one that always fails exhausts the notify job's retries, which is
// counted and never itself notified; successes and a manual restore send
// nothing.
func TestWebhookDelivery(t *testing.T) {
	flaky := newReceiver(t, func(_ jobs.Notification, attempt int) int {
		if attempt <= 2 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	var deadHits atomic.Int64
	dead := newReceiver(t, func(jobs.Notification, int) int { deadHits.Add(1); return http.StatusInternalServerError })
	b := setupWith(t, options{worker: func(c *Config) { c.Webhooks = []Webhook{flaky.webhook(), dead.webhook()} }},
		func(w *Worker) {
			w.handlers[jobs.KindVerify] = func(context.Context, Handle, jobs.Payload) (outcome, error) {
				return outcome{}, fmt.Errorf("%w: verify broke", errPermanentTest)
			}
		}, "orders")
	s, _ := b.reg.Store("orders")
	writeKeys(t, s, 0, 1000, "v1")
	b.run(t, jobs.KindCompact, "orders", jobs.Params{Force: true})
	b.run(t, jobs.KindBackup, "orders", jobs.Params{})
	b.run(t, jobs.KindRestore, "orders", jobs.Params{}) // manual: not notified
	v := b.enqueue(t, jobs.KindVerify, "orders", jobs.Params{})
	b.waitState(t, v.ID, jobs.StateFailed)

	n := flaky.waitFor(t, jobs.EventJobFailed, nil)
	if n.JobID != v.ID || !strings.Contains(n.Error, "verify broke") {
		t.Fatalf("notification %+v", n)
	}
	if got := flaky.notifications(); len(got) != 1 {
		t.Fatalf("flaky receiver got %+v", got)
	}
	// The dead receiver's notify job runs 1 + 8 retries, then fails for
	// good: counted, logged, and no notification about it anywhere.
	testsignal.WaitForWithin(t, 30*time.Second, "the dead receiver's notify job failing for good", func() bool {
		failed, _ := b.rdb.Get(t.Context(), keyspace.NotifyFailedKey).Int()
		return failed == 1
	})
	if deadHits.Load() != 9 {
		t.Fatalf("dead receiver got %d requests, want 9", deadHits.Load())
	}
	// The failure is counted after it was recorded, with whatever the
	// record notified; once the outbox is dispatched, every notification
	// written has its notify jobs.
	testsignal.WaitFor(t, "the outbox dispatched", func() bool {
		return b.rdb.LLen(t.Context(), keyspace.OutboxKey).Val() == 0 && b.rdb.LLen(t.Context(), keyspace.OutboxProcessingKey("n1")).Val() == 0
	})
	if got := flaky.notifications(); len(got) != 1 {
		t.Fatalf("a failing notify job was notified: %+v", got)
	}
	if h := b.jobsOf(t, jobs.KindNotify, "orders"); len(h) != 2 {
		t.Fatalf("%d notify jobs, want one per sink", len(h))
	}
}

var errPermanentTest = store.ErrUnknownBackup // any permanent error
