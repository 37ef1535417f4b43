package worker

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"sync"
	"time"

	"storekeeper/internal/keyspace"
	"storekeeper/jobs"
	"storekeeper/jobsdb"
	"storekeeper/store"
)

func randFloat() float64 { return mrand.Float64() }

// newInstance names one process start in its leases.
func newInstance() string {
	var b [6]byte
	_, _ = crand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// errLeaseLost: another claim holds the store's lease. A job on such a
// store does not start, a running one is stopped, and both are retried
// (asynq's retry policy) in case this node holds the store again.
var errLeaseLost = errors.New("store lease lost")

// ownership is this node's hold on each of its stores' leases. A store is
// held (the lease value this node wrote, fencing token included, which
// every finish and stats publish must still find in Redis) or lost (the
// value of the claim that holds it instead).
type ownership struct {
	// flip serializes the transitions of a store between held and lost,
	// from the decision (under mu) to the store's Own or Disown, so that
	// a loss decided before a reclaim cannot disown the store after the
	// reclaim owned it again.
	flip      sync.Mutex
	mu        sync.Mutex
	held      map[string]keyspace.LeaseCheck // decoded once per claim: every job's start and end needs it
	lost      map[string]string
	announced map[string]bool // lost stores whose store.lost was written
	adopt     map[string]bool // held stores being adopted: not listed by the registry yet
}

func newOwnership() ownership {
	return ownership{held: map[string]keyspace.LeaseCheck{}, lost: map[string]string{}, announced: map[string]bool{}}
}

// lease returns the lease check a fenced change on store needs, and false
// when this node does not hold the store.
func (o *ownership) lease(name string) (*keyspace.LeaseCheck, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	f, ok := o.held[name]
	if !ok {
		return nil, false
	}
	return &f, true
}

// holder returns who holds a store this node lost.
func (o *ownership) holder(name string) (jobs.Lease, bool) {
	o.mu.Lock()
	v, ok := o.lost[name]
	o.mu.Unlock()
	if !ok {
		return jobs.Lease{}, false
	}
	l, _ := jobs.DecodeLease(v)
	return l, true
}

// lostStores returns the stores this node lost, with the node holding each.
func (o *ownership) lostStores() map[string]string {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.lost) == 0 {
		return nil
	}
	out := make(map[string]string, len(o.lost))
	for name, v := range o.lost {
		l, _ := jobs.DecodeLease(v)
		out[name] = l.Node
	}
	return out
}

// claimLease claims a store's lease (jobsdb.ClaimLease) and, with
// --redis-min-replicas, confirms the claim is on the replicas before it
// is acted on (jobsdb.ConfirmClaim): an unconfirmed claim is an error, and
// the next heartbeat claims again (the same process's claim is kept as it
// is) and confirms again.
func (w *Worker) claimLease(ctx context.Context, name string) (string, bool, error) {
	v, ok, err := jobsdb.ClaimLease(ctx, w.rdb, name, w.lease, w.cfg.LeaseTTL)
	if err != nil || !ok {
		return v, ok, err
	}
	if err := jobsdb.ConfirmClaim(ctx, w.rdb, name, v, w.cfg.Jobs.MinReplicas, w.cfg.Jobs.MinReplicasTimeout); err != nil {
		return "", false, err
	}
	return v, true, nil
}

// claim takes every store's lease at start. A store another live node
// holds is not a reason to refuse to start: this node serves its other
// stores and holds that one as lost until its lease is free.
func (w *Worker) claim(ctx context.Context) error {
	for _, name := range w.stores.Names() {
		v, ok, err := w.claimLease(ctx, name)
		if errors.Is(err, jobsdb.ErrUnconfirmed) {
			// Not on the replicas yet (one is still syncing): the store is
			// not held, so nothing runs on it, until a heartbeat claims it
			// again and the replicas confirm.
			w.log.Warn("store claim not confirmed by the Redis replicas; serving it once a heartbeat confirms it", "store", name, "err", err)
			continue
		}
		if err != nil {
			return fmt.Errorf("worker: claim store %s: %w", name, err)
		}
		if ok {
			w.own.mu.Lock()
			w.own.held[name] = keyspace.LeaseFence(name, v)
			w.own.mu.Unlock()
			continue
		}
		w.lose(ctx, name, v)
	}
	return nil
}

// lose stops serving a store whose lease another claim holds: its handles
// refuse writes, its running job is stopped (retried later), no job starts
// on it and its stats are no longer published. store.lost is announced,
// and notified, once per loss.
func (w *Worker) lose(ctx context.Context, name, holderValue string) {
	holder, _ := jobs.DecodeLease(holderValue)
	w.own.flip.Lock()
	w.own.mu.Lock()
	if cur, ok := w.own.held[name]; ok && cur.Value == holderValue {
		// The "other" claim is this node's own, made meanwhile by the
		// renewal that found the old lease expired: nothing is lost.
		w.own.mu.Unlock()
		w.own.flip.Unlock()
		return
	}
	_, wasHeld := w.own.held[name]
	prev, wasLost := w.own.lost[name]
	delete(w.own.held, name)
	w.own.lost[name] = holderValue
	if prev != holderValue {
		w.own.announced[name] = false
	}
	w.own.mu.Unlock()
	cause := fmt.Errorf("%w: store %s is held by node %s on host %s (token %d); this is node %s on host %s",
		errLeaseLost, name, holder.Node, holder.Host, holder.Token, w.lease.Node, w.lease.Host)
	if s, err := w.stores.Store(name); err == nil {
		s.Disown(cause)
	}
	w.own.flip.Unlock()
	w.cancelStore(name, cause)
	if wasHeld || !wasLost {
		w.log.Error("lost a store: another claim holds its lease; not serving it until the lease is free", "store", name,
			"holder_node", holder.Node, "holder_host", holder.Host, "holder_token", holder.Token)
	}
	w.announceLost(ctx, name)
}

// announceLost writes store.lost and its notification once per loss; a
// heartbeat tries again if Redis failed.
func (w *Worker) announceLost(ctx context.Context, name string) {
	w.own.mu.Lock()
	holderValue, lost := w.own.lost[name]
	done := w.own.announced[name]
	w.own.mu.Unlock()
	if !lost || done {
		return
	}
	holder, _ := jobs.DecodeLease(holderValue)
	now := time.Now().UTC()
	msg := fmt.Sprintf("node %s lost store %s: its lease is held by node %s on host %s; %s no longer serves it until the lease is free",
		w.cfg.Node, name, holder.Node, holder.Host, w.cfg.Node)
	ev := jobs.Event{Type: jobs.EventStoreLost, Store: name, Node: w.cfg.Node, Trigger: jobs.TriggerAuto, Actor: jobs.ActorSystem,
		Holder: holder.Node, Error: msg, At: now}
	n := jobs.Notification{ID: jobs.NotificationID(string(jobs.EventStoreLost), name, w.cfg.Node, holderValue),
		Type: jobs.EventStoreLost, Store: name, Node: w.cfg.Node, Trigger: jobs.TriggerAuto, Actor: jobs.ActorSystem,
		Error: msg, Summary: msg, At: now}
	if err := jobsdb.AnnounceStoreLost(ctx, w.rdb, name, w.cfg.Node, holderValue, w.cfg.Jobs.EventsMaxLen, ev, &n); err != nil {
		w.log.Warn("announcing a lost store failed; retrying at the next heartbeat", "store", name, "err", err)
		return
	}
	w.own.mu.Lock()
	if w.own.lost[name] == holderValue {
		w.own.announced[name] = true
	}
	w.own.mu.Unlock()
}

// regain serves a lost store again, under the lease value just claimed.
func (w *Worker) regain(ctx context.Context, name, value string) {
	w.own.flip.Lock()
	w.own.mu.Lock()
	delete(w.own.lost, name)
	delete(w.own.announced, name)
	w.own.held[name] = keyspace.LeaseFence(name, value)
	w.own.mu.Unlock()
	s, err := w.stores.Store(name)
	if err == nil {
		s.Own()
	}
	w.own.flip.Unlock()
	if err := jobsdb.ClearStoreLost(ctx, w.rdb, name, w.cfg.Node); err != nil {
		w.log.Warn("clearing a lost store's mark failed", "store", name, "err", err)
	}
	l, _ := jobs.DecodeLease(value)
	w.log.Warn("holding a lost store again: its lease was free", "store", name, "token", l.Token)
	if err == nil {
		if st, cause := s.State(); st == store.StateCorrupt {
			w.incidents.add(name, cause)
		}
	}
}

// heartbeat renews the leases and publishes every store's stats until ctx
// ends.
func (w *Worker) heartbeat(ctx context.Context) {
	t := w.clock.NewTicker(w.cfg.LeaseTTL / 3)
	defer t.Stop()
	for {
		w.renew(ctx)
		w.signals.heartbeat.Signal(struct{}{})
		select {
		case <-ctx.Done():
			return
		case <-t.Chan():
		}
	}
}

func (w *Worker) renew(ctx context.Context) {
	// The stores whose lease this node holds: every lease renewed and
	// every status published in one round trip. The rest (a lease lost or
	// expired, Redis unreachable) go one by one through renewStore.
	var beats []jobsdb.Beat
	var checks []*keyspace.LeaseCheck
	var files []*filesUpdate // the file lists due, published after the beat (rarely any)
	var slow []string
	for _, name := range w.stores.Names() {
		check, held := w.own.lease(name)
		if !held {
			slow = append(slow, name)
			continue
		}
		js, up, err := w.statsJSON(name, check)
		if err != nil {
			w.log.Warn("store stats not published", "store", name, "err", err)
			slow = append(slow, name)
			continue
		}
		beats = append(beats, jobsdb.Beat{Store: name, Lease: check.Value, Status: js})
		checks, files = append(checks, check), append(files, up)
	}
	results, err := jobsdb.Heartbeat(ctx, w.rdb, beats, w.cfg.LeaseTTL)
	if err != nil {
		w.log.Warn("lease renewal failed", "stores", len(beats), "err", err)
	}
	for i, b := range beats {
		if err != nil {
			break
		}
		r := results[i]
		switch {
		case r.State == jobs.LeaseTaken:
			w.lose(ctx, b.Store, r.Holder)
		case r.State == jobs.LeaseExpired:
			slow = append(slow, b.Store) // claimed again there, unless another node has it
		case !r.Published:
			// Renewed, yet the fenced publish was refused: the lease moved
			// between the two scripts.
			w.checkLease(ctx, b.Store)
		case files[i] != nil:
			w.publishFiles(ctx, checks[i], files[i])
		}
	}
	for _, name := range slow {
		w.renewStore(ctx, name)
	}
	for _, name := range w.own.adoptingStores() {
		w.renewAdopting(ctx, name)
	}
	// After the leases: the heartbeat says which stores were lost.
	if err := jobsdb.NodeBeat(ctx, w.rdb, w.nodeInfo(), w.cfg.LeaseTTL); err != nil {
		w.log.Warn("node heartbeat failed", "err", err)
	}
	w.checkNodes(ctx)
}

// checkNodes looks for nodes whose heartbeat expired (node.down). Every
// node and API process looks, and one look reads every node, so with many
// nodes each worker looks only every known/nodeCheckers beats, at a phase
// of its own: about nodeCheckers looks per beat interval across the
// deployment, however many nodes, instead of one per node.
func (w *Worker) checkNodes(ctx context.Context) {
	beat := w.beats.Add(1)
	every := max(1, int(w.knownNodes.Load())/nodeCheckers)
	if (beat+w.beatPhase)%uint64(every) != 0 {
		return
	}
	down, known, err := jobsdb.CheckNodesCount(ctx, w.rdb, w.cfg.Jobs.EventsMaxLen)
	if err != nil {
		w.log.Warn("checking other nodes failed", "err", err)
		return
	}
	w.knownNodes.Store(int64(known))
	if len(down) > 0 {
		w.log.Warn("nodes down: their heartbeats expired", "nodes", down)
	}
}

// nodeCheckers is about how many workers look for down nodes per beat
// interval.
const nodeCheckers = 10

// renewStore renews one store's lease (or tries to claim a lost one back)
// and publishes its stats while it is held.
func (w *Worker) renewStore(ctx context.Context, name string) {
	check, held := w.own.lease(name)
	if !held {
		v, ok, err := w.claimLease(ctx, name)
		switch {
		case err != nil:
			w.log.Warn("claiming a lost store's lease failed", "store", name, "err", err)
		case ok:
			w.regain(ctx, name, v)
			check, held = w.own.lease(name)
		default:
			w.lose(ctx, name, v) // still lost; announce if not done yet
		}
		if !held {
			return
		}
	} else {
		st, other, err := jobsdb.RenewLease(ctx, w.rdb, name, check.Value, w.cfg.LeaseTTL)
		if err != nil {
			w.log.Warn("lease renewal failed", "store", name, "err", err)
			return
		}
		switch st {
		case jobs.LeaseTaken:
			w.lose(ctx, name, other)
			return
		case jobs.LeaseExpired:
			// Redis was away longer than the TTL: take it again unless
			// another node has it. A new claim means a new token.
			v, ok, err := w.claimLease(ctx, name)
			if err != nil {
				w.log.Warn("claiming an expired lease again failed", "store", name, "err", err)
				return
			}
			if !ok {
				w.lose(ctx, name, v)
				return
			}
			if w.afterReclaim != nil {
				w.afterReclaim(name, v)
			}
			w.own.flip.Lock()
			w.own.mu.Lock()
			_, lostMeanwhile := w.own.lost[name]
			if !lostMeanwhile {
				w.own.held[name] = keyspace.LeaseFence(name, v)
			}
			w.own.mu.Unlock()
			w.own.flip.Unlock()
			if lostMeanwhile {
				// A fenced write refused meanwhile (checkLease) took the
				// new claim for another's and gave the store up: serve it
				// again, or it stays given up under a lease it holds.
				w.regain(ctx, name, v)
			} else {
				w.log.Warn("store lease had expired; claimed it again", "store", name)
			}
			check, _ = w.own.lease(name)
		}
	}
	if err := w.publishStats(ctx, name, check); err != nil {
		w.log.Warn("publishing stats failed", "store", name, "err", err)
	}
}

// renewAdopting renews the lease of a store being adopted (nothing to
// publish yet). Lost meanwhile, it is forgotten: the adoption's end is
// fenced, and fails.
func (w *Worker) renewAdopting(ctx context.Context, name string) {
	check, held := w.own.lease(name)
	if !held {
		return
	}
	st, other, err := jobsdb.RenewLease(ctx, w.rdb, name, check.Value, w.cfg.LeaseTTL)
	switch {
	case err != nil:
		w.log.Warn("lease renewal of a store being adopted failed", "store", name, "err", err)
	case st == jobs.LeaseTaken:
		holder, _ := jobs.DecodeLease(other)
		w.log.Error("a store being adopted was claimed by another node", "store", name, "holder", holder.Node)
		w.own.mu.Lock()
		delete(w.own.held, name)
		w.own.mu.Unlock()
	case st == jobs.LeaseExpired:
		w.log.Error("the lease of a store being adopted expired; the adoption will fail its end and be retried", "store", name)
		w.own.mu.Lock()
		delete(w.own.held, name)
		w.own.mu.Unlock()
	}
}

// checkLease looks at a store's lease after a fenced change was refused,
// so that a loss is acted on now rather than at the next heartbeat.
func (w *Worker) checkLease(ctx context.Context, name string) {
	check, held := w.own.lease(name)
	if !held {
		return
	}
	st, other, err := jobsdb.RenewLease(ctx, w.rdb, name, check.Value, w.cfg.LeaseTTL)
	if err == nil && st == jobs.LeaseTaken {
		w.lose(ctx, name, other)
	}
}

// nodeInfo is this node's heartbeat value.
func (w *Worker) nodeInfo() jobs.NodeInfo {
	info := w.node
	info.At = time.Now().UTC()
	info.Stores = w.stores.Names() // an adoption adds one
	info.Lost = w.own.lostStores()
	return info
}

// Lost returns the stores this node has but does not serve, with the node
// that holds each one's lease (for /readyz and logs).
func (w *Worker) Lost() map[string]string { return w.own.lostStores() }

// statsJSON is what the API reads about a store: its jobs.StoreStatus,
// and its backups' file lists when they are due to be published
// (publishedFiles; nil otherwise), which the status leaves out.
func (w *Worker) statsJSON(name string, lease *keyspace.LeaseCheck) (string, *filesUpdate, error) {
	s, err := w.stores.Store(name)
	if err != nil {
		return "", nil, err
	}
	bs, _ := s.Backups() // none listed when the backup directory cannot be read
	files := w.files.split(name, lease.Token, bs, w.clock.Now())
	st := storeStatus(w.cfg.Node, s.Stats(), bs, time.Now().UTC())
	st.Fence = lease.Token
	st.Targets = w.targets.status(name, w.cfg.Targets)
	if sh := w.cfg.Shipper; sh != nil {
		ss := sh.Stats(name)
		st.ShipGaps, st.LogStart = len(ss.Gaps), ss.LogStart
		for i := range st.Targets {
			if lag, ok := ss.Lag[st.Targets[i].Target]; ok {
				st.Targets[i].ShipLag = &lag
				st.Targets[i].ShipPending = ss.PendingBytes
			}
		}
	}
	st.Drill = w.drills.get(name)
	b, err := json.Marshal(st)
	return string(b), files, err
}

// publishStats publishes a store's stats while lease is still its lease.
func (w *Worker) publishStats(ctx context.Context, name string, lease *keyspace.LeaseCheck) error {
	js, files, err := w.statsJSON(name, lease)
	if err != nil {
		return err
	}
	ok, err := jobsdb.PublishStats(ctx, w.rdb, name, lease.Value, js)
	if err == nil && !ok {
		w.checkLease(ctx, name)
	}
	if err == nil && ok && files != nil {
		w.publishFiles(ctx, lease, files)
	}
	return err
}

// serving reports whether this node serves a store (holds its lease).
func (w *Worker) serving(name string) bool {
	_, ok := w.own.lease(name)
	return ok
}

func hostname() string { h, _ := os.Hostname(); return h }
