package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
)

// make run must keep working: the demo runs twice over the same dirs (the
// second backup shares unchanged tables) and says what it did.
func TestDemo(t *testing.T) {
	dir := t.TempDir()
	args := []string{"demo", "--data-dir", filepath.Join(dir, "data"), "--backup-dir", filepath.Join(dir, "backups")}
	for round := 1; round <= 2; round++ {
		var stdout, stderr bytes.Buffer
		if code := run(t.Context(), args, &stdout, &stderr); code != 0 {
			t.Fatalf("run %d: exit %d\nstdout:\n%s\nstderr:\n%s", round, code, stdout.String(), stderr.String())
		}
		out := stdout.String()
		for _, want := range []string{"before compaction:", "compacted", "ok:", "backing up into", "restored orders from", "are gone (lookup of one: key not found)"} {
			if !strings.Contains(out, want) {
				t.Fatalf("run %d: output lacks %q:\n%s", round, want, out)
			}
		}
	}
}

func TestUsage(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run(t.Context(), nil, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), "usage:") {
		t.Fatalf("no args: exit %d, stderr %q", code, stderr.String())
	}
	if code := run(t.Context(), []string{"bogus"}, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), `unknown command "bogus"`) {
		t.Fatalf("unknown command: exit %d, stderr %q", code, stderr.String())
	}
}
