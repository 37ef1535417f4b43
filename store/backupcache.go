package store

import (
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// backupCache keeps what Backups read of each backup, so that listing a
// store's backups costs a directory read and one stat per backup instead
// of opening, reading and decoding two files per backup: the listing is
// part of the status every job's end and every heartbeat publish. For
// seven backups: about 60 µs listed, 0.5 ms read (BenchmarkBackups).
//
// A backup's manifest never changes once the backup is published. Its
// status (verified, bad) is written by the store's owner, this process,
// through writeBackupStatus, which forgets the entry; a status file
// changed or removed by anyone else is seen by its stat (size, time). A
// backup missing from the directory is forgotten at the next listing.
// gen makes a listing that read a status just before this process wrote
// it keep nothing it read: on a file system with coarse times, the new
// file could carry the old one's stamp.
type backupCache struct {
	mu    sync.Mutex
	gen   uint64
	infos map[string]cachedBackup
}

type cachedBackup struct {
	info   BackupInfo
	status fileStamp // of the status file when info was read
}

// fileStamp tells whether a file changed: absent, or its size and time.
type fileStamp struct {
	exists bool
	size   int64
	mod    time.Time
}

func stampOf(fs vfs.FS, path string) fileStamp {
	fi, err := fs.Stat(path)
	if err != nil {
		return fileStamp{}
	}
	return fileStamp{exists: true, size: fi.Size(), mod: fi.ModTime()}
}

// get returns the cached listing of id if its status file is still as
// stamped, and the generation to put a fresh read under.
func (c *backupCache) get(id string, status fileStamp) (BackupInfo, uint64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.infos[id]
	if !ok || e.status != status {
		return BackupInfo{}, c.gen, false
	}
	info := e.info
	info.Files = slices.Clone(info.Files) // the caller's to change
	return info, c.gen, true
}

// put keeps info for id, read when its status file was as stamped,
// unless a status was written since gen.
func (c *backupCache) put(id string, info BackupInfo, status fileStamp, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		return
	}
	if c.infos == nil {
		c.infos = map[string]cachedBackup{}
	}
	info.Files = slices.Clone(info.Files)
	c.infos[id] = cachedBackup{info: info, status: status}
}

// forget drops id: its status is being written.
func (c *backupCache) forget(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	delete(c.infos, id)
}

// keepOnly drops every backup not in ids (the directory's listing).
func (c *backupCache) keepOnly(ids []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id := range maps.Keys(c.infos) {
		if !slices.Contains(ids, id) {
			delete(c.infos, id)
		}
	}
}

// writeBackupStatus writes a backup's status and forgets its cached
// listing, before and after the write (a listing between the two reads
// the file, old or new, and keeps nothing).
func (s *Store) writeBackupStatus(paths backupPaths, id string, st backupStatus) error {
	s.listed.forget(id)
	defer s.listed.forget(id)
	return writeJSONAtomic(s.reg.backupFS, paths.status(id), st)
}

// listBackup is backupInfo through the cache.
func (s *Store) listBackup(paths backupPaths, id string) (BackupInfo, error) {
	status := stampOf(s.reg.backupFS, paths.status(id))
	info, gen, ok := s.listed.get(id, status)
	if ok {
		return info, nil
	}
	info, err := s.backupInfo(paths, id)
	if err == nil {
		s.listed.put(id, info, status, gen)
	}
	return info, err
}
