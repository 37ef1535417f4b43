package ctl

import (
	"bytes"
	"net"
	"strings"
	"testing"
	"time"

	"storekeeper/jobs"
)

// Usage errors exit 2 without a request; --help lists the flags, exit 0.
func TestCtlUsage(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"nosuch"},
		{"--bogus", "stores"},
		{"stores", "extra"},
		{"stores", "--bogus"},
		{"compact"},
		{"compact", "a", "--all"},
		{"compact", "a", "b"},
		{"restore"},
		{"restore", "--all"},
		{"adopt", "orders"},
		{"adopt", "orders", "--node", "n2"},
		{"adopt", "--node", "n2", "--target", "vault"},
		{"job"},
		{"cancel", "a", "b"},
		{"history", "--limit", "ten"},
		{"history", "--limit", "0"},
		{"--server", "ftp://example.com", "stores"},
	} {
		var out, errOut bytes.Buffer
		if code := Run(t.Context(), append([]string{"--server", "127.0.0.1:1"}, args...), &out, &errOut); code != 2 || errOut.Len() == 0 {
			t.Errorf("ctl %v: exit %d, stderr %q; want exit 2 and a message", args, code, errOut.String())
		}
	}

	var out, errOut bytes.Buffer
	if code := Run(t.Context(), []string{"--server", "ftp://example.com", "stores"}, &out, &errOut); !strings.HasPrefix(errOut.String(),
		"storekeeper ctl stores: --server \"ftp://example.com\": want http[s]://host:port[/prefix]\n") {
		t.Errorf("a bad --server: exit %d, stderr %q", code, errOut.String())
	}

	out.Reset()
	if code := Run(t.Context(), []string{"--help"}, &out, &errOut); code != 0 {
		t.Fatalf("ctl --help: exit %d", code)
	}
	for _, cmd := range commands {
		if !strings.Contains(out.String(), "\n  "+cmd.name) {
			t.Errorf("ctl --help does not list %s:\n%s", cmd.name, out.String())
		}
	}
	for _, f := range []string{"env STOREKEEPER_SERVER", "env STOREKEEPER_TOKEN"} {
		if !strings.Contains(out.String(), f) {
			t.Errorf("ctl --help does not name %s:\n%s", f, out.String())
		}
	}
	for _, cmd := range commands {
		out.Reset()
		if code := Run(t.Context(), []string{cmd.name, "--help"}, &out, &errOut); code != 0 {
			t.Fatalf("ctl %s --help: exit %d", cmd.name, code)
		}
		for _, f := range []string{"-server", "-token", "-json"} {
			if !strings.Contains(out.String(), f) {
				t.Errorf("ctl %s --help lacks %s:\n%s", cmd.name, f, out.String())
			}
		}
	}
	out.Reset()
	Run(t.Context(), []string{"compact", "--help"}, &out, &errOut)
	for _, f := range []string{"-all", "-force", "-dry-run", "-wait"} {
		if !strings.Contains(out.String(), f) {
			t.Errorf("ctl compact --help lacks %s:\n%s", f, out.String())
		}
	}
}

// A server that cannot be reached is one line and exit 1.
func TestCtlUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nobody listens there now
	var out, errOut bytes.Buffer
	code := Run(t.Context(), []string{"--server", "http://" + addr, "stores"}, &out, &errOut)
	if code != 1 || strings.Count(errOut.String(), "\n") != 1 || !strings.HasPrefix(errOut.String(), "storekeeper: ") {
		t.Fatalf("exit %d, stderr %q", code, errOut.String())
	}
}

// On a terminal the status line is rewritten in place; ends get lines of
// their own and the status line is gone at the end.
func TestCtlProgressTerminal(t *testing.T) {
	var out bytes.Buffer
	recs := []jobs.Record{{ID: "j1", Kind: jobs.KindBackup, Store: "a", State: jobs.StatePending}, {ID: "j2", Kind: jobs.KindBackup, Store: "b", State: jobs.StatePending}}
	p := newProgress(&out, false, true, recs)
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	ev := func(typ jobs.EventType, id, store string) jobs.Event {
		return jobs.Event{Type: typ, JobID: id, Kind: jobs.KindBackup, Store: store, Node: "n", Attempt: 1, MaxRetry: 3, At: at}
	}
	p.event(ev(jobs.EventJobStarted, "j1", "a"), nil)
	pr := ev(jobs.EventJobProgress, "j1", "a")
	pr.Phase, pr.Done, pr.Total = "copying", 50, 200
	p.event(pr, nil)
	if !strings.HasSuffix(out.String(), "\rbackup: 0 of 2 ended · a copying 25% · b pending") {
		t.Fatalf("status line: %q", out.String())
	}
	p.event(ev(jobs.EventJobSucceeded, "j1", "a"), nil)
	failed := ev(jobs.EventJobFailed, "j2", "b")
	failed.Error = "disk full"
	p.event(failed, nil)
	p.clear()
	text := out.String()
	if p.running() != 0 || !strings.Contains(text, "backup a j1: succeeded\n") || !strings.HasSuffix(text, "backup b j2: failed: disk full\n") {
		t.Fatalf("output: %q", text)
	}
	if err := p.outcome(); err == nil || !strings.Contains(err.Error(), "1 of 2 jobs did not succeed: job j2 (backup b) failed: disk full") {
		t.Fatalf("outcome: %v", err)
	}
}

// Each kind's result, as the worker writes it, in a few words.
func TestResultText(t *testing.T) {
	for _, c := range []struct {
		kind jobs.Kind
		raw  string
		want string
	}{
		{jobs.KindCompact, `{"outcome":"compacted","decision":{"compact":true,"reason":"r"},"bytes_before":4194304,"bytes_after":1048576}`, "compacted, 4.0 MiB → 1.0 MiB"},
		{jobs.KindCompact, `{"outcome":"dry_run","decision":{"compact":false,"reason":"too little to reclaim"}}`, "dry run: would skip (too little to reclaim)"},
		{jobs.KindCompact, `{"outcome":"skipped","decision":{"compact":false,"reason":"too little to reclaim"}}`, "skipped (too little to reclaim)"},
		{jobs.KindBackup, `{"backup":{"id":"b1","bytes":2097152},"copied":3,"shared":4}`, "backup b1, 2.0 MiB: 3 files copied, 4 shared with earlier backups"},
		{jobs.KindVerify, `{"corrupt":"bad block"}`, "the store is corrupt: bad block"},
		{jobs.KindVerify, `{"live":{"files":5,"bytes":1048576},"backup":{"id":"b1","files":6}}`, "5 files, 1.0 MiB: checksums good; backup b1 good (6 files)"},
		{jobs.KindVerify, `{"live":{"files":5,"bytes":1048576},"backup":{"id":"b1","bad":"checksum"}}`, "5 files, 1.0 MiB: checksums good; backup b1 is corrupt and was marked bad: checksum"},
		{jobs.KindRestore, `{"backup_id":"b1"}`, "restored from backup b1"},
		{jobs.KindRestore, `not json`, ""},
		{jobs.KindAdopt, `{"target":"vault","backup_id":"b1","previous_node":"n1","moved":["j1","j2"]}`, "adopted from backup b1 on target vault, moved from node n1; 2 job(s) queued there failed store_moved"},
	} {
		if got := resultText(c.kind, []byte(c.raw)); got != c.want {
			t.Errorf("%s %s: %q, want %q", c.kind, c.raw, got, c.want)
		}
	}
}

func TestParseMoment(t *testing.T) {
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"2026-12-04T10:30:00Z":      time.Date(2026, 12, 4, 10, 30, 0, 0, time.UTC),
		"2026-12-04T11:30:00+01:00": time.Date(2026, 12, 4, 10, 30, 0, 0, time.UTC),
		"15m":                       now.Add(-15 * time.Minute),
	} {
		if got, err := parseMoment(in, now); err != nil || !got.Equal(want) {
			t.Errorf("parseMoment(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "yesterday", "-5m", "2026-12-04"} {
		if _, err := parseMoment(in, now); err == nil {
			t.Errorf("parseMoment(%q) accepted", in)
		}
	}
}
