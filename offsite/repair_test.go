package offsite

import (
	"bytes"
	"context"
	"io"
	"slices"
	"testing"

	"filippo.io/age"

	"storekeeper/store"
)

// testEncryption is a fresh key pair's Encryption when encrypted, else nil.
func testEncryption(encrypted bool) *Encryption {
	if !encrypted {
		return nil
	}
	id, _ := age.GenerateX25519Identity()
	return &Encryption{Recipients: []age.Recipient{id.Recipient()}, Identities: []age.Identity{id}, NamingKey: bytes.Repeat([]byte("k"), 32)}
}

// garbageSource gives every file as the right number of wrong bytes: a
// local copy that is not whole.
type garbageSource struct{ m store.BackupManifest }

func (g garbageSource) OpenBackupFile(_, name string) (io.ReadCloser, error) {
	for _, f := range g.m.Files {
		if f.Name == name {
			return io.NopCloser(bytes.NewReader(bytes.Repeat([]byte{'x'}, int(f.Size)))), nil
		}
	}
	return nil, io.ErrUnexpectedEOF
}

// Repair finds every damaged and missing object of a backup on a target
// and sends it again from the local copy, plain and encrypted; the backup
// then restores elsewhere. A local copy that is not whole is never sent:
// the damaged object stays as it was and is reported.
func TestRepair(t *testing.T) {
	for _, encrypted := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "encrypted"}[encrypted], func(t *testing.T) {
			ctx := context.Background()
			enc := testEncryption(encrypted)
			tg, err := Open(ctx, "t1", "file://"+t.TempDir(), enc)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = tg.Close() })
			orders := newNode(t, "orders").store(t, "orders")
			write(t, orders, 0, 1000)
			m := backup(t, orders)
			if _, err := tg.Upload(ctx, orders, m, nil); err != nil {
				t.Fatal(err)
			}
			var flipped, gone store.BackupFile
			for _, f := range m.Files {
				if f.Size > 0 && flipped.Name == "" {
					flipped = f
				} else if f.Size > 0 && f.SHA256 != flipped.SHA256 && gone.Name == "" {
					gone = f
				}
			}
			data, err := tg.bucket.ReadAll(ctx, tg.objectName(flipped.SHA256))
			if err != nil {
				t.Fatal(err)
			}
			data[len(data)/2] ^= 0xff
			if err := tg.bucket.WriteAll(ctx, tg.objectName(flipped.SHA256), data, nil); err != nil {
				t.Fatal(err)
			}
			if err := tg.bucket.Delete(ctx, tg.objectName(gone.SHA256)); err != nil {
				t.Fatal(err)
			}

			// A local copy that is not whole is not sent.
			rep, err := tg.Repair(ctx, garbageSource{m}, m)
			if err != nil || len(rep.Resent) != 0 || !slices.Contains(rep.Missing, flipped.Name) || !slices.Contains(rep.Missing, gone.Name) {
				t.Fatalf("repair from a bad local copy: %+v, %v; want %s and %s unrepaired", rep, err, flipped.Name, gone.Name)
			}
			if got, _ := tg.bucket.ReadAll(ctx, tg.objectName(flipped.SHA256)); !bytes.Equal(got, data) {
				t.Fatal("a repair from a bad local copy replaced the damaged object")
			}

			rep, err = tg.Repair(ctx, orders, m)
			if err != nil || rep.Checked != distinct(m) || len(rep.Missing) != 0 || len(rep.Resent) != 2 ||
				!slices.Contains(rep.Resent, flipped.Name) || !slices.Contains(rep.Resent, gone.Name) {
				t.Fatalf("repair: %+v, %v; want %d checked, %s and %s sent again", rep, err, distinct(m), flipped.Name, gone.Name)
			}
			if n := restoreElsewhere(t, tg, "orders", m.ID); n != 1000 {
				t.Fatalf("restored after the repair: %d keys, want 1000", n)
			}
			if rep, err := tg.Repair(ctx, orders, m); err != nil || len(rep.Resent) != 0 {
				t.Fatalf("repair of a whole copy: %+v, %v; want nothing sent", rep, err)
			}
		})
	}
}
