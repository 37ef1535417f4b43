package worker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"storekeeper/internal/keyspace"
	"storekeeper/internal/redistest"
	"storekeeper/internal/testsignal"
	"storekeeper/jobs"
	"storekeeper/jobsdb"
	"storekeeper/offsite"
	"storekeeper/store"
)

const childEnv = "STOREKEEPER_TEST_WORKER_CHILD"

// A child's node name (n1 by default), its backup target's file:// URL
// (none by default) and lease TTL (the default by default).
const (
	childNodeEnv     = "STOREKEEPER_TEST_WORKER_CHILD_NODE"
	childTargetEnv   = "STOREKEEPER_TEST_WORKER_CHILD_TARGET"
	childLeaseTTLEnv = "STOREKEEPER_TEST_WORKER_CHILD_LEASE_TTL"
)

// TestMain runs a worker process when the crash tests re-execute this
// binary, and the tests otherwise.
func TestMain(m *testing.M) {
	if spec := os.Getenv(childEnv); spec != "" {
		os.Exit(childMain(spec))
	}
	// No goroutine may outlive the tests: every one our code starts has
	// an owner that ends it.
	goleak.VerifyTestMain(m,
		// The GCS and Azure drivers' dependencies start OpenCensus's view
		// worker at init, for the life of the process.
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"))
}

// childMain is a worker node n1 over a data dir, until it is killed.
// With a fourth field, a path, a compaction job holds Pebble's compaction
// once it begins: the child writes the path and waits there, so that the
// test kills it in the middle of a compaction, however fast the machine.
func childMain(spec string) int {
	f := strings.Fields(spec)
	if len(f) != 3 && len(f) != 4 {
		fmt.Fprintln(os.Stderr, "child: bad spec", spec)
		return 3
	}
	addr, data, backups := f[0], f[1], f[2]
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	quiet := slog.New(slog.DiscardHandler)
	var armed atomic.Bool // a compaction job runs: hold the next compaction
	cfg := store.Config{DataDir: data, BackupDir: backups, Logger: quiet}
	if len(f) == 4 {
		marker := f[3]
		cfg.PebbleOptions = func(string) *pebble.Options {
			// No compaction of its own: the job's is the one held.
			return &pebble.Options{DisableAutomaticCompactions: true, EventListener: &pebble.EventListener{CompactionBegin: func(pebble.CompactionInfo) {
				if armed.Load() {
					_ = os.WriteFile(marker, nil, 0o644)
					select {} // until the test kills the process
				}
			}}}
		}
	}
	reg, err := store.Open(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 3
	}
	wcfg := Config{Redis: rdb, Registry: reg, Node: "n1", TaskCheckInterval: 10 * time.Millisecond, Logger: quiet}
	if n := os.Getenv(childNodeEnv); n != "" {
		wcfg.Node = n
	}
	if d, err := time.ParseDuration(os.Getenv(childLeaseTTLEnv)); err == nil {
		wcfg.LeaseTTL = d
	}
	if u := os.Getenv(childTargetEnv); u != "" {
		t, err := offsite.Open(context.Background(), "vault", u, nil)
		if err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			return 3
		}
		defer t.Close()
		wcfg.Targets = []*offsite.Target{t}
	}
	w, err := New(wcfg)
	if err == nil {
		w.handlers[jobs.KindCompact] = func(ctx context.Context, s Handle, p jobs.Payload) (outcome, error) {
			armed.Store(true)
			return compactJob(ctx, s, p)
		}
		err = w.Start(context.Background())
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 3
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	<-sig
	w.Shutdown()
	reg.Close()
	return 0
}

type crashRig struct {
	srv           *redistest.Server
	rdb           *redis.Client
	client        *jobsdb.Client
	data, backups string
	// pebble, when set, are the Pebble options checksum opens the store
	// with (no automatic compactions, to leave its LSM as it is).
	pebble func(string) *pebble.Options
}

func (r *crashRig) start(t *testing.T, extra ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %s %s %s", childEnv, r.srv.Addr(), r.data, r.backups, strings.Join(extra, " ")))
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd
}

func (r *crashRig) waitState(t *testing.T, id string, states ...jobs.State) jobs.Record {
	t.Helper()
	var rec jobs.Record
	testsignal.WaitForWithin(t, 60*time.Second, fmt.Sprintf("job %s reaching %v", id, states), func() bool {
		var err error
		rec, err = r.client.Get(t.Context(), id)
		return err == nil && slices.Contains(states, rec.State)
	})
	return rec
}

// checksum opens the data dir (no worker may hold it) and hashes store kv.
func (r *crashRig) checksum(t *testing.T) string {
	t.Helper()
	reg, err := store.Open(store.Config{DataDir: r.data, BackupDir: r.backups, Logger: quietLogger(), PebbleOptions: r.pebble})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	s, _ := reg.Store("kv")
	if st, cause := s.State(); st != store.StateOpen {
		t.Fatalf("store state %v (%v)", st, cause)
	}
	h := sha256.New()
	if err := s.Scan(t.Context(), nil, nil, func(k, v []byte) error { fmt.Fprintf(h, "%q=%q;", k, v); return nil }); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func newCrashRig(t *testing.T, keys int) *crashRig {
	t.Helper()
	srv := redistest.Start(t, redistest.RequireReal())
	rdb := srv.Client(t)
	root := t.TempDir()
	r := &crashRig{srv: srv, rdb: rdb, client: jobsdb.NewClient(rdb, jobs.ClientConfig{}),
		data: filepath.Join(root, "data"), backups: filepath.Join(root, "backups")}
	reg, err := store.Open(store.Config{DataDir: r.data, BackupDir: r.backups, Stores: []string{"kv"}, NoSync: true, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	s, _ := reg.Store("kv")
	write(t, s, keys, 0)
	reg.Close()
	return r
}

func write(t *testing.T, s *store.Store, keys, gen int) {
	t.Helper()
	val := make([]byte, 200)
	for lo := 0; lo < keys; lo += 5000 {
		err := s.Update(func(b *store.Batch) error {
			for i := lo; i < min(keys, lo+5000); i++ {
				copy(val, fmt.Sprintf("gen%d-%d", gen, i))
				if err := b.Set(fmt.Appendf(nil, "k%08d", i*7919%keys), val); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

func killNow(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
}

func stop(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	_ = cmd.Wait()
}

// A worker killed during a compaction: restarted, it takes its queue's
// orphaned task back at once, the job completes, the content is unchanged.
func TestWorkerKilledDuringCompaction(t *testing.T) {
	r := newCrashRig(t, 50_000)
	// Overwrites that stay above the bottom level (no automatic
	// compaction, here or in checksum): the job's compaction has work to
	// do, and begins.
	r.pebble = func(string) *pebble.Options { return &pebble.Options{DisableAutomaticCompactions: true} }
	reg, err := store.Open(store.Config{DataDir: r.data, BackupDir: r.backups, NoSync: true, Logger: quietLogger(), PebbleOptions: r.pebble})
	if err != nil {
		t.Fatal(err)
	}
	s, _ := reg.Store("kv")
	write(t, s, 50_000, 1)
	reg.Close()
	before := r.checksum(t)
	marker := filepath.Join(t.TempDir(), "compacting")
	child := r.start(t, marker) // holds the compaction once it begins
	got, err := r.client.Enqueue(t.Context(), waitOwned(t, r, jobs.Request{Kind: jobs.KindCompact, Store: "kv",
		Params: jobs.Params{Force: true}, Trigger: jobs.TriggerManual, Actor: "t"}))
	if err != nil {
		t.Fatal(err)
	}
	// The child writes the marker once Pebble's compaction begins.
	testsignal.WaitForWithin(t, 30*time.Second, "the compaction beginning", func() bool {
		_, err := os.Stat(marker)
		return err == nil
	})
	killNow(t, child)
	if rec, _ := r.client.Get(t.Context(), got.Record.ID); rec.State != jobs.StateActive {
		t.Fatalf("compaction was %s when killed in the middle of it", rec.State)
	}
	restarted := time.Now()
	child = r.start(t)
	r.waitState(t, got.Record.ID, jobs.StateSucceeded)
	t.Logf("compaction job completed %v after the worker restarted", time.Since(restarted).Round(time.Millisecond))
	fmt.Printf("worker crash during compaction: job done %v after restart\n", time.Since(restarted).Round(time.Millisecond))
	stop(t, child)
	if after := r.checksum(t); after != before {
		t.Fatal("content changed")
	}
}

// A worker killed during a restore: restarted, the job completes and the
// store equals the backup.
func TestWorkerKilledDuringRestore(t *testing.T) {
	r := newCrashRig(t, 120_000)
	reg, err := store.Open(store.Config{DataDir: r.data, BackupDir: r.backups, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	s, _ := reg.Store("kv")
	if _, err := s.Backup(t.Context()); err != nil {
		t.Fatal(err)
	}
	reg.Close()
	backedUp := r.checksum(t)
	reg, _ = store.Open(store.Config{DataDir: r.data, BackupDir: r.backups, NoSync: true, Logger: quietLogger()})
	s, _ = reg.Store("kv")
	write(t, s, 120_000, 1) // what the restore rolls back
	reg.Close()

	child := r.start(t)
	got, err := r.client.Enqueue(t.Context(), waitOwned(t, r, jobs.Request{Kind: jobs.KindRestore, Store: "kv", Trigger: jobs.TriggerManual, Actor: "t"}))
	if err != nil {
		t.Fatal(err)
	}
	r.waitState(t, got.Record.ID, jobs.StateActive)
	killNow(t, child)
	restarted := time.Now()
	child = r.start(t)
	r.waitState(t, got.Record.ID, jobs.StateSucceeded)
	fmt.Printf("worker crash during restore: job done %v after restart\n", time.Since(restarted).Round(time.Millisecond))
	stop(t, child)
	if after := r.checksum(t); after != backedUp {
		t.Fatal("restored content differs from the backup")
	}
}

// waitOwned waits until the child has claimed the store, then returns req.
func waitOwned(t *testing.T, r *crashRig, req jobs.Request) jobs.Request {
	t.Helper()
	testsignal.WaitForWithin(t, 30*time.Second, "the child worker claiming the store", func() bool {
		return r.rdb.Exists(t.Context(), keyspace.LeaseKey(req.Store)).Val() == 1
	})
	return req
}
