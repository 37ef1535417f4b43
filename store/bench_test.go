package store

// Benchmarks of the store engine beside the raw Pebble baseline, run by
// `make bench` (internal/benchreport), which reports the ratios in
// docs/BENCHMARKS.md. Each pair runs in the same process on the same data:
// Benchmark<Op>/storekeeper and Benchmark<Op>/raw.

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/cockroachdb/pebble/v2/vfs"
)

const (
	fixtureVersion = "v1"
	fixtureKeys    = 600_000 // x 300-byte incompressible values: about 180 MiB
	fixtureValue   = 300
)

// benchKey names key i of a churned fixture.
func benchKey(i int) []byte { return fmt.Appendf(nil, "key-%09d", i) }

var quiet = slog.New(slog.DiscardHandler)

// churnedFixture returns a closed, churned store directory of keys keys
// (fixtureKeys: at least 150 MiB), built once and kept under the temp dir
// for later runs.
func churnedFixture(b *testing.B, keys int) string {
	b.Helper()
	dir := filepath.Join(os.TempDir(), "storekeeper-bench", fmt.Sprintf("churned-%s-%d", fixtureVersion, keys))
	if _, err := os.Stat(filepath.Join(dir, "COMPLETE")); err == nil {
		return filepath.Join(dir, "store")
	}
	b.Logf("building the churned fixture in %s (once)", dir)
	if err := os.RemoveAll(dir); err != nil {
		b.Fatal(err)
	}
	db, err := pebble.Open(filepath.Join(dir, "store"), &pebble.Options{Logger: silentPebble{}})
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	val := make([]byte, fixtureValue)
	write := func(step int) {
		batch := db.NewBatch()
		for i := 0; i < keys; i += step {
			for j := range val {
				val[j] = byte(rng.Uint32())
			}
			_ = batch.Set(benchKey(i), val, nil)
			if batch.Len() > 4<<20 {
				if err := batch.Commit(pebble.NoSync); err != nil {
					b.Fatal(err)
				}
				batch = db.NewBatch()
			}
		}
		if err := batch.Commit(pebble.NoSync); err != nil {
			b.Fatal(err)
		}
	}
	write(1)
	write(3) // overwrite a third
	for i := 0; i < keys; i += 7 {
		_ = db.Delete(benchKey(i), pebble.NoSync)
	}
	_ = db.DeleteRange(benchKey(keys/6), benchKey(keys/6+keys/20), pebble.NoSync)
	if err := db.Flush(); err != nil {
		b.Fatal(err)
	}
	if err := db.Close(); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "COMPLETE"), nil, 0o644); err != nil {
		b.Fatal(err)
	}
	return filepath.Join(dir, "store")
}

// copyStore copies the fixture into dst/<name> with cp, outside the timer.
func copyStore(b *testing.B, src, dst string) string {
	b.Helper()
	to := filepath.Join(dst, "bench")
	if out, err := exec.Command("cp", "-r", src, to).CombinedOutput(); err != nil {
		b.Fatalf("cp: %v\n%s", err, out)
	}
	return to
}

func sstSize(b *testing.B, dir string) int64 {
	b.Helper()
	var n int64
	m, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
	for _, f := range m {
		if info, err := os.Stat(f); err == nil {
			n += info.Size()
		}
	}
	return n
}

// BenchmarkCompact: a full compaction of identical copies of a churned
// store of at least 150 MiB, through Compact (Force) and through
// raw db.Compact over the same bounds.
func BenchmarkCompact(b *testing.B) {
	fixture := churnedFixture(b, fixtureKeys)
	if n := sstSize(b, fixture); n < 150<<20 {
		b.Fatalf("fixture has %d MiB of sstables, want at least 150", n>>20)
	}
	b.Run("storekeeper", func(b *testing.B) {
		for range b.N {
			b.StopTimer()
			dataDir := b.TempDir()
			copyStore(b, fixture, dataDir)
			reg, err := Open(Config{DataDir: dataDir, Logger: quiet})
			if err != nil {
				b.Fatal(err)
			}
			s, _ := reg.Store("bench")
			b.StartTimer()
			res, err := s.Compact(context.Background(), CompactOptions{Force: true})
			b.StopTimer()
			if err != nil || res.Outcome != Compacted {
				b.Fatalf("compact: %v %+v", err, res)
			}
			b.SetBytes(int64(res.BytesBefore))
			reg.Close()
		}
	})
	b.Run("raw", func(b *testing.B) {
		for range b.N {
			b.StopTimer()
			dir := copyStore(b, fixture, b.TempDir())
			db, err := pebble.Open(dir, &pebble.Options{Logger: silentPebble{}})
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(sstSize(b, dir))
			b.StartTimer()
			lo, hi := rawBounds(b, db)
			if err := db.Compact(context.Background(), lo, hi, true); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			db.Close()
		}
	})
}

func rawBounds(b *testing.B, db *pebble.DB) (lo, hi []byte) {
	levels, err := db.SSTables()
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range levels {
		for _, t := range l {
			if lo == nil || string(t.Smallest.UserKey) < string(lo) {
				lo = t.Smallest.UserKey
			}
			if hi == nil || string(t.Largest.UserKey) > string(hi) {
				hi = t.Largest.UserKey
			}
		}
	}
	return lo, append(append([]byte(nil), hi...), 0)
}

// BenchmarkVerify: block checksums of every sstable of the churned store,
// through Verify (checkpoint, then the files) and through a raw loop
// of ValidateBlockChecksums over the live files.
func BenchmarkVerify(b *testing.B) {
	fixture := churnedFixture(b, fixtureKeys)
	dataDir := b.TempDir()
	dir := copyStore(b, fixture, dataDir)
	size := sstSize(b, dir)
	b.Run("storekeeper", func(b *testing.B) {
		reg, err := Open(Config{DataDir: dataDir, Logger: quiet})
		if err != nil {
			b.Fatal(err)
		}
		defer reg.Close()
		s, _ := reg.Store("bench")
		b.SetBytes(size)
		b.ResetTimer()
		for range b.N {
			if _, err := s.Verify(context.Background(), VerifyOptions{}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("raw", func(b *testing.B) {
		opts := &pebble.Options{}
		opts.EnsureDefaults()
		files, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
		b.SetBytes(size)
		b.ResetTimer()
		for range b.N {
			for _, path := range files {
				f, err := vfs.Default.Open(path)
				if err != nil {
					b.Fatal(err)
				}
				readable, err := sstable.NewSimpleReadable(f)
				if err != nil {
					b.Fatal(err)
				}
				r, err := sstable.NewReader(context.Background(), readable, opts.MakeReaderOptions())
				if err != nil {
					b.Fatal(err)
				}
				if err := r.ValidateBlockChecksums(); err != nil {
					b.Fatal(err)
				}
				r.Close()
			}
		}
	})
}

// kvFixture is a store of 100k small keys, opened both ways in turn.
const kvKeys = 100_000

func fillKV(b *testing.B, set func(k, v []byte) error) {
	b.Helper()
	v := make([]byte, 100)
	for i := range kvKeys {
		if err := set(benchKey(i), v); err != nil {
			b.Fatal(err)
		}
	}
}

func openHandle(b *testing.B) *Store {
	b.Helper()
	reg, err := Open(Config{DataDir: b.TempDir(), Stores: []string{"kv"}, NoSync: true, Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { reg.Close() })
	s, _ := reg.Store("kv")
	return s
}

func openRaw(b *testing.B) *pebble.DB {
	b.Helper()
	db, err := pebble.Open(b.TempDir(), &pebble.Options{Logger: silentPebble{}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	return db
}

func rawGet(db *pebble.DB, k []byte) ([]byte, error) {
	v, closer, err := db.Get(k)
	if err != nil {
		return nil, err
	}
	out := append([]byte(nil), v...)
	closer.Close()
	return out, nil
}

// BenchmarkGet: point reads of present keys (cached blocks), copying the
// value in both cases, since a handle returns a copy.
func BenchmarkGet(b *testing.B) {
	b.Run("storekeeper", func(b *testing.B) {
		s := openHandle(b)
		fillKV(b, s.Set)
		b.ResetTimer()
		for i := range b.N {
			if _, err := s.Get(benchKey(i % kvKeys)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("raw", func(b *testing.B) {
		db := openRaw(b)
		fillKV(b, func(k, v []byte) error { return db.Set(k, v, pebble.NoSync) })
		b.ResetTimer()
		for i := range b.N {
			if _, err := rawGet(db, benchKey(i%kvKeys)); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkGetParallel: the same from every core at once, where the
// handle's acquire/release counters are shared.
func BenchmarkGetParallel(b *testing.B) {
	b.Run("storekeeper", func(b *testing.B) {
		s := openHandle(b)
		fillKV(b, s.Set)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for i := 0; pb.Next(); i++ {
				if _, err := s.Get(benchKey(i % kvKeys)); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
	b.Run("raw", func(b *testing.B) {
		db := openRaw(b)
		fillKV(b, func(k, v []byte) error { return db.Set(k, v, pebble.NoSync) })
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for i := 0; pb.Next(); i++ {
				if _, err := rawGet(db, benchKey(i%kvKeys)); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
}

// BenchmarkSet: unsynced point writes (the WAL sync would dominate both).
func BenchmarkSet(b *testing.B) {
	v := make([]byte, 100)
	b.Run("storekeeper", func(b *testing.B) {
		s := openHandle(b)
		b.ResetTimer()
		for i := range b.N {
			if err := s.Set(benchKey(i%kvKeys), v); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("raw", func(b *testing.B) {
		db := openRaw(b)
		b.ResetTimer()
		for i := range b.N {
			if err := db.Set(benchKey(i%kvKeys), v, pebble.NoSync); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// silentPebble drops Pebble's log lines in the raw baselines, as the store
// side sends them to a discarding slog handler.
type silentPebble struct{}

func (silentPebble) Infof(string, ...any)  {}
func (silentPebble) Errorf(string, ...any) {}
func (silentPebble) Fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "pebble: "+format+"\n", args...)
	os.Exit(1)
}
