package offsite

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"storekeeper/internal/s3test"
	"storekeeper/store"
)

// node is one machine's stores: its own data and backup directories.
type node struct {
	reg *store.Registry
}

func newNode(t testing.TB, stores ...string) *node {
	t.Helper()
	dir := t.TempDir()
	reg, err := store.Open(store.Config{DataDir: filepath.Join(dir, "data"), BackupDir: filepath.Join(dir, "backups"), Stores: stores})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reg.Close() })
	return &node{reg: reg}
}

func (n *node) store(t testing.TB, name string) *store.Store {
	t.Helper()
	s, err := n.reg.Store(name)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// write sets keys from..to-1 and flushes them into an sstable.
func write(t testing.TB, s *store.Store, from, to int) {
	t.Helper()
	if err := s.Update(func(b *store.Batch) error {
		for i := from; i < to; i++ {
			if err := b.Set(fmt.Appendf(nil, "%s-k%06d", s.Name(), i), []byte(strings.Repeat("v", 200))); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Compact(context.Background(), store.CompactOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
}

func backup(t testing.TB, s *store.Store) store.BackupManifest {
	t.Helper()
	res, err := s.Backup(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return res.Backup.BackupManifest
}

// distinct counts a backup's distinct contents: the objects it needs (two
// empty files are one object).
func distinct(m store.BackupManifest) int {
	seen := map[string]bool{}
	for _, f := range m.Files {
		seen[f.SHA256] = true
	}
	return len(seen)
}

func open(t testing.TB, url string) *Target {
	t.Helper()
	tg, err := Open(context.Background(), "t1", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tg.Close() })
	return tg
}

// keys counts every key of a store.
func keys(t *testing.T, s *store.Store) int {
	t.Helper()
	n := 0
	if err := s.Scan(context.Background(), nil, nil, func(_, _ []byte) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

// restoreElsewhere fetches backup id of a store from tg into a new node
// (one that never held the store), restores it there and counts its keys.
func restoreElsewhere(t *testing.T, tg *Target, name, id string) int {
	t.Helper()
	fresh := newNode(t, name).store(t, name)
	if _, err := tg.Fetch(context.Background(), fresh, id); err != nil {
		t.Fatal(err)
	}
	if _, err := fresh.Restore(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	return keys(t, fresh)
}

// The disaster: a store's backup uploaded to S3, its machine gone; on
// another machine that never held the store, the backup comes back from
// the target (index, one manifest, its objects, each hash-checked) and
// restores with every key. An incremental backup sends only what the
// target lacks. The same on gofakes3, on s3rver (a second S3
// implementation, which ignores If-None-Match: the probe says so), on a
// file target, on Google Cloud Storage (fake-gcs-server) and on Azure Blob
// Storage (Azurite).
func TestUploadThenRecoverElsewhere(t *testing.T) {
	for _, c := range []struct {
		name          string
		url           func(t *testing.T) string
		preconditions bool
	}{
		{"gofakes3", func(t *testing.T) string { return s3test.Start(t).URL("prod/") }, true},
		{"s3rver", func(t *testing.T) string { return s3test.StartS3rver(t).URL() }, false},
		{"file", func(t *testing.T) string { return "file://" + t.TempDir() }, true},
		{"gcs", func(t *testing.T) string { return s3test.StartGCS(t) }, true},
		{"azurite", func(t *testing.T) string { return s3test.StartAzurite(t) }, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			tg := open(t, c.url(t))
			tg.rangeSize = 4 << 10 // large tables come back as several ranged reads
			if ok, err := tg.Probe(ctx, "test"); err != nil || ok != c.preconditions {
				t.Fatalf("probe: preconditions %v, err %v; want %v", ok, err, c.preconditions)
			}
			a := newNode(t, "orders")
			orders := a.store(t, "orders")
			write(t, orders, 0, 2000)
			m1 := backup(t, orders)
			up, err := tg.Upload(ctx, orders, m1, nil)
			if err != nil || !up.Complete || up.Objects != distinct(m1) || up.Skipped != 0 {
				t.Fatalf("first upload: %+v, %v; want all %d contents sent", up, err, distinct(m1))
			}
			// Incremental: one new table; the old tables are not sent again.
			write(t, orders, 2000, 2100)
			m2 := backup(t, orders)
			up2, err := tg.Upload(ctx, orders, m2, nil)
			if err != nil || up2.Skipped == 0 || up2.Bytes >= m2.Bytes/2 {
				t.Fatalf("incremental upload: %+v, %v; want the shared tables skipped (backup %d bytes)", up2, err, m2.Bytes)
			}
			entries, err := tg.Backups(ctx, "orders")
			if err != nil || len(entries) != 2 || entries[0].ID != m2.ID || entries[1].ID != m1.ID {
				t.Fatalf("index: %+v, %v; want %s then %s", entries, err, m2.ID, m1.ID)
			}

			if n := restoreElsewhere(t, tg, "orders", m2.ID); n != 2100 {
				t.Fatalf("restored elsewhere: %d keys, want 2100", n)
			}
		})
	}
}

// failingSource fails the read of its nth file, as a disk or a killed
// process would mid-upload.
type failingSource struct {
	Source
	n, at, midway atomic.Int32
}

func (f *failingSource) OpenBackupFile(id, name string) (io.ReadCloser, error) {
	n := f.n.Add(1)
	if n == f.at.Load() {
		return nil, errors.New("injected read failure")
	}
	r, err := f.Source.OpenBackupFile(id, name)
	if err != nil || n != f.midway.Load() {
		return r, err
	}
	return brokenReader{r}, nil
}

// brokenReader gives a few bytes, then an error: a disk failing mid-file.
type brokenReader struct{ io.ReadCloser }

func (b brokenReader) Read(p []byte) (int, error) {
	n, _ := b.ReadCloser.Read(p[:min(len(p), 10)])
	if n > 0 {
		return n, nil
	}
	return 0, errors.New("injected read failure mid-file")
}

// An upload that fails part way (the source, or the server answering
// 500s) lists nothing in the index; the next one sends only what is
// missing and completes.
func TestUploadResumes(t *testing.T) {
	s3 := s3test.Start(t)
	ctx := context.Background()
	tg := open(t, s3.URL(""))
	tg.Parallel = 1
	a := newNode(t, "orders")
	orders := a.store(t, "orders")
	write(t, orders, 0, 500)
	write(t, orders, 500, 1000)
	m := backup(t, orders)

	// The second file breaks mid-way, the third cannot be opened.
	src := &failingSource{Source: orders}
	src.midway.Store(2)
	src.at.Store(3)
	up, err := tg.Upload(ctx, src, m, nil)
	if err == nil || up.Complete || up.Objects != 1 {
		t.Fatalf("failing upload: %+v, %v; want an error after 1 object", up, err)
	}
	if entries, err := tg.Backups(ctx, "orders"); err != nil || len(entries) != 0 {
		t.Fatalf("index after a failed upload: %+v, %v; want nothing listed", entries, err)
	}
	// The server fails every write now.
	s3.Fail(func(r *http.Request) bool { return r.Method == http.MethodPut || r.Method == http.MethodPost })
	if _, err := tg.Upload(ctx, orders, m, nil); err == nil {
		t.Fatal("an upload to a server answering 500 succeeded")
	}
	s3.Fail(nil)
	up, err = tg.Upload(ctx, orders, m, nil)
	if err != nil || !up.Complete || up.Skipped != 1 || up.Objects != distinct(m)-1 {
		t.Fatalf("resumed upload: %+v, %v; want the object sent before skipped and the other %d sent", up, err, distinct(m)-1)
	}
	// The object that broke mid-way was never published half-written:
	// the backup comes back whole.
	b := newNode(t, "orders")
	if _, err := tg.Fetch(ctx, b.store(t, "orders"), m.ID); err != nil {
		t.Fatalf("fetch after the resumed upload: %v", err)
	}
}

// A corrupted object on the target is refused on the way back, named,
// and leaves no backup behind; a backup the target lacks is ErrNoBackup.
func TestFetchRefusesCorruptObject(t *testing.T) {
	ctx := context.Background()
	tg := open(t, "file://"+t.TempDir())
	tg.rangeSize = 4 << 10 // the victim comes back in ranges
	a := newNode(t, "orders")
	orders := a.store(t, "orders")
	write(t, orders, 0, 1000)
	m := backup(t, orders)
	if _, err := tg.Upload(ctx, orders, m, nil); err != nil {
		t.Fatal(err)
	}
	var victim store.BackupFile
	for _, f := range m.Files {
		if f.Shared {
			victim = f
		}
	}
	data, err := tg.bucket.ReadAll(ctx, tg.objectName(victim.SHA256))
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0xff
	if err := tg.bucket.WriteAll(ctx, tg.objectName(victim.SHA256), data, nil); err != nil {
		t.Fatal(err)
	}
	b := newNode(t, "orders")
	fresh := b.store(t, "orders")
	_, err = tg.Fetch(ctx, fresh, m.ID)
	if !errors.Is(err, store.ErrBadBackup) || !strings.Contains(err.Error(), victim.Name) {
		t.Fatalf("fetch of a corrupted object: %v; want ErrBadBackup naming %s", err, victim.Name)
	}
	if _, err := fresh.LookupBackup(m.ID); err == nil {
		t.Fatal("a backup with a corrupted object was published locally")
	}
	// Cut short: fewer ranges than the manifest's size needs.
	if victim.Size <= 2*tg.rangeSize {
		t.Fatalf("victim %s has %d bytes; the test needs more than two ranges", victim.Name, victim.Size)
	}
	if err := tg.bucket.WriteAll(ctx, tg.objectName(victim.SHA256), data[:len(data)/2], nil); err != nil {
		t.Fatal(err)
	}
	_, err = tg.Fetch(ctx, fresh, m.ID)
	if !errors.Is(err, store.ErrBadBackup) || !strings.Contains(err.Error(), victim.Name) {
		t.Fatalf("fetch of a truncated object: %v; want ErrBadBackup naming %s", err, victim.Name)
	}
	// The manifest of one backup stored under another's name.
	b2 := backup(t, orders)
	if _, err := tg.Upload(ctx, orders, b2, nil); err != nil {
		t.Fatal(err)
	}
	raw, _ := tg.bucket.ReadAll(ctx, manifestKey("orders", m.ID))
	if err := tg.bucket.WriteAll(ctx, manifestKey("orders", b2.ID), raw, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := tg.Manifest(ctx, "orders", b2.ID); !errors.Is(err, store.ErrBadBackup) || !strings.Contains(err.Error(), "names backup "+m.ID) {
		t.Fatalf("a manifest under another backup's name: %v", err)
	}
	if _, err := tg.Fetch(ctx, fresh, "20260101T000000.000Z-abcdef"); !errors.Is(err, ErrNoBackup) {
		t.Fatalf("fetch of a backup the target lacks: %v, want ErrNoBackup", err)
	}
}

// Two stores share the target's objects area; each store's index and
// manifests are its own, and a store's backup never names the other's.
func TestStoresShareATarget(t *testing.T) {
	ctx := context.Background()
	tg := open(t, "file://"+t.TempDir())
	a := newNode(t, "orders", "users")
	for _, name := range []string{"orders", "users"} {
		s := a.store(t, name)
		write(t, s, 0, 300)
		if _, err := tg.Upload(ctx, s, backup(t, s), nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"orders", "users"} {
		entries, err := tg.Backups(ctx, name)
		if err != nil || len(entries) != 1 {
			t.Fatalf("%s: %+v, %v", name, entries, err)
		}
		m, err := tg.Manifest(ctx, name, entries[0].ID)
		if err != nil || m.Store != name {
			t.Fatalf("%s: manifest of store %q, %v", name, m.Store, err)
		}
		if n := restoreElsewhere(t, tg, name, m.ID); n != 300 {
			t.Fatalf("%s restored: %d keys", name, n)
		}
	}
}

func TestParseSpec(t *testing.T) {
	for spec, ok := range map[string]bool{
		"offsite=s3://bucket?region=eu-west-1": true,
		"local=file:///srv/backups":            true,
		"nourl":                                false,
		"Bad=file:///x":                        false,
		"gcs=gs://bucket":                      true,
		"azure=azblob://container":             true,
		"x=ftp://host/path":                    false,
	} {
		_, _, err := ParseSpec(spec)
		if (err == nil) != ok {
			t.Errorf("%s: %v", spec, err)
		}
	}
}

// countingLimiter records what an upload waited for.
type countingLimiter struct {
	waited atomic.Int64
	calls  atomic.Int64
}

func (c *countingLimiter) WaitN(_ context.Context, n int) error {
	if n > c.Burst() {
		return fmt.Errorf("WaitN(%d) above the burst", n)
	}
	c.waited.Add(int64(n))
	c.calls.Add(1)
	return nil
}

func (c *countingLimiter) Burst() int { return 4096 }

// With a limit, every byte sent waits for the limiter, never more than a
// burst at a time.
func TestUploadIsPaced(t *testing.T) {
	ctx := context.Background()
	tg := open(t, "file://"+t.TempDir())
	lim := &countingLimiter{}
	tg.Limit = lim
	a := newNode(t, "orders")
	orders := a.store(t, "orders")
	write(t, orders, 0, 1000)
	m := backup(t, orders)
	up, err := tg.Upload(ctx, orders, m, nil)
	if err != nil {
		t.Fatal(err)
	}
	if lim.waited.Load() != up.Bytes || lim.calls.Load() < up.Bytes/4096 {
		t.Fatalf("waited for %d bytes in %d calls; the upload sent %d", lim.waited.Load(), lim.calls.Load(), up.Bytes)
	}
}

// uploadedOnce is a file target in dir holding the first backup (500
// keys) of a new store orders, uploaded.
func uploadedOnce(t *testing.T, dir string) (*Target, *store.Store, store.BackupManifest) {
	t.Helper()
	tg := open(t, "file://"+dir)
	orders := newNode(t, "orders").store(t, "orders")
	write(t, orders, 0, 500)
	m1 := backup(t, orders)
	if _, err := tg.Upload(context.Background(), orders, m1, nil); err != nil {
		t.Fatal(err)
	}
	return tg, orders, m1
}

// A torn index generation (a server that writes objects in place, killed
// mid-write; make chaos met one on s3rver) is stepped over: the store's
// backups are the newest whole generation's, and the next upload goes on
// after the torn one.
func TestTornIndexGeneration(t *testing.T) {
	ctx := context.Background()
	tg, orders, m1 := uploadedOnce(t, t.TempDir())
	if err := tg.bucket.WriteAll(ctx, indexKey("orders", 2), []byte(`{"store":"orders","generation":2,"backups":[{"id":`), nil); err != nil {
		t.Fatal(err)
	}
	if entries, err := tg.Backups(ctx, "orders"); err != nil || len(entries) != 1 || entries[0].ID != m1.ID {
		t.Fatalf("backups past a torn generation: %+v, %v; want %s", entries, err, m1.ID)
	}
	write(t, orders, 500, 600)
	m2 := backup(t, orders)
	if _, err := tg.Upload(ctx, orders, m2, nil); err != nil {
		t.Fatalf("an upload after a torn generation: %v", err)
	}
	entries, err := tg.Backups(ctx, "orders")
	if err != nil || len(entries) != 2 || entries[0].ID != m2.ID {
		t.Fatalf("backups: %+v, %v; want %s then %s", entries, err, m2.ID, m1.ID)
	}
	if ok, _ := tg.bucket.Exists(ctx, indexKey("orders", 3)); !ok {
		t.Fatal("the upload did not write the generation after the torn one")
	}
	if n := restoreElsewhere(t, tg, "orders", m2.ID); n != 600 {
		t.Fatalf("restored %d keys, want 600", n)
	}
}

// A hint the target cannot read (s3rver, killed while writing it, left
// it answering 500 to every GET; make chaos met it) only costs the
// steps it would have saved: the backups are listed from generation 1
// up, and the next upload goes on after the newest generation and
// writes the hint again, which heals it.
func TestUnreadableIndexHint(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	tg, orders, m1 := uploadedOnce(t, dir)
	// The file target keeps an object's metadata beside it, as s3rver
	// does: emptied, as s3rver's was, every read of the hint fails with
	// an error that is not "not found".
	attrs := filepath.Join(dir, filepath.FromSlash(hintKey("orders"))) + ".attrs"
	if err := os.WriteFile(attrs, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := tg.bucket.ReadAll(ctx, hintKey("orders")); err == nil || notFound(err) {
		t.Fatalf("the test's hint reads as %v; want an error other than not found", err)
	}
	if entries, err := tg.Backups(ctx, "orders"); err != nil || len(entries) != 1 || entries[0].ID != m1.ID {
		t.Fatalf("backups with an unreadable hint: %+v, %v; want %s", entries, err, m1.ID)
	}
	write(t, orders, 500, 600)
	m2 := backup(t, orders)
	if _, err := tg.Upload(ctx, orders, m2, nil); err != nil {
		t.Fatalf("an upload after an unreadable hint: %v", err)
	}
	if entries, err := tg.Backups(ctx, "orders"); err != nil || len(entries) != 2 || entries[0].ID != m2.ID {
		t.Fatalf("backups: %+v, %v; want %s then %s", entries, err, m2.ID, m1.ID)
	}
	if _, err := tg.bucket.ReadAll(ctx, hintKey("orders")); err != nil {
		t.Fatalf("the hint after the upload: %v", err)
	}
}

// An index generation the target cannot read (s3rver, killed while
// writing it, answers 500 to every HEAD and GET of it: make chaos met it)
// is stepped over as a torn one: its backup's upload did not complete for
// its uploader, which sends it again, and the next generation goes on
// after it. A target that answers nothing still fails.
func TestUnreadableIndexGeneration(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	tg, orders, m1 := uploadedOnce(t, dir)
	write(t, orders, 500, 600)
	m2 := backup(t, orders)
	if _, err := tg.Upload(ctx, orders, m2, nil); err != nil {
		t.Fatal(err)
	}
	// Generation 2's metadata emptied, as s3rver's was; no hint, so the
	// reader finds it by probing forward from generation 0.
	attrs := filepath.Join(dir, filepath.FromSlash(indexKey("orders", 2))) + ".attrs"
	if err := os.WriteFile(attrs, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := tg.bucket.Exists(ctx, indexKey("orders", 2)); err == nil || notFound(err) {
		t.Fatalf("the test's generation 2 probes as %v; want an error other than not found", err)
	}
	if err := tg.bucket.Delete(ctx, hintKey("orders")); err != nil {
		t.Fatal(err)
	}
	if entries, err := tg.Backups(ctx, "orders"); err != nil || len(entries) != 1 || entries[0].ID != m1.ID {
		t.Fatalf("backups with generation 2 unreadable: %+v, %v; want %s", entries, err, m1.ID)
	}
	if _, err := tg.Upload(ctx, orders, m2, nil); err != nil {
		t.Fatalf("m2 sent again after its generation became unreadable: %v", err)
	}
	if entries, err := tg.Backups(ctx, "orders"); err != nil || len(entries) != 2 || entries[0].ID != m2.ID {
		t.Fatalf("backups: %+v, %v; want %s then %s", entries, err, m2.ID, m1.ID)
	}

	// A target that answers nothing (its directory gone) is an error, not
	// a store with no backups.
	if err := os.Rename(dir, dir+".away"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if entries, err := tg.Backups(ctx, "orders"); err == nil {
		t.Fatalf("backups from a target that answers nothing: %+v, want an error", entries)
	}
}

// An object cut off on the target (a server that writes objects in place,
// killed mid-write: make chaos found an empty sstable object on s3rver)
// does not count as uploaded: the next upload that needs it sends it
// again, over it, and the backup restores.
func TestTornObjectIsSentAgain(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	tg, orders, m1 := uploadedOnce(t, dir)
	var f store.BackupFile
	for _, x := range m1.Files {
		if x.Shared && x.Size > f.Size {
			f = x
		}
	}
	if err := os.Truncate(filepath.Join(dir, "objects", f.SHA256), 0); err != nil {
		t.Fatal(err)
	}
	write(t, orders, 500, 600)
	m2 := backup(t, orders)
	up, err := tg.Upload(ctx, orders, m2, nil)
	if err != nil || up.Objects == 0 {
		t.Fatalf("upload: %+v, %v", up, err)
	}
	if st, err := os.Stat(filepath.Join(dir, "objects", f.SHA256)); err != nil || st.Size() != f.Size {
		t.Fatalf("the cut-off object %s was not sent again: %v %v", f.Name, st, err)
	}
	if n := restoreElsewhere(t, tg, "orders", m2.ID); n != 600 {
		t.Fatalf("restored %d keys, want 600", n)
	}
}

// A file whose read fails mid-way is not published as an object, on a
// driver that writes through a temporary file and commits it on Close
// (fileblob; gocloud's Upload closes the writer after a failed read, and
// only a canceled context makes that Close abandon the write).
func TestFailedReadPublishesNothing(t *testing.T) {
	ctx := context.Background()
	tg := open(t, "file://"+t.TempDir())
	tg.Parallel = 1
	orders := newNode(t, "orders").store(t, "orders")
	write(t, orders, 0, 500)
	m := backup(t, orders)
	src := &failingSource{Source: orders}
	src.midway.Store(1)
	if _, err := tg.Upload(ctx, src, m, nil); err == nil {
		t.Fatal("an upload whose first read failed succeeded")
	}
	if ok, err := tg.bucket.Exists(ctx, tg.objectName(m.Files[0].SHA256)); err != nil || ok {
		t.Fatalf("the object whose read failed was published (%v, %v)", ok, err)
	}
}
