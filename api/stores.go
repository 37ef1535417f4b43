package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"

	"storekeeper/jobs"
)

// storeView is a store as the API shows it: owner, whether the owner is
// up, paused, the owner's last published stats and backups, and health.
type storeView struct {
	Name        string          `json:"name"`
	Node        string          `json:"node"`
	NodeUp      bool            `json:"node_up"`
	Paused      bool            `json:"paused"`
	Stats       json.RawMessage `json:"stats,omitempty"`
	Backups     []backupInfo    `json:"backups"`
	LastBackup  *time.Time      `json:"last_backup,omitempty"`
	PublishedAt *time.Time      `json:"published_at,omitempty"`
	Health      []condition     `json:"health"`
}

// condition is one health finding.
type condition struct {
	Kind    string `json:"kind"` // corrupt, unavailable, lost, node_down, no_recent_backup, high_fragmentation, job_failures
	Store   string `json:"store,omitempty"`
	Node    string `json:"node,omitempty"`
	Message string `json:"message"`
}

// statsFields are the published stats the health checks read.
type statsFields struct {
	State            string `json:"state"`
	Error            string `json:"error"`
	LiveBytes        uint64 `json:"live_bytes"`
	ReclaimableBytes uint64 `json:"reclaimable_bytes"`
	ReadAmp          int    `json:"read_amp"`
}

// Health thresholds.
const (
	fragmentationShare = 0.25 // reclaimable bytes over live bytes
	fragmentationMin   = 64 << 20
	backupMaxAge       = 24 * time.Hour
)

func (s *Server) stores(ctx context.Context, only string) ([]storeView, error) {
	owners, err := s.rdb.HGetAll(ctx, jobs.StoresKey).Result()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", jobs.ErrUnavailable, err)
	}
	if only != "" {
		if err := jobs.ValidateStoreName(only); err != nil {
			return nil, err
		}
		node, ok := owners[only]
		if !ok {
			return nil, fmt.Errorf("%w %q", jobs.ErrUnknownStore, only)
		}
		owners = map[string]string{only: node}
	}
	nodes, err := jobs.Nodes(ctx, s.rdb)
	if err != nil {
		return nil, err
	}
	up := map[string]bool{}
	lost := map[string][]condition{} // store -> nodes that have it but lost its lease
	for _, n := range nodes {
		up[n.Node] = n.Up
		if n.Info == nil {
			continue
		}
		for st, holder := range n.Info.Lost {
			lost[st] = append(lost[st], condition{Kind: "lost", Store: st, Node: n.Node,
				Message: fmt.Sprintf("node %s has store %s but lost its lease to node %s: it does not serve its copy until the lease is free", n.Node, st, holder)})
		}
	}
	paused, err := jobs.Paused(ctx, s.rdb)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(owners))
	for n := range owners {
		names = append(names, n)
	}
	slices.Sort(names)
	pipe := s.rdb.Pipeline()
	gets := make([]*redis.StringCmd, len(names))
	for i, n := range names {
		gets[i] = pipe.Get(ctx, jobs.StatsKey(n))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("%w: %w", jobs.ErrUnavailable, err)
	}
	out := make([]storeView, 0, len(names))
	now := time.Now()
	for i, n := range names {
		v := storeView{Name: n, Node: owners[n], NodeUp: up[owners[n]], Backups: []backupInfo{}, Health: []condition{}}
		_, v.Paused = paused[n]
		var p published
		if raw, err := gets[i].Result(); err == nil && json.Unmarshal([]byte(raw), &p) == nil {
			v.Stats, v.PublishedAt = p.Stats, &p.At
			if p.Backups != nil {
				v.Backups = p.Backups
			}
		}
		for _, b := range v.Backups { // newest first
			if !b.Bad {
				t := b.CreatedAt
				v.LastBackup = &t
				break
			}
		}
		var st statsFields
		_ = json.Unmarshal(v.Stats, &st)
		switch {
		case !v.NodeUp:
			v.Health = append(v.Health, condition{Kind: "node_down", Store: n, Node: v.Node, Message: fmt.Sprintf("node %s is down: jobs for %s wait until it returns", v.Node, n)})
		case st.State == "corrupt":
			v.Health = append(v.Health, condition{Kind: "corrupt", Store: n, Message: "store is corrupt: " + st.Error})
		case st.State == "unavailable":
			v.Health = append(v.Health, condition{Kind: "unavailable", Store: n,
				Message: "store did not open (not corruption; retried with backoff, never restored automatically): " + st.Error})
		}
		v.Health = append(v.Health, lost[n]...)
		if v.LastBackup == nil || now.Sub(*v.LastBackup) > backupMaxAge {
			v.Health = append(v.Health, condition{Kind: "no_recent_backup", Store: n, Message: "no backup in the last 24 h"})
		}
		if st.LiveBytes > 0 && st.ReclaimableBytes >= fragmentationMin && float64(st.ReclaimableBytes) >= fragmentationShare*float64(st.LiveBytes) {
			v.Health = append(v.Health, condition{Kind: "high_fragmentation", Store: n,
				Message: fmt.Sprintf("%d of %d live bytes reclaimable by a compaction", st.ReclaimableBytes, st.LiveBytes)})
		}
		out = append(out, v)
	}
	return out, nil
}

func (s *Server) listStores(c *gin.Context) {
	v, err := s.stores(c, "")
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"stores": v})
}

func (s *Server) getStore(c *gin.Context) {
	v, err := s.stores(c, c.Param("store"))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, v[0])
}

func (s *Server) storeBackups(c *gin.Context) {
	v, err := s.stores(c, c.Param("store"))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"store": v[0].Name, "backups": v[0].Backups})
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
	stores, err := s.stores(c, "")
	if err != nil {
		s.fail(c, err)
		return
	}
	recent, _, err := jobs.History(c, s.rdb, jobs.HistoryQuery{Limit: 50})
	if err != nil {
		s.fail(c, err)
		return
	}
	if recent == nil {
		recent = []jobs.HistoryEntry{}
	}
	scheds, err := jobs.Schedules(c, s.rdb)
	if err != nil {
		s.fail(c, err)
		return
	}
	nodes, err := jobs.Nodes(c, s.rdb)
	if err != nil {
		s.fail(c, err)
		return
	}
	queues := []queueView{}
	names, err := s.insp.Queues()
	if err != nil {
		s.fail(c, fmt.Errorf("%w: %w", jobs.ErrUnavailable, err))
		return
	}
	slices.Sort(names)
	for _, q := range names {
		info, err := s.insp.GetQueueInfo(q)
		if err != nil {
			continue // removed meanwhile
		}
		queues = append(queues, queueView{Queue: q, Pending: info.Pending, Active: info.Active, Scheduled: info.Scheduled,
			Retry: info.Retry, Archived: info.Archived, Completed: info.Completed, Paused: info.Paused})
	}
	health := []condition{}
	for _, st := range stores {
		health = append(health, st.Health...)
	}
	failures := 0
	for _, h := range recent {
		if h.Status == jobs.StatusFailed && time.Since(h.At) < 24*time.Hour {
			failures++
		}
	}
	if failures > 0 {
		health = append(health, condition{Kind: "job_failures", Message: fmt.Sprintf("%d job(s) failed in the last 24 h (of the last 50 finished)", failures)})
	}
	if scheds == nil {
		scheds = []jobs.NodeSchedules{}
	}
	c.JSON(http.StatusOK, gin.H{"stores": stores, "history": publicHistory(recent), "queues": queues, "schedules": scheds, "nodes": nodes,
		"health": health, "at": time.Now().UTC()})
}
