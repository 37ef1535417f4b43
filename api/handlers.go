package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"storekeeper/jobs"
	"storekeeper/jobsdb"
)

// decodeBody reads an optional JSON body strictly: no body is {}; a body
// that is not one JSON object, a key that is not a field's exact name, a
// key given twice and trailing data are 400 (decodeStrict); over MaxBody
// is 413. The Content-Type was checked before (guard).
func decodeBody(c *gin.Context, v any) error {
	b, err := io.ReadAll(c.Request.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return errTooLarge
		}
		return invalid("reading the body: " + err.Error())
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return nil
	}
	return decodeStrict(b, v)
}

// enqueued is the answer to an enqueue: the job's record and whether it
// was already in flight.
type enqueued struct {
	jobs.Record
	Deduplicated bool `json:"deduplicated"`
}

type compactBody struct {
	Force  bool `json:"force"`
	DryRun bool `json:"dry_run"`
}

type verifyBody struct {
	Deep bool `json:"deep"`
}

// backupBody: reencrypt also rewrites the store's backups on every
// encrypted backup target for the current recipients (after a rotation).
type backupBody struct {
	Reencrypt bool `json:"reencrypt"`
}

// drillBody: a drill restores a backup into a scratch directory (never
// the live store) and proves it; by default the newest backup, from each
// backup target in turn (the local backups when there is none).
type drillBody struct {
	BackupID string `json:"backup_id"`
	Target   string `json:"target"`
	// At proves the store restorable to that moment (RFC 3339): the
	// backup a restore to it would use, plus the shipped commit log
	// replayed onto it. Not with backup_id or target.
	At string `json:"at"`
}

type restoreBody struct {
	BackupID string `json:"backup_id"`
	Target   string `json:"target"` // a backup target (--backup-target) to fetch the backup from
	// At restores the store as it was at that moment (RFC 3339): a backup
	// plus the shipped commit log. Not with backup_id or target.
	At string `json:"at"`
}

func (s *Server) params(c *gin.Context, kind jobs.Kind) (jobs.Params, error) {
	switch kind {
	case jobs.KindCompact:
		var b compactBody
		err := decodeBody(c, &b)
		return jobs.Params{Force: b.Force, DryRun: b.DryRun}, err
	case jobs.KindVerify:
		var b verifyBody
		err := decodeBody(c, &b)
		return jobs.Params{Deep: b.Deep}, err
	case jobs.KindBackup:
		var b backupBody
		err := decodeBody(c, &b)
		return jobs.Params{Reencrypt: b.Reencrypt}, err
	case jobs.KindDrill:
		var b drillBody
		if err := decodeBody(c, &b); err != nil {
			return jobs.Params{}, err
		}
		if b.Target != "" {
			if err := jobs.ValidateTargetName(b.Target); err != nil {
				return jobs.Params{}, newError(http.StatusBadRequest, "invalid_request", err.Error())
			}
		}
		if b.At != "" {
			at, err := parseMoment(b.At)
			if err == nil && (b.BackupID != "" || b.Target != "") {
				err = newError(http.StatusBadRequest, "invalid_request", "at chooses the backup itself: not with backup_id or target")
			}
			return jobs.Params{At: at}, err
		}
		return jobs.Params{BackupID: b.BackupID, Target: b.Target}, nil
	default:
		var b struct{}
		return jobs.Params{}, decodeBody(c, &b)
	}
}

func (s *Server) enqueueOne(kind jobs.Kind) gin.HandlerFunc {
	return func(c *gin.Context) {
		p, err := s.params(c, kind)
		if err != nil {
			s.fail(c, err)
			return
		}
		name := c.Param("store")
		switch {
		case p.Target != "" && !s.hasTarget(c, name, p.Target):
			return
		case kind == jobs.KindDrill && !p.At.IsZero() && !s.momentReachable(c, name, p.At):
			return
		case p.Reencrypt && !s.reencryptable(c, name):
			return
		}
		s.enqueue(c, jobs.Request{Kind: kind, Store: name, Params: p, Trigger: jobs.TriggerManual, Actor: actor(c)})
	}
}

func (s *Server) enqueue(c *gin.Context, req jobs.Request) {
	res, err := s.jobs.Enqueue(c, req)
	if err != nil {
		s.fail(c, err)
		return
	}
	s.metrics.enqueued(req.Kind, res.Deduplicated)
	c.Header("Location", "/api/jobs/"+res.Record.ID)
	c.JSON(http.StatusAccepted, enqueued{Record: publicRecord(res.Record), Deduplicated: res.Deduplicated})
}

// enqueueAll makes one job per known store under one batch id. The answer
// lists the first batchListed jobs in the stores' order; GET
// /api/jobs?batch= pages through them all.
func (s *Server) enqueueAll(kind jobs.Kind) gin.HandlerFunc {
	return func(c *gin.Context) {
		p, err := s.params(c, kind)
		if err != nil {
			s.fail(c, err)
			return
		}
		b, err := s.jobs.EnqueueBatch(c, jobs.BatchRequest{Kind: kind, Params: p, Trigger: jobs.TriggerManual, Actor: actor(c), List: batchListed})
		s.metrics.enqueuedN(kind, false, b.New)
		s.metrics.enqueuedN(kind, true, b.Deduplicated)
		if err != nil {
			s.fail(c, err)
			return
		}
		out := make([]enqueued, 0, len(b.Jobs))
		for _, res := range b.Jobs {
			out = append(out, enqueued{Record: publicRecord(res.Record), Deduplicated: res.Deduplicated})
		}
		c.Header("Location", "/api/jobs?batch="+b.ID)
		c.JSON(http.StatusAccepted, batchAnswer{BatchID: b.ID, Total: b.Total, New: b.New, Deduplicated: b.Deduplicated, Jobs: out})
	}
}

// batchListed is how many of a batch's jobs the answer to a bulk enqueue
// lists.
const batchListed = 1000

func (s *Server) restore(c *gin.Context) {
	var b restoreBody
	if err := decodeBody(c, &b); err != nil {
		s.fail(c, err)
		return
	}
	name := c.Param("store")
	if b.At != "" {
		s.restoreAt(c, name, b)
		return
	}
	if b.Target != "" {
		// The backup is on the target, which only the workers reach: the
		// owner checks the backup when the job runs (one the target lacks
		// fails the job, naming it). Which targets there are, its
		// published status says.
		if err := jobs.ValidateTargetName(b.Target); err != nil {
			s.fail(c, newError(http.StatusBadRequest, "invalid_request", err.Error()))
			return
		}
		if !s.hasTarget(c, name, b.Target) {
			return
		}
		s.enqueue(c, jobs.Request{Kind: jobs.KindRestore, Store: name, Params: jobs.Params{BackupID: b.BackupID, Target: b.Target},
			Trigger: jobs.TriggerManual, Actor: actor(c)})
		return
	}
	pub, err := s.published(c, name)
	if err != nil {
		s.fail(c, err)
		return
	}
	// The owner republishes backups before any job finishes: what the API
	// sees here is current. Until it has published, nothing says whether
	// there is a backup to restore, or which: refused, no job made.
	if pub == nil {
		s.fail(c, errUnknownState(name))
		return
	}
	// The worker applies the same rule when the job runs (the backups may
	// have changed meanwhile); refusing here answers the operator now.
	if b.BackupID != "" {
		i := slices.IndexFunc(pub.Backups, func(bi jobs.BackupSummary) bool { return bi.ID == b.BackupID })
		switch {
		case i < 0:
			s.fail(c, newError(http.StatusNotFound, "unknown_backup", fmt.Sprintf("store %s has no backup %q", name, b.BackupID)))
			return
		case !pub.Backups[i].Usable():
			s.fail(c, newError(http.StatusConflict, "no_backup", fmt.Sprintf("backup %s of store %s is marked bad or was never verified", b.BackupID, name)))
			return
		}
	} else if _, ok := jobs.NewestUsable(pub.Backups); !ok && !slices.ContainsFunc(pub.Targets, func(t jobs.TargetStatus) bool { return t.BackupID != "" }) {
		// Neither a usable local backup nor one on a target: the worker
		// restores the newest across both.
		s.fail(c, newError(http.StatusConflict, "no_backup", fmt.Sprintf("store %s has no verified backup to restore, locally or on a backup target", name)))
		return
	}
	s.enqueue(c, jobs.Request{Kind: jobs.KindRestore, Store: name, Params: jobs.Params{BackupID: b.BackupID}, Trigger: jobs.TriggerManual, Actor: actor(c)})
}

// parseMoment reads a body's at: an RFC 3339 time, not in the future
// (beyond a minute of clock skew), in UTC.
func parseMoment(v string) (time.Time, error) {
	at, err := time.Parse(time.RFC3339Nano, v)
	switch {
	case err != nil:
		return at, newError(http.StatusBadRequest, "invalid_request", fmt.Sprintf("at %q: want an RFC 3339 time, e.g. 2026-12-04T10:30:00Z", v))
	case at.After(time.Now().Add(time.Minute)):
		return at, newError(http.StatusBadRequest, "invalid_request", fmt.Sprintf("at %s is in the future", at.UTC().Format(time.RFC3339)))
	}
	return at.UTC(), nil
}

// restoreAt enqueues a restore to a moment (point-in-time recovery). The
// store's owner must ship its commit log: its published status shows a
// shipping lag for its targets.
func (s *Server) restoreAt(c *gin.Context, name string, b restoreBody) {
	at, err := parseMoment(b.At)
	switch {
	case err != nil:
		s.fail(c, err)
		return
	case b.BackupID != "" || b.Target != "":
		s.fail(c, newError(http.StatusBadRequest, "invalid_request", "at chooses the backup itself: not with backup_id or target"))
		return
	}
	if !s.momentReachable(c, name, at) {
		return
	}
	s.enqueue(c, jobs.Request{Kind: jobs.KindRestore, Store: name, Params: jobs.Params{At: at.UTC()}, Trigger: jobs.TriggerManual, Actor: actor(c)})
}

// momentReachable reports whether the owner of store name could rebuild
// it as it was at at, as far as its published status tells: it ships its
// commit log, and at is not before the log starts. When not, it has
// answered the request (409 not_shipping or before_log_start, or why the
// owner's status is not known), so that a mistyped moment is refused
// here rather than failing as a job, with a failure notification.
func (s *Server) momentReachable(c *gin.Context, name string, at time.Time) bool {
	pub, err := s.published(c, name)
	if err != nil {
		s.fail(c, err)
		return false
	}
	if pub == nil {
		s.fail(c, errUnknownState(name))
		return false
	}
	if !slices.ContainsFunc(pub.Targets, func(t jobs.TargetStatus) bool { return t.ShipLag != nil }) {
		s.fail(c, newError(http.StatusConflict, "not_shipping", fmt.Sprintf("store %s's node does not ship its commit log (--backup-target with --ship-interval): it can be restored to a backup, not to a moment", name)))
		return false
	}
	if !pub.LogStart.IsZero() && at.Before(pub.LogStart) {
		s.fail(c, newError(http.StatusConflict, "before_log_start", fmt.Sprintf("store %s's commit log starts at %s: no moment before it can be restored to (restore a backup instead)",
			name, pub.LogStart.UTC().Format(time.RFC3339Nano))))
		return false
	}
	return true
}

// reencryptable reports whether the owner of store name has an encrypted
// backup target, which a backup with reencrypt needs: when its published
// status says it has none, it has answered the request (409
// nothing_to_reencrypt). A status not published yet, or from a node that
// does not say, leaves it to the job.
func (s *Server) reencryptable(c *gin.Context, name string) bool {
	pub, err := s.published(c, name)
	if err != nil {
		s.fail(c, err)
		return false
	}
	if pub == nil || slices.ContainsFunc(pub.Targets, func(t jobs.TargetStatus) bool { return t.Encrypted == nil || *t.Encrypted }) {
		return true
	}
	s.fail(c, newError(http.StatusConflict, "nothing_to_reencrypt", fmt.Sprintf("store %s's node has no encrypted backup target (--backup-encrypt-to): there is nothing to reencrypt", name)))
	return false
}

// adoptBody asks a node to make a store from a backup target: the
// disaster recovery of a store whose machine is gone.
type adoptBody struct {
	Node     string `json:"node"`      // the node that adopts the store
	Target   string `json:"target"`    // the backup target (--backup-target) holding its backups
	BackupID string `json:"backup_id"` // empty: the newest the target holds
	Force    bool   `json:"force"`     // adopt though the old owner's lease is still held (its node must be down)
}

// adopt enqueues an adoption on the node the body names. It refuses, with
// no job made, what the adopting worker would refuse: a node that is not
// up, and a store whose owner may still serve it (409 store_held: its
// node is up, or its lease is held and force was not given). The worker
// applies the same rules when the job runs, atomically.
func (s *Server) adopt(c *gin.Context) {
	var b adoptBody
	if err := decodeBody(c, &b); err != nil {
		s.fail(c, err)
		return
	}
	name := c.Param("store")
	if err := jobs.ValidateStoreName(name); err != nil {
		s.fail(c, newError(http.StatusBadRequest, "invalid_request", err.Error()))
		return
	}
	if b.Node == "" || b.Target == "" {
		s.fail(c, invalid("adopt needs a node and a target"))
		return
	}
	if err := jobs.ValidateTargetName(b.Target); err != nil {
		s.fail(c, newError(http.StatusBadRequest, "invalid_request", err.Error()))
		return
	}
	nodes, err := jobsdb.Nodes(c, s.rdb)
	if err != nil {
		s.fail(c, err)
		return
	}
	i := slices.IndexFunc(nodes, func(n jobs.NodeStatus) bool { return n.Node == b.Node })
	switch {
	case i < 0:
		s.fail(c, newError(http.StatusNotFound, "unknown_node", fmt.Sprintf("no node %q has ever run", b.Node)))
		return
	case !nodes[i].Up:
		s.fail(c, newError(http.StatusConflict, "node_down", fmt.Sprintf("node %s is down: it cannot adopt a store", b.Node)))
		return
	case slices.Contains(nodes[i].Info.Stores, name):
		s.fail(c, newError(http.StatusConflict, "store_exists", fmt.Sprintf("node %s has a store %s already", b.Node, name)))
		return
	}
	if err := jobsdb.CheckAdopt(c, s.rdb, name, b.Node, b.Force); err != nil {
		s.fail(c, err)
		return
	}
	s.enqueue(c, jobs.Request{Kind: jobs.KindAdopt, Store: name, Params: jobs.Params{Node: b.Node, Target: b.Target, BackupID: b.BackupID, Force: b.Force},
		Trigger: jobs.TriggerManual, Actor: actor(c)})
}

// hasTarget reports whether the owner of store name publishes backup
// target target; when not, it has answered the request (404
// unknown_target, or why the owner's status is not known).
func (s *Server) hasTarget(c *gin.Context, name, target string) bool {
	pub, err := s.published(c, name)
	if err != nil {
		s.fail(c, err)
		return false
	}
	if pub == nil {
		s.fail(c, errUnknownState(name))
		return false
	}
	if !slices.ContainsFunc(pub.Targets, func(t jobs.TargetStatus) bool { return t.Target == target }) {
		s.fail(c, newError(http.StatusNotFound, "unknown_target", fmt.Sprintf("store %s's node has no backup target %q (--backup-target)", name, target)))
		return false
	}
	return true
}

// published returns what the store's owner last published: nil when it
// has not published yet; unknown_store when no node owns the store.
func (s *Server) published(c *gin.Context, name string) (*jobs.StoreStatus, error) {
	if err := jobs.ValidateStoreName(name); err != nil {
		return nil, err
	}
	_, v, err := jobsdb.StoreOwnerAndStatus(c, s.rdb, name)
	if err != nil || v == nil {
		return nil, err
	}
	var p jobs.StoreStatus
	if err := json.Unmarshal(v, &p); err != nil {
		return nil, fmt.Errorf("stats of store %s: %w", name, err)
	}
	return &p, nil
}

func (s *Server) getJob(c *gin.Context) {
	id := c.Param("id")
	if len(id) > 64 {
		s.fail(c, fmt.Errorf("%w %q", jobs.ErrUnknownJob, id[:64]))
		return
	}
	rec, err := s.jobs.Get(c, id)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, publicRecord(rec))
}

func (s *Server) cancelJob(c *gin.Context) {
	if !s.emptyBody(c) {
		return
	}
	rec, err := s.jobs.Cancel(c, c.Param("id"), actor(c))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, publicRecord(rec))
}

// listJobs lists a batch's jobs (?batch=), or the jobs in flight, newest
// first, filtered by store, kind and state; with ?limit= a page of them
// (filtered after paging: a page can hold fewer than limit), the next
// from ?cursor=next_cursor.
func (s *Server) listJobs(c *gin.Context) {
	q := c.Request.URL.Query()
	kind, state := jobs.Kind(q.Get("kind")), jobs.State(q.Get("state"))
	if kind != "" && !kind.Valid() {
		s.fail(c, invalid(fmt.Sprintf("unknown kind %q", kind)))
		return
	}
	if state != "" && !slices.Contains([]jobs.State{jobs.StatePending, jobs.StateActive, jobs.StateRetry, jobs.StateSucceeded, jobs.StateFailed, jobs.StateCanceled}, state) {
		s.fail(c, invalid(fmt.Sprintf("unknown state %q", state)))
		return
	}
	limit, err := queryLimit(q, jobsPageMax)
	if err != nil {
		s.fail(c, err)
		return
	}
	cursor := q.Get("cursor")
	if _, err := jobs.IDTime(cursor); cursor != "" && (limit == 0 || err != nil) {
		s.fail(c, newError(http.StatusBadRequest, "bad_cursor", fmt.Sprintf("cursor %q is not a job id from a page's next_cursor (with limit)", cursor)))
		return
	}
	recs, next, err := s.jobs.JobsPage(c, q.Get("batch"), cursor, limit)
	if err != nil {
		s.fail(c, err)
		return
	}
	out := []jobs.Record{}
	for _, r := range recs { // newest first
		if (q.Get("store") == "" || r.Store == q.Get("store")) && (kind == "" || r.Kind == kind) && (state == "" || r.State == state) {
			out = append(out, publicRecord(r))
		}
	}
	c.JSON(http.StatusOK, jobList{Jobs: out, NextCursor: next})
}

// jobsPageMax is the largest page of GET /api/jobs.
const jobsPageMax = 1000

func (s *Server) history(c *gin.Context) {
	q := c.Request.URL.Query()
	hq := jobs.HistoryQuery{Store: q.Get("store"), Kind: jobs.Kind(q.Get("kind")), Before: q.Get("before")}
	n, err := queryLimit(q, 500)
	if err != nil {
		s.fail(c, err)
		return
	}
	hq.Limit = n
	entries, next, err := jobsdb.HistoryRaw(c, s.rdb, hq)
	if err == nil {
		var body []byte
		if body, err = historyPageJSON(entries, next); err == nil {
			c.Data(http.StatusOK, "application/json; charset=utf-8", body)
			return
		}
	}
	s.fail(c, err)
}

// emptyBody reads a body that must be {} or nothing.
func (s *Server) emptyBody(c *gin.Context) bool {
	var b struct{}
	if err := decodeBody(c, &b); err != nil {
		s.fail(c, err)
		return false
	}
	return true
}

func (s *Server) pause(c *gin.Context) {
	if !s.emptyBody(c) {
		return
	}
	if err := jobsdb.Pause(c, s.rdb, c.Param("store"), actor(c)); err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"store": c.Param("store"), "paused": true})
}

func (s *Server) resume(c *gin.Context) {
	if !s.emptyBody(c) {
		return
	}
	if err := jobsdb.Resume(c, s.rdb, c.Param("store")); err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"store": c.Param("store"), "paused": false})
}

// listNodes answers every node that has run, up or down, with its last
// heartbeat (its stores, the stores it lost, its version): what the
// dashboard's paged answer leaves out. ?node= answers that one node.
func (s *Server) listNodes(c *gin.Context) {
	nodes, err := jobsdb.Nodes(c, s.rdb)
	if err != nil {
		s.fail(c, err)
		return
	}
	if name, ok := c.GetQuery("node"); ok {
		nodes = slices.DeleteFunc(nodes, func(n jobs.NodeStatus) bool { return n.Node != name })
		if len(nodes) == 0 {
			s.fail(c, newError(http.StatusNotFound, "unknown_node", fmt.Sprintf("no node %q has ever run", name)))
			return
		}
	}
	slices.SortFunc(nodes, func(a, b jobs.NodeStatus) int { return strings.Compare(a.Node, b.Node) })
	c.JSON(http.StatusOK, gin.H{"nodes": nodes})
}

func (s *Server) schedules(c *gin.Context) {
	nodes, err := jobsdb.Schedules(c, s.rdb)
	if err != nil {
		s.fail(c, err)
		return
	}
	paused, err := jobsdb.Paused(c, s.rdb)
	if err != nil {
		s.fail(c, err)
		return
	}
	if nodes == nil {
		nodes = []jobs.NodeSchedules{}
	}
	slices.SortFunc(nodes, func(a, b jobs.NodeSchedules) int { return strings.Compare(a.Node, b.Node) })
	c.JSON(http.StatusOK, gin.H{"nodes": nodes, "paused": paused})
}
