package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// smallRule lets the small stores of tests clear the threshold.
var smallRule = CompactionRule{MinReclaimBytes: 16 << 10, MinReclaimRatio: 0.05}

func TestCompactChurnedStore(t *testing.T) {
	r := openTest(t, Config{Stores: []string{"churn"}, Rule: smallRule})
	s := mustStore(t, r, "churn")
	churn(t, s, 20000, 200)
	before, n := checksum(t, s)
	stats := s.Stats()
	if stats.ReadAmp < 2 || stats.Tombstones == 0 {
		t.Fatalf("churn did not produce a messy LSM: %+v", stats)
	}

	res, err := s.Compact(t.Context(), CompactOptions{})
	if err != nil {
		t.Fatalf("Compact: %v", err)
	}
	if res.Outcome != Compacted {
		t.Fatalf("outcome = %s (%s), want compacted", res.Outcome, res.Decision.Reason)
	}
	if res.BytesAfter >= res.BytesBefore {
		t.Errorf("bytes after %d >= before %d", res.BytesAfter, res.BytesBefore)
	}
	if res.Duration <= 0 || res.Decision.Reason == "" || res.Decision.Stats.LiveBytes == 0 {
		t.Errorf("result lacks its evidence: %+v", res)
	}
	// The decision's stats are the store's, whole: a job's result and its
	// job.succeeded event showed disk_bytes and estimated_keys 0.
	if d := res.Decision.Stats; d.DiskBytes < d.LiveBytes || d.EstimatedKeys == 0 {
		t.Errorf("the decision's stats: disk %d bytes (live %d), about %d keys; want the store's disk usage and key estimate",
			d.DiskBytes, d.LiveBytes, d.EstimatedKeys)
	}
	after, m := checksum(t, s)
	if after != before || m != n {
		t.Fatalf("content changed by compaction: %d keys %s -> %d keys %s", n, before, m, after)
	}
	st := s.Stats()
	if st.ReadAmp != 1 || st.LastCompaction.IsZero() {
		t.Errorf("after compaction: read amp %d, last compaction %v", st.ReadAmp, st.LastCompaction)
	}
	t.Logf("compacted %d keys: %d -> %d bytes in %v (%s)", n, res.BytesBefore, res.BytesAfter, res.Duration, res.Decision.Reason)

	// Fully compacted now: the rule skips, with a reason.
	res, err = s.Compact(t.Context(), CompactOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Outcome != Skipped || !strings.Contains(res.Decision.Reason, "fully compacted") {
		t.Fatalf("second compaction: %s (%s), want skipped as fully compacted", res.Outcome, res.Decision.Reason)
	}
	// Force overrides the rule.
	res, err = s.Compact(t.Context(), CompactOptions{Force: true})
	if err != nil || res.Outcome != Compacted || !strings.HasPrefix(res.Decision.Reason, "forced") {
		t.Fatalf("forced compaction: %+v, %v", res, err)
	}
}

func TestCompactDryRunChangesNothing(t *testing.T) {
	// No automatic compactions, so nothing but the dry run could change the
	// live file set.
	s := mustStore(t, openTest(t, Config{Stores: []string{"churn"}, Rule: smallRule,
		PebbleOptions: func(string) *pebble.Options { return &pebble.Options{DisableAutomaticCompactions: true} },
	}), "churn")
	churn(t, s, 5000, 100)
	files := live(t, s)
	sum, _ := checksum(t, s)
	res, err := s.Compact(t.Context(), CompactOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Outcome != DryRun || !res.Decision.Compact || res.Decision.Reason == "" {
		t.Fatalf("dry run = %+v, want a decision to compact with a reason", res)
	}
	if got := live(t, s); !slices.Equal(got, files) {
		t.Fatalf("dry run changed the live file set: %v -> %v", files, got)
	}
	if got, _ := checksum(t, s); got != sum {
		t.Fatal("dry run changed the content")
	}
	if !s.Stats().LastCompaction.IsZero() {
		t.Fatal("dry run recorded a compaction")
	}
}

func TestCompactRefusesWithoutSpace(t *testing.T) {
	r := openTest(t, Config{Stores: []string{"churn"},
		PebbleOptions: func(string) *pebble.Options { return &pebble.Options{DisableAutomaticCompactions: true} },
	})
	s := mustStore(t, r, "churn")
	churn(t, s, 5000, 100)
	files := live(t, s)
	r.freeSpace = func(string) (uint64, error) { return 4096, nil }
	_, err := s.Compact(t.Context(), CompactOptions{Force: true})
	var serr *SpaceError
	if !errors.As(err, &serr) || !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Compact = %v, want a SpaceError", err)
	}
	if serr.Free != 4096 || serr.Need == 0 || !strings.Contains(err.Error(), "needs") {
		t.Fatalf("space error lacks numbers: %v", err)
	}
	if got := live(t, s); !slices.Equal(got, files) {
		t.Fatal("a refused compaction touched the store")
	}
}

// live returns the table numbers of the store's live version.
func live(t *testing.T, s *Store) []uint64 {
	t.Helper()
	db, err := s.acquire()
	if err != nil {
		t.Fatal(err)
	}
	defer s.release()
	tables, err := liveTables(db)
	if err != nil {
		t.Fatal(err)
	}
	return tables
}

// heavyWriter writes until stop is closed, reporting write errors.
func heavyWriter(t *testing.T, s *Store, stop <-chan struct{}) *sync.WaitGroup {
	t.Helper()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		val := make([]byte, 512)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			err := s.Update(func(b *Batch) error {
				for j := range 200 {
					if err := b.Set(fmt.Appendf(nil, "hot-%07d", (i*200+j)%300000), val); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil && !errors.Is(err, ErrClosed) {
				t.Errorf("writer: %v", err)
				return
			}
		}
	}()
	return &wg
}

// A compaction under a heavy writer stops at its deadline and on cancel,
// and the store keeps serving.
func TestCompactStopsOnDeadlineAndCancel(t *testing.T) {
	var began atomic.Int32
	beganCh := make(chan struct{}, 1)
	r := openTest(t, Config{
		Stores: []string{"hot"},
		PebbleOptions: func(string) *pebble.Options {
			return &pebble.Options{
				MemTableSize: 1 << 20,
				EventListener: &pebble.EventListener{CompactionBegin: func(pebble.CompactionInfo) {
					if began.Add(1) > 0 {
						select {
						case beganCh <- struct{}{}:
						default:
						}
					}
				}},
			}
		},
	})
	s := mustStore(t, r, "hot")
	churn(t, s, 80000, 512)
	stop := make(chan struct{})
	writer := heavyWriter(t, s, stop)
	defer func() { close(stop); writer.Wait() }()

	const deadline = 100 * time.Millisecond
	start := time.Now()
	res, err := s.Compact(t.Context(), CompactOptions{Force: true, Timeout: deadline})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Compact with a %v deadline = %v (%+v), want deadline exceeded", deadline, err, res)
	}
	t.Logf("deadline: compaction stopped %v after start (deadline %v)", time.Since(start), deadline)

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := s.Compact(ctx, CompactOptions{Force: true})
		done <- err
	}()
	<-beganCh
	cancelAt := time.Now()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled Compact = %v, want context.Canceled", err)
		}
		t.Logf("cancel: compaction stopped %v after cancel", time.Since(cancelAt))
	case <-time.After(60 * time.Second):
		t.Fatal("cancelled compaction did not stop within 60s")
	}
	if err := s.Set([]byte("still"), []byte("serving")); err != nil {
		t.Fatalf("store stopped serving: %v", err)
	}
}

// Closing a store cancels a running compaction instead of hanging under it.
func TestCloseStopsCompaction(t *testing.T) {
	r := openTest(t, Config{Stores: []string{"hot"}})
	s := mustStore(t, r, "hot")
	churn(t, s, 40000, 512)
	stop := make(chan struct{})
	writer := heavyWriter(t, s, stop)
	done := make(chan error, 1)
	go func() {
		_, err := s.Compact(context.Background(), CompactOptions{Force: true})
		done <- err
	}()
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close = %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("Close hung behind a compaction")
	}
	close(stop)
	writer.Wait()
	if err := <-done; err == nil {
		t.Log("compaction finished before Close (fine)")
	} else if !errors.Is(err, ErrUnavailable) && !errors.Is(err, ErrClosed) {
		t.Fatalf("compaction stopped by Close = %v, want ErrUnavailable/ErrClosed", err)
	}
}

// With shipping on, Pebble moves the tables a compaction made obsolete
// into archive/ (ArchiveCleaner), where they wait for the shipper's next
// trim. They are not the store's any more: a compaction's before and
// after count the store's own files, not archive/.
func TestCompactSizesLeaveOutArchive(t *testing.T) {
	r := openTest(t, Config{Stores: []string{"churn"}, Rule: smallRule, Ship: true})
	s := mustStore(t, r, "churn")
	churn(t, s, 20000, 200)
	res, err := s.Compact(t.Context(), CompactOptions{Force: true})
	if err != nil || res.Outcome != Compacted {
		t.Fatalf("Compact: %+v, %v", res, err)
	}
	archived := dirSize(filepath.Join(s.dir, "archive"))
	if archived == 0 {
		t.Fatal("nothing in archive/ after the compaction: the test no longer shows what it is about")
	}
	if res.BytesAfter >= res.BytesBefore {
		t.Errorf("bytes after %d >= before %d (archive/ holds %d)", res.BytesAfter, res.BytesBefore, archived)
	}
	if all := dirSize(s.dir); res.BytesAfter+archived > all {
		t.Errorf("bytes after %d + archive/ %d > the whole directory %d", res.BytesAfter, archived, all)
	}
}
