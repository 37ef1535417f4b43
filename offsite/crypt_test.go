package offsite

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"

	"storekeeper/store"
)

// An encrypted target holds only ciphertext under names that reveal no
// plaintext hash; a node with the identity (and no naming key: it is
// recovered from the target) restores from it; a wrong identity, a node
// without one and a changed naming key are each refused with a clear
// error.
func TestEncryptedTarget(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	url := "file://" + dir
	id, _ := age.GenerateX25519Identity()
	other, _ := age.GenerateX25519Identity()
	key := bytes.Repeat([]byte("k"), 32)
	to := []age.Recipient{id.Recipient()}

	up, err := Open(ctx, "vault", url, &Encryption{Recipients: to, NamingKey: key})
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	a := newNode(t, "orders")
	orders := a.store(t, "orders")
	write(t, orders, 0, 1000)
	m := backup(t, orders)
	if _, err := up.Upload(ctx, orders, m, nil); err != nil {
		t.Fatal(err)
	}
	all, _ := os.ReadDir(filepath.Join(dir, "objects"))
	var names []os.DirEntry
	for _, n := range all {
		if !strings.HasSuffix(n.Name(), ".attrs") { // fileblob's metadata beside each object
			names = append(names, n)
		}
	}
	if len(names) != distinct(m) {
		t.Fatalf("%d objects on the target, want %d", len(names), distinct(m))
	}
	for _, f := range m.Files {
		for _, n := range names {
			if strings.Contains(n.Name(), f.SHA256) {
				t.Fatalf("object %s is named by its plaintext hash", n.Name())
			}
		}
	}
	raw, err := os.ReadFile(filepath.Join(dir, "stores", "orders", "backups", m.ID+".json"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(raw, []byte("age-encryption.org/v1")) || bytes.Contains(raw, []byte(m.Files[0].SHA256)) {
		t.Fatalf("the manifest is stored in the clear: %.80q", raw)
	}

	// Another machine, with the identity and without the naming key.
	dr, err := Open(ctx, "vault", url, &Encryption{Recipients: to, Identities: []age.Identity{id}})
	if err != nil {
		t.Fatal(err)
	}
	defer dr.Close()
	if n := restoreElsewhere(t, dr, "orders", m.ID); n != 1000 {
		t.Fatalf("restored from the encrypted target: %d keys", n)
	}

	// Whoever can write to the bucket can encrypt to the public recipient,
	// but not MAC with the naming key: a planted manifest is refused.
	planted, _ := json.Marshal(sealedManifest{Manifest: mustJSON(t, m), MAC: strings.Repeat("0", 64)})
	ct, err := seal(planted, to)
	if err != nil {
		t.Fatal(err)
	}
	if err := dr.bucket.WriteAll(ctx, manifestKey("orders", m.ID), ct, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := dr.Manifest(ctx, "orders", m.ID); !errors.Is(err, store.ErrBadBackup) || !strings.Contains(err.Error(), "MAC") {
		t.Fatalf("a planted manifest: %v, want ErrBadBackup naming the MAC", err)
	}

	// A wrong identity, no identity, a changed naming key.
	if _, err := Open(ctx, "vault", url, &Encryption{Recipients: to, Identities: []age.Identity{other}}); !errors.Is(err, ErrIdentity) {
		t.Fatalf("a wrong identity: %v, want ErrIdentity", err)
	}
	c := newNode(t, "orders")
	if _, err := up.Fetch(ctx, c.store(t, "orders"), m.ID); !errors.Is(err, ErrIdentity) || !strings.Contains(err.Error(), "no --backup-identity") {
		t.Fatalf("a fetch without an identity: %v", err)
	}
	if _, err := Open(ctx, "vault", url, &Encryption{Recipients: to, Identities: []age.Identity{id}, NamingKey: bytes.Repeat([]byte("x"), 32)}); err == nil || !strings.Contains(err.Error(), "cannot change") {
		t.Fatalf("a changed naming key: %v", err)
	}
	if _, err := Open(ctx, "fresh", "file://"+t.TempDir(), &Encryption{Recipients: to, Identities: []age.Identity{id}}); err == nil || !strings.Contains(err.Error(), "no naming key yet") {
		t.Fatalf("a new target without a naming key: %v", err)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Recipients rotated: a node that knows the old identity rewrites a
// store's backups for the new recipient; afterwards the new identity
// alone restores every backup, shared objects included, and the old one
// reads nothing. An object whose content does not match its manifest is
// left as it is and named. Without an identity, or on a plain target, a
// clear error.
func TestReencrypt(t *testing.T) {
	ctx := context.Background()
	url := "file://" + t.TempDir()
	old, _ := age.GenerateX25519Identity()
	next, _ := age.GenerateX25519Identity()
	key := bytes.Repeat([]byte("k"), 32)
	up, err := Open(ctx, "vault", url, &Encryption{Recipients: []age.Recipient{old.Recipient()}, NamingKey: key})
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	a := newNode(t, "orders")
	orders := a.store(t, "orders")
	write(t, orders, 0, 1000)
	m1 := backup(t, orders)
	write(t, orders, 1000, 1100)
	m2 := backup(t, orders)
	for _, m := range []store.BackupManifest{m1, m2} {
		if _, err := up.Upload(ctx, orders, m, nil); err != nil {
			t.Fatal(err)
		}
	}

	// The node now encrypts to the new recipient and still holds the old
	// identity; without any identity it cannot reencrypt.
	rot, err := Open(ctx, "vault", url, &Encryption{Recipients: []age.Recipient{next.Recipient()}, Identities: []age.Identity{old}, NamingKey: key})
	if err != nil {
		t.Fatal(err)
	}
	defer rot.Close()
	blind, _ := Open(ctx, "vault", url, &Encryption{Recipients: []age.Recipient{next.Recipient()}, NamingKey: key})
	if _, err := blind.Reencrypt(ctx, "orders", nil); !errors.Is(err, ErrIdentity) {
		t.Fatalf("reencrypt without an identity: %v", err)
	}
	plain := open(t, "file://"+t.TempDir())
	if _, err := plain.Reencrypt(ctx, "orders", nil); !errors.Is(err, ErrNotEncrypted) {
		t.Fatalf("reencrypt of a plain target: %v", err)
	}
	var last int64
	res, err := rot.Reencrypt(ctx, "orders", func(done, _ int64) { last = done })
	if err != nil || res.Backups != 2 || res.Objects != len(uniqueFiles(m1, m2)) || res.Bytes != last {
		t.Fatalf("reencrypt: %+v, %v; want 2 backups, %d objects", res, err, len(uniqueFiles(m1, m2)))
	}

	// Only the new identity reads the target now.
	if _, err := Open(ctx, "vault", url, &Encryption{Recipients: []age.Recipient{next.Recipient()}, Identities: []age.Identity{old}}); !errors.Is(err, ErrIdentity) {
		t.Fatalf("the old identity after reencryption: %v, want ErrIdentity", err)
	}
	dr, err := Open(ctx, "vault", url, &Encryption{Recipients: []age.Recipient{next.Recipient()}, Identities: []age.Identity{next}})
	if err != nil {
		t.Fatal(err)
	}
	defer dr.Close()
	for _, c := range []struct {
		id   string
		keys int
	}{{m1.ID, 1000}, {m2.ID, 1100}} {
		if n := restoreElsewhere(t, dr, "orders", c.id); n != c.keys {
			t.Fatalf("backup %s restored with the new identity: %d keys, want %d", c.id, n, c.keys)
		}
	}

	// A damaged object: refused, named, left as it was.
	f := m2.Files[0]
	bad, err := seal([]byte("not what the manifest says"), []age.Recipient{next.Recipient()})
	if err != nil {
		t.Fatal(err)
	}
	if err := dr.bucket.WriteAll(ctx, dr.objectName(f.SHA256), bad, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := dr.Reencrypt(ctx, "orders", nil); !errors.Is(err, store.ErrBadBackup) || !strings.Contains(err.Error(), f.Name) {
		t.Fatalf("reencrypt over a damaged object: %v, want ErrBadBackup naming %s", err, f.Name)
	}
	if got, _ := dr.bucket.ReadAll(ctx, dr.objectName(f.SHA256)); !bytes.Equal(got, bad) {
		t.Fatal("the damaged object was replaced")
	}
}

func uniqueFiles(ms ...store.BackupManifest) map[string]bool {
	u := map[string]bool{}
	for _, m := range ms {
		for _, f := range m.Files {
			u[f.SHA256] = true
		}
	}
	return u
}
