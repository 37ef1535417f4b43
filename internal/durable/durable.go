// Package durable writes files so that they survive a crash: synced
// before they are relied on, and replaced whole, never torn. The store
// and the shipper both write their records through it.
package durable

import (
	"fmt"
	"path/filepath"
	"slices"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// WriteFileSync creates path on fs with b and syncs it.
func WriteFileSync(fs vfs.FS, path string, b []byte) error {
	return writeFileSync(fs, path, b, nil)
}

func writeFileSync(fs vfs.FS, path string, b []byte, created func()) error {
	f, err := fs.Create(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		return err
	}
	if created != nil {
		created()
	}
	if fs != vfs.Default {
		b = slices.Clone(b) // a vfs.File's Write may modify its input (the OS's does not)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// SyncDir makes a directory's entries (creations, renames) durable.
func SyncDir(fs vfs.FS, dir string) error {
	d, err := fs.OpenDir(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	return nil
}

// WriteAtomic replaces path with b through a synced temporary file
// (path + ".tmp") and a rename, so a crash leaves the old content or the
// new, never a torn file. An error before the rename leaves the old
// content and removes the temporary file (a full disk is not left
// fuller). The directory is not synced: a caller whose rename must
// survive a crash uses Replace, or syncs it itself.
func WriteAtomic(fs vfs.FS, path string, b []byte) error {
	return writeAtomic(fs, path, b, nil)
}

func writeAtomic(fs vfs.FS, path string, b []byte, created func()) error {
	err := writeFileSync(fs, path+".tmp", b, created)
	if err == nil {
		err = fs.Rename(path+".tmp", path)
	}
	if err != nil {
		_ = fs.Remove(path + ".tmp") // gone already if its creation failed
	}
	return err
}

// Replace replaces dir/name with b durably: WriteAtomic, then dir is
// synced so that the rename survives a crash. created, when not nil,
// runs once the temporary file exists, before anything is written to it
// (a crash point for tests).
func Replace(fs vfs.FS, dir, name string, b []byte, created func()) error {
	if err := writeAtomic(fs, filepath.Join(dir, name), b, created); err != nil {
		return err
	}
	return SyncDir(fs, dir)
}
