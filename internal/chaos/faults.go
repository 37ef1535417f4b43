package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"storekeeper/internal/keyspace"
	"storekeeper/jobs"
	"storekeeper/jobsdb"
)

// The fault kinds, each drawn with the same weight.
const (
	faultKillNode       = "kill-node"
	faultPauseNode      = "pause-node"
	faultKillAPI        = "kill-api"
	faultKillPrimary    = "kill-redis-primary"
	faultPausePrimary   = "pause-redis-primary"
	faultKillReplica    = "kill-redis-replica"
	faultKillSentinel   = "kill-sentinel"
	faultStealLease     = "steal-lease"
	faultCorruptSSTable = "corrupt-sstable"
	faultDiskFull       = "disk-full"
	faultPartitionNode  = "partition-node"  // the node's links to Redis hold everything, then deliver it
	faultSlowLinks      = "slow-links-node" // latency on the node's links to Redis
	faultResetLinks     = "reset-links-node"
	faultClockJump      = "clock-jump-node" // the node's injected clock moved, then back
	faultTargetDown     = "target-down"     // the backup target unreachable for a while
	faultTargetHang     = "target-hang"     // the backup target's server stopped (SIGSTOP): requests hang, then go on
	faultTargetCorrupt  = "target-corrupt"  // a byte of an object on the target flipped, then put back
)

// FaultKinds are every fault kind a run draws from.
var FaultKinds = []string{faultKillNode, faultPauseNode, faultKillAPI, faultKillPrimary, faultPausePrimary,
	faultKillReplica, faultKillSentinel, faultStealLease, faultCorruptSSTable, faultDiskFull,
	faultPartitionNode, faultSlowLinks, faultResetLinks, faultClockJump, faultTargetDown, faultTargetHang, faultTargetCorrupt}

// fault is one injected fault: what, on what, and how long the system
// took to recover once the fault was healed (the process restarted or
// resumed, the lease left to expire).
type fault struct {
	Kind      string
	Target    string
	At        time.Time
	Healed    time.Time
	Recovered time.Duration // from heal until the target and an enqueue work again
	Note      string
}

// faults injects one fault at a time, drawn from its own seeded RNG so
// that a seed replays the same schedule.
type faults struct {
	c      *Cluster
	l      *load
	rng    *rand.Rand
	fence  *fenceLog
	mu     sync.Mutex
	log    []*fault
	active atomic.Bool
	// refusals are what restores from the target said of the objects the
	// target-corrupt fault damaged: each must refuse the backup and name
	// the file (offsiteRestorable checks).
	refusals []refusal
}

func newFaults(c *Cluster, l *load, seed int64) *faults {
	return &faults{c: c, l: l, rng: rand.New(rand.NewPCG(uint64(seed), 0xfa17)), fence: newFenceLog()}
}

func (f *faults) dur(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(f.rng.Int64N(int64(hi-lo)))
}

// run injects faults until ctx ends, one every few seconds.
func (f *faults) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(f.dur(2*time.Second, 6*time.Second)):
		}
		f.supervise()
		kinds := FaultKinds
		if len(f.c.opt.Faults) > 0 {
			kinds = f.c.opt.Faults
		}
		kind := kinds[f.rng.IntN(len(kinds))]
		ft := &fault{Kind: kind, At: time.Now()}
		f.active.Store(true)
		if err := f.inject(ctx, ft); err != nil {
			ft.Note = err.Error()
		}
		f.active.Store(false)
		f.c.logf("fault %-20s %-12s healed after %s, recovered in %s %s", ft.Kind, ft.Target,
			ft.Healed.Sub(ft.At).Round(time.Millisecond), ft.Recovered.Round(time.Millisecond), ft.Note)
		f.mu.Lock()
		f.log = append(f.log, ft)
		f.mu.Unlock()
	}
}

// supervise starts again a node or API process that exited on its own
// (a node stops itself when Pebble cannot write its WAL or MANIFEST), as
// systemd or Kubernetes would.
func (f *faults) supervise() {
	for _, n := range f.c.nodes {
		if !n.running() {
			f.c.logf("%s had exited; starting it again", n.name)
			_ = n.start()
		}
	}
	for _, a := range f.c.apis {
		if !a.running() {
			f.c.logf("%s had exited; starting it again", a.name)
			_ = a.start()
		}
	}
	if s := f.c.s3; s != nil && !s.running() {
		f.c.logf("s3rver had exited; starting it again")
		_ = s.start()
	}
}

// hold waits d, or less when ctx ends (a fault is always healed).
func hold(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// outage takes a process down, holds it there for a time drawn in
// [lo, hi), marks the fault healed and brings the process back.
func (f *faults) outage(ctx context.Context, ft *fault, down, up func() error, lo, hi time.Duration) error {
	if err := down(); err != nil {
		return err
	}
	hold(ctx, f.dur(lo, hi))
	ft.Healed = time.Now()
	return up()
}

func (f *faults) inject(ctx context.Context, ft *fault) error {
	c := f.c
	bg := context.Background() // healing and recovery outlive the run's ctx
	var err error
	switch ft.Kind {
	case faultKillNode, faultPauseNode:
		n := c.nodes[f.rng.IntN(len(c.nodes))]
		ft.Target = n.name
		if ft.Kind == faultKillNode {
			err = f.outage(ctx, ft, n.kill, n.start, 500*time.Millisecond, 4*time.Second)
		} else {
			err = f.outage(ctx, ft, n.pause, n.resume, time.Second, 10*time.Second)
		}
		if err != nil {
			return err
		}
		return f.recovered(bg, ft, func() error { return httpOK(bg, "http://"+n.addr+"/healthz") })
	case faultKillAPI:
		a := c.apis[f.rng.IntN(len(c.apis))]
		ft.Target = a.name
		if err := f.outage(ctx, ft, a.kill, a.start, 200*time.Millisecond, 3*time.Second); err != nil {
			return err
		}
		return f.recovered(bg, ft, func() error { return httpOK(bg, "http://"+a.addr+"/readyz") })
	case faultKillPrimary, faultPausePrimary:
		p := c.primary(bg)
		if p == nil {
			ft.Healed = time.Now()
			return fmt.Errorf("no primary known to the Sentinels")
		}
		ft.Target = p.name
		if ft.Kind == faultKillPrimary {
			err = f.outage(ctx, ft, p.kill, func() error { return c.restartRedis(p) }, 2*time.Second, 6*time.Second)
		} else {
			err = f.outage(ctx, ft, p.pause, p.resume, time.Second, 6*time.Second)
		}
		if err != nil {
			return err
		}
		return f.recovered(bg, ft, func() error { return c.rdb.Ping(bg).Err() })
	case faultKillReplica:
		p := c.primary(bg)
		var r *redisServer
		for _, s := range c.redis {
			if s != p {
				r = s
			}
		}
		ft.Target = r.name
		if err := f.outage(ctx, ft, r.kill, func() error { return c.restartRedis(r) }, time.Second, 5*time.Second); err != nil {
			return err
		}
		return f.recovered(bg, ft, func() error { return nil })
	case faultKillSentinel:
		s := c.sentinels[f.rng.IntN(len(c.sentinels))]
		ft.Target = s.name
		if err := f.outage(ctx, ft, s.kill, s.start, time.Second, 5*time.Second); err != nil {
			return err
		}
		return f.recovered(bg, ft, func() error { return nil })
	case faultStealLease:
		return f.stealLease(ctx, ft)
	case faultCorruptSSTable:
		return f.corruptSSTable(ft)
	case faultDiskFull:
		return f.diskFull(ctx, ft)
	case faultPartitionNode, faultSlowLinks, faultResetLinks, faultClockJump:
		return f.nodeHook(ctx, ft)
	case faultTargetDown:
		return f.targetDown(ctx, ft)
	case faultTargetHang, faultTargetCorrupt:
		if f.c.s3 == nil { // both act on s3rver's process or files
			ft.Note = "no s3rver: target-down instead"
			return f.targetDown(ctx, ft)
		}
		if ft.Kind == faultTargetHang {
			return f.targetHang(ctx, ft)
		}
		return f.targetCorrupt(ctx, ft)
	}
	return fmt.Errorf("unknown fault %q", ft.Kind)
}

// recovered measures, from ft.Healed, until ok passes and an enqueue
// through the API is accepted again (up to 60 s).
func (f *faults) recovered(ctx context.Context, ft *fault, ok func() error) error {
	err := waitFor(ctx, 60*time.Second, ft.Target, func() error {
		if err := ok(); err != nil {
			return err
		}
		if _, status := f.l.enqueue(ctx, jobs.KindVerify, f.l.store(), nil); status != 202 {
			return fmt.Errorf("enqueue probe: %d", status)
		}
		return nil
	})
	ft.Recovered = time.Since(ft.Healed)
	return err
}

// stealLease takes a store's lease from its owner, as another node that
// wrongly believes the store is free would (the key deleted, then claimed
// in that node's name for a few seconds): the owner must stop acting on
// the store at once, and claim it back once the thief's lease expires.
// Jobs enqueued meanwhile go to the thief's queue; it does not have the
// store, so they fail there, which is a fate like any other.
func (f *faults) stealLease(ctx context.Context, ft *fault) error {
	c := f.c
	stores := c.stores()
	names := make([]string, 0, len(stores))
	for s := range stores {
		names = append(names, s)
	}
	sort.Strings(names)
	store := names[f.rng.IntN(len(names))]
	ft.Target = store
	bg := context.Background()
	if err := c.rdb.Del(bg, keyspace.LeaseKey(store)).Err(); err != nil {
		ft.Healed = time.Now()
		return err
	}
	owner := stores[store].name
	thief := c.nodes[f.rng.IntN(len(c.nodes))].name
	if thief == owner {
		thief = c.nodes[(slices.IndexFunc(c.nodes, func(n *node) bool { return n.name == owner })+1)%len(c.nodes)].name
	}
	ft.Target += " to " + thief
	v, ok, err := jobsdb.ClaimLease(bg, c.rdb, store, jobs.Lease{Node: thief, Host: "chaos", Instance: "chaos-thief"}, f.dur(2*time.Second, 6*time.Second))
	ft.Healed = time.Now()
	if err != nil || !ok {
		ft.Note = fmt.Sprintf("claim: ok=%v err=%v", ok, err)
	} else if now, terr := c.rdb.Time(bg).Result(); terr == nil {
		l, _ := jobs.DecodeLease(v)
		f.fence.stole(steal{Store: store, Token: l.Token, AtMS: now.UnixMilli()})
		ft.Note = fmt.Sprintf("token %d", l.Token)
	}
	return f.recovered(bg, ft, func() error {
		v, err := c.rdb.Get(bg, keyspace.LeaseKey(store)).Result()
		if err != nil {
			return err
		}
		l, err := jobs.DecodeLease(v)
		if err != nil {
			return err
		}
		if l.Node != owner {
			return fmt.Errorf("lease held by %s", l.Node)
		}
		return nil
	})
}

// nodeHook drives a fault through a node's own test hooks (chaosnode's
// /chaos/net and /chaos/clock): its links to Redis partitioned, slowed or
// reset, or its worker's clock moved up to two hours either way; each is
// held a while and then undone.
func (f *faults) nodeHook(ctx context.Context, ft *fault) error {
	n := f.c.nodes[f.rng.IntN(len(f.c.nodes))]
	ft.Target = n.name
	bg := context.Background()
	var apply, undo url.Values
	var held time.Duration
	switch ft.Kind {
	case faultPartitionNode:
		apply, undo, held = url.Values{"mode": {"partition"}}, url.Values{"mode": {"heal"}}, f.dur(time.Second, 10*time.Second)
	case faultSlowLinks:
		d := f.dur(20*time.Millisecond, 400*time.Millisecond)
		apply, undo, held = url.Values{"mode": {"delay"}, "delay": {d.String()}}, url.Values{"mode": {"heal"}}, f.dur(2*time.Second, 10*time.Second)
		ft.Note = d.String()
	case faultResetLinks:
		apply, undo = url.Values{"mode": {"reset"}}, url.Values{"mode": {"heal"}}
	case faultClockJump:
		d := f.dur(time.Minute, 2*time.Hour)
		if f.rng.IntN(2) == 0 {
			d = -d
		}
		apply, undo, held = url.Values{"offset": {d.String()}}, url.Values{"offset": {"0s"}}, f.dur(3*time.Second, 15*time.Second)
		ft.Note = "moved " + d.Round(time.Second).String()
	}
	path := "/chaos/net"
	if ft.Kind == faultClockJump {
		path = "/chaos/clock"
	}
	post := func(v url.Values) func() error {
		return func() error { return postForm(bg, "http://"+n.addr+path, v) }
	}
	if err := f.outage(ctx, ft, post(apply), post(undo), held, held+time.Millisecond); err != nil {
		return err
	}
	return f.recovered(bg, ft, func() error { return httpOK(bg, "http://"+n.addr+"/healthz") })
}

// corruptSSTable flips one byte in the middle of a random sstable of a
// live store. Nothing heals it but storekeeper: a verify (or a read)
// finds it, and the automatic restore brings the newest good backup back.
func (f *faults) corruptSSTable(ft *fault) error {
	stores := f.c.stores()
	names := make([]string, 0, len(stores))
	for s := range stores {
		names = append(names, s)
	}
	sort.Strings(names)
	store := names[f.rng.IntN(len(names))]
	ft.Target = store
	ft.Healed = time.Now()
	ssts, _ := filepath.Glob(filepath.Join(stores[store].data, store, "*.sst"))
	slices.Sort(ssts)
	if len(ssts) == 0 {
		return fmt.Errorf("no sstable yet")
	}
	path := ssts[f.rng.IntN(len(ssts))]
	fh, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil || st.Size() < 64 {
		return fmt.Errorf("sstable %s too small", filepath.Base(path))
	}
	off := st.Size() / 3
	b := make([]byte, 1)
	if _, err := fh.ReadAt(b, off); err != nil {
		return err
	}
	b[0] ^= 0x5a
	if _, err := fh.WriteAt(b, off); err != nil {
		return err
	}
	ft.Note = fmt.Sprintf("%s byte %d", filepath.Base(path), off)
	return nil
}

// diskFull fills a node's data directory (a size-limited tmpfs) until
// ENOSPC, holds it full a few seconds, then frees the space. The node may
// exit (Pebble stops the process when a WAL or MANIFEST write fails); it
// is then started again, as its supervisor would. Without a tmpfs (not
// root) nothing is done and the note says so.
func (f *faults) diskFull(ctx context.Context, ft *fault) error {
	n := f.c.nodes[f.rng.IntN(len(f.c.nodes))]
	ft.Target = n.name
	hold0 := f.dur(time.Second, 5*time.Second)
	if !n.tmpfs {
		ft.Healed = time.Now()
		ft.Note = "no tmpfs (needs root): skipped"
		return nil
	}
	filler := filepath.Join(n.data, ".chaos-filler")
	fh, err := os.Create(filler)
	if err != nil {
		ft.Healed = time.Now()
		return err
	}
	buf := make([]byte, 1<<20)
	var filled int64
	for {
		w, err := fh.Write(buf)
		filled += int64(w)
		if err != nil {
			break // ENOSPC: full
		}
	}
	fh.Close()
	hold(ctx, hold0)
	ft.Healed = time.Now()
	if err := os.Remove(filler); err != nil {
		return err
	}
	ft.Note = fmt.Sprintf("%d MB filled", filled>>20)
	if !n.running() {
		ft.Note += "; the node exited and was started again"
		if err := n.start(); err != nil {
			return err
		}
	}
	bg := context.Background()
	return f.recovered(bg, ft, func() error { return httpOK(bg, "http://"+n.addr+"/healthz") })
}

func (f *faults) faults() []*fault {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.log)
}
