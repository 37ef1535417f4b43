package store

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestValidateName(t *testing.T) {
	valid := []string{"a", "0", "orders", "user-events_2", strings.Repeat("a", 63)}
	for _, n := range valid {
		if err := ValidateName(n); err != nil {
			t.Errorf("ValidateName(%q) = %v, want nil", n, err)
		}
	}
	invalid := []string{
		"", ".", "..", "../etc", "a/b", "/abs", "Orders", "-lead", "_lead",
		strings.Repeat("a", 64), "a\x00b", "naïve", "ключ", "a b", "a\n", "a.b",
		".storekeeper", "lost+found",
	}
	for _, n := range invalid {
		err := ValidateName(n)
		if !errors.Is(err, ErrInvalidName) {
			t.Errorf("ValidateName(%q) = %v, want ErrInvalidName", n, err)
		}
	}
}

func FuzzValidateName(f *testing.F) {
	for _, s := range []string{"orders", "..", "a/b", "A", "\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if ValidateName(name) != nil {
			return
		}
		if filepath.Base(name) != name || strings.ContainsAny(name, "./\x00") || len(name) > 63 {
			t.Fatalf("accepted unsafe name %q", name)
		}
	})
}

// Hostile names are refused before any filesystem call: Open with a bad
// configured name must not even create the data dir.
func TestOpenRejectsBadNameBeforeTouchingDisk(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	_, err := Open(Config{DataDir: dir, Stores: []string{"good", "../escape"}, Logger: testLogger(t)})
	if !errors.Is(err, ErrInvalidName) {
		t.Fatalf("Open = %v, want ErrInvalidName", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("data dir was created (stat err %v)", err)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(dir), "escape")); !os.IsNotExist(err) {
		t.Fatalf("escaping dir was created")
	}
}

func TestStoreLookupRejectsHostileNames(t *testing.T) {
	r := openTest(t, Config{Stores: []string{"orders"}})
	for _, n := range []string{"..", "../orders", "orders/", "ORDERS", "", "orders\x00"} {
		if _, err := r.Store(n); !errors.Is(err, ErrInvalidName) {
			t.Errorf("Store(%q) = %v, want ErrInvalidName", n, err)
		}
	}
	if _, err := r.Store("missing"); !errors.Is(err, ErrUnknownStore) {
		t.Errorf("Store(missing) = %v, want ErrUnknownStore", err)
	}
}
