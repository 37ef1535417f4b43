package chaos

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"storekeeper/jobs"
	"storekeeper/offsite"
	"storekeeper/store"
)

// The off-site invariant: every backup the target lists is restorable
// from it. After the nodes stopped, the newest backups of each store on
// the target are fetched into a scratch node of their own (its own data
// and backup directories, as on a machine that never held the store),
// every object checked against its hash, and restored (Pebble opens it).
func (k *checker) offsiteRestorable(perStore int, refusals []refusal) *invariant {
	iv := &invariant{Name: "every backup on the target restores elsewhere; a damaged object is refused and named"}
	named := 0
	for _, r := range refusals {
		if r.err == nil || !strings.Contains(r.err.Error(), r.file) {
			iv.failf("%s: backup %s with object %s (%s) damaged: the restore said %v; want a refusal naming %s", r.store, r.backup, r.object, r.file, r.err, r.file)
			continue
		}
		named++
	}
	t, err := offsite.Open(k.ctx, "vault", k.c.targetURL(), nil)
	if err != nil {
		iv.failf("open the target: %v", err)
		return iv
	}
	defer t.Close()
	restored, listed := 0, 0
	for _, n := range k.c.nodes {
		for _, name := range n.stores {
			entries, err := t.Backups(k.ctx, name)
			if err != nil {
				iv.failf("%s: index: %v", name, err)
				continue
			}
			listed += len(entries)
			for _, e := range entries[:min(perStore, len(entries))] {
				if err := restoreElsewhere(k.ctx, t, name, e.ID); err != nil {
					iv.failf("%s: backup %s: %v", name, e.ID, err)
					continue
				}
				restored++
			}
		}
	}
	iv.Note = fmt.Sprintf("%d backups listed on the target, the newest %d of each store restored: %d; %d damaged objects refused and named, of %d",
		listed, perStore, restored, named, len(refusals))
	return iv
}

// restoreElsewhere fetches backup id of a store into a scratch node and
// restores it there.
func restoreElsewhere(ctx context.Context, t *offsite.Target, name, id string) error {
	dir, err := os.MkdirTemp("", "chaos-restore-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	reg, err := store.Open(store.Config{DataDir: filepath.Join(dir, "data"), BackupDir: filepath.Join(dir, "backups"), Stores: []string{name},
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	defer reg.Close()
	s, err := reg.Store(name)
	if err != nil {
		return err
	}
	if _, err := t.Fetch(ctx, s, id); err != nil {
		return err
	}
	_, err = s.Restore(ctx, id)
	return err
}

// targetDown takes the target away for a few seconds (s3rver killed,
// then started again on its data; a file:// target's directory replaced
// by a plain file, so nothing can be written under it): backups must
// succeed all the same and the next ones catch the target up.
func (f *faults) targetDown(ctx context.Context, ft *fault) error {
	ft.Target = "vault"
	if s := f.c.s3; s != nil {
		return f.outage(ctx, ft, func() error {
			_, err := s.signal(syscall.SIGKILL)
			return err
		}, func() error {
			if err := waitFor(ctx, 10*time.Second, "s3rver exiting", func() error {
				if s.running() {
					return errors.New("still running")
				}
				return nil
			}); err != nil {
				return err
			}
			return s.start()
		}, 2*time.Second, 10*time.Second)
	}
	dir := f.c.vault()
	away := dir + ".away"
	if err := os.Rename(dir, away); err != nil {
		ft.Healed = time.Now()
		return err
	}
	if err := os.WriteFile(dir, []byte("the target is down\n"), 0o644); err != nil {
		_ = os.Rename(away, dir)
		ft.Healed = time.Now()
		return err
	}
	hold(ctx, f.dur(2*time.Second, 10*time.Second))
	ft.Healed = time.Now()
	if err := os.Remove(dir); err != nil {
		return err
	}
	if err := os.Rename(away, dir); err != nil {
		return err
	}
	ft.Recovered = 0
	return nil
}

// drillsPass asks, once the faults have stopped and the cluster has
// converged, for a drill of every store from the target through the API,
// and wants each to succeed within timeout: every store is proven
// restorable by the system's own drill, not only by the harness.
func (k *checker) drillsPass(timeout time.Duration) *invariant {
	iv := &invariant{Name: "a drill of every store passes once the faults stop"}
	ids := map[string]string{}
	for _, n := range k.c.nodes {
		for _, name := range n.stores {
			id, status := k.l.enqueue(k.ctx, jobs.KindDrill, name, map[string]any{"target": "vault"})
			if id == "" {
				iv.failf("%s: drill not accepted: %d", name, status)
				continue
			}
			ids[name] = id
		}
	}
	passed := 0
	deadline := time.Now().Add(timeout)
	for name, id := range ids {
		r, err := k.awaitJob(id, deadline)
		switch {
		case err != nil:
			iv.failf("%s: %v", name, err)
		case r.State != jobs.StateSucceeded:
			iv.failf("%s: drill %s %s: %+v", name, id, r.State, r.Errors)
		default:
			passed++
		}
	}
	iv.Note = fmt.Sprintf("%d stores drilled from the target, %d passed", len(ids), passed)
	return iv
}

// awaitJob polls the API for job id until it is terminal, until deadline
// (at least a second).
func (k *checker) awaitJob(id string, deadline time.Time) (jobs.Record, error) {
	var r jobs.Record
	err := waitFor(k.ctx, max(time.Until(deadline), time.Second), "job "+id, func() error {
		if err := k.getJSON("/api/jobs/"+id, &r); err != nil {
			return err
		}
		if !r.State.Terminal() {
			return fmt.Errorf("%s", r.State)
		}
		return nil
	})
	return r, err
}

// targetHang stops s3rver (SIGSTOP; inject calls it only with s3rver) for a few seconds: uploads, fetches
// and drills in flight hang, then go on or time out and are retried.
func (f *faults) targetHang(ctx context.Context, ft *fault) error {
	s := f.c.s3
	ft.Target = "vault"
	return f.outage(ctx, ft, func() error {
		_, err := s.signal(syscall.SIGSTOP)
		return err
	}, func() error {
		_, err := s.signal(syscall.SIGCONT)
		return err
	}, time.Second, 6*time.Second)
}

// refusal is what a restore from the target said of a backup one of whose
// objects the target-corrupt fault had damaged.
type refusal struct {
	store, backup, object, file string
	err                         error
}

// targetCorrupt flips a byte in one object of a store's newest backup on
// the target (in s3rver's files), restores that backup on a scratch node,
// which must refuse it and name the file, keeps the damage a few seconds
// (the nodes' drills and restores meet it), then puts the byte back.
func (f *faults) targetCorrupt(ctx context.Context, ft *fault) error {
	s := f.c.s3
	ft.Target = "vault"
	ft.Healed = time.Now()
	t, err := offsite.Open(ctx, "vault", f.c.targetURL(), nil)
	if err != nil {
		return err
	}
	defer t.Close()
	stores := f.c.stores()
	names := make([]string, 0, len(stores))
	for n := range stores {
		names = append(names, n)
	}
	sort.Strings(names)
	name := names[f.rng.IntN(len(names))]
	entries, err := t.Backups(ctx, name)
	if err != nil || len(entries) == 0 {
		return fmt.Errorf("%s: no backup on the target yet (%v)", name, err)
	}
	m, err := t.Manifest(ctx, name, entries[0].ID)
	if err != nil {
		return err
	}
	var file store.BackupFile
	for _, fl := range m.Files {
		if fl.Size > 0 && (file.Size == 0 || f.rng.IntN(2) == 0) {
			file = fl
		}
	}
	path := s.objectPath("objects/" + file.SHA256)
	orig, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	bad := slices.Clone(orig)
	bad[len(bad)/2] ^= 0x5a
	if err := os.WriteFile(path, bad, 0o644); err != nil {
		return err
	}
	ft.Target = name + " " + file.Name
	// The check outlives the run's ctx, as healing does: a fault drawn
	// just before the faults stop had its restore cut off by the run's
	// end, and that cut-off read as a restore that named nothing.
	check, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	rerr := restoreElsewhere(check, t, name, m.ID)
	cancel()
	f.mu.Lock()
	f.refusals = append(f.refusals, refusal{store: name, backup: m.ID, object: file.SHA256, file: file.Name, err: rerr})
	f.mu.Unlock()
	hold(ctx, f.dur(time.Second, 5*time.Second))
	ft.Healed = time.Now()
	// Only this fault writes the file; a node's upload of the same object
	// finds it there and leaves it.
	if err := os.WriteFile(path, orig, 0o644); err != nil {
		return err
	}
	ft.Note = fmt.Sprintf("backup %s, restore said: %v", m.ID, rerr)
	return nil
}
