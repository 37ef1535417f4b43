package api

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"time"

	"storekeeper/jobs"
	"storekeeper/jobsdb"
)

// A page of the store list: GET /api/stores?limit=&cursor=&node=&state=&health=.
// Stores come in name order; cursor is the last name of the page before
// (exclusive). Filters are applied while the names are walked, so a page
// reads the published status of at most storeScanBudget stores: with a
// rare filter a page can hold fewer than limit stores and still have a
// next_cursor, which goes on where the walk stopped.

const (
	storePageMax     = 1000
	storePageDefault = 100
	storeScanBudget  = 5000
	// storeIndexMaxAge is how old the API's snapshot of the store names
	// and owners may be: a page walks the snapshot instead of reading
	// every store's owner from Redis per request.
	storeIndexMaxAge = time.Second
	// nodesMaxAge is how old the API's copy of the nodes' heartbeats
	// (whether each is up, the leases each lost) and schedules may be.
	nodesMaxAge = time.Second
)

// storePageQuery is a parsed page request.
type storePageQuery struct {
	limit  int
	cursor string
	node   string
	state  jobs.StoreState
	health string // "", "ok" (no condition), "unhealthy" (any), or a condition kind
}

func parseStorePage(q url.Values) (storePageQuery, error) {
	p := storePageQuery{limit: storePageDefault, cursor: q.Get("cursor"), node: q.Get("node"), state: jobs.StoreState(q.Get("state")), health: q.Get("health")}
	if n, err := queryLimit(q, storePageMax); err != nil {
		return p, err
	} else if n > 0 {
		p.limit = n
	}
	if p.cursor != "" {
		if err := jobs.ValidateStoreName(p.cursor); err != nil {
			return p, newError(http.StatusBadRequest, "bad_cursor", fmt.Sprintf("cursor %q is not a store name", p.cursor))
		}
	}
	if p.node != "" {
		if err := jobs.ValidateNodeName(p.node); err != nil {
			return p, invalid(fmt.Sprintf("node: %v", err))
		}
	}
	if p.state != "" && !slices.Contains(jobs.StoreStates, p.state) {
		return p, invalid(fmt.Sprintf("state %q is not one of %v", p.state, jobs.StoreStates))
	}
	if p.health != "" && p.health != "ok" && p.health != "unhealthy" && !slices.Contains(storeConditions, p.health) {
		return p, invalid(fmt.Sprintf("health %q is not ok, unhealthy or a condition kind (%v)", p.health, storeConditions))
	}
	return p, nil
}

// match reports whether v passes p's state and health filters.
func (p storePageQuery) match(v jobs.StoreView) bool {
	if p.state != "" && (v.Stats == nil || v.Stats.State != p.state) {
		return false
	}
	switch p.health {
	case "":
	case "ok":
		return len(v.Health) == 0
	case "unhealthy":
		return len(v.Health) > 0
	default:
		return slices.ContainsFunc(v.Health, func(h jobs.HealthCondition) bool { return h.Kind == p.health })
	}
	return true
}

// storePage is one page of the store list.
type storePage struct {
	Stores []jobs.StoreView `json:"stores"`
	// Next is the cursor of the next page; "" when the walk reached the
	// last store.
	Next string `json:"next_cursor"`
	// Total is how many stores there are (before filters), as of the
	// snapshot the page walked.
	Total int `json:"total"`
}

func (s *Server) storePage(ctx context.Context, p storePageQuery) (storePage, error) {
	idx, err := s.index.get(ctx)
	if err != nil {
		return storePage{}, err
	}
	names, owners := idx.names, idx.owners
	total := len(names)
	if p.node != "" {
		names = idx.byNode[p.node] // walk that node's stores only
	}
	sc, err := s.storeContext(ctx)
	if err != nil {
		return storePage{}, err
	}
	page := storePage{Stores: []jobs.StoreView{}, Total: total}
	i := sort.SearchStrings(names, p.cursor)
	if i < len(names) && names[i] == p.cursor {
		i++
	}
	const chunk = 250
	scanned := 0
	for i < len(names) && len(page.Stores) < p.limit && scanned < storeScanBudget {
		var batch []string
		for ; i < len(names) && len(batch) < chunk && scanned+len(batch) < storeScanBudget; i++ {
			if p.node == "" || owners[names[i]] == p.node {
				batch = append(batch, names[i])
			}
			page.Next = names[i]
		}
		scanned += len(batch)
		views, err := sc.views(ctx, s.rdb, batch, owners)
		if err != nil {
			return storePage{}, err
		}
		for _, v := range views {
			if !p.match(v) {
				continue
			}
			page.Stores = append(page.Stores, v)
			if len(page.Stores) == p.limit {
				page.Next = v.Name
				i = sort.SearchStrings(names, v.Name) + 1
				break
			}
		}
	}
	if i >= len(names) {
		page.Next = ""
	}
	return page, nil
}

// storeIndex is every store's name (sorted) and owner: the API process
// keeps one (Server.index, a snapshot at most about storeIndexMaxAge old)
// that a page walks instead of reading the whole owners hash per request.
type storeIndex struct {
	names  []string
	owners map[string]string
	byNode map[string][]string // each node's names, sorted
}

func (s *Server) readStoreIndex(ctx context.Context) (storeIndex, error) {
	owners, err := jobsdb.StoreOwners(ctx, s.rdb)
	if err != nil {
		return storeIndex{}, err
	}
	names := make([]string, 0, len(owners))
	for n := range owners {
		names = append(names, n)
	}
	slices.Sort(names)
	byNode := map[string][]string{}
	for _, n := range names {
		byNode[owners[n]] = append(byNode[owners[n]], n)
	}
	return storeIndex{names: names, owners: owners, byNode: byNode}, nil
}

// queryLimit reads ?limit=, which must be in 1..max; 0 when absent.
func queryLimit(q url.Values, max int) (int, error) {
	l := q.Get("limit")
	if l == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(l)
	if err != nil {
		return 0, invalid(fmt.Sprintf("limit %q is not a number", l))
	}
	if n < 1 || n > max {
		return 0, invalid(fmt.Sprintf("limit %d is outside 1..%d", n, max))
	}
	return n, nil
}
