package chaos

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"storekeeper/internal/keyspace"
	"storekeeper/jobs"
)

// invariant is one checked promise and what broke it.
type invariant struct {
	Name       string
	Violations []string
	Note       string // what was checked, in numbers
}

func (iv *invariant) failf(format string, a ...any) {
	iv.Violations = append(iv.Violations, fmt.Sprintf(format, a...))
}

// streamAll reads a whole stream, oldest first.
func streamAll(ctx context.Context, rdb *redis.Client, key string) ([]redis.XMessage, error) {
	var out []redis.XMessage
	start := "-"
	for {
		msgs, err := rdb.XRangeN(ctx, key, start, "+", 5000).Result()
		if err != nil {
			return nil, err
		}
		out = append(out, msgs...)
		if len(msgs) < 5000 {
			return out, nil
		}
		start = "(" + msgs[len(msgs)-1].ID
	}
}

type checker struct {
	c       *Cluster
	l       *load
	ctx     context.Context
	records map[string]jobs.Record
	history map[string][]jobs.HistoryEntry
	events  []jobs.Event
	byJob   map[string][]jobs.Event
}

func (k *checker) load() error {
	hist, err := streamAll(k.ctx, k.c.rdb, keyspace.HistoryStream)
	if err != nil {
		return fmt.Errorf("read history: %w", err)
	}
	k.history = map[string][]jobs.HistoryEntry{}
	for _, m := range hist {
		var h jobs.HistoryEntry
		if err := json.Unmarshal([]byte(m.Values[keyspace.StreamField].(string)), &h); err != nil {
			return fmt.Errorf("history entry %s: %w", m.ID, err)
		}
		h.ID = m.ID
		k.history[h.JobID] = append(k.history[h.JobID], h)
	}
	evs, err := streamAll(k.ctx, k.c.rdb, keyspace.EventsStream)
	if err != nil {
		return fmt.Errorf("read events: %w", err)
	}
	k.byJob = map[string][]jobs.Event{}
	for _, m := range evs {
		var e jobs.Event
		if err := json.Unmarshal([]byte(m.Values[keyspace.StreamField].(string)), &e); err != nil {
			return fmt.Errorf("event %s: %w", m.ID, err)
		}
		e.ID = m.ID
		k.events = append(k.events, e)
		if e.JobID != "" {
			k.byJob[e.JobID] = append(k.byJob[e.JobID], e)
		}
	}
	k.records = map[string]jobs.Record{}
	for id := range k.l.accepted {
		h, err := k.c.rdb.HGetAll(k.ctx, keyspace.RecordKey(id)).Result()
		if err != nil {
			return fmt.Errorf("read record %s: %w", id, err)
		}
		if len(h) == 0 {
			continue
		}
		r, err := jobs.RecordFromHash(h)
		if err != nil {
			return fmt.Errorf("record %s: %w", id, err)
		}
		k.records[id] = r
	}
	return nil
}

// acceptedJobs: every 202 reaches exactly one terminal state, with exactly
// one history entry (and no job has two).
func (k *checker) acceptedJobs() (*invariant, *invariant, int) {
	terminal := &invariant{Name: "every accepted job reaches exactly one terminal state"}
	hist := &invariant{Name: "exactly one history entry per finished job"}
	lost := 0
	ids := sortedKeys(k.l.accepted)
	for _, id := range ids {
		r, ok := k.records[id]
		switch {
		case !ok:
			lost++
			if k.c.opt.MinReplicas > 0 {
				terminal.failf("job %s (%s %s) was accepted and is gone", id, k.l.accepted[id].Kind, k.l.accepted[id].Store)
			}
		case !r.State.Terminal():
			terminal.failf("job %s is %s after convergence", id, r.State)
		case len(k.history[id]) != 1:
			hist.failf("job %s (%s) has %d history entries", id, r.State, len(k.history[id]))
		}
	}
	for id, hs := range k.history {
		if len(hs) > 1 && k.l.accepted[id].ID == "" {
			hist.failf("job %s has %d history entries", id, len(hs))
		}
	}
	terminal.Note = fmt.Sprintf("%d jobs accepted", len(ids))
	if k.c.opt.MinReplicas == 0 {
		terminal.Note += fmt.Sprintf("; with --redis-min-replicas 0, %d accepted jobs were lost in failovers (measured, not a violation)", lost)
	}
	hist.Note = fmt.Sprintf("%d history entries", countAll(k.history))
	return terminal, hist, lost
}

// eventSequences: each job's events start with one job.enqueued and hold
// at most one terminal event, the last of its job.* events, matching the
// record. What an attempt did to its store after the job ended without it
// (store.restored, backup.target_failed: keyspace.EndedGuard) comes after.
func (k *checker) eventSequences() *invariant {
	iv := &invariant{Name: "each job's events form a valid sequence"}
	checked := 0
	for id, evs := range k.byJob {
		if evs[0].Type != jobs.EventJobEnqueued {
			continue // its start was trimmed from the stream
		}
		checked++
		enq, term := 0, 0
		for i, e := range evs {
			switch e.Type {
			case jobs.EventJobEnqueued:
				enq++
			case jobs.EventJobSucceeded, jobs.EventJobFailed, jobs.EventJobCanceled:
				term++
				for _, later := range evs[i+1:] {
					if strings.HasPrefix(string(later.Type), "job.") {
						iv.failf("job %s: %s then %s", id, e.Type, later.Type)
						break
					}
				}
				if r, ok := k.records[id]; ok && string(r.State) != strings.TrimPrefix(string(e.Type), "job.") {
					iv.failf("job %s: event %s but record %s", id, e.Type, r.State)
				}
			}
		}
		if enq != 1 || term > 1 {
			iv.failf("job %s: %d job.enqueued, %d terminal events", id, enq, term)
		}
	}
	iv.Note = fmt.Sprintf("%d jobs' sequences, %d events", checked, len(k.events))
	return iv
}

// notifications: no job.failed notification for a job that did not fail;
// every accepted job that failed notified exactly once (distinct ids).
func (k *checker) notifications() *invariant {
	iv := &invariant{Name: "failures notified once, and only failures"}
	failedIDs := map[string]map[string]bool{}
	notes := k.c.sink.notifications()
	for _, n := range notes {
		if n.Type != jobs.EventJobFailed {
			continue
		}
		if failedIDs[n.JobID] == nil {
			failedIDs[n.JobID] = map[string]bool{}
		}
		failedIDs[n.JobID][n.ID] = true
		if r, ok := k.records[n.JobID]; ok && r.State != jobs.StateFailed {
			iv.failf("job %s: job.failed notified, but the job is %s", n.JobID, r.State)
		}
	}
	failed := 0
	for id, r := range k.records {
		if r.State != jobs.StateFailed {
			continue
		}
		failed++
		if n := len(failedIDs[id]); n != 1 {
			iv.failf("job %s failed and was notified %d times", id, n)
		}
	}
	iv.Note = fmt.Sprintf("%d notifications, %d accepted jobs failed", len(notes), failed)
	return iv
}

// watchers: a watcher that resumed with since= saw every event the stream
// still holds between since and the last event it got, unless it was
// told of a gap.
func (k *checker) watchers() *invariant {
	iv := &invariant{Name: "resumed watchers miss nothing silently"}
	resumed, gaps := 0, 0
	for _, s := range k.l.sessions {
		if s.Since == "" || len(s.IDs) == 0 {
			continue
		}
		resumed++
		if s.Gap {
			gaps++
			continue
		}
		got := map[string]bool{}
		for _, id := range s.IDs {
			got[id] = true
		}
		hi := s.IDs[len(s.IDs)-1]
		missing := 0
		for _, e := range k.events {
			if jobs.CompareStreamIDs(e.ID, s.Since) <= 0 || jobs.CompareStreamIDs(e.ID, hi) > 0 {
				continue
			}
			if s.Filter != "" && e.Store != s.Filter {
				continue
			}
			if !got[e.ID] {
				missing++
			}
		}
		if missing > 0 {
			iv.failf("a watcher resumed since %s (store=%q) missed %d events up to %s with no gap frame", s.Since, s.Filter, missing, hi)
		}
	}
	iv.Note = fmt.Sprintf("%d sessions, %d resumed, %d told of a gap", len(k.l.sessions), resumed, gaps)
	return iv
}

// apiAnswers: no answer a fault cannot excuse (a 500, a backup of an
// unknown store accepted, ctl's usage error).
func (k *checker) apiAnswers() *invariant {
	iv := &invariant{Name: "no wrong API answer", Violations: slices.Clone(k.l.wrong)}
	n := 0
	for _, v := range k.l.actions {
		n += v
	}
	iv.Note = fmt.Sprintf("%d requests", n)
	return iv
}

// converge waits, after the faults, until every store is open and
// healthy, no job is pending, active or waiting to be retried, and every
// node is ready.
func (k *checker) converge(timeout time.Duration) (*invariant, time.Duration) {
	iv := &invariant{Name: "the system converges within 60 s after the faults"}
	start := time.Now()
	var last error
	err := waitFor(k.ctx, timeout, "convergence", func() error {
		last = k.convergedNow()
		return last
	})
	took := time.Since(start)
	if err != nil {
		iv.failf("not converged after %s: %v", timeout, last)
	}
	iv.Note = fmt.Sprintf("converged in %s", took.Round(time.Millisecond))
	return iv, took
}

func (k *checker) convergedNow() error {
	for _, a := range k.c.apis {
		if err := httpOK(k.ctx, "http://"+a.addr+"/readyz"); err != nil {
			return err
		}
	}
	for _, n := range k.c.nodes {
		if err := httpOK(k.ctx, "http://"+n.addr+"/readyz"); err != nil {
			return fmt.Errorf("node %s: %w", n.name, err)
		}
	}
	var stores struct {
		Stores []jobs.StoreView `json:"stores"`
	}
	if err := k.getJSON("/api/stores", &stores); err != nil {
		return err
	}
	if len(stores.Stores) < len(k.c.stores()) {
		return fmt.Errorf("%d stores listed, want %d", len(stores.Stores), len(k.c.stores()))
	}
	for _, s := range stores.Stores {
		if s.Stats == nil || s.Stats.State != jobs.StoreOpen || s.Stats.NotOwner != "" || !s.NodeUp {
			return fmt.Errorf("store %s not open and owned: %+v", s.Name, s.Stats)
		}
		for _, h := range s.Health {
			if slices.Contains([]string{"corrupt", "unavailable", "lost", "node_down"}, h.Kind) {
				return fmt.Errorf("store %s: %s: %s", s.Name, h.Kind, h.Message)
			}
		}
	}
	var inflight struct {
		Jobs []jobs.Record `json:"jobs"`
	}
	if err := k.getJSON("/api/jobs", &inflight); err != nil {
		return err
	}
	return unsettled(inflight.Jobs)
}

// unsettled names the first of the jobs listed that has not settled:
// pending, active, or waiting for its next attempt. A job in retry runs
// again (a lease lost at the last fault waits a lease period or two), so
// a system holding one has not converged, and checking before it ran
// found it "retry after convergence".
func unsettled(listed []jobs.Record) error {
	for _, r := range listed {
		if !r.State.Terminal() {
			return fmt.Errorf("job %s (%s %s) still %s", r.ID, r.Kind, r.Store, r.State)
		}
	}
	return nil
}

func (k *checker) getJSON(path string, v any) error {
	req, _ := http.NewRequestWithContext(k.ctx, "GET", "http://"+k.c.apis[0].addr+path, nil)
	req.Header.Set("Authorization", "Bearer "+k.c.token)
	resp, err := quick.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("GET %s: %d", path, resp.StatusCode)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// restoresFile writes, for chaosnode verify, every restore's rollback
// window: "<store> <backup_at ns> <recorded ns>".
func (k *checker) restoresFile(path string) (int, error) {
	// Every rollback is named by a store.restored event: a restore that
	// succeeded records it with its end, and one whose swap was done when
	// its store's lease was lost (its success refused by the fence)
	// records it with the failed attempt. The window ends when the event
	// was recorded, after the swap.
	var lines []string
	for _, e := range k.events {
		if e.Type != jobs.EventStoreRestored || e.Store == "" {
			continue
		}
		if e.BackupAt.IsZero() {
			return 0, fmt.Errorf("%s store.restored of job %s on %s names no backup time", e.ID, e.JobID, e.Store)
		}
		lines = append(lines, fmt.Sprintf("%s %d %d", e.Store, e.BackupAt.UnixNano(), e.At.UnixNano()))
	}
	sort.Strings(lines)
	return len(lines), os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
}

// writes runs chaosnode verify on every node's stores (the nodes stopped):
// no acknowledged synced write lost but what a restore rolled back, no
// write that was never attempted, every store and backup passes Pebble's
// CheckLevels.
//
// With pitr, it also checks the restores to a moment pitr made (written
// to pitrFile) and adds the result to pitr's invariant.
func (k *checker) writes(restores string, pitr *pitrRun, pitrFile string) *invariant {
	iv := &invariant{Name: "no acknowledged synced write lost; stores and backups pass CheckLevels"}
	var acked, rolled, backups, checked int
	var sum pitrStore
	for _, n := range k.c.nodes {
		args := []string{"verify", "--data", n.data, "--ledger", n.ledger,
			"--stores", strings.Join(n.stores, ","), "--restores", restores, "--backups", n.backups}
		if pitr != nil {
			args = append(args, "--pitr", pitrFile)
		}
		cmd := exec.CommandContext(k.ctx, k.c.nodeBin, args...)
		out, err := cmd.Output()
		var res struct {
			Stores map[string]struct {
				AckedSynced    int        `json:"acked_synced"`
				MissingSynced  []string   `json:"missing_synced"`
				RolledBack     int        `json:"rolled_back"`
				UnknownPresent []string   `json:"unknown_present"`
				CheckLevels    string     `json:"check_levels"`
				BackupsChecked int        `json:"backups_checked"`
				BackupErrors   []string   `json:"backup_errors"`
				PITR           *pitrStore `json:"pitr"`
			} `json:"stores"`
			Violations int `json:"violations"`
		}
		if jerr := json.Unmarshal(out, &res); jerr != nil {
			iv.failf("%s: chaosnode verify: %v (%v): %s", n.name, err, jerr, trim(out))
			continue
		}
		for name, s := range res.Stores {
			acked += s.AckedSynced
			rolled += s.RolledBack
			backups += s.BackupsChecked
			for _, key := range s.MissingSynced {
				iv.failf("%s: acknowledged synced write %s is gone", name, key)
			}
			for _, key := range s.UnknownPresent {
				iv.failf("%s: %s is present but was never written", name, key)
			}
			if s.CheckLevels != "ok" {
				iv.failf("%s: CheckLevels: %s", name, s.CheckLevels)
			}
			for _, e := range s.BackupErrors {
				iv.failf("%s: backup: %s", name, e)
			}
			if pitr != nil {
				pitr.add(name, s.PITR, &sum, &checked)
			}
		}
	}
	iv.Note = fmt.Sprintf("%d synced writes acknowledged, %d rolled back by restores, %d backups checked", acked, rolled, backups)
	if pitr != nil {
		pitr.iv.Note += fmt.Sprintf("%d stores restored to %s and checked: %d writes acknowledged and shipped by then present (%d more rolled back by earlier restores), "+
			"%d writes begun by then present, %d written after it and before the restore gone",
			checked, pitr.at.UTC().Format(time.RFC3339Nano), sum.Shipped-len(sum.Missing), sum.Excused, sum.Kept, sum.Dropped)
	}
	return iv
}

// pebbleCheck runs Pebble's own `db check` (chaosnode pebble) on every
// store once the nodes stopped (it takes the directory's lock). A store
// passes when the tool exits 0, writes nothing on stderr (its
// informational log is dropped; a CheckLevels error is printed there with
// exit code 0) and prints its "checked N points" line.
func (k *checker) pebbleCheck() *invariant {
	iv := &invariant{Name: "pebble db check passes on every store"}
	checked, points := 0, 0
	line := regexp.MustCompile(`checked (\d+) points?`)
	for _, n := range k.c.nodes {
		for _, s := range n.stores {
			var stdout, stderr bytes.Buffer
			cmd := exec.CommandContext(k.ctx, k.c.nodeBin, "pebble", "db", "check", filepath.Join(n.data, s))
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			m := line.FindStringSubmatch(stdout.String())
			switch {
			case err != nil || stderr.Len() > 0:
				iv.failf("%s: pebble db check: %v: %s", s, err, trim(stderr.Bytes()))
			case m == nil:
				iv.failf("%s: pebble db check printed no \"checked N points\" line: %s", s, trim(stdout.Bytes()))
			default:
				checked++
				p, _ := strconv.Atoi(m[1])
				points += p
			}
		}
	}
	iv.Note = fmt.Sprintf("%d stores checked, %d points", checked, points)
	return iv
}

// ledgerAcks counts the acknowledged writes in a node's ledger.
func ledgerAcks(path string) (synced, unsynced int) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) >= 4 && fs[0] == "A" {
			if fs[3] == "1" {
				synced++
			} else {
				unsynced++
			}
		}
	}
	return synced, unsynced
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func countAll(m map[string][]jobs.HistoryEntry) int {
	n := 0
	for _, v := range m {
		n += len(v)
	}
	return n
}
