package durable

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
)

// failOn is an errorfs injector failing every operation of kind on a
// path ending in suffix with ENOSPC.
func failOn(kind errorfs.OpKind, suffix string) errorfs.Injector {
	return errorfs.InjectorFunc(func(op errorfs.Op) error {
		if op.Kind == kind && strings.HasSuffix(op.Path, suffix) {
			return syscall.ENOSPC
		}
		return nil
	})
}

// TestReplaceKeepsTheOldFileWhenADiskErrs: whichever step of Replace or
// WriteAtomic fails (the temporary file's creation, its write, its sync,
// the rename), it reports the error, the file still holds what it held,
// and no temporary file is left behind for a full disk to keep.
func TestReplaceKeepsTheOldFileWhenADiskErrs(t *testing.T) {
	writers := map[string]func(fs vfs.FS, dir string, b []byte) error{
		"Replace": func(fs vfs.FS, dir string, b []byte) error { return Replace(fs, dir, "state.json", b, nil) },
		"WriteAtomic": func(fs vfs.FS, dir string, b []byte) error {
			return WriteAtomic(fs, filepath.Join(dir, "state.json"), b)
		},
	}
	for wname, write := range writers {
		for _, tc := range []struct {
			name string
			kind errorfs.OpKind
		}{
			{"create", errorfs.OpCreate},
			{"write", errorfs.OpFileWrite},
			{"sync", errorfs.OpFileSync},
			{"rename", errorfs.OpRename},
		} {
			t.Run(wname+"/"+tc.name, func(t *testing.T) {
				dir := t.TempDir()
				if err := write(vfs.Default, dir, []byte(`{"old":true}`)); err != nil {
					t.Fatal(err)
				}
				fs := errorfs.Wrap(vfs.Default, failOn(tc.kind, "state.json.tmp"))
				err := write(fs, dir, []byte(`{"new":true}`))
				if !errors.Is(err, syscall.ENOSPC) {
					t.Fatalf("%s with %s failing: %v, want ENOSPC", wname, tc.name, err)
				}
				if b, err := os.ReadFile(filepath.Join(dir, "state.json")); err != nil || string(b) != `{"old":true}` {
					t.Fatalf("after a failed %s the file holds %q (%v), want the old content", wname, b, err)
				}
				if _, err := os.Stat(filepath.Join(dir, "state.json.tmp")); !os.IsNotExist(err) {
					t.Fatalf("a failed %s left its temporary file: %v", wname, err)
				}
				// The disk recovers: the next write works.
				if err := write(vfs.Default, dir, []byte(`{"new":true}`)); err != nil {
					t.Fatal(err)
				}
				if b, _ := os.ReadFile(filepath.Join(dir, "state.json")); string(b) != `{"new":true}` {
					t.Fatalf("after the disk recovered the file holds %q", b)
				}
			})
		}
	}
}

// TestReplaceReportsAFailedDirectorySync: the new content is in place but
// its name may not survive a crash, so the caller must not rely on it.
func TestReplaceReportsAFailedDirectorySync(t *testing.T) {
	dir := t.TempDir()
	fs := errorfs.Wrap(vfs.Default, failOn(errorfs.OpFileSync, filepath.Base(dir)))
	err := Replace(fs, dir, "state.json", []byte("x"), nil)
	if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "sync dir "+dir) {
		t.Fatalf("Replace with the directory's sync failing: %v, want ENOSPC naming the directory", err)
	}
}

// TestWriteFileSyncSyncs: the file is written whole and synced before
// WriteFileSync returns; a sync that fails is an error, not a file that
// only looks written.
func TestWriteFileSyncSyncs(t *testing.T) {
	dir := t.TempDir()
	var synced []string
	rec := errorfs.InjectorFunc(func(op errorfs.Op) error {
		if op.Kind == errorfs.OpFileSync {
			synced = append(synced, op.Path)
		}
		return nil
	})
	path := filepath.Join(dir, "seg")
	if err := WriteFileSync(errorfs.Wrap(vfs.Default, rec), path, []byte("batches")); err != nil {
		t.Fatal(err)
	}
	if len(synced) != 1 || synced[0] != path {
		t.Fatalf("synced %v, want %s once", synced, path)
	}
	if b, _ := os.ReadFile(path); string(b) != "batches" {
		t.Fatalf("the file holds %q", b)
	}
	err := WriteFileSync(errorfs.Wrap(vfs.Default, failOn(errorfs.OpFileSync, "seg")), path, []byte("more"))
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("WriteFileSync with its sync failing: %v, want ENOSPC", err)
	}
}
