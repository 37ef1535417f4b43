package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"storekeeper/internal/redistest"
	"storekeeper/internal/testsignal"
	"storekeeper/jobs"
	"storekeeper/worker"
)

// TestMain fails the tests if a goroutine outlives them: the application
// stops everything it starts.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// The application keeps writing while storekeeper compacts, backs up and
// restores its store. Every write acknowledged before the backup started
// is there after the restore, with its value; writes acknowledged after
// the restore are there too. Writes in between are the rollback window.
func TestAcknowledgedWritesSurviveRestore(t *testing.T) {
	srv := redistest.Start(t)
	root := t.TempDir()
	a, err := start(t.Context(), config{
		dataDir: filepath.Join(root, "stores"), backupDir: filepath.Join(root, "backups"),
		redis: &redis.Options{Addr: srv.Addr()}, node: "embed",
		log: slog.New(slog.DiscardHandler),
		workerConfig: func(c *worker.Config) {
			c.TaskCheckInterval = 10 * time.Millisecond
			c.Schedules = map[jobs.Kind]string{jobs.KindCompact: "off", jobs.KindBackup: "off", jobs.KindVerify: "off"}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()

	var (
		mu    sync.Mutex
		acked []time.Time // acked[i]: when key i was acknowledged
	)
	acks := make(chan struct{}, 1) // a write was acknowledged since the last receive
	ctx, stopWriter := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ctx.Err() == nil; i++ {
			if err := a.put(ctx, key(i), value(i)); err != nil {
				if ctx.Err() == nil {
					t.Errorf("write %d: %v", i, err)
				}
				return
			}
			mu.Lock()
			acked = append(acked, time.Now())
			mu.Unlock()
			select {
			case acks <- struct{}{}:
			default:
			}
		}
	})
	ackedCount := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }
	// waitAcked waits until n writes in all were acknowledged.
	waitAcked := func(n int) {
		t.Helper()
		for ackedCount() < n {
			select {
			case <-acks:
			case <-time.After(testsignal.Timeout):
				t.Fatalf("%d writes acknowledged, want %d", ackedCount(), n)
			}
		}
	}
	waitAcked(500)
	run := func(kind jobs.Kind, params jobs.Params) jobs.Record {
		t.Helper()
		res, err := a.jobs.Enqueue(t.Context(), jobs.Request{Kind: kind, Store: storeName, Params: params, Trigger: jobs.TriggerManual, Actor: "test"})
		if err != nil {
			t.Fatal(err)
		}
		var r jobs.Record
		if !testsignal.Poll(30*time.Second, func() bool {
			r, err = a.jobs.Get(t.Context(), res.Record.ID)
			return err == nil && r.State.Terminal()
		}) || r.State != jobs.StateSucceeded {
			t.Fatalf("%s job: %+v, %v", kind, r, err)
		}
		return r
	}
	run(jobs.KindCompact, jobs.Params{Force: true})
	backup := run(jobs.KindBackup, jobs.Params{})
	var bres jobs.BackupResult
	if err := json.Unmarshal(backup.Result, &bres); err != nil {
		t.Fatal(err)
	}
	waitAcked(ackedCount() + 300) // writes inside the rollback window
	restore := run(jobs.KindRestore, jobs.Params{BackupID: bres.Backup.ID})
	waitAcked(ackedCount() + 300) // writes after the restore
	stopWriter()
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	before, window, after := 0, 0, 0
	for i, at := range acked {
		v, err := a.kv.Get(key(i))
		switch {
		case at.Before(backup.StartedAt):
			before++
			if err != nil || string(v) != string(value(i)) {
				t.Fatalf("write %d acknowledged before the backup started is lost after the restore: %q, %v", i, v, err)
			}
		case at.After(restore.FinishedAt):
			after++
			if err != nil || string(v) != string(value(i)) {
				t.Fatalf("write %d acknowledged after the restore is lost: %q, %v", i, v, err)
			}
		default:
			window++
		}
	}
	t.Logf("%d writes before the backup survived; %d in the rollback window; %d after the restore", before, window, after)
	if before < 500 || after < 300 {
		t.Fatalf("too few writes checked: %d before, %d after", before, after)
	}

	// The HTTP surface: a write, a read, a maintenance request.
	hs := httptest.NewServer(a.routes())
	defer hs.Close()
	req := httptest.NewRequest("PUT", hs.URL+"/kv/hello", strings.NewReader("world"))
	req.RequestURI = ""
	if resp, err := hs.Client().Do(req); err != nil || resp.StatusCode != 204 {
		t.Fatalf("PUT: %v, %v", resp, err)
	}
	resp, err := hs.Client().Get(hs.URL + "/kv/hello")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "world" {
		t.Fatalf("GET = %q", body)
	}
	resp, err = hs.Client().Post(hs.URL+"/maintenance/verify", "", nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("POST maintenance: %v, %v", resp, err)
	}
	resp.Body.Close()
}

func key(i int) []byte   { return fmt.Appendf(nil, "event-%07d", i) }
func value(i int) []byte { return fmt.Appendf(nil, "payload-%d-%s", i, strings.Repeat("x", i%200)) }

// With a backup target, PUT ?wait=shipped answers only once the write is
// on the target: the segment holding it is there when the answer comes.
func TestWaitShippedWrite(t *testing.T) {
	srv := redistest.Start(t)
	root := t.TempDir()
	vault := filepath.Join(root, "vault")
	if err := os.MkdirAll(vault, 0o755); err != nil {
		t.Fatal(err)
	}
	a, err := start(t.Context(), config{
		dataDir: filepath.Join(root, "stores"), backupDir: filepath.Join(root, "backups"), target: "file://" + vault,
		redis: &redis.Options{Addr: srv.Addr()}, node: "embed", log: slog.New(slog.DiscardHandler),
		workerConfig: func(c *worker.Config) {
			c.Schedules = map[jobs.Kind]string{jobs.KindCompact: "off", jobs.KindBackup: "off", jobs.KindVerify: "off", jobs.KindDrill: "off"}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()
	h := a.routes()
	req := httptest.NewRequest("PUT", "/kv/hello?wait=shipped", strings.NewReader("world"))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusNoContent {
		t.Fatalf("PUT ?wait=shipped: %d %s", rec.Code, rec.Body)
	}
	segs, _ := filepath.Glob(filepath.Join(vault, "stores", storeName, "log", "*", "*.seg"))
	if len(segs) == 0 {
		t.Fatal("the write was acknowledged as shipped, but the target holds no segment")
	}
}
