package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"storekeeper/client"
	"storekeeper/internal/redistest"
	"storekeeper/internal/syncbuf"
	"storekeeper/jobs"
)

const (
	ctlOperatorToken = "ctl-test-operator-token"
	ctlViewerToken   = "ctl-test-viewer-token-0"
)

// These tests run storekeeper ctl (package internal/ctl) through the
// command's dispatch against `storekeeper serve`; the tests that need no
// server, or a scripted one, are in internal/ctl.

// ctlServer is `storekeeper serve` run in-process on a private Redis, with
// stores a and b and no schedules.
type ctlServer struct {
	url       string
	backupDir string
}

func startCtlServer(t *testing.T) *ctlServer {
	t.Helper()
	rs := redistest.Start(t)
	dir := t.TempDir()
	s := &ctlServer{backupDir: filepath.Join(dir, "backups")}
	ctx, cancel := context.WithCancel(context.Background())
	logs := &syncbuf.Buffer{}
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--listen", listenAddr, "--redis", rs.URL(), "--stores", "a,b", "--node", "ctl",
			"--data-dir", filepath.Join(dir, "data"), "--backup-dir", s.backupDir,
			"--tokens", "ops:operator:" + ctlOperatorToken + ",eve:viewer:" + ctlViewerToken,
			"--schedule-compact", "off", "--schedule-backup", "off", "--schedule-verify", "off", "--log-format", "json"}, io.Discard, logs)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("serve did not stop within 30 s")
		}
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	stopped := exited(t, done, "serve")
	s.url = listening(t, logs.String, stopped)
	waitReady(t, http.DefaultClient, s.url, stopped, logs.String)
	return s
}

// ctl runs storekeeper ctl against s as the operator, under a deadline,
// and returns its exit status and output.
func (s *ctlServer) ctl(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	var out, errOut bytes.Buffer
	code = run(ctx, append([]string{"ctl", "--server", s.url, "--token", ctlOperatorToken}, args...), &out, &errOut)
	if ctx.Err() != nil {
		t.Fatalf("ctl %v: still running after a minute\nstdout:\n%s\nstderr:\n%s", args, out.String(), errOut.String())
	}
	return code, out.String(), errOut.String()
}

// mustCtl is ctl that must exit 0.
func (s *ctlServer) mustCtl(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errOut := s.ctl(t, args...)
	if code != 0 {
		t.Fatalf("ctl %v: exit %d\nstdout:\n%s\nstderr:\n%s", args, code, out, errOut)
	}
	return out
}

func TestCtl(t *testing.T) {
	s := startCtlServer(t)
	var batchID string // of compact --all

	t.Run("stores", func(t *testing.T) {
		out := s.mustCtl(t, "stores")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 3 || !strings.HasPrefix(lines[0], "STORE") || !strings.HasPrefix(lines[1], "a ") || !strings.HasPrefix(lines[2], "b ") {
			t.Fatalf("stores table:\n%s", out)
		}
		if !strings.Contains(lines[1], "ctl") || !strings.Contains(lines[1], "never") {
			t.Fatalf("store a's row lacks its node or its last backup: %q", lines[1])
		}
		var v struct {
			Stores []struct {
				Name string `json:"name"`
			} `json:"stores"`
		}
		if err := json.Unmarshal([]byte(s.mustCtl(t, "stores", "--json")), &v); err != nil || len(v.Stores) != 2 {
			t.Fatalf("stores --json: %v %+v", err, v)
		}
	})

	t.Run("compact --wait", func(t *testing.T) {
		out := s.mustCtl(t, "compact", "a", "--wait")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		started := slices.IndexFunc(lines, func(l string) bool { return strings.Contains(l, ": started on ctl, attempt 1 of 4") })
		succeeded := slices.IndexFunc(lines, func(l string) bool { return strings.Contains(l, ": succeeded: ") })
		if !strings.HasPrefix(lines[0], "compact a: job j") || started < 0 || succeeded < started || succeeded != len(lines)-1 {
			t.Fatalf("compact a --wait printed:\n%s", out)
		}
	})

	t.Run("compact --all --wait --json", func(t *testing.T) {
		out := s.mustCtl(t, "compact", "--all", "--wait", "--json")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		var batch client.Batch
		if err := json.Unmarshal([]byte(lines[0]), &batch); err != nil || batch.BatchID == "" || len(batch.Jobs) != 2 {
			t.Fatalf("first line is not the batch: %v\n%s", err, out)
		}
		succeeded := map[string]bool{}
		for _, l := range lines[1:] {
			var e jobs.Event
			if err := json.Unmarshal([]byte(l), &e); err != nil {
				t.Fatalf("not JSON: %q: %v", l, err)
			}
			if e.Type == jobs.EventJobSucceeded {
				succeeded[e.JobID] = true
			}
		}
		for _, j := range batch.Jobs {
			if !succeeded[j.ID] {
				t.Fatalf("no job.succeeded for %s (%s):\n%s", j.ID, j.Store, out)
			}
		}
		batchID = batch.BatchID
	})

	t.Run("backup and restore --wait", func(t *testing.T) {
		if out := s.mustCtl(t, "backup", "a", "--wait"); !strings.Contains(out, "succeeded: backup ") {
			t.Fatalf("backup a --wait printed:\n%s", out)
		}
		out := s.mustCtl(t, "restore", "a", "--wait")
		if !strings.Contains(out, ": restored from backup ") || !strings.Contains(out, ": succeeded: restored from backup ") {
			t.Fatalf("restore a --wait printed:\n%s", out)
		}
	})

	t.Run("API errors", func(t *testing.T) {
		for _, c := range []struct {
			args []string
			code string
		}{
			{[]string{"cancel", "jnosuchjob"}, "unknown_job"},
			{[]string{"restore", "nosuch"}, "unknown_store"},
			{[]string{"restore", "nosuch", "--wait"}, "unknown_store"},
			{[]string{"stores", "--token", "not-a-token-of-this-server"}, "unauthorized"},
			{[]string{"compact", "a", "--wait", "--token", "not-a-token-of-this-server"}, "unauthorized"},
			{[]string{"compact", "a", "--token", ctlViewerToken}, "forbidden"},
			{[]string{"history", "--limit", "501"}, "invalid_request"},
		} {
			code, out, errOut := s.ctl(t, c.args...)
			lines := strings.Split(strings.TrimSuffix(errOut, "\n"), "\n")
			if code != 1 || len(lines) != 1 || !strings.HasPrefix(lines[0], "storekeeper: ") || !strings.HasSuffix(lines[0], " ("+c.code+")") || out != "" {
				t.Errorf("ctl %v: exit %d, stdout %q, stderr %q; want exit 1 and one line ending (%s)", c.args, code, out, errOut, c.code)
			}
		}
		// The message is the API's.
		if _, _, errOut := s.ctl(t, "restore", "nosuch"); !strings.Contains(errOut, `"nosuch"`) {
			t.Errorf("restore nosuch: %q does not name the store", errOut)
		}
	})

	t.Run("watch --json", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		var out, errOut syncbuf.Buffer
		done := make(chan int, 1)
		go func() {
			done <- run(ctx, []string{"ctl", "--server", s.url, "--token", ctlViewerToken, "watch", "--json", "--store", "b"}, &out, &errOut)
		}()
		// --json prints the server's frames as they are: stream.live once
		// the watcher is subscribed.
		live := `{"type":"stream.live"}`
		waitFor(t, 30*time.Second, "watch to be subscribed (stream.live)", func() bool { return strings.Contains(out.String(), live) })
		var job client.Enqueued
		if err := json.Unmarshal([]byte(s.mustCtl(t, "compact", "b", "--json")), &job); err != nil || job.ID == "" {
			t.Fatalf("compact b --json: %v %+v", err, job)
		}
		var types []jobs.EventType
		waitFor(t, 30*time.Second, "job.succeeded in the watch output", func() bool {
			types = eventTypes(t, out.String(), job.ID)
			return slices.Contains(types, jobs.EventJobSucceeded)
		})
		cancel()
		select {
		case code := <-done:
			if code != 0 {
				t.Fatalf("watch: exit %d: %s", code, errOut.String())
			}
		case <-time.After(10 * time.Second):
			t.Fatal("watch did not stop when its context ended")
		}
		if len(types) < 3 || types[0] != jobs.EventJobEnqueued || types[1] != jobs.EventJobStarted || types[len(types)-1] != jobs.EventJobSucceeded {
			t.Fatalf("events of %s: %v", job.ID, types)
		}
		if n := strings.Count(out.String(), live); n != 1 || !strings.HasPrefix(out.String(), live+"\n") {
			t.Fatalf("watch --json printed stream.live %d times; want once, first:\n%s", n, out.String())
		}
	})

	// A restore from a backup damaged on disk fails for good (a bad backup
	// is not retried): a real failing job, reached through the API.
	t.Run("--wait on a failing job", func(t *testing.T) {
		s.mustCtl(t, "backup", "b", "--wait")
		damageBackup(t, filepath.Join(s.backupDir, "b"))
		code, out, errOut := s.ctl(t, "restore", "b", "--wait")
		if code != 1 || !strings.Contains(out, ": failed: ") || !strings.Contains(out, "bad backup") {
			t.Fatalf("restore b --wait: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
		}
		if lines := strings.Split(strings.TrimSpace(errOut), "\n"); len(lines) != 1 || !strings.HasPrefix(lines[0], "storekeeper: job j") ||
			!strings.Contains(lines[0], "(restore b) failed: ") {
			t.Fatalf("stderr: %q", errOut)
		}
	})

	t.Run("read commands", func(t *testing.T) {
		if out := s.mustCtl(t, "verify", "a", "--wait"); !strings.Contains(out, ": succeeded: ") {
			t.Fatalf("verify a --wait printed:\n%s", out)
		}
		out := s.mustCtl(t, "history", "--store", "a", "--limit", "50")
		for _, want := range []string{"AT ", " verified ", " restored ", " backed_up "} {
			if !strings.Contains(out, want) {
				t.Errorf("history --store a lacks %q:\n%s", want, out)
			}
		}
		if out := s.mustCtl(t, "history", "--kind", "restore", "--limit", "1"); !strings.Contains(out, "history --before ") {
			t.Errorf("history --limit 1 gives no next page:\n%s", out)
		}
		var h struct {
			History []jobs.HistoryEntry `json:"history"`
		}
		if err := json.Unmarshal([]byte(s.mustCtl(t, "history", "--json")), &h); err != nil || len(h.History) == 0 {
			t.Fatalf("history --json: %v %+v", err, h)
		}
		id := h.History[0].JobID
		if out := s.mustCtl(t, "job", id); !strings.Contains(out, "job:") || !strings.Contains(out, id) || !strings.Contains(out, "state:") {
			t.Errorf("job %s:\n%s", id, out)
		}
		if out := s.mustCtl(t, "jobs"); out != "no jobs in flight\n" {
			t.Errorf("jobs, with none in flight:\n%s", out)
		}
		if out := s.mustCtl(t, "jobs", "--state", "failed", "--batch", batchID); !strings.HasPrefix(out, "no such jobs") {
			t.Errorf("jobs of a batch that succeeded, failed ones only:\n%s", out)
		}
		if out := s.mustCtl(t, "jobs", "--batch", batchID); !strings.HasPrefix(out, "JOB ") || strings.Count(out, " succeeded ") != 2 {
			t.Errorf("jobs --batch %s:\n%s", batchID, out)
		}
		if out := s.mustCtl(t, "pause", "a"); !strings.Contains(out, "store a paused") {
			t.Errorf("pause a: %s", out)
		}
		if out := s.mustCtl(t, "schedules"); !strings.Contains(out, "PAUSED STORE") || !strings.Contains(out, "\na ") || !strings.Contains(out, " off ") {
			t.Errorf("schedules:\n%s", out)
		}
		if out := s.mustCtl(t, "nodes"); !strings.HasPrefix(out, "NODE ") || !regexp.MustCompile(`(?m)^ctl +up .* a,b +-\s*$`).MatchString(out) {
			t.Errorf("nodes:\n%s", out)
		}
		if out := s.mustCtl(t, "resume", "a"); !strings.Contains(out, "store a resumed") {
			t.Errorf("resume a: %s", out)
		}
		code, _, errOut := s.ctl(t, "cancel", id)
		if code != 1 || !strings.HasSuffix(strings.TrimSpace(errOut), "(job_finished)") {
			t.Errorf("cancel of a finished job: exit %d, %q", code, errOut)
		}
	})

	t.Run("environment", func(t *testing.T) {
		t.Setenv("STOREKEEPER_SERVER", s.url)
		t.Setenv("STOREKEEPER_TOKEN", ctlViewerToken)
		var out, errOut bytes.Buffer
		if code := run(t.Context(), []string{"ctl", "stores"}, &out, &errOut); code != 0 {
			t.Fatalf("ctl stores from the environment: exit %d: %s", code, errOut.String())
		}
	})
}

// damageBackup changes one private (not shared) file of the store's newest
// backup, so that restoring it fails its checksum.
func damageBackup(t *testing.T, root string) {
	t.Helper()
	ids, err := os.ReadDir(filepath.Join(root, "backups"))
	if err != nil || len(ids) == 0 {
		t.Fatalf("backups of %s: %v %v", root, ids, err)
	}
	dir := filepath.Join(root, "backups", ids[len(ids)-1].Name())
	b, err := os.ReadFile(filepath.Join(dir, "STOREKEEPER-BACKUP.json")) // store.backupManifestName
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Files []struct {
			Name   string `json:"name"`
			Shared bool   `json:"shared"`
		} `json:"files"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, f := range m.Files {
		if !f.Shared {
			fh, err := os.OpenFile(filepath.Join(dir, f.Name), os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			_, err = fh.WriteString("damage")
			if cerr := fh.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				t.Fatal(err)
			}
			return
		}
	}
	t.Fatalf("backup %s has no private file", dir)
}

// eventTypes returns the types of job id's events among watch --json
// lines; every line must be JSON.
func eventTypes(t *testing.T, out, id string) []jobs.EventType {
	t.Helper()
	var types []jobs.EventType
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l == "" {
			continue
		}
		var e jobs.Event
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("watch --json printed %q: %v", l, err)
		}
		if e.JobID == id {
			types = append(types, e.Type)
		}
	}
	return types
}
