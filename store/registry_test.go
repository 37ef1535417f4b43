package store

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"
)

func TestOpenDiscoversStores(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{"existing", ".hidden", "lost+found", "Not-Valid", ".storekeeper"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "afile"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := openTest(t, Config{DataDir: dir, Stores: []string{"created", "existing"}})
	got := r.Names()
	want := []string{"created", "existing"}
	if !slices.Equal(got, want) {
		t.Fatalf("Names() = %v, want %v", got, want)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "created", "MANIFEST-*")); len(m) == 0 {
		t.Fatal("configured store not created")
	}
	for _, n := range want {
		if st, _ := mustStore(t, r, n).State(); st != StateOpen {
			t.Errorf("%s state = %v, want open", n, st)
		}
	}
}

func TestInstanceLock(t *testing.T) {
	dir := t.TempDir()
	r := openTest(t, Config{DataDir: dir, Stores: []string{"a"}})
	_, err := Open(Config{DataDir: dir, Logger: testLogger(t)})
	if !errors.Is(err, ErrDataDirLocked) {
		t.Fatalf("second Open = %v, want ErrDataDirLocked", err)
	}
	if !strings.Contains(err.Error(), "pid ") {
		t.Errorf("lock error does not name the holder: %v", err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	r2, err := Open(Config{DataDir: dir, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("Open after Close = %v", err)
	}
	r2.Close()
}

// An embedder's Pebble options reach the store: here its own comparer,
// which Pebble records in the store's OPTIONS file. (A comparer ordering
// prefixes other than bytewise is not legal in Pebble v2: under -race its
// invariant checks panic on one.)
func TestEmbedderPebbleOptions(t *testing.T) {
	named := *pebble.DefaultComparer
	named.Name = "storekeeper.test.comparer"
	r := openTest(t, Config{
		Stores: []string{"named"},
		PebbleOptions: func(string) *pebble.Options {
			return &pebble.Options{Comparer: &named, FormatMajorVersion: pebble.FormatNewest}
		},
	})
	s := mustStore(t, r, "named")
	for _, k := range []string{"c", "a", "b"} {
		if err := s.Set([]byte(k), []byte(k)); err != nil {
			t.Fatal(err)
		}
	}
	var keys []string
	if err := s.Scan(t.Context(), nil, nil, func(k, _ []byte) error { keys = append(keys, string(k)); return nil }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(keys, []string{"a", "b", "c"}) {
		t.Fatalf("keys = %v", keys)
	}
	opts, _ := filepath.Glob(filepath.Join(r.DataDir(), "named", "OPTIONS-*"))
	if len(opts) == 0 {
		t.Fatal("no OPTIONS file")
	}
	b, err := os.ReadFile(opts[len(opts)-1])
	if err != nil || !bytes.Contains(b, []byte("comparer=storekeeper.test.comparer")) {
		t.Fatalf("the embedder's comparer is not in %s (%v)", opts[len(opts)-1], err)
	}
}

// A second process on the same data dir fails at once with a clear error.
func TestInstanceLockAcrossProcesses(t *testing.T) {
	if dir := os.Getenv("STOREKEEPER_TEST_LOCK_DIR"); dir != "" {
		_, err := Open(Config{DataDir: dir, Logger: testLogger(t)})
		if !errors.Is(err, ErrDataDirLocked) {
			t.Fatalf("child Open = %v, want ErrDataDirLocked", err)
		}
		fmt.Println("CHILD:", err)
		return
	}
	dir := t.TempDir()
	openTest(t, Config{DataDir: dir, Stores: []string{"a"}})
	cmd := exec.Command(os.Args[0], "-test.run=^TestInstanceLockAcrossProcesses$", "-test.v")
	cmd.Env = append(os.Environ(), "STOREKEEPER_TEST_LOCK_DIR="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child failed: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "CHILD: data directory in use by another process") ||
		!strings.Contains(string(out), fmt.Sprintf("pid %d", os.Getpid())) {
		t.Fatalf("child output lacks the lock error naming this process:\n%s", out)
	}
}
