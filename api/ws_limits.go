package api

import (
	"fmt"
	"net/http"
	"net/url"
	"sync"

	"storekeeper/jobs"
)

// What one token's watchers may cost an API process (issue 4):
//
//   - at most MaxWatchersPerToken WebSocket connections open at once per
//     token on each API process (default 64; every process counts its
//     own, so behind a load balancer a token may hold that many on each).
//     One more is refused before the upgrade: 429 too_many_watchers. A
//     closed connection frees its place.
//   - at most MaxWatchFilters filter values per connection (default 100):
//     store=, job= and kind= values counted together, repeats included.
//     More is refused before the upgrade: 400 too_many_filters.
//
// Both refusals are the API's JSON error {"error": code, "message": …}
// with that status, like every other refusal of /ws (401, 403, 400
// invalid_request): a WebSocket client sees them as the handshake's
// answer. Matching an event is a lookup in each filter's set, so a
// watcher's filters do not make delivery slower, for it or for the others.
const (
	DefaultMaxWatchersPerToken = 64
	DefaultMaxWatchFilters     = 100
)

// filters are a watcher's store=, job= and kind= values, as sets: an event
// matches when every set given holds the event's value. A set not given
// (nil) matches anything.
type filters struct {
	stores, jobIDs map[string]struct{}
	kinds          map[jobs.Kind]struct{}
}

func (f *filters) match(e jobs.Event) bool {
	return inSet(f.stores, e.Store) && inSet(f.jobIDs, e.JobID) && inSet(f.kinds, e.Kind)
}

func inSet[K comparable](set map[K]struct{}, k K) bool {
	if len(set) == 0 {
		return true
	}
	_, ok := set[k]
	return ok
}

func filterSet[K ~string](vals []string) map[K]struct{} {
	if len(vals) == 0 {
		return nil
	}
	set := make(map[K]struct{}, len(vals))
	for _, v := range vals {
		set[K(v)] = struct{}{}
	}
	return set
}

// errTooManyFilters is the refusal of a watcher with n filter values, more
// than most.
func errTooManyFilters(n, most int) *apiError {
	return newError(http.StatusBadRequest, "too_many_filters",
		fmt.Sprintf("%d filter values (store, job and kind together); a watcher may have at most %d", n, most))
}

// parseWatch reads a /ws query: store, job and kind, each repeatable, and
// since=<event id> (its first value). More than most filter values in all
// (most < 0: no cap) is too_many_filters; a kind that is not one, or a
// since that is not an event id, is invalid_request. Nothing else in q
// matters (token= is the credential).
func parseWatch(q url.Values, most int) (filters, string, error) {
	stores, jobIDs, kinds := q["store"], q["job"], q["kind"]
	if n := len(stores) + len(jobIDs) + len(kinds); most >= 0 && n > most {
		return filters{}, "", errTooManyFilters(n, most)
	}
	for _, k := range kinds {
		if !jobs.Kind(k).Valid() {
			return filters{}, "", invalid("unknown kind " + k)
		}
	}
	since := q.Get("since")
	if since != "" && !jobs.ValidStreamID(since) {
		return filters{}, "", invalid("since must be an event id")
	}
	return filters{stores: filterSet[string](stores), jobIDs: filterSet[string](jobIDs), kinds: filterSet[jobs.Kind](kinds)}, since, nil
}

// tokenSlots counts each token's open watchers on this process.
type tokenSlots struct {
	max  int // < 0: no cap
	mu   sync.Mutex
	open map[string]int
}

// take gives token one more place, or says (false) that it holds max.
func (t *tokenSlots) take(token string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.max >= 0 && t.open[token] >= t.max {
		return false
	}
	t.open[token]++
	return true
}

// give returns a place take gave.
func (t *tokenSlots) give(token string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.open[token]--; t.open[token] <= 0 {
		delete(t.open, token)
	}
}

func (t *tokenSlots) refusal(token string) *apiError {
	return newError(http.StatusTooManyRequests, "too_many_watchers",
		fmt.Sprintf("token %s already has %d watchers open on this API process, the most one token may; close one first", token, t.max))
}

// limitOr is cfg's value, or def for 0 (negative: no cap).
func limitOr(cfg, def int) int {
	if cfg == 0 {
		return def
	}
	return cfg
}
