package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"storekeeper/internal/syncbuf"
	"storekeeper/store"
)

// TestPebbleDBCheck runs Pebble's own `db check` through chaosnode on a
// store storekeeper wrote: it counts every point, and it names a flipped
// byte on stderr (with exit code 0, as upstream does).
func TestPebbleDBCheck(t *testing.T) {
	data := t.TempDir()
	reg, err := store.Open(store.Config{DataDir: data, Stores: []string{"s"}})
	if err != nil {
		t.Fatal(err)
	}
	s, err := reg.Store("s")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Update(func(b *store.Batch) error {
		for i := range 500 {
			if err := b.Set(fmt.Appendf(nil, "k%04d", i), []byte(strings.Repeat("v", 100))); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Compact(context.Background(), store.CompactOptions{Force: true}); err != nil {
		t.Fatal(err) // the points into an sstable
	}
	if err := reg.Close(); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(data, "s")

	// A corrupt store ends the process (Pebble's DataCorruption event is
	// fatal), so the check runs in a child: this test binary as chaosnode.
	check := func() (code int, stdout, stderr string) {
		var out, errOut syncbuf.Buffer
		cmd := exec.Command(os.Args[0], "pebble", "db", "check", dir)
		cmd.Env = append(os.Environ(), "CHAOSNODE_MAIN=1")
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		var exit *exec.ExitError
		if err != nil && !errors.As(err, &exit) {
			t.Fatal(err)
		}
		return cmd.ProcessState.ExitCode(), out.String(), errOut.String()
	}
	code, out, errOut := check()
	if m := regexp.MustCompile(`checked (\d+) points`).FindStringSubmatch(out); code != 0 || m == nil || m[1] != "500" || errOut != "" {
		t.Fatalf("a healthy store: exit %d, stdout %q, stderr %q; want 0, 500 points checked and nothing on stderr", code, out, errOut)
	}

	ssts, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
	slices.Sort(ssts)
	if len(ssts) == 0 {
		t.Fatal("no sstable after the flush")
	}
	b, err := os.ReadFile(ssts[0])
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/3] ^= 0x5a
	if err := os.WriteFile(ssts[0], b, 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = check()
	if code == 0 || !strings.Contains(errOut, "checksum mismatch") {
		t.Fatalf("a flipped byte in an sstable: exit %d, stdout %q, stderr %q; want an exit code and the mismatch named", code, out, errOut)
	}
}
