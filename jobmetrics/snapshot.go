package jobmetrics

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// DefaultMaxAge is how old the values a scrape serves may be, by default:
// a Collector (and the API's snapshot of it and of asynq's queues) reads
// Redis at most once per DefaultMaxAge, however often /metrics is
// scraped.
const DefaultMaxAge = 2 * time.Second

// Snapshot is a prometheus.Collector that serves the metrics of its
// collectors from a snapshot taken at most once per maxAge: scrapes that
// come sooner get the same values, and cost the collectors (Redis)
// nothing. Scrapes that find the snapshot too old wait for one refresh
// between them. A refresh that could read only part of the metrics (the
// collectors leave out what they cannot read) is served as it is until
// the next.
//
// A refresh that takes long (the cluster collector reads every store's
// published status: about 4 s of this process at 100,000 stores) ages
// the snapshot slower: it is refreshed at most once per slowRefresh
// times the last refresh's duration, so collecting never takes more than
// a tenth of the process's time, however many stores there are and
// however often it is scraped.
type Snapshot struct {
	maxAge time.Duration
	cs     []prometheus.Collector
	now    func() time.Time // the clock snapshots are aged on (WithClock)

	mu      sync.Mutex    // held during a refresh
	at      time.Time     // when the refresh began; zero: none yet
	took    time.Duration // how long it took
	metrics []prometheus.Metric
}

// slowRefresh: a snapshot is served for at least this many times the
// duration of the refresh that made it.
const slowRefresh = 10

var _ prometheus.Collector = (*Snapshot)(nil)

// NewSnapshot returns a Snapshot of cs; maxAge ≤ 0 collects them afresh on
// every scrape. Register it instead of cs.
func NewSnapshot(maxAge time.Duration, cs ...prometheus.Collector) *Snapshot {
	return &Snapshot{maxAge: maxAge, cs: cs, now: time.Now}
}

// WithClock makes s age its snapshots on now instead of the real clock.
func (s *Snapshot) WithClock(now func() time.Time) *Snapshot {
	s.now = now
	return s
}

// Describe sends the descriptions of the collectors.
func (s *Snapshot) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range s.cs {
		c.Describe(ch)
	}
}

// Collect sends the snapshot's metrics, refreshing it first if it is
// maxAge old.
func (s *Snapshot) Collect(ch chan<- prometheus.Metric) {
	if s.maxAge <= 0 {
		for _, c := range s.cs {
			c.Collect(ch)
		}
		return
	}
	s.mu.Lock()
	if s.at.IsZero() || s.now().Sub(s.at) >= max(s.maxAge, slowRefresh*s.took) {
		s.refresh()
	}
	ms := s.metrics // replaced by a refresh, never changed: sent without the lock
	s.mu.Unlock()
	for _, m := range ms {
		ch <- m
	}
}

// refresh collects the collectors into a new snapshot (s.mu held).
func (s *Snapshot) refresh() {
	at := s.now()
	out := make(chan prometheus.Metric, 256)
	go func() {
		defer close(out)
		for _, c := range s.cs {
			c.Collect(out)
		}
	}()
	ms := make([]prometheus.Metric, 0, len(s.metrics))
	for m := range out {
		ms = append(ms, m)
	}
	s.at, s.took, s.metrics = at, s.now().Sub(at), ms
}
