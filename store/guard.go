package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"storekeeper/internal/durable"
)

// guard protects a store from a torn MANIFEST. Pebble v2.1.7 opens a
// MANIFEST that lost its tail without error, rolled back to an older
// version, and a read-write open then deletes the sstables the lost tail
// referenced. So the store keeps, under .storekeeper/guard/, the set of
// sstables its live version references and the highest table number it
// has seen, updated on every flush, compaction and ingest (the events fire
// after Pebble installs the new version). Before any read-write open the
// store is opened read-only (Store.inspect) and the guard compares:
//
//   - every recorded table is still referenced: fine;
//   - some are not, but the version holds a table newer than any recorded:
//     fine, Pebble moved on after the last record (a crash between its
//     MANIFEST write and ours);
//   - some are not and nothing is newer: the MANIFEST went back in time.
//     That is corruption; the store is not opened read-write, so no file
//     is deleted.
type guard struct {
	path string

	mu  sync.Mutex
	rec guardRecord
}

type guardRecord struct {
	Tables []uint64 `json:"tables"` // sorted table numbers of the live version
	High   uint64   `json:"high"`   // highest table number ever seen
}

// check compares view, the sorted table numbers of the version a
// read-only open of the store found (Store.inspect), with rec, the record
// load returned. It returns a CorruptionError naming manifest for a
// rollback, and nil when the store is safe to open read-write (or has no
// record yet).
func (g *guard) check(name string, rec *guardRecord, view []uint64, manifest string) error {
	if rec == nil {
		return nil
	}
	var missing []uint64
	for _, t := range rec.Tables {
		if _, ok := slices.BinarySearch(view, t); !ok {
			missing = append(missing, t)
		}
	}
	if len(missing) == 0 || (len(view) > 0 && view[len(view)-1] > rec.High) {
		return nil
	}
	return &CorruptionError{
		Store: name,
		File:  manifest,
		Err: fmt.Errorf("MANIFEST rolled back: %d of %d recorded sstables are no longer referenced (first %06d.sst) and none is newer",
			len(missing), len(rec.Tables), missing[0]),
	}
}

// reset records the live version of a freshly opened database.
func (g *guard) reset(db *pebble.DB) error {
	tables, err := liveTables(db)
	if err != nil {
		return err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.rec.Tables = tables
	if n := len(tables); n > 0 && tables[n-1] > g.rec.High {
		g.rec.High = tables[n-1]
	}
	return g.saveLocked()
}

// apply records a version change: removed tables leave, added ones join.
// A record that cannot be written leaves the old one, which only makes the
// next check more lenient (see check), never a false alarm.
func (g *guard) apply(removed, added []pebble.TableInfo) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, t := range removed {
		if i, ok := slices.BinarySearch(g.rec.Tables, uint64(t.FileNum)); ok {
			g.rec.Tables = slices.Delete(g.rec.Tables, i, i+1)
		}
	}
	for _, t := range added {
		n := uint64(t.FileNum)
		if i, ok := slices.BinarySearch(g.rec.Tables, n); !ok {
			g.rec.Tables = slices.Insert(g.rec.Tables, i, n)
		}
		g.rec.High = max(g.rec.High, n)
	}
	return g.saveLocked()
}

func (g *guard) load() (*guardRecord, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	b, err := os.ReadFile(g.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read guard record: %w", err)
	}
	var rec guardRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("decode guard record %s: %w", g.path, err)
	}
	slices.Sort(rec.Tables)
	g.rec = rec
	return &rec, nil
}

func (g *guard) saveLocked() error {
	b, err := json.Marshal(g.rec)
	if err != nil {
		return err
	}
	// The directory is not synced: the guard is rewritten on every flush
	// and compaction.
	return durable.WriteAtomic(vfs.Default, g.path, b)
}

func liveTables(db *pebble.DB) ([]uint64, error) {
	levels, err := db.SSTables()
	if err != nil {
		return nil, err
	}
	var out []uint64
	for _, level := range levels {
		for _, t := range level {
			out = append(out, uint64(t.FileNum))
		}
	}
	slices.Sort(out)
	return out, nil
}
