package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"

	"storekeeper/client"
	"storekeeper/jobs"
)

// Ask for a compaction and wait for it to end. Wait subscribes to the
// job's events before it reads the job's record, so a job that ends
// before Wait is called, or while it starts, is never missed.
func Example() {
	srv := newFakeServer() // stands in for `storekeeper serve`
	defer srv.Close()
	ctx := context.Background()

	c, err := client.New(srv.URL, client.WithToken("the-operator-token"))
	if err != nil {
		log.Fatal(err)
	}
	j, err := c.Enqueue(ctx, jobs.KindCompact, "orders", jobs.Params{Force: true})
	if err != nil {
		log.Fatal(err)
	}
	recs, err := c.Wait(ctx, j.ID)
	if err != nil {
		log.Fatal(err)
	}
	r := recs[0]
	var res jobs.CompactResult
	if err := json.Unmarshal(r.Result, &res); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s %s: %s, %s: %d MiB -> %d MiB\n", r.Kind, r.Store, r.State, res.Outcome, res.BytesBefore>>20, res.BytesAfter>>20)
	// Output: compact orders: succeeded, compacted: 64 MiB -> 16 MiB
}

// Back up every store and show each job's events as they come. The feed
// is subscribed (WaitLive) before the jobs are asked for, so none of
// their events passes before it; Follow returns once every job has
// ended.
func ExampleClient_Follow() {
	srv := newFakeServer() // stands in for `storekeeper serve`
	defer srv.Close()
	ctx := context.Background()

	c, err := client.New(srv.URL, client.WithToken("the-operator-token"))
	if err != nil {
		log.Fatal(err)
	}
	feed, err := c.Watch(ctx, client.Filter{Kinds: []jobs.Kind{jobs.KindBackup}})
	if err != nil {
		log.Fatal(err)
	}
	defer feed.Close()
	if err := feed.WaitLive(ctx); err != nil {
		log.Fatal(err)
	}
	batch, err := c.EnqueueAll(ctx, jobs.KindBackup, jobs.Params{})
	if err != nil {
		log.Fatal(err)
	}
	recs := make([]jobs.Record, len(batch.Jobs))
	for i, j := range batch.Jobs {
		recs[i] = j.Record
	}
	err = c.Follow(ctx, feed, recs, func(e jobs.Event, _ json.RawMessage) {
		fmt.Println(e.Store, e.Type)
	})
	if err != nil {
		log.Fatal(err)
	}
	// Output:
	// orders job.enqueued
	// sessions job.enqueued
	// orders job.started
	// orders job.succeeded
	// sessions job.started
	// sessions job.succeeded
}

// Every event of one store, as it happens, until a job of it ends.
func ExampleClient_Watch() {
	srv := newFakeServer() // stands in for `storekeeper serve`
	defer srv.Close()
	ctx := context.Background()

	c, err := client.New(srv.URL, client.WithToken("a-viewer-token"))
	if err != nil {
		log.Fatal(err)
	}
	feed, err := c.Watch(ctx, client.Filter{Stores: []string{"sessions"}})
	if err != nil {
		log.Fatal(err)
	}
	defer feed.Close()
	if err := feed.WaitLive(ctx); err != nil {
		log.Fatal(err)
	}
	if _, err := c.Enqueue(ctx, jobs.KindVerify, "sessions", jobs.Params{Deep: true}); err != nil {
		log.Fatal(err)
	}
	for {
		fr, err := feed.Next(ctx)
		if err != nil {
			log.Fatal(err)
		}
		switch {
		case fr.Resumed:
			fmt.Println("reconnected after", fr.Cause)
		case fr.Live(), fr.Gap():
			// control frames: subscribed again; events may be missing
		default:
			fmt.Println(fr.Event.ID, fr.Event.Type, fr.Event.Kind, fr.Event.Store)
		}
		if fr.Event.Type == jobs.EventJobSucceeded {
			return
		}
	}
	// Output:
	// 1-0 job.enqueued verify sessions
	// 2-0 job.started verify sessions
	// 3-0 job.succeeded verify sessions
}

// An error answer of the API is an *Error with a code to act on.
func ExampleError() {
	srv := newFakeServer() // stands in for `storekeeper serve`
	defer srv.Close()

	c, err := client.New(srv.URL, client.WithToken("the-operator-token"))
	if err != nil {
		log.Fatal(err)
	}
	_, err = c.Enqueue(context.Background(), jobs.KindBackup, "nosuch", jobs.Params{})
	var apiErr *client.Error
	if errors.As(err, &apiErr) {
		fmt.Println(apiErr.Status, apiErr.Code)
	}
	// Output: 404 unknown_store
}
