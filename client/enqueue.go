package client

import (
	"context"
	"net/url"
	"strconv"

	"storekeeper/jobs"
)

// Enqueued is the API's answer to an enqueue, or one job of a batch: the
// job's record, and whether the job was already in flight (the answer is
// that job; no second one was made).
type Enqueued struct {
	jobs.Record
	Deduplicated bool `json:"deduplicated"`
}

// Batch is the answer to an enqueue for every store: one job per store
// the server knows, under one batch id. Jobs holds the first 1,000 in the
// stores' order; when Total is more, BatchJobs reads them all.
type Batch struct {
	BatchID      string     `json:"batch_id"`
	Total        int        `json:"total"`
	New          int        `json:"new"`
	Deduplicated int        `json:"deduplicated"`
	Jobs         []Enqueued `json:"jobs"`
}

// Enqueue asks for a job of kind on store. The parameters that apply:
// compact takes Force and DryRun, verify Deep, drill Target and BackupID
// (empty: each target in turn, the newest), restore BackupID (empty:
// the newest usable backup); backup none. The server refuses the others
// (invalid_request), and a restore with no usable backup (no_backup)
// without making a job.
func (c *Client) Enqueue(ctx context.Context, kind jobs.Kind, store string, p jobs.Params) (Enqueued, error) {
	var j Enqueued
	err := c.call(ctx, "POST", apiPath("/api/admin/"+string(kind), store), nil, body(p), &j)
	return j, err
}

// EnqueueAll asks for a job of kind on every store, under one batch id.
// Compact, backup and verify only: a restore names its store.
func (c *Client) EnqueueAll(ctx context.Context, kind jobs.Kind, p jobs.Params) (Batch, error) {
	var b Batch
	err := c.call(ctx, "POST", "/api/admin/"+string(kind), nil, body(p), &b)
	return b, err
}

// body is p as a request body: none when no parameter is set.
func body(p jobs.Params) any {
	if p == (jobs.Params{}) {
		return nil
	}
	return p
}

// Job returns a job's record.
func (c *Client) Job(ctx context.Context, id string) (jobs.Record, error) {
	var r jobs.Record
	err := c.call(ctx, "GET", apiPath("/api/jobs", id), nil, nil, &r)
	return r, err
}

// Cancel cancels a job, for good, and returns its record. A job that has
// already ended is an *Error with code job_finished.
func (c *Client) Cancel(ctx context.Context, id string) (jobs.Record, error) {
	var r jobs.Record
	err := c.call(ctx, "DELETE", apiPath("/api/jobs", id), nil, nil, &r)
	return r, err
}

// JobsQuery chooses jobs; an empty field does not filter.
type JobsQuery struct {
	Store string
	Kind  jobs.Kind
	State jobs.State
	Batch string // a batch's jobs, whether in flight or not; otherwise the jobs in flight
	// Limit, when set (1..1000), asks for a page of at most Limit jobs
	// (filtered after paging, so a page can hold fewer), the next one from
	// Cursor: the last page's next cursor.
	Limit  int
	Cursor string
}

// Jobs returns the jobs in flight, or a batch's jobs, newest first.
func (c *Client) Jobs(ctx context.Context, q JobsQuery) ([]jobs.Record, error) {
	recs, _, err := c.JobsPage(ctx, q)
	return recs, err
}

// JobsPage returns a page of the jobs q chooses (q.Limit) and the cursor
// of the next page, "" on the last.
func (c *Client) JobsPage(ctx context.Context, q JobsQuery) ([]jobs.Record, string, error) {
	v := url.Values{}
	for k, s := range map[string]string{"store": q.Store, "kind": string(q.Kind), "state": string(q.State), "batch": q.Batch, "cursor": q.Cursor} {
		if s != "" {
			v.Set(k, s)
		}
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	var a struct {
		Jobs       []jobs.Record `json:"jobs"`
		NextCursor string        `json:"next_cursor"`
	}
	err := c.call(ctx, "GET", "/api/jobs", v, nil, &a)
	return a.Jobs, a.NextCursor, err
}

// BatchJobs returns every job of a batch, newest first, a page of 1,000
// per request.
func (c *Client) BatchJobs(ctx context.Context, batch string) ([]jobs.Record, error) {
	q := JobsQuery{Batch: batch, Limit: 1000}
	var all []jobs.Record
	for {
		page, next, err := c.JobsPage(ctx, q)
		if err != nil {
			return nil, err
		}
		all = append(all, page...)
		if next == "" {
			return all, nil
		}
		q.Cursor = next
	}
}
