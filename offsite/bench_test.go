package offsite

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"filippo.io/age"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/s3/transfermanager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/cockroachdb/pebble/v2"
	"golang.org/x/sync/errgroup"

	"storekeeper/internal/s3test"
	"storekeeper/store"
)

// The upload of a full backup to an S3 server on loopback (gofakes3),
// side by side with the raw baseline: the AWS SDK's transfer manager
// uploading the same files to the same server with the same client and
// parallelism. STOREKEEPER_BENCH_MIB sets the store's size (default 150).
//
//	go test ./offsite -run '^$' -bench Upload -benchtime 3x
func BenchmarkUpload(b *testing.B) {
	mib := 150
	if v, err := strconv.Atoi(os.Getenv("STOREKEEPER_BENCH_MIB")); err == nil && v > 0 {
		mib = v
	}
	srv := s3test.Start(b)
	node := newNode(b, "orders")
	s := node.store(b, "orders")
	val := make([]byte, 1<<20)
	for i := range mib {
		_, _ = rand.Read(val)
		if err := s.Set(fmt.Appendf(nil, "k%06d", i), val); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := s.Compact(context.Background(), store.CompactOptions{Force: true}); err != nil {
		b.Fatal(err)
	}
	res, err := s.Backup(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	m := res.Backup.BackupManifest
	ctx := context.Background()
	id, _ := age.GenerateX25519Identity()
	enc := &Encryption{Recipients: []age.Recipient{id.Recipient()}, NamingKey: make([]byte, 32)}
	run := 0
	prefix := func() string { run++; return fmt.Sprintf("run%d/", run) }

	b.Run("raw-transfermanager", func(b *testing.B) {
		tg := open(b, srv.URL(""))
		var client *s3.Client
		if !tg.bucket.As(&client) {
			b.Fatal("no *s3.Client behind the bucket")
		}
		tm := transfermanager.New(client)
		b.SetBytes(m.Bytes)
		for b.Loop() {
			p := prefix()
			sem := make(chan struct{}, tg.Parallel)
			errs := make(chan error, len(m.Files))
			for _, f := range m.Files {
				sem <- struct{}{}
				go func() {
					defer func() { <-sem }()
					r, err := s.OpenBackupFile(m.ID, f.Name)
					if err == nil {
						_, err = tm.UploadObject(ctx, &transfermanager.UploadObjectInput{Bucket: aws.String(srv.Bucket), Key: aws.String(p + f.SHA256), Body: r})
						r.Close()
					}
					errs <- err
				}()
			}
			for range m.Files {
				if err := <-errs; err != nil {
					b.Fatal(err)
				}
			}
		}
	})
	for _, c := range []struct {
		name string
		enc  *Encryption
	}{{"offsite", nil}, {"offsite-encrypted", enc}} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(m.Bytes)
			for b.Loop() {
				tg, err := Open(ctx, "bench", srv.URL(prefix()), c.enc)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := tg.Upload(ctx, s, m, nil); err != nil {
					b.Fatal(err)
				}
				tg.Close()
			}
		})
	}
}

// The fixed cost of an upload that sends nothing (every object is there):
// the HEADs, the manifest, the index.
func BenchmarkUploadNothingNew(b *testing.B) {
	srv := s3test.Start(b)
	node := newNode(b, "orders")
	s := node.store(b, "orders")
	write(b, s, 0, 10)
	m := backup(b, s)
	tg := open(b, srv.URL(""))
	if _, err := tg.Upload(context.Background(), s, m, nil); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := tg.Upload(context.Background(), s, m, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// A restore from the S3 server onto a node that never held the store
// (the manifest, then every object straight into the restore's staged
// copy, hash-checked, then the crash-safe swap), side by side with the raw
// baseline: the AWS SDK downloading the same objects, 4
// at a time, each file fsynced, then a Pebble open.
//
//	go test ./offsite -run '^$' -bench RestoreFromTarget -benchtime 3x
func BenchmarkRestoreFromTarget(b *testing.B) {
	mib := 150
	if v, err := strconv.Atoi(os.Getenv("STOREKEEPER_BENCH_MIB")); err == nil && v > 0 {
		mib = v
	}
	srv := s3test.Start(b)
	ctx := context.Background()
	src := newNode(b, "orders").store(b, "orders")
	val := make([]byte, 1<<20)
	for i := range mib {
		_, _ = rand.Read(val)
		if err := src.Set(fmt.Appendf(nil, "k%06d", i), val); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := src.Compact(ctx, store.CompactOptions{Force: true}); err != nil {
		b.Fatal(err)
	}
	m := backup(b, src)
	tg := open(b, srv.URL(""))
	if _, err := tg.Upload(ctx, src, m, nil); err != nil {
		b.Fatal(err)
	}
	var client *s3.Client
	if !tg.bucket.As(&client) {
		b.Fatal("no *s3.Client behind the bucket")
	}

	b.Run("raw-sdk", func(b *testing.B) {
		b.SetBytes(m.Bytes)
		for b.Loop() {
			dir := b.TempDir()
			g, gctx := errgroup.WithContext(ctx)
			g.SetLimit(tg.Parallel)
			for _, f := range m.Files {
				g.Go(func() error {
					out, err := client.GetObject(gctx, &s3.GetObjectInput{Bucket: aws.String(srv.Bucket), Key: aws.String(tg.objectName(f.SHA256))})
					if err != nil {
						return err
					}
					defer out.Body.Close()
					fh, err := os.Create(filepath.Join(dir, f.Name))
					if err != nil {
						return err
					}
					defer fh.Close()
					if _, err := io.Copy(fh, out.Body); err != nil {
						return err
					}
					return fh.Sync()
				})
			}
			if err := g.Wait(); err != nil {
				b.Fatal(err)
			}
			db, err := pebble.Open(dir, &pebble.Options{})
			if err != nil {
				b.Fatal(err)
			}
			db.Close()
		}
	})
	b.Run("offsite", func(b *testing.B) {
		b.SetBytes(m.Bytes)
		for range b.N {
			// The new node and its empty store are there before the
			// restore starts: making them is not restoring.
			b.StopTimer()
			fresh := newNode(b, "orders").store(b, "orders")
			b.StartTimer()
			got, err := tg.Manifest(ctx, "orders", m.ID)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := fresh.RestoreOnceFrom(ctx, "bench", got, tg.OpenObject); err != nil {
				b.Fatal(err)
			}
		}
	})
}
