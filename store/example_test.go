package store_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/cockroachdb/pebble/v2"

	"storekeeper/store"
)

// An application that owns its stores opens them with its own Pebble
// options and reads and writes through handles. Handles never panic: while
// a restore holds a store they answer store.ErrUnavailable, after Close
// store.ErrClosed. To have storekeeper compact, back up, verify and restore
// the stores while the application writes, it runs worker.New with this
// registry in the same process (examples/embed is a complete service).
func Example() {
	dir, err := os.MkdirTemp("", "storekeeper-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	// What the options share must outlive the registry: a restore reopens
	// the store with them.
	cache := pebble.NewCache(8 << 20)
	defer cache.Unref()
	reg, err := store.Open(store.Config{
		DataDir:       filepath.Join(dir, "data"),
		BackupDir:     filepath.Join(dir, "backups"), // not inside DataDir
		Stores:        []string{"orders"},            // created when missing
		PebbleOptions: func(name string) *pebble.Options { return &pebble.Options{Cache: cache} },
		Logger:        slog.New(slog.DiscardHandler),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer reg.Close()

	orders, err := reg.Store("orders")
	if err != nil {
		log.Fatal(err)
	}
	if err := orders.Set([]byte("order/1"), []byte("paid")); err != nil {
		log.Fatal(err)
	}
	// A batch is atomic.
	err = orders.Update(func(b *store.Batch) error {
		if err := b.Set([]byte("order/2"), []byte("shipped")); err != nil {
			return err
		}
		return b.Delete([]byte("order/1"))
	})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := orders.Get([]byte("order/1")); errors.Is(err, store.ErrNotFound) {
		fmt.Println("order/1: not found")
	}
	err = orders.Scan(context.Background(), []byte("order/"), []byte("order0"), func(k, v []byte) error {
		fmt.Printf("%s = %s\n", k, v)
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	// Output:
	// order/1: not found
	// order/2 = shipped
}

// A backup is a verified, content-addressed copy of the store; a restore
// swaps it in atomically and keeps the replaced generation in quarantine.
// Writes made after the backup are gone: BackupAt is the rollback window.
func ExampleStore_Restore() {
	dir, err := os.MkdirTemp("", "storekeeper-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	reg, err := store.Open(store.Config{
		DataDir:   filepath.Join(dir, "data"),
		BackupDir: filepath.Join(dir, "backups"),
		Stores:    []string{"sessions"},
		Logger:    slog.New(slog.DiscardHandler),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer reg.Close()
	sessions, err := reg.Store("sessions")
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()

	if err := sessions.Set([]byte("alice"), []byte("v1")); err != nil {
		log.Fatal(err)
	}
	backup, err := sessions.Backup(ctx)
	if err != nil {
		log.Fatal(err)
	}
	if err := sessions.Set([]byte("alice"), []byte("v2")); err != nil {
		log.Fatal(err)
	}

	res, err := sessions.Restore(ctx, backup.Backup.ID) // "": the newest good backup
	if err != nil {
		log.Fatal(err)
	}
	v, err := sessions.Get([]byte("alice"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("alice =", string(v))
	fmt.Println("rolled back to the backup's time:", res.BackupAt.Equal(backup.Backup.CreatedAt))
	fmt.Println("replaced generation kept:", res.Quarantine != "")
	// Output:
	// alice = v1
	// rolled back to the backup's time: true
	// replaced generation kept: true
}
