package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"storekeeper/jobs"
	"storekeeper/jobsdb"
)

// The health conditions a store's view can carry (HealthCondition.Kind);
// storeConditions lists them for the store list's health filter.
const (
	condNodeDown       = "node_down"
	condCorrupt        = "corrupt"
	condUnavailable    = "unavailable"
	condLost           = "lost"
	condNoRecentBackup = "no_recent_backup"
	condTargetFailing  = "backup_target_failing"
	condDrillFailed    = "drill_failed"
	condRPOExceeded    = "rpo_exceeded"
	condRTOExceeded    = "rto_exceeded"
	condFragmented     = "high_fragmentation"
)

var storeConditions = []string{condNodeDown, condCorrupt, condUnavailable, condLost, condNoRecentBackup, condTargetFailing,
	condDrillFailed, condRPOExceeded, condRTOExceeded, condFragmented}

// Health thresholds.
const (
	fragmentationShare = 0.25 // reclaimable bytes over live bytes
	fragmentationMin   = 64 << 20
	backupMaxAge       = 24 * time.Hour
)

func (s *Server) stores(ctx context.Context, only string) ([]jobs.StoreView, error) {
	if only != "" {
		return s.oneStore(ctx, only)
	}
	idx, err := s.readStoreIndex(ctx) // every name, read now: the unpaged list is never older than the request
	if err != nil {
		return nil, err
	}
	sc, err := s.storeContext(ctx)
	if err != nil {
		return nil, err
	}
	return sc.views(ctx, s.rdb, idx.names, idx.owners)
}

// oneStore is stores for one name: its owner and status in one round
// trip, not the whole owners hash.
func (s *Server) oneStore(ctx context.Context, name string) ([]jobs.StoreView, error) {
	if err := jobs.ValidateStoreName(name); err != nil {
		return nil, err
	}
	owner, raw, err := jobsdb.StoreOwnerAndStatus(ctx, s.rdb, name)
	if err != nil {
		return nil, err
	}
	sc, err := s.storeContext(ctx)
	if err != nil {
		return nil, err
	}
	return []jobs.StoreView{sc.view(name, owner, raw)}, nil
}

// storeCtx is what every store's view needs besides its own status: the
// nodes that are up, the leases nodes lost, the paused stores. Read once
// per request, however many stores it shows.
type storeCtx struct {
	up     map[string]bool
	lost   map[string][]jobs.HealthCondition // store -> nodes that have it but lost its lease
	paused map[string]jobs.PauseInfo
	drill  func(store string, d *jobs.DrillStatus, now time.Time) []jobs.HealthCondition
	now    time.Time
}

func (s *Server) storeContext(ctx context.Context) (*storeCtx, error) {
	ns, err := s.nodes.get(ctx)
	if err != nil {
		return nil, err
	}
	sc := &storeCtx{up: ns.up, lost: ns.lost, drill: s.drillHealth, now: time.Now()}
	if sc.paused, err = jobsdb.Paused(ctx, s.rdb); err != nil {
		return nil, err
	}
	return sc, nil
}

// nodeState is what the store views need of the nodes' heartbeats, read
// once for every request of the next second (Server.nodes): every node's
// heartbeat is a megabyte and more at 1,000 nodes (each lists its stores).
type nodeState struct {
	list []jobs.NodeStatus // without their Info
	up   map[string]bool
	lost map[string][]jobs.HealthCondition // store -> nodes that have it but lost its lease
}

func (s *Server) readNodes(ctx context.Context) (nodeState, error) {
	nodes, err := jobsdb.Nodes(ctx, s.rdb)
	if err != nil {
		return nodeState{}, err
	}
	ns := nodeState{list: make([]jobs.NodeStatus, 0, len(nodes)), up: map[string]bool{}, lost: map[string][]jobs.HealthCondition{}}
	for _, n := range nodes {
		ns.up[n.Node] = n.Up
		ns.list = append(ns.list, jobs.NodeStatus{Node: n.Node, Up: n.Up})
		if n.Info == nil {
			continue
		}
		for st, holder := range n.Info.Lost {
			ns.lost[st] = append(ns.lost[st], jobs.HealthCondition{Kind: condLost, Store: st, Node: n.Node,
				Message: fmt.Sprintf("node %s has store %s but lost its lease to node %s: it does not serve its copy until the lease is free", n.Node, st, holder)})
		}
	}
	return ns, nil
}

// views builds the views of names (owned as owners says), reading their
// published status in one round trip.
func (sc *storeCtx) views(ctx context.Context, rdb redis.Cmdable, names []string, owners map[string]string) ([]jobs.StoreView, error) {
	published, err := jobsdb.PublishedStatus(ctx, rdb, names)
	if err != nil {
		return nil, err
	}
	out := make([]jobs.StoreView, 0, len(names))
	for i, n := range names {
		out = append(out, sc.view(n, owners[n], published[i]))
	}
	return out, nil
}

func (sc *storeCtx) view(n, owner string, raw json.RawMessage) jobs.StoreView {
	now := sc.now
	v := jobs.StoreView{Name: n, Node: owner, NodeUp: sc.up[owner], Backups: []jobs.BackupSummary{}, Health: []jobs.HealthCondition{}}
	_, v.Paused = sc.paused[n]
	var p jobs.StoreStatus
	if raw != nil && json.Unmarshal(raw, &p) == nil {
		v.Stats, v.PublishedAt = &p.Stats, &p.At
		if p.Backups != nil {
			v.Backups = p.Backups
		}
		v.Targets, v.Drill, v.LogStart = p.Targets, p.Drill, p.LogStart
	}
	if b, ok := jobs.NewestGood(v.Backups); ok {
		v.LastBackup = &b.CreatedAt
	}
	var st jobs.StoreStats // zero until the owner has published
	if v.Stats != nil {
		st = *v.Stats
	}
	switch {
	case !v.NodeUp:
		v.Health = append(v.Health, jobs.HealthCondition{Kind: condNodeDown, Store: n, Node: v.Node, Message: fmt.Sprintf("node %s is down: jobs for %s wait until it returns", v.Node, n)})
	case st.State == jobs.StoreCorrupt:
		v.Health = append(v.Health, jobs.HealthCondition{Kind: condCorrupt, Store: n, Message: "store is corrupt: " + st.Error})
	case st.State == jobs.StoreUnavailable:
		v.Health = append(v.Health, jobs.HealthCondition{Kind: condUnavailable, Store: n,
			Message: "store did not open (not corruption; retried with backoff, never restored automatically): " + st.Error})
	}
	v.Health = append(v.Health, sc.lost[n]...)
	if v.LastBackup == nil || now.Sub(*v.LastBackup) > backupMaxAge {
		v.Health = append(v.Health, jobs.HealthCondition{Kind: condNoRecentBackup, Store: n, Message: "no backup in the last 24 h"})
	}
	for _, t := range v.Targets {
		if !t.FailingSince.IsZero() {
			v.Health = append(v.Health, jobs.HealthCondition{Kind: condTargetFailing, Store: n,
				Message: fmt.Sprintf("uploads to backup target %s fail since %s: %s", t.Target, t.FailingSince.UTC().Format(time.RFC3339), t.Error)})
		}
	}
	v.Health = append(v.Health, sc.drill(n, v.Drill, now)...)
	if st.LiveBytes > 0 && st.ReclaimableBytes >= fragmentationMin && float64(st.ReclaimableBytes) >= fragmentationShare*float64(st.LiveBytes) {
		v.Health = append(v.Health, jobs.HealthCondition{Kind: condFragmented, Store: n,
			Message: fmt.Sprintf("%d of %d live bytes reclaimable by a compaction", st.ReclaimableBytes, st.LiveBytes)})
	}
	return v
}

func (s *Server) listStores(c *gin.Context) {
	q := c.Request.URL.Query()
	if !q.Has("limit") && !q.Has("cursor") && !q.Has("node") && !q.Has("state") && !q.Has("health") {
		v, err := s.stores(c, "")
		if err != nil {
			s.fail(c, err)
			return
		}
		c.JSON(http.StatusOK, gin.H{"stores": v})
		return
	}
	pq, err := parseStorePage(q)
	if err != nil {
		s.fail(c, err)
		return
	}
	page, err := s.storePage(c, pq)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, page)
}

func (s *Server) getStore(c *gin.Context) {
	v, err := s.stores(c, c.Param("store"))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, v[0])
}

// storeBackups is a store's backups with their files: the status its
// owner publishes lists the backups, their file lists are published apart
// (a status is rewritten far more often than backups change). A backup
// whose files are not published yet (taken a moment ago, or by a node of
// an older version, whose status still carries them) is shown as listed.
func (s *Server) storeBackups(c *gin.Context) {
	v, err := s.stores(c, c.Param("store"))
	if err != nil {
		s.fail(c, err)
		return
	}
	files, err := jobsdb.BackupFiles(c, s.rdb, v[0].Name)
	if errors.Is(err, jobs.ErrUnavailable) {
		s.fail(c, err)
		return
	} else if err != nil {
		s.log.Warn("backups shown without their files", "store", v[0].Name, "err", err) // an unreadable value: the list still helps
	}
	backups := v[0].Backups
	for i := range backups {
		if f, ok := files[backups[i].ID]; ok {
			backups[i].Files = f
		}
	}
	c.JSON(http.StatusOK, gin.H{"store": v[0].Name, "backups": backups})
}

// queueView is one asynq queue's counts.
type queueView struct {
	Queue     string `json:"queue"`
	Pending   int    `json:"pending"`
	Active    int    `json:"active"`
	Scheduled int    `json:"scheduled"`
	Retry     int    `json:"retry"`
	Archived  int    `json:"archived"`
	Completed int    `json:"completed"`
	Paused    bool   `json:"paused"`
}

// dashboard is one snapshot for the page: stores, recent history, queues,
// schedules, nodes and health conditions.
func (s *Server) dashboard(c *gin.Context) {
	limit, err := queryLimit(c.Request.URL.Query(), storePageMax)
	if err != nil {
		s.fail(c, err)
		return
	}
	// The parts are read at once: the answer waits for the slowest read,
	// not for their sum (on a busy Redis, each round trip's wait adds up).
	var d dashboardAnswer
	var recent []jobs.HistoryEntry
	g, ctx := errgroup.WithContext(c.Request.Context())
	g.Go(func() error {
		if limit == 0 {
			var err error
			d.Stores, err = s.stores(ctx, "")
			return err
		}
		page, err := s.storePage(ctx, storePageQuery{limit: limit})
		d.Stores, d.StoresTotal, d.NextCursor = page.Stores, &page.Total, &page.Next
		return err
	})
	g.Go(func() error {
		var err error
		recent, _, err = jobsdb.History(ctx, s.rdb, jobs.HistoryQuery{Limit: 50})
		return err
	})
	g.Go(func() error {
		var err error
		if limit == 0 {
			if d.Schedules, err = jobsdb.Schedules(ctx, s.rdb); err == nil {
				d.Nodes, err = jobsdb.Nodes(ctx, s.rdb)
			}
			return err
		}
		// Each heartbeat and each node's schedules list its node's stores:
		// over a megabyte each at 100,000 stores. The page shows which nodes
		// are up (GET /api/nodes has the rest) and the schedules, grouped
		// when many nodes publish them (GET /api/schedules has each).
		ns, err := s.nodes.get(ctx)
		if err != nil {
			return err
		}
		d.Nodes = ns.list
		all, err := s.scheduled.get(ctx)
		d.Schedules, d.ScheduleGroups = pageSchedules(all)
		return err
	})
	g.Go(func() error {
		d.Queues = []queueView{}
		names, err := s.insp.Queues()
		if err != nil {
			return fmt.Errorf("%w: %w", jobs.ErrUnavailable, err)
		}
		slices.Sort(names)
		if limit > 0 {
			// Each queue's figures cost asynq several commands: beyond a few
			// dozen queues (one per node), asynqmon lists them.
			d.QueuesTotal = new(len(names))
			if len(names) > dashboardQueuesMax {
				names = nil
			}
		}
		for _, q := range names {
			info, err := s.insp.GetQueueInfo(q)
			if err != nil {
				continue // removed meanwhile
			}
			d.Queues = append(d.Queues, queueView{Queue: q, Pending: info.Pending, Active: info.Active, Scheduled: info.Scheduled,
				Retry: info.Retry, Archived: info.Archived, Completed: info.Completed, Paused: info.Paused})
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		s.fail(c, err)
		return
	}
	if recent == nil {
		recent = []jobs.HistoryEntry{}
	}
	d.Health = []jobs.HealthCondition{}
	for _, st := range d.Stores {
		d.Health = append(d.Health, st.Health...)
	}
	failures := 0
	for _, h := range recent {
		if h.Status == jobs.StatusFailed && time.Since(h.At) < 24*time.Hour {
			failures++
		}
	}
	if failures > 0 {
		d.Health = append(d.Health, jobs.HealthCondition{Kind: "job_failures", Message: fmt.Sprintf("%d job(s) failed in the last 24 h (of the last 50 finished)", failures)})
	}
	if d.Schedules == nil {
		d.Schedules = []jobs.NodeSchedules{}
	}
	d.History, d.At = publicHistory(recent), time.Now().UTC()
	c.JSON(http.StatusOK, d)
}

// dashboardQueuesMax is how many queues, and nodes' schedules, a paged
// dashboard lists.
const dashboardQueuesMax = 50

// scheduleGroup is the schedules many nodes share, in a paged dashboard:
// how many nodes, each kind's spec, the soonest next run and the latest
// last one among them.
type scheduleGroup struct {
	Nodes int                             `json:"nodes"`
	Kinds map[jobs.Kind]jobs.ScheduleInfo `json:"kinds"`
}

// pageSchedules is what a paged dashboard shows of the nodes' schedules:
// each node's, without its store list, up to dashboardQueuesMax nodes;
// beyond that, grouped by the specs the nodes share.
func pageSchedules(all []jobs.NodeSchedules) ([]jobs.NodeSchedules, []scheduleGroup) {
	if len(all) <= dashboardQueuesMax {
		out := make([]jobs.NodeSchedules, 0, len(all))
		for _, n := range all {
			n.Stores = []string{} // a copy: the shared one keeps its list
			out = append(out, n)
		}
		slices.SortFunc(out, func(a, b jobs.NodeSchedules) int { return strings.Compare(a.Node, b.Node) })
		return out, nil
	}
	byKey := map[string]*scheduleGroup{}
	var keys []string
	for _, n := range all {
		kinds := slices.Sorted(maps.Keys(n.Kinds))
		var key strings.Builder
		for _, k := range kinds {
			key.WriteString(string(k) + "=" + n.Kinds[k].Spec + ";")
		}
		g := byKey[key.String()]
		if g == nil {
			g = &scheduleGroup{Kinds: map[jobs.Kind]jobs.ScheduleInfo{}}
			byKey[key.String()] = g
			keys = append(keys, key.String())
		}
		g.Nodes++
		for k, si := range n.Kinds {
			cur, ok := g.Kinds[k]
			if !ok {
				g.Kinds[k] = si
				continue
			}
			if !si.Next.IsZero() && (cur.Next.IsZero() || si.Next.Before(cur.Next)) {
				cur.Next = si.Next
			}
			if si.Last.After(cur.Last) {
				cur.Last = si.Last
			}
			g.Kinds[k] = cur
		}
	}
	slices.Sort(keys)
	groups := make([]scheduleGroup, 0, len(keys))
	for _, k := range keys {
		groups = append(groups, *byKey[k])
	}
	return []jobs.NodeSchedules{}, groups
}

// drillHealth: the store's last drill failed; the newest backup a drill
// proved restorable is older than --rpo; the last passing drill took
// longer than --rto.
func (s *Server) drillHealth(store string, d *jobs.DrillStatus, now time.Time) []jobs.HealthCondition {
	if d == nil {
		return nil
	}
	var out []jobs.HealthCondition
	from := "the local backups"
	if d.Target != "" {
		from = "backup target " + d.Target
	}
	if !d.OK {
		out = append(out, jobs.HealthCondition{Kind: condDrillFailed, Store: store,
			Message: fmt.Sprintf("the last restore drill (from %s, %s) failed: %s", from, d.At.UTC().Format(time.RFC3339), d.Error)})
	}
	if rpo := s.cfg.RPO; rpo > 0 && !d.Restorable.IsZero() && now.Sub(d.Restorable) > rpo {
		out = append(out, jobs.HealthCondition{Kind: condRPOExceeded, Store: store,
			Message: fmt.Sprintf("restorable as of %s, older than the RPO (%s)", d.Restorable.UTC().Format(time.RFC3339), rpo)})
	}
	if rto := s.cfg.RTO; rto > 0 && d.OK && d.RTO > rto {
		out = append(out, jobs.HealthCondition{Kind: condRTOExceeded, Store: store,
			Message: fmt.Sprintf("the last drill (from %s) took %s, longer than the RTO (%s)", from, d.RTO.Round(time.Millisecond), rto)})
	}
	return out
}
