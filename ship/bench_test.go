package ship

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"storekeeper/internal/s3test"
	"storekeeper/offsite"
	"storekeeper/store"
)

// The speed of point-in-time recovery, beside raw Pebble, with the log
// shipped to an S3 server on loopback (gofakes3):
//
//	go test ./ship -run '^$' -bench 'ShipWrite|ShipLag|RestoreToMoment' -benchtime 1x

// benchNode is a registry shipping to the loopback S3 server, its shipper
// running.
func benchNode(b *testing.B, noSync bool) (*store.Store, *Shipper) {
	b.Helper()
	return benchNodeLag(b, noSync, 0)
}

// benchNodeLag is benchNode with the shipper's Config.MaxLag (0: its
// default; negative: writes are never held).
func benchNodeLag(b *testing.B, noSync bool, maxLag time.Duration) (*store.Store, *Shipper) {
	b.Helper()
	srv := s3test.Start(b)
	reg, err := store.Open(store.Config{DataDir: b.TempDir(), BackupDir: b.TempDir(), Stores: []string{"orders"}, Ship: true,
		NoSync: noSync, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	tg, err := offsite.Open(context.Background(), "s3", srv.URL(""), nil)
	if err != nil {
		b.Fatal(err)
	}
	sh, err := New(Config{Dir: b.TempDir(), Targets: []*offsite.Target{tg}, Logger: slog.New(slog.DiscardHandler), MaxLag: maxLag}, reg)
	if err != nil {
		b.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); sh.Run(ctx) }()
	b.Cleanup(func() { stop(); <-done; _ = reg.Close(); _ = tg.Close() })
	s, err := reg.Store("orders")
	if err != nil {
		b.Fatal(err)
	}
	return s, sh
}

func rawDB(b *testing.B) *pebble.DB {
	b.Helper()
	db, err := pebble.Open(b.TempDir(), &pebble.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = db.Close() })
	return db
}

// valuePool is random bytes to cut values from (valueAt): values that do
// not repeat within a segment, so compressing segments gains nothing on
// them. One value reused for every write would compress to almost
// nothing and flatter shipping.
func valuePool() []byte {
	pool := make([]byte, 32<<20)
	_, _ = rand.Read(pool)
	return pool
}

// valueAt is the i-th n-byte value cut from pool.
func valueAt(pool []byte, i, n int) []byte {
	off := i * n % (len(pool) - n)
	return pool[off : off+n]
}

// BenchmarkShipWrite: the cost of a write with shipping on. "set": an
// unsynced handle Set of 100 bytes on a registry that ships (its shipper
// running; a Set waits while shipping is more than Config.MaxLag behind),
// "set-unheld" the same with writes never held (--ship-max-lag 0),
// "set-log-only" the same with no shipper running, vs "raw-set":
// db.Set with pebble.NoSync on raw Pebble (WALs recycled); their values
// are zeros, which the shipped segments compress. "set-random" vs
// "raw-set-random": the same with values that do not compress. "batch-sync":
// a synced 10-key batch through Update, vs "raw-batch-sync".
func BenchmarkShipWrite(b *testing.B) {
	val := make([]byte, 100)
	b.Run("raw-set", func(b *testing.B) {
		db := rawDB(b)
		for i := 0; b.Loop(); i++ {
			if err := db.Set(fmt.Appendf(nil, "k%09d", i), val, pebble.NoSync); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, c := range []struct {
		name   string
		maxLag time.Duration
	}{{"set", 0}, {"set-unheld", -1}} {
		b.Run(c.name, func(b *testing.B) {
			s, _ := benchNodeLag(b, true, c.maxLag)
			for i := 0; b.Loop(); i++ {
				if err := s.Set(fmt.Appendf(nil, "k%09d", i), val); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	pool := valuePool()
	b.Run("raw-set-random", func(b *testing.B) {
		db := rawDB(b)
		for i := 0; b.Loop(); i++ {
			if err := db.Set(fmt.Appendf(nil, "k%09d", i), valueAt(pool, i, 100), pebble.NoSync); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("set-random", func(b *testing.B) {
		s, _ := benchNodeLag(b, true, 0)
		for i := 0; b.Loop(); i++ {
			if err := s.Set(fmt.Appendf(nil, "k%09d", i), valueAt(pool, i, 100)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("set-log-only", func(b *testing.B) {
		// The log kept (stamps, WALs archived) but no shipper running:
		// what the write path itself costs.
		reg, err := store.Open(store.Config{DataDir: b.TempDir(), Stores: []string{"orders"}, Ship: true, NoSync: true, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		defer reg.Close()
		s, _ := reg.Store("orders")
		for i := 0; b.Loop(); i++ {
			if err := s.Set(fmt.Appendf(nil, "k%09d", i), val); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("raw-batch-sync", func(b *testing.B) {
		db := rawDB(b)
		for i := 0; b.Loop(); i++ {
			bt := db.NewBatch()
			for j := range 10 {
				_ = bt.Set(fmt.Appendf(nil, "k%09d-%d", i, j), val, nil)
			}
			if err := bt.Commit(pebble.Sync); err != nil {
				b.Fatal(err)
			}
			_ = bt.Close()
		}
	})
	b.Run("batch-sync", func(b *testing.B) {
		s, _ := benchNode(b, false)
		for i := 0; b.Loop(); i++ {
			err := s.Update(func(bt *store.Batch) error {
				bt.Sync(true)
				for j := range 10 {
					if err := bt.Set(fmt.Appendf(nil, "k%09d-%d", i, j), val); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkShipLag: how long after its commit a write is on the target
// (WaitShipped right after the commit) while writers keep a steady rate
// for 10 s with the default 250 ms interval: "5MBps" (one writer, 10 × 1
// KiB unsynced every 2 ms), "20MBps" and "paced16" (four and sixteen such
// writers; sixteen reach about 50 MB/s on two cores, the most the pacing
// gets), and "max" (four writers as fast as the store takes them). A probe commits and waits
// every 20 ms; the p50 and p99 of its waits are reported.
func BenchmarkShipLag(b *testing.B) {
	for _, c := range []struct {
		name    string
		paced   bool
		writers int
	}{{"5MBps", true, 1}, {"20MBps", true, 4}, {"paced16", true, 16}, {"max", false, 4}} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				s, _ := benchNode(b, true)
				lags, mbps := shipLag(b, s, c.paced, c.writers, 10*time.Second)
				slices.Sort(lags)
				b.ReportMetric(float64(lags[len(lags)/2].Microseconds())/1000, "lag-p50-ms")
				b.ReportMetric(float64(lags[len(lags)*99/100].Microseconds())/1000, "lag-p99-ms")
				b.ReportMetric(mbps, "MB/s")
			}
		})
	}
}

func shipLag(b *testing.B, s *store.Store, paced bool, writers int, d time.Duration) ([]time.Duration, float64) {
	pool := valuePool()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var written atomic.Int64
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(2 * time.Millisecond)
			defer tick.Stop()
			for i := 0; ctx.Err() == nil; i++ {
				if paced {
					select {
					case <-tick.C:
					case <-ctx.Done():
						return
					}
				}
				err := s.Update(func(bt *store.Batch) error {
					for j := range 10 {
						if err := bt.Set(fmt.Appendf(nil, "w%d-%09d-%d", w, i, j), valueAt(pool, (i*writers+w)*10+j, 1024)); err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil {
					b.Error(err)
					return
				}
				written.Add(10 * 1024)
			}
		}()
	}
	var lags []time.Duration
	probe := time.NewTicker(20 * time.Millisecond) // the probe's pace: one write and wait per tick
	defer probe.Stop()
	for i := 0; ctx.Err() == nil; i++ {
		if err := s.Set(fmt.Appendf(nil, "probe%06d", i), []byte("p")); err != nil {
			b.Fatal(err)
		}
		t := time.Now()
		if err := s.WaitShipped(context.Background()); err != nil {
			b.Fatal(err)
		}
		lags = append(lags, time.Since(t))
		select {
		case <-probe.C:
		case <-ctx.Done():
		}
	}
	wg.Wait()
	return lags, float64(written.Load()) / d.Seconds() / 1e6
}

// BenchmarkShipLagSustained: four writers as fast as the store takes
// them for 40 s, past what memtables absorb, with writes held to
// shipping's pace ("held", the default --ship-max-lag) and never held
// ("unheld", --ship-max-lag 0): the rate the store sustains with shipping
// on, and the lag. Not in make bench (80 s); docs/design.md cites it.
func BenchmarkShipLagSustained(b *testing.B) {
	for _, c := range []struct {
		name   string
		maxLag time.Duration
	}{{"held", 0}, {"unheld", -1}} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				s, _ := benchNodeLag(b, true, c.maxLag)
				lags, mbps := shipLag(b, s, false, 4, 40*time.Second)
				slices.Sort(lags)
				b.ReportMetric(float64(lags[len(lags)/2].Microseconds())/1000, "lag-p50-ms")
				b.ReportMetric(float64(lags[len(lags)*99/100].Microseconds())/1000, "lag-p99-ms")
				b.ReportMetric(mbps, "MB/s")
			}
		})
	}
}

// BenchmarkRestoreToMoment: "pitr" restores the store to a moment after
// 100 MiB of log (10,000 batches of ten 1 KiB values, written as fast as a
// writer gets them: scaled down from the hour at the highest
// sustained rate) made after its backup of a 20 MiB store: the backup plus
// the shipped log from the S3 server, replayed into the staged copy.
// "raw" restores the backup alone (store.Restore) and applies the same
// batches, built in memory, to raw Pebble, then flushes.
func BenchmarkRestoreToMoment(b *testing.B) {
	s, sh := benchNode(b, true)
	ctx := context.Background()
	pool := valuePool()
	for i := range 20000 { // a 20 MiB base
		if err := s.Set(fmt.Appendf(nil, "base%06d", i), valueAt(pool, i, 1024)); err != nil {
			b.Fatal(err)
		}
	}
	bk, err := s.Backup(ctx)
	if err != nil {
		b.Fatal(err)
	}
	builder := rawDB(b)
	var batches [][]byte
	for i := range 10000 {
		raw := builder.NewBatch()
		err := s.Update(func(bt *store.Batch) error {
			for j := range 10 {
				k := fmt.Appendf(nil, "w%09d-%d", i, j)
				val := valueAt(pool, 20000+i*10+j, 1024)
				_ = raw.Set(k, val, nil)
				if err := bt.Set(k, val); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		batches = append(batches, slices.Clone(raw.Repr()))
		_ = raw.Close()
	}
	if err := s.WaitShipped(ctx); err != nil {
		b.Fatal(err)
	}
	at := time.Now()
	b.Run("pitr", func(b *testing.B) {
		for b.Loop() {
			res, _, err := sh.RestoreAt(ctx, "orders", "", at)
			if err != nil {
				b.Fatal(err)
			}
			if res.Log == nil || res.Log.Batches != len(batches) {
				b.Fatalf("replayed %+v, want %d batches", res.Log, len(batches))
			}
		}
	})
	b.Run("raw", func(b *testing.B) {
		for b.Loop() {
			if _, err := s.Restore(ctx, bk.Backup.ID); err != nil {
				b.Fatal(err)
			}
			db := rawDB(b)
			for _, repr := range batches {
				bt := db.NewBatch()
				if err := bt.SetRepr(slices.Clone(repr)); err != nil {
					b.Fatal(err)
				}
				if err := db.Apply(bt, pebble.NoSync); err != nil {
					b.Fatal(err)
				}
			}
			if err := db.Flush(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkSegmentEncode: sealing's compression and checksum
// (encodeSegment) on what a segment holds, 4 MiB of length-prefixed
// batches: "random", bytes that do not compress at all; "random-values",
// batches of one 100-byte random value each (a key, a header and the
// stamp, which compress); "zero-values", the same with zeros, as
// BenchmarkShipWrite's Sets. ratio is the segment's size over the
// batches'.
func BenchmarkSegmentEncode(b *testing.B) {
	pool := valuePool()
	batches := func(value func(i int) []byte) []byte {
		var open []byte
		for i := 0; len(open) < 4<<20; i++ {
			repr := make([]byte, 12, 160)
			binary.LittleEndian.PutUint64(repr, uint64(i+1))
			binary.LittleEndian.PutUint32(repr[8:], 1)
			repr = append(repr, byte(pebble.InternalKeyKindSet))
			repr = binary.AppendUvarint(repr, 10)
			repr = fmt.Appendf(repr, "k%09d", i)
			repr = binary.AppendUvarint(repr, 100)
			repr = append(repr, value(i)...)
			repr = append(repr, byte(pebble.InternalKeyKindLogData), 23)
			repr = binary.BigEndian.AppendUint64(append(repr, "storekeeper.t1:"...), uint64(i))
			open = binary.AppendUvarint(open, uint64(len(repr)))
			open = append(open, repr...)
		}
		return open
	}
	zero := make([]byte, 100)
	for _, c := range []struct {
		name string
		open []byte
	}{
		{"random", pool[:4<<20]},
		{"random-values", batches(func(i int) []byte { return valueAt(pool, i, 100) })},
		{"zero-values", batches(func(int) []byte { return zero })},
	} {
		b.Run(c.name, func(b *testing.B) {
			var buf []byte
			b.SetBytes(int64(len(c.open)))
			for b.Loop() {
				buf = encodeSegment(buf, c.open)
			}
			b.ReportMetric(float64(len(buf))/float64(len(c.open)), "ratio")
		})
	}
}
