package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"storekeeper/client"
	"storekeeper/jobs"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newClient(t *testing.T) (*client.Client, *fakeServer) {
	t.Helper()
	srv := newFakeServer()
	t.Cleanup(srv.Close)
	c, err := client.New(srv.URL, client.WithToken("t"))
	if err != nil {
		t.Fatal(err)
	}
	return c, srv
}

func TestNew(t *testing.T) {
	for _, server := range []string{"ftp://example.com", "http://", "http://host:1/?q=1", "::"} {
		_, err := client.New(server)
		var se *client.ServerURLError
		if !errors.As(err, &se) || !strings.Contains(err.Error(), "want http[s]://host:port[/prefix]") {
			t.Errorf("New(%q): %v; want a *ServerURLError", server, err)
		}
	}
	for _, server := range []string{"127.0.0.1:8080", "http://h:1/prefix/", "https://h"} {
		if _, err := client.New(server); err != nil {
			t.Errorf("New(%q): %v", server, err)
		}
	}
}

// An error answer of the API is an *Error; any other non-2xx answer (a
// proxy's page) a plain error naming the status.
func TestErrorAnswers(t *testing.T) {
	c, srv := newClient(t)
	_, err := c.Job(t.Context(), "jnosuch")
	var ae *client.Error
	if !errors.As(err, &ae) || ae.Status != 404 || ae.Code != "unknown_job" || err.Error() != `unknown job "jnosuch" (unknown_job)` {
		t.Fatalf("unknown job: %#v", err)
	}
	p, err := client.New(srv.URL + "/proxy-page")
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Stores(t.Context())
	if err == nil || errors.As(err, &ae) || !strings.Contains(err.Error(), "502 Bad Gateway") {
		t.Fatalf("a proxy's page: %v", err)
	}
}

// An enqueue without parameters sends no body; with some, exactly them.
func TestEnqueueBody(t *testing.T) {
	c, srv := newClient(t)
	for _, tc := range []struct {
		p          jobs.Params
		body, ctyp string
	}{
		{jobs.Params{}, "", ""},
		{jobs.Params{Force: true, DryRun: true}, `{"force":true,"dry_run":true}`, "application/json"},
	} {
		if _, err := c.Enqueue(t.Context(), jobs.KindCompact, "orders", tc.p); err != nil {
			t.Fatal(err)
		}
		srv.mu.Lock()
		body, ctyp := string(srv.lastBody), srv.lastType
		srv.mu.Unlock()
		if body != tc.body || ctyp != tc.ctyp {
			t.Errorf("%+v: sent %q (Content-Type %q); want %q (%q)", tc.p, body, ctyp, tc.body, tc.ctyp)
		}
	}
}

// WithAnswer hands on the answer as the server sent it.
func TestWithAnswer(t *testing.T) {
	c, _ := newClient(t)
	var raw json.RawMessage
	stores, err := c.Stores(client.WithAnswer(t.Context(), func(r json.RawMessage) { raw = r }))
	if err != nil || len(stores) != 2 || stores[0].Stats == nil || stores[0].Stats.LiveBytes != 64<<20 {
		t.Fatalf("stores: %v %+v", err, stores)
	}
	if !strings.HasPrefix(string(raw), `{"stores":[{"backups":[]`) {
		t.Fatalf("answer: %s", raw)
	}
}

// Wait on a job that ended before it was called returns at once.
func TestWaitEnded(t *testing.T) {
	c, _ := newClient(t)
	j, err := c.Enqueue(t.Context(), jobs.KindBackup, "orders", jobs.Params{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Wait(t.Context(), j.ID); err != nil {
		t.Fatal(err)
	}
	recs, err := c.Wait(t.Context(), j.ID) // ended: no event comes
	if err != nil || len(recs) != 1 || recs[0].State != jobs.StateSucceeded {
		t.Fatalf("%v %+v", err, recs)
	}
}

// Wait returns when its context ends before the job does: with
// ErrStoppedWaiting once it follows the job, and with ctx's error in any
// case.
func TestWaitStopped(t *testing.T) {
	c, srv := newClient(t)
	srv.mu.Lock()
	srv.records["jforever"] = &jobs.Record{ID: "jforever", Kind: jobs.KindVerify, Store: "orders", State: jobs.StateActive}
	srv.mu.Unlock()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-srv.gets // Wait read the record, after subscribing: nothing more comes
		cancel()
	}()
	_, err := c.Wait(ctx, "jforever")
	<-done
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("%v", err)
	}
}

// A dropped feed reconnects with since= the last event it passed on; the
// server replays what came meanwhile, then says stream.live.
func TestFeedResumes(t *testing.T) {
	c, srv := newClient(t)
	ctx := t.Context()
	feed, err := c.Watch(ctx, client.Filter{Stores: []string{"orders"}})
	if err != nil {
		t.Fatal(err)
	}
	defer feed.Close()
	if err := feed.WaitLive(ctx); err != nil {
		t.Fatal(err)
	}
	j, err := c.Enqueue(ctx, jobs.KindCompact, "orders", jobs.Params{})
	if err != nil {
		t.Fatal(err)
	}
	var last string
	for last != "3-0" { // enqueued, started, succeeded
		fr, err := feed.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		last = fr.Event.ID
	}
	srv.mu.Lock() // drop the watcher and publish while none watches, before it reconnects
	for w := range srv.watchers {
		w.conn.Close()
		delete(srv.watchers, w)
	}
	srv.publish(jobs.Event{Type: jobs.EventJobStarted, JobID: j.ID, Kind: jobs.KindCompact, Store: "orders"})
	srv.mu.Unlock()
	var got []string
	for !slices.Contains(got, "live") {
		fr, err := feed.Next(ctx)
		switch {
		case err != nil:
			t.Fatal(err)
		case fr.Resumed:
			got = append(got, "resumed after "+fr.Since)
		case fr.Live():
			got = append(got, "live")
		default:
			got = append(got, fr.Event.ID)
		}
	}
	if want := []string{"resumed after 3-0", "4-0", "live"}; !slices.Equal(got, want) {
		t.Fatalf("after the drop: %q, want %q", got, want)
	}
	srv.mu.Lock()
	sinces := slices.Clone(srv.sinces)
	srv.mu.Unlock()
	if !slices.Equal(sinces, []string{"", "3-0"}) {
		t.Fatalf("connections asked since= %q", sinces)
	}
}
