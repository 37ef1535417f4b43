package client

import (
	"context"
	"net/url"
	"strconv"

	"storekeeper/jobs"
)

// Store is a store as the API shows it.
type Store = jobs.StoreView

// Condition is one health finding about a store.
type Condition = jobs.HealthCondition

// Stores returns every store, by name.
func (c *Client) Stores(ctx context.Context) ([]Store, error) {
	var a struct {
		Stores []Store `json:"stores"`
	}
	err := c.call(ctx, "GET", "/api/stores", nil, nil, &a)
	return a.Stores, err
}

// Pause pauses a store's scheduled and automatic jobs (jobs asked for by
// hand still run) until Resume.
func (c *Client) Pause(ctx context.Context, store string) error {
	return c.storeSwitch(ctx, store, "pause")
}

// Resume resumes a paused store's scheduled and automatic jobs.
func (c *Client) Resume(ctx context.Context, store string) error {
	return c.storeSwitch(ctx, store, "resume")
}

func (c *Client) storeSwitch(ctx context.Context, store, verb string) error {
	var a struct {
		Store  string `json:"store"`
		Paused bool   `json:"paused"`
	}
	return c.call(ctx, "POST", apiPath("/api/stores", store)+"/"+verb, nil, nil, &a)
}

// Schedules is what each node schedules, and the paused stores.
type Schedules struct {
	Nodes  []jobs.NodeSchedules      `json:"nodes"` // by node name
	Paused map[string]jobs.PauseInfo `json:"paused"`
}

// Schedules returns each node's schedules and the paused stores.
// Nodes returns every node that has run, up or down, by name, each with
// its last heartbeat while it is up (GET /api/nodes).
func (c *Client) Nodes(ctx context.Context) ([]jobs.NodeStatus, error) {
	var v struct {
		Nodes []jobs.NodeStatus `json:"nodes"`
	}
	err := c.call(ctx, "GET", "/api/nodes", nil, nil, &v)
	return v.Nodes, err
}

func (c *Client) Schedules(ctx context.Context) (Schedules, error) {
	var s Schedules
	err := c.call(ctx, "GET", "/api/schedules", nil, nil, &s)
	return s, err
}

// HistoryPage is one page of the history, newest first; Next is the
// Before of the next (older) page, empty on the last.
type HistoryPage struct {
	Entries []jobs.HistoryEntry `json:"history"`
	Next    string              `json:"next"`
}

// History returns finished jobs, newest first: the entries q chooses, at
// most q.Limit of them (the server takes 1 to 500; 0 leaves the number to
// it).
func (c *Client) History(ctx context.Context, q jobs.HistoryQuery) (HistoryPage, error) {
	v := url.Values{}
	for k, s := range map[string]string{"store": q.Store, "kind": string(q.Kind), "before": q.Before} {
		if s != "" {
			v.Set(k, s)
		}
	}
	if q.Limit != 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	var p HistoryPage
	err := c.call(ctx, "GET", "/api/history", v, nil, &p)
	return p, err
}
