package store

import (
	"context"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"storekeeper/internal/testsignal"
)

// Backup and restore benchmarks, beside a plain copy with fsync in the
// same run. Timings of the steps are reported as extra metrics
// (<step>-ms/op) for the breakdown in docs/BENCHMARKS.md. Files are copied
// on GOMAXPROCS goroutines: copy-phase is wall time, and hash and fsync,
// inside it, are summed over the goroutines.

// benchRegistry opens a registry over a fresh copy of a fixture.
func benchRegistry(b *testing.B, fixture string) (*Registry, *Store) {
	b.Helper()
	root := b.TempDir()
	dataDir := filepath.Join(root, "data")
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		b.Fatal(err)
	}
	copyStore(b, fixture, dataDir)
	reg, err := Open(Config{DataDir: dataDir, BackupDir: filepath.Join(root, "backups"), Logger: quiet,
		Quarantine: Quarantine{MaxCount: 1}, Retention: Retention{Last: 1000, Daily: 1}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { reg.Close() })
	s, _ := reg.Store("bench")
	atRest(b, s)
	return reg, s
}

// atRest waits until the compactions the fixture's open started are done
// (its L0 holds about a hundred tables): a backup or restore timed while
// they run measures them, and backs up files the plain copy it is
// compared with never saw. Every arm starts from the same store at rest.
func atRest(b *testing.B, s *Store) {
	b.Helper()
	// Pebble tells no one when its compaction debt is paid: its metrics
	// are polled, as testsignal does for what cannot be signalled.
	var m *pebble.Metrics
	if !testsignal.Poll(2*time.Minute, func() bool {
		s.mu.RLock()
		m = s.db.Metrics()
		s.mu.RUnlock()
		return m.Compact.NumInProgress == 0 && m.Compact.EstimatedDebt == 0
	}) {
		b.Fatalf("compactions still running after 2 minutes: %d in progress, debt %d", m.Compact.NumInProgress, m.Compact.EstimatedDebt)
	}
}

func ms(d time.Duration, n int) float64 { return float64(d) / float64(time.Millisecond) / float64(n) }

func reportBackup(b *testing.B, t BackupTiming, n int) {
	b.ReportMetric(ms(t.Checkpoint, n), "checkpoint-ms/op")
	b.ReportMetric(ms(t.Copy, n), "copy-phase-ms/op")
	b.ReportMetric(ms(t.Hash, n), "hash-ms/op")
	b.ReportMetric(ms(t.FileSync, n), "fsync-ms/op")
	b.ReportMetric(ms(t.Validate, n), "validate-ms/op")
	b.ReportMetric(ms(t.Publish, n), "publish-ms/op")
}

func sumBackup(a *BackupTiming, t BackupTiming) {
	a.Checkpoint += t.Checkpoint
	a.Copy += t.Copy
	a.Hash += t.Hash
	a.FileSync += t.FileSync
	a.Validate += t.Validate
	a.Publish += t.Publish
}

// plainCopy copies every file of src into a new dir dst with io.Copy (the
// kernel's copy_file_range where it can), fsyncs each file and the
// directory: what a careful script does.
func plainCopy(b *testing.B, src, dst string) int64 {
	b.Helper()
	if err := os.MkdirAll(dst, 0o755); err != nil {
		b.Fatal(err)
	}
	entries, err := os.ReadDir(src)
	if err != nil {
		b.Fatal(err)
	}
	var total int64
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		in, err := os.Open(filepath.Join(src, e.Name()))
		if err != nil {
			b.Fatal(err)
		}
		out, err := os.Create(filepath.Join(dst, e.Name()))
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(out, in)
		if err == nil {
			err = out.Sync()
		}
		in.Close()
		out.Close()
		if err != nil {
			b.Fatal(err)
		}
		total += n
	}
	d, err := os.Open(dst)
	if err == nil {
		err = d.Sync()
		d.Close()
	}
	if err != nil {
		b.Fatal(err)
	}
	return total
}

// BenchmarkBackupFull: a full backup of the churned store (empty backup
// directory each time) vs a plain copy of the store directory with fsync.
func BenchmarkBackupFull(b *testing.B) {
	fixture := churnedFixture(b, fixtureKeys)
	b.Run("storekeeper", func(b *testing.B) {
		reg, s := benchRegistry(b, fixture)
		var t BackupTiming
		b.ResetTimer() // the copy of the fixture and the open are not the backup
		for range b.N {
			b.StopTimer()
			if err := os.RemoveAll(filepath.Join(reg.BackupDir(), "bench")); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			res, err := s.Backup(context.Background())
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(res.Backup.Bytes)
			sumBackup(&t, res.Timing)
		}
		reportBackup(b, t, b.N)
	})
	b.Run("raw", func(b *testing.B) {
		_, s := benchRegistry(b, fixture)
		s.Close() // a plain copy needs the store at rest
		b.ResetTimer()
		for i := range b.N {
			b.SetBytes(plainCopy(b, s.Dir(), filepath.Join(b.TempDir(), "copy", string(rune('a'+i%26)))))
		}
	})
}

// BenchmarkBackupIncremental: the churned store is compacted to rest and
// backed up in full; then 1% of the keys are
// rewritten (in one contiguous range, or at random) and flushed, optionally
// compacted over the rewritten span, and the next backup is timed. "full"
// is the first backup of the same store, for the ratio.
func BenchmarkBackupIncremental(b *testing.B) {
	fixture := churnedFixture(b, fixtureKeys)
	const rewrite = fixtureKeys / 100
	cases := []struct {
		name    string
		random  bool
		compact bool
		full    bool
	}{
		{name: "full", full: true},
		{name: "range-1pct"},
		{name: "random-1pct", random: true},
		{name: "range-1pct-compacted", compact: true},
		{name: "random-1pct-compacted", random: true, compact: true},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			var t BackupTiming
			var newBytes int64
			for range b.N {
				b.StopTimer()
				_, s := benchRegistry(b, fixture)
				// Start at rest: with the fixture's own compaction debt
				// paid, the only change between the backups is ours.
				if _, err := s.Compact(context.Background(), CompactOptions{Force: true}); err != nil {
					b.Fatal(err)
				}
				if c.full {
					b.StartTimer()
				}
				full, err := s.Backup(context.Background())
				if err != nil {
					b.Fatal(err)
				}
				res := full
				if !c.full {
					rewriteKeys(b, s, rewrite, c.random, c.compact)
					b.StartTimer()
					if res, err = s.Backup(context.Background()); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				newBytes += res.Backup.NewBytes
				sumBackup(&t, res.Timing)
			}
			reportBackup(b, t, b.N)
			b.ReportMetric(float64(newBytes)/float64(b.N), "newbytes/op")
		})
	}
}

// rewriteKeys overwrites n existing keys, a contiguous range from the
// middle or spread at random, flushes, and with compact compacts the span
// they cover.
func rewriteKeys(b *testing.B, s *Store, n int, random, compact bool) {
	b.Helper()
	rng := rand.New(rand.NewPCG(7, 8))
	val := make([]byte, fixtureValue)
	lo, hi := fixtureKeys/2, fixtureKeys/2+n
	err := s.Update(func(batch *Batch) error {
		for i := range n {
			k := lo + i
			if random {
				k = rng.IntN(fixtureKeys)
			}
			for j := range val {
				val[j] = byte(rng.Uint32())
			}
			if err := batch.Set(benchKey(k), val); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	db, err := s.acquire()
	if err != nil {
		b.Fatal(err)
	}
	defer s.release()
	if err := db.Flush(); err != nil {
		b.Fatal(err)
	}
	if compact {
		if random {
			lo, hi = 0, fixtureKeys
		}
		if err := db.Compact(context.Background(), benchKey(lo), benchKey(hi), true); err != nil {
			b.Fatal(err)
		}
	}
}

func reportRestore(b *testing.B, t RestoreTiming, n int) {
	b.ReportMetric(ms(t.Fence, n), "fence-ms/op")
	b.ReportMetric(ms(t.Stage, n), "copy-phase-ms/op")
	b.ReportMetric(ms(t.Hash, n), "hash-ms/op")
	b.ReportMetric(ms(t.Sync, n), "fsync-ms/op")
	b.ReportMetric(ms(t.Verify, n), "verify-ms/op")
	b.ReportMetric(ms(t.Swap, n), "swap-ms/op")
	b.ReportMetric(ms(t.Reopen, n), "reopen-ms/op")
}

// BenchmarkRestore: restoring the churned store's backup vs a plain copy of
// the backup directory with fsync, then opening it with Pebble.
func BenchmarkRestore(b *testing.B) {
	benchRestore(b, churnedFixture(b, fixtureKeys))
}

func benchRestore(b *testing.B, fixture string) {
	b.Run("storekeeper", func(b *testing.B) {
		_, s := benchRegistry(b, fixture)
		bk, err := s.Backup(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		var t RestoreTiming
		b.ResetTimer()
		for range b.N {
			res, err := s.Restore(context.Background(), bk.Backup.ID)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(bk.Backup.Bytes)
			t.Fence += res.Timing.Fence
			t.Stage += res.Timing.Stage
			t.Hash += res.Timing.Hash
			t.Sync += res.Timing.Sync
			t.Verify += res.Timing.Verify
			t.Swap += res.Timing.Swap
			t.Reopen += res.Timing.Reopen
		}
		reportRestore(b, t, b.N)
	})
	// A drill of the same backup from the local backups: fetched into a
	// scratch directory with its hashes checked, every table and the WAL
	// fingerprinted, then a Pebble open and CheckLevels; compared with the
	// restore above (make bench's Drill row).
	b.Run("drill", func(b *testing.B) {
		_, s := benchRegistry(b, fixture)
		bk, err := s.Backup(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		m := bk.Backup.BackupManifest
		open := func(_ context.Context, f BackupFile) (io.ReadCloser, error) { return s.OpenBackupFile(m.ID, f.Name) }
		var fetch, check time.Duration
		b.ResetTimer()
		for range b.N {
			rep, err := s.Drill(context.Background(), m, open)
			if err != nil {
				b.Fatal(err)
			}
			if !rep.FingerprintChecked {
				b.Fatal("the drill did not check the fingerprint")
			}
			b.SetBytes(rep.Bytes)
			fetch += rep.Timing.Fetch
			check += rep.Timing.Check
		}
		b.ReportMetric(float64(fetch.Milliseconds())/float64(b.N), "fetch-ms/op")
		b.ReportMetric(float64(check.Milliseconds())/float64(b.N), "check-ms/op")
	})
	b.Run("raw", func(b *testing.B) {
		reg, s := benchRegistry(b, fixture)
		bk, err := s.Backup(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		src := filepath.Join(reg.BackupDir(), "bench", "backups", bk.Backup.ID)
		b.ResetTimer()
		for range b.N {
			b.StopTimer()
			dst := filepath.Join(b.TempDir(), "restored")
			b.StartTimer()
			b.SetBytes(plainCopy(b, src, dst))
			db, err := pebble.Open(dst, &pebble.Options{Logger: silentPebble{}})
			if err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			db.Close()
			os.RemoveAll(dst)
			b.StartTimer()
		}
	})
}

// BenchmarkScale: full backup and restore of churned stores of about 100
// MiB, 300 MiB and 1 GiB, to show how their time grows.
func BenchmarkScale(b *testing.B) {
	for _, size := range []struct {
		name string
		keys int
	}{{"100MiB", 330_000}, {"300MiB", 1_000_000}, {"1GiB", 3_400_000}} {
		fixture := churnedFixture(b, size.keys)
		b.Run("backup-"+size.name, func(b *testing.B) {
			reg, s := benchRegistry(b, fixture)
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				os.RemoveAll(filepath.Join(reg.BackupDir(), "bench"))
				b.StartTimer()
				res, err := s.Backup(context.Background())
				if err != nil {
					b.Fatal(err)
				}
				b.SetBytes(res.Backup.Bytes)
			}
		})
		b.Run("restore-"+size.name, func(b *testing.B) {
			_, s := benchRegistry(b, fixture)
			bk, err := s.Backup(context.Background())
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for range b.N {
				if _, err := s.Restore(context.Background(), bk.Backup.ID); err != nil {
					b.Fatal(err)
				}
				b.SetBytes(bk.Backup.Bytes)
			}
		})
	}
}
