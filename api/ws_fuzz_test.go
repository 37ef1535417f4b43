package api

import (
	"net/http"
	"net/url"
	"slices"
	"testing"

	"storekeeper/jobs"
)

// FuzzWatchFilters: parseWatch, a /ws query to filters, never panics; it
// refuses exactly what it should (more filter values than the cap, a kind
// that is not one, a since that is not an event id), always with a 400;
// and the sets it builds match an event exactly when a scan of the
// query's values would. The cap is the default and, so that short inputs
// reach it, limit%8 (negative: no cap). Seeds: testdata/fuzz/FuzzWatchFilters.
func FuzzWatchFilters(f *testing.F) {
	f.Add("store=orders&job=01J&kind=compact&since=1-0", "orders", "01J", "compact", 2)
	f.Fuzz(func(t *testing.T, query, store, job, kind string, limit int) {
		q, _ := url.ParseQuery(query) // as the server reads it (URL.Query)
		for _, most := range []int{DefaultMaxWatchFilters, limit % 8} {
			checkWatch(t, q, most, jobs.Event{Store: store, JobID: job, Kind: jobs.Kind(kind)})
		}
	})
}

func checkWatch(t *testing.T, q url.Values, most int, e jobs.Event) {
	t.Helper()
	f, since, err := parseWatch(q, most)
	want := ""
	switch {
	case most >= 0 && len(q["store"])+len(q["job"])+len(q["kind"]) > most:
		want = "too_many_filters"
	case slices.ContainsFunc(q["kind"], func(k string) bool { return !jobs.Kind(k).Valid() }):
		want = "invalid_request"
	case q.Get("since") != "" && !jobs.ValidStreamID(q.Get("since")):
		want = "invalid_request"
	}
	if err != nil {
		ae := classify(err)
		if ae == nil || ae.status != http.StatusBadRequest || ae.code != want {
			t.Fatalf("parseWatch(%v, most %d): %v (%+v); want %q", q, most, err, ae, want)
		}
		return
	}
	if want != "" {
		t.Fatalf("parseWatch(%v, most %d) accepted it; want %s", q, most, want)
	}
	if since != q.Get("since") {
		t.Fatalf("since %q from %v", since, q)
	}
	scan := func(e jobs.Event) bool {
		return (len(q["store"]) == 0 || slices.Contains(q["store"], e.Store)) &&
			(len(q["job"]) == 0 || slices.Contains(q["job"], e.JobID)) &&
			(len(q["kind"]) == 0 || slices.Contains(q["kind"], string(e.Kind)))
	}
	// The fuzzed event, and one made of the query's own values (which
	// must match), with each part in turn from the fuzzed one.
	own := e
	if v := q["store"]; len(v) > 0 {
		own.Store = v[len(v)-1]
	}
	if v := q["job"]; len(v) > 0 {
		own.JobID = v[len(v)-1]
	}
	if v := q["kind"]; len(v) > 0 {
		own.Kind = jobs.Kind(v[len(v)-1])
	}
	if !f.match(own) {
		t.Fatalf("filters of %v do not match %+v", q, own)
	}
	for _, ev := range []jobs.Event{e, own,
		{Store: e.Store, JobID: own.JobID, Kind: own.Kind},
		{Store: own.Store, JobID: e.JobID, Kind: own.Kind},
		{Store: own.Store, JobID: own.JobID, Kind: e.Kind}} {
		if got, want := f.match(ev), scan(ev); got != want {
			t.Fatalf("filters of %v match %+v: %v; a scan says %v", q, ev, got, want)
		}
	}
}
