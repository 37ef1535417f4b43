package store

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
)

// The disk-full test runs two children (this test binary, re-executed)
// over one data directory whose store's Pebble FS fails every write with
// ENOSPC, the WAL's and the MANIFEST's included, while a fault file
// exists: a full disk. The first child dies of it, by Pebble's Fatalf, as
// Pebble v2.1.7 wants; the second starts while the disk is still full and
// must not die: the store is unavailable until the fault file goes, then
// opens by itself with the data written before the fault.

const diskFullEnv = "STOREKEEPER_TEST_DISKFULL"

// diskFullChildMain is a child: spec is "write|reopen <data dir> <fault
// file>". It reports on stdout, one line each: "STATE <state> <cause>" for
// every state change, "READY" (write: the data is written), "VALUE <v>"
// (reopen: the value read once open).
func diskFullChildMain(spec string) {
	var mode, data, fault string
	if n, _ := fmt.Sscan(spec, &mode, &data, &fault); n != 3 {
		fmt.Fprintf(os.Stderr, "bad %s %q\n", diskFullEnv, spec)
		os.Exit(3)
	}
	if mode == "pebble-open" {
		pebbleOpenChildMain(data)
	}
	storeDir := filepath.Join(data, "kv") + string(filepath.Separator)
	full := errorfs.InjectorFunc(func(op errorfs.Op) error {
		if !strings.HasPrefix(op.Path, storeDir) || op.Kind.ReadOrWrite() != errorfs.OpIsWrite {
			return nil
		}
		switch op.Kind {
		case errorfs.OpRemove, errorfs.OpRemoveAll, errorfs.OpFileClose, errorfs.OpLock:
			return nil // freeing space, closing and locking need none
		}
		if _, err := os.Stat(fault); err != nil {
			return nil
		}
		return &os.PathError{Op: "write", Path: op.Path, Err: syscall.ENOSPC}
	})
	efs := errorfs.Wrap(vfs.Default, full)
	opened := make(chan struct{}, 1)
	r, err := Open(Config{
		DataDir:       data,
		Stores:        []string{"kv"},
		Logger:        slog.New(slog.NewTextHandler(os.Stderr, nil)),
		PebbleOptions: func(string) *pebble.Options { return &pebble.Options{FS: efs} },
		OnStateChange: func(_ string, st State, cause error) {
			fmt.Printf("STATE %s %v\n", st, cause)
			if st == StateOpen {
				select {
				case opened <- struct{}{}:
				default:
				}
			}
		},
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "child Open: %v\n", err)
		os.Exit(3)
	}
	s, err := r.Store("kv")
	if err != nil {
		os.Exit(3)
	}
	switch mode {
	case "write":
		if err := s.Set([]byte("before"), []byte("written before the disk filled")); err != nil {
			fmt.Fprintf(os.Stderr, "Set before the fault: %v\n", err)
			os.Exit(3)
		}
		fmt.Println("READY")
		// The parent fills the disk, then says so.
		if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
			os.Exit(3)
		}
		err := s.Set([]byte("after"), []byte("x")) // synced: Pebble's WAL write fails
		fmt.Printf("SET RETURNED %v\n", err)
		os.Exit(4) // Pebble was expected to call Fatalf
	case "reopen":
		select {
		case <-opened:
		case <-time.After(2 * time.Minute):
			fmt.Fprintln(os.Stderr, "the store did not open")
			os.Exit(5)
		}
		v, err := s.Get([]byte("before"))
		fmt.Printf("VALUE %s %v\n", v, err)
		if err := r.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "Close: %v\n", err)
			os.Exit(6)
		}
		os.Exit(0)
	}
	os.Exit(3)
}

// diskFullChild starts a child; its stdout lines arrive on lines.
type diskFullChild struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	stderr bytes.Buffer
}

func startDiskFullChild(t *testing.T, mode, data, fault string) *diskFullChild {
	t.Helper()
	c := &diskFullChild{cmd: exec.Command(os.Args[0]), lines: make(chan string, 64)}
	c.cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %s %s", diskFullEnv, mode, data, fault))
	c.cmd.Stderr = &c.stderr
	var err error
	if c.stdin, err = c.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(c.lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
	}()
	t.Cleanup(func() {
		if c.cmd.ProcessState == nil {
			_ = c.cmd.Process.Kill()
			_ = c.cmd.Wait()
		}
	})
	return c
}

// expect waits for a line starting with prefix and returns it; the lines
// before it are returned too, for the log.
func (c *diskFullChild) expect(t *testing.T, prefix string) (string, []string) {
	t.Helper()
	var seen []string
	timeout := time.After(2 * time.Minute)
	for {
		select {
		case line, ok := <-c.lines:
			if !ok {
				t.Fatalf("child ended before %q; stdout %q\nstderr:\n%s", prefix, seen, c.stderr.String())
			}
			if strings.HasPrefix(line, prefix) {
				return line, seen
			}
			seen = append(seen, line)
		case <-timeout:
			t.Fatalf("no %q from the child; stdout %q", prefix, seen)
		}
	}
}

// wait waits for the child to exit and returns its exit status.
func (c *diskFullChild) wait(t *testing.T) int {
	t.Helper()
	for range c.lines { // drain, so the child never blocks on stdout
	}
	err := c.cmd.Wait()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exit):
		return exit.ExitCode()
	default:
		t.Fatalf("child: %v", err)
		return -1
	}
}

func TestDiskFullWALWriteExitsAndRestartWaits(t *testing.T) {
	data := t.TempDir()
	fault := filepath.Join(t.TempDir(), "disk-full")

	// Child 1: the WAL write of a synced Set fails; Pebble calls Fatalf and
	// storekeeper's logger exits.
	c1 := startDiskFullChild(t, "write", data, fault)
	c1.expect(t, "READY")
	if err := os.WriteFile(fault, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(c1.stdin, "go\n"); err != nil {
		t.Fatal(err)
	}
	if code := c1.wait(t); code != 1 {
		t.Fatalf("child 1 exit status %d, want 1 (Fatalf)\nstderr:\n%s", code, c1.stderr.String())
	}
	stderr := c1.stderr.String()
	if !strings.Contains(stderr, "fatal: pebble: fatal commit error") || !strings.Contains(stderr, "no space left on device") {
		t.Fatalf("child 1 did not log Pebble's fatal WAL error:\n%s", stderr)
	}

	// Child 2 starts while the disk is still full: it must not exit, and the
	// store is unavailable (a read-write open would Fatalf: it writes a new
	// MANIFEST at once).
	c2 := startDiskFullChild(t, "reopen", data, fault)
	line, seen := c2.expect(t, "STATE unavailable")
	if !strings.Contains(line, "no space left on device") {
		t.Fatalf("unavailable for another cause: %q", line)
	}
	t.Logf("child 2, disk full: %s", line)
	for _, l := range seen {
		if strings.HasPrefix(l, "STATE corrupt") || strings.HasPrefix(l, "STATE open") {
			t.Fatalf("child 2 reported %q while the disk was full", l)
		}
	}
	if err := os.Remove(fault); err != nil {
		t.Fatal(err)
	}
	c2.expect(t, "STATE open")
	value, _ := c2.expect(t, "VALUE ")
	if value != "VALUE written before the disk filled <nil>" {
		t.Fatalf("after the disk emptied: %q", value)
	}
	if code := c2.wait(t); code != 0 {
		t.Fatalf("child 2 exit status %d\nstderr:\n%s", code, c2.stderr.String())
	}
	if strings.Contains(c2.stderr.String(), "fatal") {
		t.Fatalf("child 2 logged a fatal error:\n%s", c2.stderr.String())
	}
}

// pebbleOpenChildMain opens the store in data read-write with Pebble
// alone, its MANIFEST writes failing with ENOSPC, and a logger whose Fatalf
// says so and exits 1, as storekeeper's does.
func pebbleOpenChildMain(data string) {
	manifestFull := errorfs.InjectorFunc(func(op errorfs.Op) error {
		if strings.HasPrefix(filepath.Base(op.Path), "MANIFEST-") && op.Kind.ReadOrWrite() == errorfs.OpIsWrite &&
			op.Kind != errorfs.OpRemove && op.Kind != errorfs.OpFileClose {
			return &os.PathError{Op: "write", Path: op.Path, Err: syscall.ENOSPC}
		}
		return nil
	})
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	db, err := pebble.Open(filepath.Join(data, "kv"), &pebble.Options{
		FS:     errorfs.Wrap(vfs.Default, manifestFull),
		Logger: pebbleLogger{log},
	})
	fmt.Printf("OPEN RETURNED %v\n", err)
	if err == nil {
		_ = db.Close()
	}
	os.Exit(4)
}

// What the open's probe is for: Pebble's own read-write open calls Fatalf
// when it cannot write the MANIFEST (it writes a new one at once, even for
// a store whose WAL is empty). If this test fails, Pebble changed: the
// preflight in opencheck.go may no longer be needed, or may need more.
func TestPebbleReadWriteOpenCallsFatalfOnManifestWriteError(t *testing.T) {
	data := t.TempDir()
	r := openTest(t, Config{DataDir: data, Stores: []string{"kv"}})
	s := mustStore(t, r, "kv")
	churn(t, s, 1000, 50) // ends with a flush: nothing left to replay
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	c := startDiskFullChild(t, "pebble-open", data, "-")
	if code := c.wait(t); code != 1 || !strings.Contains(c.stderr.String(), "fatal: MANIFEST create failed") {
		t.Fatalf("Pebble's read-write open under a MANIFEST write error: exit status %d, want 1 by Fatalf\nstderr:\n%s", code, c.stderr.String())
	}
}
