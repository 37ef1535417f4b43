package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// testLogger keeps test output quiet unless -v is set.
func testLogger(t *testing.T) *slog.Logger {
	t.Helper()
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.DiscardHandler)
}

// openTest opens a registry over a temporary data dir (or cfg.DataDir) and
// closes it at the end of the test.
func openTest(t *testing.T, cfg Config) *Registry {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	cfg.NoSync = true // tests crash nothing but the processes they start
	r, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

func mustStore(t *testing.T, r *Registry, name string) *Store {
	t.Helper()
	s, err := r.Store(name)
	if err != nil {
		t.Fatalf("Store(%q): %v", name, err)
	}
	return s
}

// churn writes n keys with values of size bytes, then overwrites half of
// them, deletes a tenth and range-deletes a slice, flushing along the way
// so the LSM has several tables and levels of garbage.
func churn(t testing.TB, s *Store, n, size int) {
	t.Helper()
	rng := rand.New(rand.NewPCG(uint64(n), uint64(size)))
	val := make([]byte, size)
	key := func(i int) []byte { return fmt.Appendf(nil, "key-%08d", i) }
	write := func(lo, hi, step int) {
		const batch = 1000
		for i := lo; i < hi; i += step * batch {
			err := s.Update(func(b *Batch) error {
				for j := i; j < min(hi, i+step*batch); j += step {
					for k := range val {
						val[k] = byte(rng.Uint32())
					}
					if err := b.Set(key(j), val); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				t.Fatalf("churn write: %v", err)
			}
		}
		flush(t, s)
	}
	write(0, n, 1)
	write(0, n, 2) // overwrite every other key
	err := s.Update(func(b *Batch) error {
		for i := 0; i < n; i += 10 {
			if err := b.Delete(key(i + 1)); err != nil {
				return err
			}
		}
		return b.DeleteRange(key(n/2), key(n/2+n/10))
	})
	if err != nil {
		t.Fatalf("churn delete: %v", err)
	}
	flush(t, s)
}

func flush(t testing.TB, s *Store) {
	t.Helper()
	db, err := s.acquire()
	if err != nil {
		t.Fatalf("flush: %v", err)
	}
	defer s.release()
	if err := db.Flush(); err != nil {
		t.Fatalf("flush: %v", err)
	}
}

// checksum hashes every key and value of the store, in order.
func checksum(t testing.TB, s *Store) (string, int) {
	t.Helper()
	h := sha256.New()
	n := 0
	err := s.Scan(context.Background(), nil, nil, func(k, v []byte) error {
		fmt.Fprintf(h, "%d:%s=%d:%s;", len(k), k, len(v), v)
		n++
		return nil
	})
	if err != nil {
		t.Fatalf("checksum: %v", err)
	}
	return hex.EncodeToString(h.Sum(nil)), n
}

// sstFiles lists the store directory's sstables, sorted.
func sstFiles(t testing.TB, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.sst"))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(m)
	return m
}

// manifestFile returns the store's current MANIFEST path.
func manifestFile(t testing.TB, dir string) string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "MANIFEST-*"))
	if err != nil || len(m) == 0 {
		t.Fatalf("no MANIFEST in %s (%v)", dir, err)
	}
	slices.SortFunc(m, func(a, b string) int { return strings.Compare(a, b) })
	return m[len(m)-1]
}
