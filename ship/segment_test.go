package ship

import (
	"bytes"
	"context"
	cryptorand "crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/klauspost/compress/s2"

	"storekeeper/offsite"
	"storekeeper/store"
)

// shipped returns the segments of the store's timeline on n's target,
// as the target holds them and decoded.
func shipped(t *testing.T, n *node, s *store.Store) (segs []offsite.Segment, data [][]byte) {
	t.Helper()
	ctx := context.Background()
	tl, err := s.Timeline()
	if err != nil {
		t.Fatal(err)
	}
	segs, err = n.target.Segments(ctx, "orders", tl.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, sg := range segs {
		b, err := n.target.ReadSegment(ctx, "orders", sg)
		if err != nil {
			t.Fatal(err)
		}
		data = append(data, b)
	}
	return segs, data
}

// Segments are compressed: a run of writes whose values repeat ships in
// a fraction of the bytes its batches take, and reads back whole.
func TestSegmentsAreCompressed(t *testing.T) {
	n := startNode(t, newDirs(t), Config{Interval: time.Hour, SegmentSize: 1 << 20})
	s := n.store(t)
	val := bytes.Repeat([]byte("order line "), 10)
	const writes = 2000
	for i := range writes {
		if err := s.Set(fmt.Appendf(nil, "k%09d", i), val); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.sh.Drain(context.Background(), "orders"); err != nil {
		t.Fatal(err)
	}
	_, data := shipped(t, n, s)
	var stored, batches, batchBytes int
	for _, d := range data {
		stored += len(d)
		if err := eachBatch(d, func(b store.LogBatch) error {
			if b.Count > 0 {
				batches++
				batchBytes += len(b.Repr)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if batches != writes {
		t.Fatalf("the segments hold %d batches, want %d", batches, writes)
	}
	if stored*3 > batchBytes {
		t.Fatalf("the segments take %d bytes for %d bytes of batches: not compressed", stored, batchBytes)
	}
}

// uncompressed re-encodes a segment the way segments were written before
// they were compressed.
func uncompressed(t *testing.T, data []byte) []byte {
	t.Helper()
	out := []byte(segmentMagic)
	if err := eachBatch(data, func(b store.LogBatch) error {
		out = binary.AppendUvarint(out, uint64(len(b.Repr)))
		out = append(out, b.Repr...)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// Segments shipped before compression are still restored from.
func TestUncompressedSegmentsStillRestore(t *testing.T) {
	n := startNode(t, newDirs(t), Config{Interval: time.Millisecond, SegmentSize: 1024})
	s := n.store(t)
	ctx := context.Background()
	if err := s.Set([]byte("a"), []byte("1")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Backup(ctx); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"a": "1"}
	for i := range 50 {
		k, v := fmt.Sprintf("k%02d", i), fmt.Sprintf("v%d", i)
		if err := s.Set([]byte(k), []byte(v)); err != nil {
			t.Fatal(err)
		}
		want[k] = v
	}
	at := time.Now()
	if err := s.Set([]byte("late"), []byte("after the moment")); err != nil {
		t.Fatal(err)
	}
	if err := n.sh.Drain(ctx, "orders"); err != nil {
		t.Fatal(err)
	}
	segs, data := shipped(t, n, s)
	if len(segs) < 2 {
		t.Fatalf("%d segments: the test needs several", len(segs))
	}
	for i, sg := range segs {
		if err := n.target.DeleteSegment(ctx, "orders", sg); err != nil {
			t.Fatal(err)
		}
		old := uncompressed(t, data[i])
		if string(old[:len(segmentMagic)]) != segmentMagic {
			t.Fatal("not the old encoding")
		}
		if err := n.target.PutSegment(ctx, "orders", sg.Timeline, sg.First, sg.Next, old); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := n.sh.RestoreAt(ctx, "orders", "", at); err != nil {
		t.Fatal(err)
	}
	if got := content(t, s); !maps.Equal(got, want) {
		t.Fatalf("restored from uncompressed segments: %v, want %v", got, want)
	}
}

// A damaged compressed segment is refused as a bad backup, and one that
// claims to decode to more than a segment can hold is refused before
// anything is allocated for it.
func TestDamagedCompressedSegmentRefused(t *testing.T) {
	good := encodeSegment(nil, binary.AppendUvarint(nil, 3))
	huge := binary.AppendUvarint(append([]byte(segmentMagicS2), 0, 0, 0, 0), 1<<40)
	body := encodeSegment(nil, bytes.Repeat([]byte{7}, 4096))
	// A sound batch with a value that does not compress, so that its
	// bytes lie in the S2 block as they are: one flipped still decodes,
	// to a sound batch with another value, which only the CRC catches.
	value := make([]byte, 200)
	_, _ = cryptorand.Read(value)
	repr := append([]byte{1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, byte(pebble.InternalKeyKindSet), 1, 'k', 200, 1}, value...)
	flipped := encodeSegment(nil, append(binary.AppendUvarint(nil, uint64(len(repr))), repr...))
	if err := eachBatch(flipped, func(store.LogBatch) error { return nil }); err != nil {
		t.Fatalf("the sound segment: %v", err)
	}
	flipped[len(flipped)-10] ^= 0x01
	for name, data := range map[string][]byte{
		"claims 1 TiB":           huge,
		"cut short":              body[:len(body)-3],
		"no checksum":            []byte(segmentMagicS2),
		"no body":                append([]byte(segmentMagicS2), 0, 0, 0, 0),
		"batch cut off":          good,
		"other magic":            []byte("storekeeper-log-9\n"),
		"a value's byte flipped": flipped,
	} {
		t.Run(name, func(t *testing.T) {
			err := eachBatch(data, func(store.LogBatch) error { return nil })
			if !errors.Is(err, store.ErrBadBackup) {
				t.Fatalf("eachBatch: %v, want ErrBadBackup", err)
			}
		})
	}
	if n, err := s2.DecodedLen(huge[len(segmentMagicS2)+4:]); err == nil && n <= maxCompressed {
		t.Fatalf("the test's segment claims %d bytes", n)
	}
}

// FuzzSegment: a segment from a target is untrusted input (a damaged
// object, or a planted one on an unencrypted target). Decoding it never
// panics, and every batch it hands out Pebble applies as a restore's
// replay does (SetRepr, Apply), without a panic or an error.
func FuzzSegment(f *testing.F) {
	var open []byte
	for _, repr := range [][]byte{
		{1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 1, 'k', 1, 'v'},
		{9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
	} {
		open = binary.AppendUvarint(open, uint64(len(repr)))
		open = append(open, repr...)
	}
	f.Add(encodeSegment(nil, open))
	f.Add(append([]byte(segmentMagic), open...))
	f.Add([]byte(segmentMagicS2))
	f.Add(binary.AppendUvarint(append([]byte(segmentMagicS2), 0, 0, 0, 0), 1<<40))
	db, err := pebble.Open("", &pebble.Options{FS: vfs.NewMem()})
	if err != nil {
		f.Fatal(err)
	}
	defer db.Close()
	f.Fuzz(func(t *testing.T, data []byte) {
		err := eachBatch(data, func(b store.LogBatch) error {
			pb := db.NewBatch()
			defer pb.Close()
			if err := pb.SetRepr(slices.Clone(b.Repr)); err != nil {
				t.Fatalf("a batch handed out that Pebble does not take: %v", err)
			}
			if err := db.Apply(pb, pebble.NoSync); err != nil {
				t.Fatalf("a batch handed out that Pebble does not apply: %v", err)
			}
			return nil
		})
		if err != nil && !errors.Is(err, store.ErrBadBackup) {
			t.Fatalf("eachBatch: %v, not ErrBadBackup", err)
		}
	})
}

// A chain of timeline records that comes back to one already passed
// (only a planted record can make one) is refused, not followed forever.
func TestPlanRefusesATimelineLoop(t *testing.T) {
	n := startNode(t, newDirs(t), Config{Interval: time.Millisecond, SegmentSize: 1024})
	s := n.store(t)
	ctx := context.Background()
	before := time.Now().Add(-time.Hour)
	if err := s.Set([]byte("a"), []byte("1")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Backup(ctx); err != nil {
		t.Fatal(err)
	}
	at := time.Now()
	if err := n.sh.Drain(ctx, "orders"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := n.sh.RestoreAt(ctx, "orders", "", at); err != nil {
		t.Fatal(err)
	}
	cur, err := s.Timeline()
	if err != nil || cur.Parent == nil {
		t.Fatalf("after a restore to a moment: timeline %+v, %v", cur, err)
	}
	// The parent's record now names the current timeline as its parent.
	parent := store.Timeline{ID: cur.Parent.Timeline, Store: "orders", Created: cur.Created.Add(time.Second),
		Parent: &store.Branch{Timeline: cur.ID, Backup: cur.Parent.Backup}}
	// Both records as the shipper keeps them beside its segments.
	for _, tl := range []store.Timeline{parent, cur} {
		b, _ := json.Marshal(tl)
		dir := filepath.Join(n.dirs.ship, "orders", "pending", tl.ID)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "timeline.json"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() { _, err := n.sh.Plan(ctx, s, before); done <- err }()
	select {
	case err := <-done:
		if !errors.Is(err, store.ErrBadBackup) {
			t.Fatalf("plan through a loop of timelines: %v, want ErrBadBackup", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("plan through a loop of timelines did not return")
	}
}

// A local segment found damaged when the shipper starts is not sent: it
// is a gap in the shipped log (announced with its cause, so that a backup
// re-anchors it now rather than a restore finding it), moved aside for
// whoever looks into the disk.
func TestDamagedLocalSegmentAtStartIsAGap(t *testing.T) {
	d := newDirs(t)
	n := startNode(t, d, Config{Interval: time.Millisecond})
	var gaps []Gap
	n.sh.OnGap(func(_ string, g Gap) error { gaps = append(gaps, g); return nil })
	tl := damagedAtStart(t, d)
	if err := n.sh.Drain(context.Background(), "orders"); err != nil {
		t.Fatalf("a damaged local segment failed the tick (it is the disk's fault, not a target's): %v", err)
	}
	if len(gaps) != 1 || gaps[0].Timeline != tl || gaps[0].From != 1 || gaps[0].To != 2 || !strings.Contains(gaps[0].Cause, "damaged") {
		t.Fatalf("gaps announced: %+v, want the damaged segment's", gaps)
	}
	if segs, err := n.target.Segments(context.Background(), "orders", tl); err != nil || len(segs) != 0 {
		t.Fatalf("the target holds %v (%v): a damaged segment was sent", segs, err)
	}
	if _, err := os.Stat(filepath.Join(d.ship, "orders", "damaged", tl+"-"+offsite.SegmentName(1, 2))); err != nil {
		t.Fatalf("the damaged segment was not moved aside: %v", err)
	}
	if st := n.sh.Stats("orders"); len(st.Gaps) != 1 || st.Pending != 0 {
		t.Fatalf("stats %+v: want the gap, nothing pending", st)
	}
}

// damagedAtStart puts a segment [1, 2) that cannot be decoded on a new
// timeline of d's store, as a disk would leave it: the shipper's next
// tick drops it as a gap. It returns the timeline.
func damagedAtStart(t *testing.T, d nodeDirs) string {
	t.Helper()
	tl := "20261205T000000Z-0000000000000000"
	dir := filepath.Join(d.ship, "orders", "pending", tl)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	seg := encodeSegment(nil, binary.AppendUvarint(nil, 3)) // a batch cut short
	if err := os.WriteFile(filepath.Join(dir, offsite.SegmentName(1, 2)), seg, 0o644); err != nil {
		t.Fatal(err)
	}
	rec, _ := json.Marshal(store.Timeline{ID: tl, Store: "orders", Created: time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)})
	if err := os.WriteFile(filepath.Join(dir, "timeline.json"), rec, 0o644); err != nil {
		t.Fatal(err)
	}
	return tl
}

// A gap whose announcement fails (Redis down) is not lost: it is offered
// again gapRetry later, and, recorded on disk before its segment was
// dropped, by the next process when this one stops without announcing
// it. Once announced it is not offered again.
func TestGapIsOfferedUntilAnnounced(t *testing.T) {
	d := newDirs(t)
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	n := startNode(t, d, Config{Interval: time.Millisecond, Now: clock})
	var offered int
	n.sh.OnGap(func(string, Gap) error { offered++; return errors.New("redis: connection refused") })
	tl := damagedAtStart(t, d)
	ctx := context.Background()
	if err := n.sh.Drain(ctx, "orders"); err != nil {
		t.Fatal(err)
	}
	if offered != 1 {
		t.Fatalf("the gap was offered %d times, want once", offered)
	}
	if err := n.sh.Drain(ctx, "orders"); err != nil || offered != 1 {
		t.Fatalf("a tick right after a failed announcement offered the gap again (%d offers, %v): want it to wait", offered, err)
	}
	now = now.Add(gapRetry)
	if err := n.sh.Drain(ctx, "orders"); err != nil || offered != 2 {
		t.Fatalf("after gapRetry: %d offers (%v), want the gap offered again", offered, err)
	}
	if st := n.sh.Stats("orders"); len(st.Gaps) != 1 {
		t.Fatalf("stats %+v: want the gap", st)
	}

	// The process stops, the gap still unannounced; the next one starts,
	// and ticks once before its worker listens: the gap waits for it.
	if err := n.reg.Close(); err != nil {
		t.Fatal(err)
	}
	n = startNode(t, d, Config{Interval: time.Millisecond, Now: clock})
	if err := n.sh.Drain(ctx, "orders"); err != nil {
		t.Fatal(err)
	}
	var gaps []Gap
	n.sh.OnGap(func(_ string, g Gap) error { gaps = append(gaps, g); return nil })
	if err := n.sh.Drain(ctx, "orders"); err != nil {
		t.Fatal(err)
	}
	if len(gaps) != 1 || gaps[0].Timeline != tl || gaps[0].From != 1 || gaps[0].To != 2 || !strings.Contains(gaps[0].Cause, "damaged") {
		t.Fatalf("after a restart: gaps announced %+v, want the damaged segment's, once", gaps)
	}
	if st := n.sh.Stats("orders"); len(st.Gaps) != 1 {
		t.Fatalf("stats after a restart %+v: want the gap", st)
	}
	now = now.Add(gapRetry)
	if err := n.sh.Drain(ctx, "orders"); err != nil || len(gaps) != 1 {
		t.Fatalf("an announced gap was offered again: %+v (%v)", gaps, err)
	}
	if _, err := os.Stat(filepath.Join(d.ship, "orders", gapsFile)); !os.IsNotExist(err) {
		t.Fatalf("the announced gap is still recorded (%v)", err)
	}
}

// A gap is recorded just before its segment is dropped. A process that
// stopped in between left the segment in place: the next one ships it and
// announces nothing, since nothing was lost.
func TestGapRecordedButNotDroppedIsNotAnnounced(t *testing.T) {
	d := newDirs(t)
	n := startNode(t, d, Config{MaxLag: -1})
	s := n.store(t)
	ctx := context.Background()
	if err := s.Set([]byte("a"), []byte("1")); err != nil {
		t.Fatal(err)
	}
	if err := n.sh.Drain(ctx, "orders"); err != nil {
		t.Fatal(err)
	}
	// The target fails (its directory becomes a file); b's segment waits.
	if err := d.targetDown(); err != nil {
		t.Fatal(err)
	}
	if err := s.Set([]byte("b"), []byte("2")); err != nil {
		t.Fatal(err)
	}
	if err := n.sh.Drain(ctx, "orders"); err == nil {
		t.Fatal("a tick to a failed target succeeded")
	}
	waiting := d.waitingSegment(t) // b's
	first, next, _ := offsite.ParseSegmentName(filepath.Base(waiting))
	tl := filepath.Base(filepath.Dir(waiting))
	if err := n.reg.Close(); err != nil {
		t.Fatal(err)
	}
	// The process stopped after recording the segment's gap, before
	// dropping it.
	b, _ := json.Marshal([]Gap{{Timeline: tl, From: first, To: next, Since: time.Now(), Dropped: time.Now()}})
	if err := os.WriteFile(filepath.Join(d.ship, "orders", gapsFile), b, 0o644); err != nil {
		t.Fatal(err)
	}
	d.targetBack(t)

	n = startNode(t, d, Config{MaxLag: -1})
	var gaps []Gap
	n.sh.OnGap(func(_ string, g Gap) error { gaps = append(gaps, g); return nil })
	if err := n.sh.Drain(ctx, "orders"); err != nil {
		t.Fatal(err)
	}
	if len(gaps) != 0 {
		t.Fatalf("gaps announced %+v for a segment that was never dropped", gaps)
	}
	if st := n.sh.Stats("orders"); len(st.Gaps) != 0 || st.Pending != 0 {
		t.Fatalf("stats %+v: want no gap, nothing pending", st)
	}
	if segs, err := n.target.Segments(ctx, "orders", tl); err != nil || !slices.ContainsFunc(segs, func(sg offsite.Segment) bool { return sg.First == first }) {
		t.Fatalf("the target holds %+v (%v), want b's segment from %d", segs, err, first)
	}
	if _, err := os.Stat(filepath.Join(d.ship, "orders", gapsFile)); !os.IsNotExist(err) {
		t.Fatalf("the false gap is still recorded (%v)", err)
	}
}

// A segment damaged on the local disk while a target was down (sealed,
// not sent yet) is checked when the target comes back: not sent, a gap
// announced with its cause, and the segments after it shipped; the
// writes after it are then on the target, so WaitShipped returns.
func TestSegmentDamagedWhileWaitingIsAGap(t *testing.T) {
	d := newDirs(t)
	n := startNode(t, d, Config{MaxLag: -1})
	s := n.store(t)
	ctx := context.Background()
	var gaps []Gap
	n.sh.OnGap(func(_ string, g Gap) error { gaps = append(gaps, g); return nil })
	set := func(k string) {
		t.Helper()
		if err := s.Set([]byte(k), bytes.Repeat([]byte("v"), 100)); err != nil {
			t.Fatal(err)
		}
	}
	set("a")
	if err := n.sh.Drain(ctx, "orders"); err != nil {
		t.Fatal(err)
	}
	// The target fails (its directory becomes a file); b's segment waits.
	if err := d.targetDown(); err != nil {
		t.Fatal(err)
	}
	set("b")
	if err := n.sh.Drain(ctx, "orders"); err == nil {
		t.Fatal("a tick to a failed target succeeded")
	}
	waiting := d.waitingSegment(t) // b's
	data, err := os.ReadFile(waiting)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)-2] ^= 0x40 // the disk flips a bit
	if err := os.WriteFile(waiting, data, 0o644); err != nil {
		t.Fatal(err)
	}
	first, next, _ := offsite.ParseSegmentName(filepath.Base(waiting))

	// The target is back; c is written after the damage.
	d.targetBack(t)
	set("c")
	if err := n.sh.Drain(ctx, "orders"); err != nil {
		t.Fatalf("the tick after the target came back: %v", err)
	}
	if len(gaps) != 1 || gaps[0].From != first || gaps[0].To != next || !strings.Contains(gaps[0].Cause, "damaged") {
		t.Fatalf("gaps announced: %+v, want b's segment [%d, %d), damaged", gaps, first, next)
	}
	segs, _ := shipped(t, n, s)
	for _, sg := range segs {
		if sg.First == first {
			t.Fatalf("the damaged segment %+v is on the target", sg)
		}
	}
	if len(segs) < 2 || segs[len(segs)-1].First < next {
		t.Fatalf("segments on the target %+v: want a's and c's (b's: [%d, %d))", segs, first, next)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := s.WaitShipped(wctx); err != nil {
		t.Fatalf("WaitShipped after the gap: %v", err)
	}
}
