package worker

import (
	"context"
	"fmt"
	"slices"
	"time"

	"storekeeper/internal/keyspace"
	"storekeeper/jobs"
	"storekeeper/jobsdb"
)

// Adoption: a store whose machine is gone is made again on this node from
// a backup target. The job runs on the node it names, which has never
// held the store: it reads the backup's manifest (nothing is claimed for
// a backup that is not there), claims the store's lease with
// jobsdb.AdoptLease (only from an owner that is down; the new claim's
// fencing token outranks every effect the old owner may still attempt,
// and the store is pinned to this node), settles the jobs still queued
// for the old owner as store_moved, and creates the store
// (store.Registry.Adopt). The lease is renewed while the backup is
// fetched, before the store is listed; the job's end is fenced by it like
// any other. An attempt that fails before the store is made undoes its
// claim and pin (abandonAdoption).

// adoptJob is the adopt handler; s is nil: the store is not here yet.
func (w *Worker) adoptJob(ctx context.Context, _ Handle, p jobs.Payload) (outcome, error) {
	start := time.Now()
	if p.Params.Node != w.cfg.Node {
		return outcome{}, fmt.Errorf("%w: adopt job for node %s ran on node %s", jobs.ErrBadPayload, p.Params.Node, w.cfg.Node)
	}
	t, err := w.target(p.Params.Target)
	if err != nil {
		return outcome{}, err
	}
	m, err := targetManifest(ctx, t, p.Store, p.Params.BackupID)
	if err != nil {
		return outcome{}, err
	}
	v, prev, err := jobsdb.AdoptLease(ctx, w.rdb, p.Store, w.lease, p.Params.Force, w.cfg.LeaseTTL)
	if err != nil {
		return outcome{}, err
	}
	made := false
	defer func() {
		if !made {
			w.abandonAdoption(context.WithoutCancel(ctx), p.Store, v)
		}
	}()
	if err := jobsdb.ConfirmClaim(ctx, w.rdb, p.Store, v, w.cfg.Jobs.MinReplicas, w.cfg.Jobs.MinReplicasTimeout); err != nil {
		return outcome{}, err
	}
	w.own.adopting(p.Store, v)
	defer func() { w.own.adopted(p.Store, made) }() // before abandonAdoption: the heartbeat stops renewing first
	l, _ := jobs.DecodeLease(v)
	w.log.Warn("adopting a store: its lease is claimed and pinned to this node", "store", p.Store, "previous_owner", prev,
		"token", l.Token, "target", t.Name, "backup", m.ID)
	moved, err := w.jobs.SettleMoved(ctx, p.Store, w.cfg.Node, p.Actor)
	if err != nil {
		return outcome{}, err
	}
	if len(moved) > 0 {
		w.log.Info("jobs queued for the store's old owner settled as store_moved", "store", p.Store, "jobs", moved)
	}
	s, res, err := w.stores.Adopt(ctx, p.Store, p.JobID, m, t.OpenObject)
	if s != nil {
		made = true
		w.publishSoon(p.Store)
	}
	if err != nil {
		return outcome{}, err
	}
	// What the targets hold of the store is known now, not at its first
	// backup here: its status shows each target's lag with the adoption.
	w.learnStoreTargets(ctx, p.Store)
	if check, held := w.own.lease(p.Store); held {
		if err := w.publishStats(ctx, p.Store, check); err != nil {
			w.log.Warn("publishing stats failed", "store", p.Store, "err", err)
		}
	}
	out := jobs.AdoptResult{Replayed: res.Replayed, Target: t.Name, BackupID: res.BackupID, BackupAt: res.BackupAt,
		PreviousNode: prev, Token: l.Token, Moved: moved, Timing: jobs.RestoreTiming(res.Timing), Took: time.Since(start)}
	reason := fmt.Sprintf("adopted from backup %s on %s", res.BackupID, t.Name)
	if prev != "" && prev != w.cfg.Node {
		reason += ", moved from node " + prev
	}
	return outcome{Status: jobs.StatusAdopted, Reason: reason, Result: out, BackupID: res.BackupID, BytesAfter: uint64(m.Bytes)}, nil
}

// abandonAdoption undoes an adoption that made no store (the backup could
// not be fetched, the node is stopping): the lease, the pin and the owner
// are put back as they were, so the old machine serves its store again
// if it comes back and another node may adopt it. A retry of the job
// claims and pins again.
func (w *Worker) abandonAdoption(ctx context.Context, name, value string) {
	ctx, cancel := context.WithTimeout(ctx, abandonTimeout)
	defer cancel()
	if err := jobsdb.AbandonAdopt(ctx, w.rdb, name, w.cfg.Node, value); err != nil {
		w.log.Error("an adoption that made no store could not be undone: the store stays pinned to this node until it is adopted again",
			"store", name, "err", err)
		return
	}
	w.log.Warn("adoption undone: it made no store; the store's lease, pin and owner are as they were before it", "store", name)
}

// abandonTimeout bounds abandonAdoption, which runs after the job's
// context may have ended.
const abandonTimeout = 10 * time.Second

// adopting holds a store being adopted: its lease is renewed by the
// heartbeat before the registry lists it.
func (o *ownership) adopting(name, value string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.adopt == nil {
		o.adopt = map[string]bool{}
	}
	o.adopt[name] = true
	o.held[name] = keyspace.LeaseFence(name, value)
}

// adopted ends an adoption: the store is listed now (made), or the
// adoption failed and this node lets the lease go (it expires: the store
// stays pinned here, and the next adoption claims it again).
func (o *ownership) adopted(name string, made bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.adopt, name)
	if !made {
		delete(o.held, name)
	}
}

// adoptingStores returns the stores being adopted, sorted.
func (o *ownership) adoptingStores() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []string
	for n := range o.adopt {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}
