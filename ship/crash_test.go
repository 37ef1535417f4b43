package ship

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"storekeeper/offsite"
	"storekeeper/store"
)

// The crash tests ship in a child process (this test binary, re-executed)
// that kills itself with SIGKILL at one named point of sealing or sending;
// the parent then ships what is left and restores: nothing written is
// lost, and nothing is replayed twice.

var shipCrashPoints = []string{"ship.segment-written", "ship.cursor-writing", "ship.cursor-saved", "ship.sealed", "ship.sent"}

const crashEnv = "STOREKEEPER_TEST_SHIP_CRASH"

func TestMain(m *testing.M) {
	if spec := os.Getenv(crashEnv); spec != "" {
		crashChildMain(spec) // never returns
	}
	os.Exit(m.Run())
}

// crashRegistry opens the crash tests' registry: synced writes, so every
// write the child acknowledged survives its SIGKILL.
func crashRegistry(d nodeDirs) (*store.Registry, error) {
	return store.Open(store.Config{DataDir: d.data, BackupDir: d.backups, Stores: []string{"orders"}, Ship: true,
		Retention:     store.Retention{Last: 10},
		PebbleOptions: func(string) *pebble.Options { return &pebble.Options{MemTableSize: 256 << 10} },
		Logger:        slog.New(slog.DiscardHandler)})
}

func crashShipper(d nodeDirs, reg *store.Registry) (*Shipper, *offsite.Target, error) {
	return crashShipperBuffer(d, reg, 0)
}

// crashShipperBuffer is crashShipper keeping at most buffer bytes of
// segments locally (0: the default).
func crashShipperBuffer(d nodeDirs, reg *store.Registry, buffer int64) (*Shipper, *offsite.Target, error) {
	tg, err := offsite.Open(context.Background(), "t1", "file://"+d.target, nil)
	if err != nil {
		return nil, nil, err
	}
	sh, err := New(Config{Dir: d.ship, Targets: []*offsite.Target{tg}, SegmentSize: 512, Buffer: buffer, Logger: slog.New(slog.DiscardHandler)}, reg)
	return sh, tg, err
}

// gapCrashPoints are where a child dies dropping a segment as a gap (its
// target down, its buffer full): the gap recorded, the segment not yet
// removed; the segment removed, the gap not yet announced.
var gapCrashPoints = []string{"ship.gap-recorded", "ship.gap-dropped"}

// gapBuffer is the children's buffer at the gap crash points: any segment
// overflows it.
const gapBuffer = 1

// crashChildMain writes keys [from, to) and ships them, dying at point.
func crashChildMain(spec string) {
	var point string
	var d nodeDirs
	var from, to int
	if n, _ := fmt.Sscan(spec, &point, &d.data, &d.backups, &d.ship, &d.target, &from, &to); n != 7 {
		fmt.Fprintf(os.Stderr, "bad %s %q\n", crashEnv, spec)
		os.Exit(3)
	}
	crashHook = func(p string) {
		if p == point {
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		}
	}
	var buffer int64
	gap := slices.Contains(gapCrashPoints, point)
	if gap {
		buffer = gapBuffer
	}
	reg, err := crashRegistry(d)
	if err == nil {
		var sh *Shipper
		if sh, _, err = crashShipperBuffer(d, reg, buffer); err == nil && gap {
			// The target goes down once open; the parent brings it back.
			err = d.targetDown()
		}
		if err == nil {
			s, _ := reg.Store("orders")
			for i := from; i < to && err == nil; i++ {
				err = s.Set(fmt.Appendf(nil, "k%04d", i), []byte("v"))
			}
			for range 10 {
				_ = sh.Drain(context.Background(), "orders")
			}
		}
	}
	fmt.Fprintf(os.Stderr, "shipping finished (%v) without reaching crash point %s\n", err, point)
	os.Exit(3)
}

// crashChild backs up keys [0, from) of a new store in d, ships them,
// then runs a child that writes keys [from, to) and dies by SIGKILL at
// point while shipping them.
func crashChild(t *testing.T, d nodeDirs, point string, from, to int) {
	t.Helper()
	reg, err := crashRegistry(d)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := reg.Store("orders")
	for i := range from {
		if err := s.Set(fmt.Appendf(nil, "k%04d", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Backup(context.Background()); err != nil {
		t.Fatal(err)
	}
	sh, tg, err := crashShipper(d, reg)
	if err != nil {
		t.Fatal(err)
	}
	if err := sh.Drain(context.Background(), "orders"); err != nil {
		t.Fatal(err)
	}
	_ = tg.Close()
	if err := reg.Close(); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %s %s %s %s %d %d", crashEnv, point, d.data, d.backups, d.ship, d.target, from, to))
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if ws, ok := exit.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child did not die at %s: %v\n%s", point, err, out)
	}
}

// crashRestart opens d's registry and shipper again after a child died,
// closed when t ends.
func crashRestart(t *testing.T, d nodeDirs) (*store.Registry, *Shipper, *offsite.Target) {
	t.Helper()
	reg, err := crashRegistry(d)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reg.Close() })
	sh, tg, err := crashShipper(d, reg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tg.Close() })
	return reg, sh, tg
}

func TestShippingSurvivesACrashAtEveryPoint(t *testing.T) {
	for _, point := range shipCrashPoints {
		t.Run(point, func(t *testing.T) {
			d := newDirs(t)
			// A backup of the first 50 keys, then a child writes 100 more
			// and dies shipping them.
			crashChild(t, d, point, 50, 150)

			// Start again: ship the rest, then restore to now.
			reg, sh, tg := crashRestart(t, d)
			s, _ := reg.Store("orders")
			for range 5 {
				if err := sh.Drain(context.Background(), "orders"); err != nil {
					t.Fatal(err)
				}
			}
			if st := sh.Stats("orders"); st.Pending != 0 {
				t.Fatalf("%d segments still local after the restart", st.Pending)
			}
			_, last := s.LastCommitted()
			tl, _ := s.Timeline()
			segs, err := tg.Segments(context.Background(), "orders", tl.ID)
			if err != nil {
				t.Fatal(err)
			}
			next := tl.Start
			for _, sg := range segs {
				if sg.First > next {
					t.Fatalf("hole in the shipped log after a crash at %s: nothing from %d to %d", point, next, sg.First)
				}
				next = max(next, sg.Next)
			}
			if next != last+1 {
				t.Fatalf("the shipped log ends before %d; the last write is %d", next, last)
			}
			res, _, err := sh.RestoreAt(context.Background(), "orders", "", time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if res.Log == nil || res.Log.Batches != 100 {
				t.Fatalf("replayed %+v; want the child's 100 writes, each once", res.Log)
			}
			got := content(t, s)
			if len(got) != 150 {
				t.Fatalf("restored %d keys, want 150", len(got))
			}
		})
	}
}

// A child whose target is down drops its first segment as a gap (its
// buffer holds none) and dies at each step of it. The next process tells
// exactly what happened: a gap recorded whose segment was still there is
// no gap (the segment is shipped, nothing announced); one whose segment
// was removed is announced, once, and the shipped log has that hole and
// no other.
func TestAGapSurvivesACrash(t *testing.T) {
	for _, point := range gapCrashPoints {
		t.Run(point, func(t *testing.T) {
			d := newDirs(t)
			crashChild(t, d, point, 1, 20)

			// The target is back; the next process starts.
			d.targetBack(t)
			reg, sh, tg := crashRestart(t, d)
			var gaps []Gap
			sh.OnGap(func(_ string, g Gap) error { gaps = append(gaps, g); return nil })
			for range 3 {
				if err := sh.Drain(context.Background(), "orders"); err != nil {
					t.Fatal(err)
				}
			}
			s, _ := reg.Store("orders")
			tl, _ := s.Timeline()
			segs, err := tg.Segments(context.Background(), "orders", tl.ID)
			if err != nil {
				t.Fatal(err)
			}
			var holes []Gap
			next := tl.Start
			for _, sg := range segs {
				if sg.First > next {
					holes = append(holes, Gap{Timeline: tl.ID, From: next, To: sg.First})
				}
				next = max(next, sg.Next)
			}
			_, last := s.LastCommitted()
			if next != last+1 {
				t.Fatalf("the shipped log ends before %d; the last write is %d", next, last)
			}
			switch point {
			case "ship.gap-recorded":
				if len(gaps) != 0 || len(holes) != 0 {
					t.Fatalf("gaps announced %+v, holes %+v: the segment was never dropped, want neither", gaps, holes)
				}
			case "ship.gap-dropped":
				if len(gaps) != 1 || len(holes) != 1 || gaps[0].From != holes[0].From || gaps[0].To != holes[0].To {
					t.Fatalf("gaps announced %+v, holes in the shipped log %+v: want the one hole, announced once", gaps, holes)
				}
			}
		})
	}
}
