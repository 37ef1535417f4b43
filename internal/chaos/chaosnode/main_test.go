package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"go.uber.org/goleak"

	"storekeeper/internal/redistest"
	"storekeeper/internal/syncbuf"
	"storekeeper/internal/testsignal"
	"storekeeper/jobs"
	"storekeeper/jobsdb"
)

// TestMain fails the package's tests if a goroutine outlives them: the
// node's run loop stops everything it started.
//
// With CHAOSNODE_MAIN=1 the test binary is chaosnode itself, for tests
// that must run it as a child process.
func TestMain(m *testing.M) {
	if os.Getenv("CHAOSNODE_MAIN") == "1" {
		os.Exit(dispatch(os.Args[1:], os.Stdout, os.Stderr))
	}
	goleak.VerifyTestMain(m)
}

// runningNode is a `chaosnode run` in this process.
type runningNode struct {
	t      *testing.T
	addr   string
	cancel context.CancelFunc
	done   chan int
	http   *http.Client
}

// startNode runs the node with args until stop; it returns once /healthz
// answers 200.
func startNode(t *testing.T, args ...string) *runningNode {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var out, logs syncbuf.Buffer
	n := &runningNode{t: t, cancel: cancel, done: make(chan int, 1),
		http: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}}
	go func() {
		n.done <- runMain(ctx, slices.Concat(args, []string{"--listen", "127.0.0.1:0", "--log-level", "warn"}), &out, &logs)
	}()
	t.Cleanup(func() {
		cancel()
		<-n.done
		if t.Failed() {
			t.Logf("node log:\n%s", logs.String())
		}
	})
	testsignal.WaitFor(t, "the node listening", func() bool {
		select {
		case code := <-n.done:
			n.done <- code
			t.Fatalf("the node exited with %d:\n%s", code, logs.String())
		default:
		}
		line, ok := strings.CutPrefix(out.String(), "listening ")
		n.addr, _, _ = strings.Cut(line, "\n")
		return ok && strings.Contains(line, "\n")
	})
	testsignal.WaitFor(t, "/healthz 200", func() bool {
		resp, err := n.http.Get("http://" + n.addr + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return n
}

// get answers GET path's status and body.
func (n *runningNode) get(path string) (int, string) {
	n.t.Helper()
	resp, err := n.http.Get("http://" + n.addr + path)
	if err != nil {
		n.t.Fatalf("%s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (n *runningNode) stats() statsJSON {
	n.t.Helper()
	resp, err := n.http.Get("http://" + n.addr + "/stats")
	if err != nil {
		n.t.Fatalf("/stats: %v", err)
	}
	defer resp.Body.Close()
	var st statsJSON
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		n.t.Fatalf("/stats: %v", err)
	}
	return st
}

// waitSynced waits until store has at least want synced acknowledgements
// in this process.
func (n *runningNode) waitSynced(store string, want int64) {
	n.t.Helper()
	testsignal.WaitFor(n.t, fmt.Sprintf("%d synced writes to %s", want, store), func() bool {
		return n.stats().Stores[store].AcksSynced >= want
	})
}

// stop stops the node as SIGTERM does and expects exit code 0.
func (n *runningNode) stop() {
	n.t.Helper()
	n.cancel()
	select {
	case code := <-n.done:
		n.done <- code // for the cleanup
		if code != 0 {
			n.t.Fatalf("the node exited with %d after a graceful stop", code)
		}
	case <-time.After(testsignal.Timeout):
		n.t.Fatalf("the node did not stop within %s", testsignal.Timeout)
	}
}

// runJob enqueues a job and waits until it succeeds; it returns its record.
func runJob(t *testing.T, c *jobsdb.Client, req jobs.Request) jobs.Record {
	t.Helper()
	req.Trigger, req.Actor = jobs.TriggerManual, "test"
	enq, err := c.Enqueue(t.Context(), req)
	if err != nil {
		t.Fatalf("enqueue %s: %v", req.Kind, err)
	}
	var rec jobs.Record
	testsignal.WaitFor(t, string(req.Kind)+" job finished", func() bool {
		rec, err = c.Get(t.Context(), enq.Record.ID)
		return err == nil && rec.State.Terminal()
	})
	if rec.State != jobs.StateSucceeded {
		t.Fatalf("%s job: %s %+v", req.Kind, rec.State, rec.Errors)
	}
	return rec
}

// verifyRun runs `chaosnode verify` and returns its exit code and report.
func verifyRun(t *testing.T, args ...string) (int, verifyReport) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := verifyMain(args, &out, &errOut)
	var rep verifyReport
	if code != 2 {
		if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
			t.Fatalf("verify printed no JSON report (%v): %s", err, out.String())
		}
	}
	if errOut.Len() > 0 {
		t.Logf("verify stderr: %s", errOut.String())
	}
	return code, rep
}

// TestRunThenVerify runs a node against a private Redis, backs up and
// restores one of its stores while it writes, restarts it, stops it, and
// checks its stores with verify: no violation, the restore's rollback
// counted; then a synced write deleted behind the ledger's back is
// reported as missing, and so are the rolled-back writes when no restore
// explains them.
func TestRunThenVerify(t *testing.T) {
	srv := redistest.Start(t)
	dir := t.TempDir()
	data, backups, ledgerPath := filepath.Join(dir, "data"), filepath.Join(dir, "backups"), filepath.Join(dir, "ledger")
	args := []string{"--redis", srv.URL(), "--node", "t1", "--data", data, "--backups", backups, "--stores", "a,b",
		"--ledger", ledgerPath, "--write-interval", "2ms", "--seed", "7", "--fast"}
	client := jobsdb.NewClient(srv.Client(t), jobs.ClientConfig{})

	n := startNode(t, args...)
	if code, body := n.get("/readyz"); code != http.StatusOK || !strings.Contains(body, `"ready":true`) {
		t.Fatalf("/readyz of a started node: %d %s", code, body)
	}
	n.waitSynced("a", 5)
	n.waitSynced("b", 5)
	backup := runJob(t, client, jobs.Request{Kind: jobs.KindBackup, Store: "a"})
	var br jobs.BackupResult
	if err := json.Unmarshal(backup.Result, &br); err != nil {
		t.Fatalf("backup result: %v", err)
	}
	// Synced writes acknowledged after the backup: the restore rolls them
	// back.
	n.waitSynced("a", n.stats().Stores["a"].AcksSynced+5)
	restore := runJob(t, client, jobs.Request{Kind: jobs.KindRestore, Store: "a", Params: jobs.Params{BackupID: br.Backup.ID}})
	var rr jobs.RestoreResult
	if err := json.Unmarshal(restore.Result, &rr); err != nil {
		t.Fatalf("restore result: %v", err)
	}
	restores := filepath.Join(dir, "restores")
	line := fmt.Sprintf("a %d %d\n", rr.BackupAt.UnixNano(), restore.FinishedAt.UnixNano())
	if err := os.WriteFile(restores, []byte(line), 0o644); err != nil {
		t.Fatal(err)
	}
	n.waitSynced("a", n.stats().Stores["a"].AcksSynced+5)
	n.stop()

	// A restarted node goes on after the seqs its ledger holds.
	n2 := startNode(t, args...)
	if next := n2.stats().Stores["b"].NextSeq; next <= 1 {
		t.Fatalf("restarted node starts at seq %d", next)
	}
	n2.waitSynced("b", 5)
	n2.stop()

	verifyArgs := []string{"--data", data, "--ledger", ledgerPath, "--stores", "a,b", "--backups", backups}
	code, rep := verifyRun(t, append(verifyArgs, "--restores", restores)...)
	if code != 0 || rep.Violations != 0 {
		t.Fatalf("verify: exit %d, %d violations: %+v", code, rep.Violations, rep)
	}
	a, b := rep.Stores["a"], rep.Stores["b"]
	if a.RolledBack < 5 || a.BackupsChecked != 1 || a.CheckLevels != "ok" || a.Present == 0 || len(a.UnreportedRestores) != 0 {
		t.Fatalf("store a: %+v; want at least 5 rolled back, 1 backup checked, keys present, the restore reported", *a)
	}
	if b.RolledBack != 0 || b.Present < b.AckedSynced || b.AckedSynced < 10 {
		t.Fatalf("store b: %+v; want every acknowledged write present", *b)
	}

	// Without --restores the quarantined generation explains the rollback,
	// and is reported; without that either, the rolled-back writes are lost.
	empty := filepath.Join(dir, "no-restores")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	code, rep = verifyRun(t, append(verifyArgs, "--restores", empty)...)
	if code != 0 || len(rep.Stores["a"].UnreportedRestores) != 1 || rep.Stores["a"].RolledBack != a.RolledBack {
		t.Fatalf("verify without --restores: exit %d, %+v; want 0 violations and one unreported restore", code, *rep.Stores["a"])
	}
	code, rep = verifyRun(t, append(verifyArgs, "--restores", empty, "--disk-restores=false")...)
	if code != 1 || len(rep.Stores["a"].MissingSynced) != a.RolledBack {
		t.Fatalf("verify without any restore: exit %d, %+v; want the %d rolled-back writes missing", code, *rep.Stores["a"], a.RolledBack)
	}

	// Delete one acknowledged synced write of b behind the ledger's back.
	ld, err := readLedgers([]string{ledgerPath})
	if err != nil {
		t.Fatal(err)
	}
	var victim string
	for key, e := range ld.keys {
		if e.store == "b" && e.acked && e.sync && (victim == "" || key < victim) {
			victim = key
		}
	}
	db, err := pebble.Open(filepath.Join(data, "b"), &pebble.Options{Logger: quietLogger{}})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Delete([]byte(victim), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	code, rep = verifyRun(t, append(verifyArgs, "--restores", restores)...)
	got := rep.Stores["b"]
	if code != 1 || rep.Violations != 1 || len(got.MissingSynced) != 1 || got.MissingSynced[0] != victim {
		t.Fatalf("verify after deleting %s: exit %d, %d violations, store b %+v; want exactly that key missing", victim, code, rep.Violations, *got)
	}
}

// TestClassify: the rules of verify on a hand-made ledger.
func TestClassify(t *testing.T) {
	ledgerText := strings.Join([]string{
		"S n 1 0",
		"I a w/n/a/000000000001 1 10", "A a w/n/a/000000000001 1 11", // synced, present
		"I a w/n/a/000000000002 1 20", "A a w/n/a/000000000002 1 21", // synced, gone inside a window
		"I a w/n/a/000000000003 1 30", "A a w/n/a/000000000003 1 31", // synced, gone: violation
		"I a w/n/a/000000000004 0 40", "A a w/n/a/000000000004 0 41", // unsynced, gone before a present write: violation
		"I a w/n/a/000000000005 0 50", "A a w/n/a/000000000005 0 51", // present
		"I a w/n/a/000000000006 0 60", "A a w/n/a/000000000006 0 61", // unsynced, gone at the end of the run: allowed
		"I a w/n/a/000000000007 1 70", "E a w/n/a", // torn E line, then a new run
		"S n 2 100",
		"I a w/n/a/000000000008 1 110", "A a w/n/a/000000000008 1 111", // present, bad value
		"I a w/n/a/000000000009 0 120",                             // not acknowledged, gone: fine
		"bad line",                                                 // in the middle of a run: violation
		"I a w/n/a/000000000010 0 130", "A a w/n/a/000000000010 0", // torn at the end of the file
	}, "\n")
	ld := &ledgerData{keys: map[string]*entry{}}
	run := 0
	if err := ld.read(strings.NewReader(ledgerText), "ledger", &run); err != nil {
		t.Fatal(err)
	}
	if len(ld.badLines) != 1 || ld.torn != 2 {
		t.Fatalf("bad lines %q, torn %d; want the one bad line and two torn lines", ld.badLines, ld.torn)
	}
	present := map[string]bool{"w/n/a/000000000001": true, "w/n/a/000000000005": true, "w/n/a/000000000008": true, "w/n/b/000000000001": true}
	values := map[string]string{"w/n/a/000000000001": "1 10", "w/n/a/000000000005": "5 50", "w/n/a/000000000008": "8 999"}
	sr := &storeReport{}
	classify(sr, "a", ld, present, values, []window{{from: 15, to: 25}})
	want := storeReport{Intents: 10, AckedSynced: 4, AckedUnsynced: 3, RolledBack: 1, MissingUnsynced: 2,
		MissingSynced: []string{"w/n/a/000000000003"}, LostBeforePresent: []string{"w/n/a/000000000004"},
		UnknownPresent: []string{"w/n/b/000000000001"}, BadValues: []string{"w/n/a/000000000008"}}
	gotJSON, _ := json.Marshal(sr)
	wantJSON, _ := json.Marshal(want)
	if !bytes.Equal(gotJSON, wantJSON) {
		t.Fatalf("classify:\n got %s\nwant %s", gotJSON, wantJSON)
	}
}

// TestCheckPITR: the rules of verify --pitr on a hand-made ledger: a
// restore to the moment 100, asked for at 200.
func TestCheckPITR(t *testing.T) {
	ledgerText := strings.Join([]string{
		"S n 1 0",
		"I a w/n/a/000000000001 1 10", "A a w/n/a/000000000001 1 11", // shipped by 40: must be present
		"I a w/n/a/000000000002 0 20", "A a w/n/a/000000000002 0 21", // shipped by 40, rolled back by a restore finished at 60
		"W a w/n/a/000000000002 40",
		"I a w/n/a/000000000003 1 70", "A a w/n/a/000000000003 1 71", // shipped by 90: must be present (missing: violation)
		"W a w/n/a/000000000003 90",
		"I a w/n/a/000000000004 0 95", "A a w/n/a/000000000004 0 96", // shipped only at 150: may be missing
		"W a w/n/a/000000000004 150",
		"I a w/n/a/000000000005 1 110", "A a w/n/a/000000000005 1 111", // after the moment: must be gone (present: violation)
		"I a w/n/a/000000000006 1 120", "A a w/n/a/000000000006 1 121", // after the moment, gone
		"I a w/n/a/000000000007 1 190", "A a w/n/a/000000000007 1 210", // acknowledged after the request: either way
		"W b w/n/b/000000000001 50", // another store's mark
	}, "\n")
	ld := &ledgerData{keys: map[string]*entry{}}
	run := 0
	if err := ld.read(strings.NewReader(ledgerText), "ledger", &run); err != nil || len(ld.badLines) != 0 {
		t.Fatalf("read: %v, bad lines %q", err, ld.badLines)
	}
	present := map[string]bool{"w/n/a/000000000001": true, "w/n/a/000000000005": true, "w/n/a/000000000007": true}
	// The moment's own restore (finished at 250) excuses nothing.
	windows := []window{{from: 15, to: 60}, {from: 5, to: 250}}
	r := checkPITR("a", ld, present, windows, pitrLine{at: 100, requested: 200})
	if r.Shipped != 2 || r.Excused != 1 || r.Kept != 1 || r.Dropped != 1 ||
		!slices.Equal(r.Missing, []string{"w/n/a/000000000003"}) || !slices.Equal(r.After, []string{"w/n/a/000000000005"}) {
		t.Fatalf("checkPITR: %+v; want 2 shipped (000003 missing), 1 excused, 1 kept, 1 dropped, 000005 after", *r)
	}
}

// TestUsage: usage errors exit 2 and say what is wrong.
func TestUsage(t *testing.T) {
	for _, args := range [][]string{
		{"verify"},
		{"verify", "--data", t.TempDir(), "--ledger", filepath.Join(t.TempDir(), "none"), "--stores", "a"},
		{"run", "--node", "n"},
		{"run", "--redis", "redis://x", "--node", "n", "--data", "d", "--stores", "a", "--ledger", "d/ledger"},
		{"nope"},
	} {
		var out, errOut bytes.Buffer
		if code := dispatch(args, &out, &errOut); code != 2 || errOut.Len() == 0 {
			t.Errorf("%q: exit %d, stderr %q; want 2 and a message", args, code, errOut.String())
		}
	}
}
