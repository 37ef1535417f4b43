package worker

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"time"

	"storekeeper/internal/keyspace"
	"storekeeper/jobs"
	"storekeeper/jobsdb"
	"storekeeper/store"
)

// backupFilesRefresh is how long this node trusts file lists it published
// (jobsdb.PublishBackupFiles) to still be in Redis: after it, the next
// publish of the store's status sends them again, in case Redis lost them
// (a failover to a replica that missed the write, data restored from an
// older snapshot).
const backupFilesRefresh = 10 * time.Minute

// publishedFiles remembers, per store, the file lists this node last
// published: under which claim (fencing token), for which backups, and
// when. A store's status leaves its backups' file lists out, and they are
// published apart only when due: the backups changed (a backup, its
// pruning, an adoption), the claim changed, or backupFilesRefresh passed.
// A backup's files never change once it is published, so its id stands
// for them.
type publishedFiles struct {
	mu sync.Mutex
	m  map[string]filesMark
}

type filesMark struct {
	token int64
	ids   string // the backups' ids, newest first, joined by ','
	at    time.Time
}

// filesUpdate is a store's file lists to publish, and the mark that
// records them once they are.
type filesUpdate struct {
	store string
	mark  filesMark
	js    string // jobs.BackupFileLists
}

// split takes the file lists out of store's backups (bs, about to be
// published in its status under token at now: each backup's Files is
// set to nil) and returns them as an update when they are due, nil
// otherwise: only then are they converted and encoded.
func (b *publishedFiles) split(store string, token int64, bs []store.BackupInfo, now time.Time) *filesUpdate {
	ids := make([]string, len(bs))
	for i := range bs {
		ids[i] = bs[i].ID
	}
	m := filesMark{token: token, ids: strings.Join(ids, ","), at: now}
	b.mu.Lock()
	old, ok := b.m[store]
	b.mu.Unlock()
	due := !ok || old.token != m.token || old.ids != m.ids || now.Sub(old.at) >= backupFilesRefresh
	var lists jobs.BackupFileLists
	if due {
		lists = make(jobs.BackupFileLists, len(bs))
	}
	for i := range bs {
		if due {
			lists[bs[i].ID] = backupFiles(bs[i].Files)
		}
		bs[i].Files = nil
	}
	if !due {
		return nil
	}
	js, _ := json.Marshal(lists)
	return &filesUpdate{store: store, mark: m, js: string(js)}
}

// published records u (nil: nothing) as written to Redis.
func (b *publishedFiles) published(u *filesUpdate) {
	if u == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.m == nil {
		b.m = map[string]filesMark{}
	}
	b.m[u.store] = u.mark
}

// publishFiles publishes u under lease on its own, as a status publish
// that could not carry it (the heartbeat's) is followed.
func (w *Worker) publishFiles(ctx context.Context, lease *keyspace.LeaseCheck, u *filesUpdate) {
	ok, err := jobsdb.PublishBackupFiles(ctx, w.rdb, u.store, lease.Value, u.js)
	switch {
	case err != nil:
		w.log.Warn("publishing backup file lists failed", "store", u.store, "err", err)
	case !ok:
		w.checkLease(ctx, u.store)
	default:
		w.files.published(u)
	}
}
