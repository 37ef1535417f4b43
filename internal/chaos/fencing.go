package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"storekeeper/internal/keyspace"
	"storekeeper/jobs"
)

// The fencing invariant: no effect of a stale lease holder is accepted.
// Every change a store's owner makes on Redis (a job's start and end, a
// stats publish) applies only while the store's lease still holds the
// owner's claim, and says which claim: its fencing token (jobs.Event.Fence,
// jobs.StoreStatus.Fence). Tokens only grow, so in the log of accepted
// effects (the events stream, in the order Redis accepted them; and the
// published stats, sampled as the run goes) a store's tokens never go
// down, and nothing is accepted under a token older than a claim the
// harness itself made (the stolen-lease fault) once that claim was made.

// steal is a claim the stolen-lease fault made: from AtMS (Redis's clock,
// read after the claim) no effect on Store may carry a token below Token.
type steal struct {
	Store string
	Token int64
	AtMS  int64
}

// fenceLog is what the harness saw of fencing tokens during the run: the
// steals and the published stats' tokens, sampled.
type fenceLog struct {
	mu         sync.Mutex
	steals     []steal
	stats      map[string]int64 // store -> highest token seen published
	samples    int
	violations []string
}

func newFenceLog() *fenceLog { return &fenceLog{stats: map[string]int64{}} }

func (f *fenceLog) stole(s steal) {
	f.mu.Lock()
	f.steals = append(f.steals, s)
	f.mu.Unlock()
}

// sample reads every store's published stats and records a token lower
// than one already seen published for that store.
func (f *fenceLog) sample(ctx context.Context, c *Cluster, stores []string) {
	keys := make([]string, len(stores))
	for i, s := range stores {
		keys[i] = keyspace.StatsKey(s)
	}
	vals, err := c.rdb.MGet(ctx, keys...).Result()
	if err != nil {
		return // Redis away (a fault): the next sample reads it
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.samples++
	for i, v := range vals {
		js, ok := v.(string)
		if !ok {
			continue
		}
		var st jobs.StoreStatus
		if json.Unmarshal([]byte(js), &st) != nil || st.Fence == 0 {
			continue
		}
		if hi := f.stats[stores[i]]; st.Fence < hi {
			f.violations = append(f.violations, fmt.Sprintf("%s: stats published under token %d after token %d", stores[i], st.Fence, hi))
		} else {
			f.stats[stores[i]] = st.Fence
		}
	}
}

// sampleStats samples the published stats every 250 ms until ctx ends.
func (f *fenceLog) sampleStats(ctx context.Context, c *Cluster, stores []string) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f.sample(ctx, c, stores)
		}
	}
}

// fencing checks the events stream against the steals and itself, and
// reports what the stats samples found.
func (k *checker) fencing(fl *fenceLog) *invariant {
	iv := &invariant{Name: "no effect of a stale lease holder accepted"}
	fl.mu.Lock()
	iv.Violations = append(iv.Violations, fl.violations...)
	steals, samples := fl.steals, fl.samples
	fl.mu.Unlock()

	high := map[string]int64{} // store -> highest token along the stream so far
	fenced := 0
	for _, e := range k.events {
		if e.Store == "" {
			continue
		}
		if e.Fence == 0 {
			if e.Type == jobs.EventJobStarted || e.Type == jobs.EventJobSucceeded {
				iv.failf("%s %s of job %s on %s carries no fencing token", e.ID, e.Type, e.JobID, e.Store)
			}
			continue
		}
		fenced++
		if e.Fence < high[e.Store] {
			iv.failf("%s %s of job %s on %s accepted under token %d after token %d", e.ID, e.Type, e.JobID, e.Store, e.Fence, high[e.Store])
		}
		high[e.Store] = max(high[e.Store], e.Fence)
		for _, s := range steals {
			if s.Store == e.Store && e.Fence < s.Token && streamMS(e.ID) > s.AtMS {
				iv.failf("%s %s of job %s on %s accepted under token %d after the harness claimed token %d", e.ID, e.Type, e.JobID, e.Store, e.Fence, s.Token)
			}
		}
	}
	iv.Note = fmt.Sprintf("%d fenced events, %d stolen leases, %d stats samples", fenced, len(steals), samples)
	return iv
}

// streamMS is the millisecond part of a stream id.
func streamMS(id string) int64 {
	ms, _, _ := strings.Cut(id, "-")
	n, _ := strconv.ParseInt(ms, 10, 64)
	return n
}
