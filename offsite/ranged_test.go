package offsite

import (
	"context"
	"io"
	"net/http"
	"sync/atomic"
	"testing"

	"storekeeper/internal/s3test"
	"storekeeper/internal/testsignal"
)

// A backup whose tables are larger than a range comes back through
// ranged reads (several per object, read ahead), plain and encrypted, and
// restores whole; every read-ahead buffer is returned, also by a reader
// closed part way.
func TestRangedReads(t *testing.T) {
	for _, encrypted := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "encrypted"}[encrypted], func(t *testing.T) {
			ctx := context.Background()
			srv := s3test.Start(t)
			var ranged atomic.Int64
			srv.Fail(func(r *http.Request) bool {
				if r.Method == http.MethodGet && r.Header.Get("Range") != "" {
					ranged.Add(1)
				}
				return false
			})
			enc := testEncryption(encrypted)
			tg, err := Open(ctx, "t1", srv.URL("prod/"), enc)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = tg.Close() })
			tg.rangeSize = 2 << 10

			a := newNode(t, "orders")
			orders := a.store(t, "orders")
			write(t, orders, 0, 2000) // one table of about 40 KB (its values compress)
			m := backup(t, orders)
			if _, err := tg.Upload(ctx, orders, m, nil); err != nil {
				t.Fatal(err)
			}
			var want int64
			for _, f := range m.Files {
				if f.Size > tg.rangeSize {
					want += (f.Size + tg.rangeSize - 1) / tg.rangeSize
				}
			}
			if want < 10 {
				t.Fatalf("the fixture has %d ranges to read; the test needs more", want)
			}

			if n := restoreElsewhere(t, tg, "orders", m.ID); n != 2000 {
				t.Fatalf("restored through ranged reads: %d keys, want 2000", n)
			}
			if got := ranged.Load(); got < want {
				t.Fatalf("%d ranged GETs, want at least %d (one per range of every large object)", got, want)
			}
			if !tg.rangeSem.TryAcquire(rangeBuffers) {
				t.Fatal("read-ahead buffers still held after every object was read")
			}
			tg.rangeSem.Release(rangeBuffers)

			// A reader closed after its first bytes gives its buffers back
			// once the reads ahead end.
			var big = m.Files[0]
			for _, f := range m.Files {
				if f.Size > big.Size {
					big = f
				}
			}
			r, err := tg.OpenObject(ctx, big)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(r, make([]byte, 10)); err != nil {
				t.Fatal(err)
			}
			if err := r.Close(); err != nil {
				t.Fatal(err)
			}
			testsignal.WaitFor(t, "read-ahead buffers returned after Close", func() bool {
				if tg.rangeSem.TryAcquire(rangeBuffers) {
					tg.rangeSem.Release(rangeBuffers)
					return true
				}
				return false
			})
		})
	}
}

// With no read-ahead buffer free, every range is streamed when reached:
// slower, never stuck.
func TestRangedReadsWithoutBuffers(t *testing.T) {
	ctx := context.Background()
	tg := open(t, "file://"+t.TempDir())
	tg.rangeSize = 2 << 10
	a := newNode(t, "orders")
	orders := a.store(t, "orders")
	write(t, orders, 0, 2000)
	m := backup(t, orders)
	if _, err := tg.Upload(ctx, orders, m, nil); err != nil {
		t.Fatal(err)
	}
	if err := tg.rangeSem.Acquire(ctx, rangeBuffers); err != nil {
		t.Fatal(err)
	}
	defer tg.rangeSem.Release(rangeBuffers)
	if n := restoreElsewhere(t, tg, "orders", m.ID); n != 2000 {
		t.Fatalf("restored with every range streamed: %d keys, want 2000", n)
	}
}
