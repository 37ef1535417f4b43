package store

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// BenchmarkShipMechanism measures the two ways issue 18 names to capture
// every committed write for shipping, on raw Pebble so that nothing else
// is measured:
//
//   - raw: Pebble as storekeeper opens it today (WALs recycled);
//   - archive: Pebble with ArchiveCleaner, which turns WAL recycling off
//     and moves every obsolete WAL into archive/ (the WAL route: a shipper
//     reads the WAL's records, which are the committed batches in commit
//     order; nothing is added to a commit);
//   - stamped: the WAL route as built: archive, and every batch carries
//     its commit time (stamp, a LogData entry and a time.Now());
//   - batchlog: every commit also appends its batch to a log of
//     storekeeper's own (the handle route). Appended after the commit, two
//     concurrent commits can reach the log in the other order than their
//     sequence numbers, so the log append is made in commit order: the
//     commit and the append under one lock. A synced commit fsyncs the log
//     too, or the log would lose what the WAL kept.
//
// Cases: unsynced point sets; synced 10-key batches from one goroutine;
// synced 10-key batches from 8 goroutines (Pebble syncs a group of
// concurrent commits with one fsync).
func BenchmarkShipMechanism(b *testing.B) {
	v := make([]byte, 100)
	for i := range v {
		v[i] = byte(i * 7)
	}
	routes := []struct {
		name    string
		archive bool
		log     bool
		stamp   bool
	}{{"raw", false, false, false}, {"archive", true, false, false}, {"stamped", true, false, true}, {"batchlog", false, true, false}}
	for _, c := range []struct {
		name     string
		sync     bool
		batch    int
		parallel bool
	}{
		{"set-nosync", false, 1, false},
		{"commit-sync", true, 10, false},
		{"commit-sync-8way", true, 10, true},
	} {
		for _, r := range routes {
			b.Run(c.name+"/"+r.name, func(b *testing.B) {
				dir := b.TempDir()
				opts := &pebble.Options{Logger: silentPebble{}}
				if r.archive {
					opts.Cleaner = pebble.ArchiveCleaner{}
				}
				db, err := pebble.Open(filepath.Join(dir, "db"), opts)
				if err != nil {
					b.Fatal(err)
				}
				defer db.Close()
				var lg *batchLog
				if r.log {
					if lg, err = openBatchLog(filepath.Join(dir, "batches.log")); err != nil {
						b.Fatal(err)
					}
					defer lg.f.Close()
				}
				wo := pebble.NoSync
				if c.sync {
					wo = pebble.Sync
				}
				var n atomic.Int64
				commit := func() error {
					i := n.Add(1)
					bt := db.NewBatch()
					for j := range c.batch {
						_ = bt.Set(fmt.Appendf(nil, "k%012d-%02d", i, j), v, nil)
					}
					if r.stamp {
						stamp(bt, time.Now())
					}
					if lg == nil {
						return bt.Commit(wo)
					}
					return lg.commit(bt, wo, c.sync)
				}
				b.SetBytes(int64(c.batch * (len(v) + 16)))
				b.ResetTimer()
				if c.parallel {
					b.SetParallelism(4) // 8 goroutines on 2 cores
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							if err := commit(); err != nil {
								b.Error(err)
								return
							}
						}
					})
				} else {
					for range b.N {
						if err := commit(); err != nil {
							b.Fatal(err)
						}
					}
				}
				b.StopTimer()
				if r.archive {
					ents, _ := os.ReadDir(filepath.Join(dir, "db", "archive"))
					b.ReportMetric(float64(len(ents))/float64(b.N)*1e6, "archived-files/Mop")
				}
			})
		}
	}
}

// batchLog is the handle route's log, as small as it can be: each commit
// appends its batch's representation (length-prefixed) in commit order.
type batchLog struct {
	mu sync.Mutex
	f  *os.File
}

func openBatchLog(path string) (*batchLog, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	return &batchLog{f: f}, nil
}

func (l *batchLog) commit(b *pebble.Batch, wo *pebble.WriteOptions, sync bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := b.Commit(wo); err != nil {
		return err
	}
	repr := b.Repr()
	rec := make([]byte, 0, 4+len(repr))
	rec = append(rec, byte(len(repr)>>24), byte(len(repr)>>16), byte(len(repr)>>8), byte(len(repr)))
	rec = append(rec, repr...)
	if _, err := l.f.Write(rec); err != nil {
		return err
	}
	if sync {
		return l.f.Sync()
	}
	return nil
}
