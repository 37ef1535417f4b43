package jobmetrics

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"

	"storekeeper/internal/keyspace"
	"storekeeper/internal/redistest"
)

// counting is a collector that counts its Collects and reports the count.
type counting struct {
	n    atomic.Int64
	desc *prometheus.Desc
}

func newCounting() *counting {
	return &counting{desc: prometheus.NewDesc("collects", "Collects so far.", nil, nil)}
}

func (c *counting) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }
func (c *counting) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(c.n.Add(1)))
}

// value gathers reg and returns the one sample of "collects".
func value(t *testing.T, reg prometheus.Gatherer) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "collects" {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatal("no collects")
	return 0
}

// Scrapes within maxAge get the same snapshot, concurrent ones included
// (one refresh between them); the first after it gets a new one. The
// snapshot ages on a fake clock.
func TestSnapshot(t *testing.T) {
	c := newCounting()
	clock := clockwork.NewFakeClock()
	snap := NewSnapshot(300*time.Millisecond, c)
	snap.now = clock.Now
	reg := prometheus.NewRegistry()
	reg.MustRegister(snap)
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			if v := value(t, reg); v != 1 {
				t.Errorf("a concurrent first scrape got collect %v", v)
			}
		})
	}
	wg.Wait()
	clock.Advance(300*time.Millisecond - time.Nanosecond)
	for range 5 {
		if v := value(t, reg); v != 1 {
			t.Fatalf("collect %v within maxAge", v)
		}
	}
	clock.Advance(time.Nanosecond)
	if v := value(t, reg); v != 2 {
		t.Fatalf("after maxAge: collect %v, want 2", v)
	}
	if n := c.n.Load(); n != 2 {
		t.Fatalf("%d collects, want 2", n)
	}

	fresh := newCounting()
	reg = prometheus.NewRegistry()
	reg.MustRegister(NewSnapshot(0, fresh))
	for i := range 3 {
		if v := value(t, reg); v != float64(i+1) {
			t.Fatalf("maxAge 0: scrape %d got collect %v", i+1, v)
		}
	}
}

// A Collector reads Redis at most once per MaxAge (by default): a
// worker-only process's /metrics costs Redis that much however often it is
// scraped. MaxAge < 0 reads on every scrape.
func TestCollectorReadsRedisOncePerMaxAge(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	rdb.HSet(t.Context(), keyspace.StoresKey, "orders", "n1")
	rdb.Set(t.Context(), keyspace.StatsKey("orders"), `{"node":"n1","stats":{"state":"open","disk_bytes":4096}}`, 0)
	cnt := &redistest.RoundTrips{}
	rdb.AddHook(cnt)
	for _, tc := range []struct {
		maxAge time.Duration
		reads  int64 // Collects that read Redis, of 10
	}{{0, 1}, {-1, 10}} {
		c, err := New(Config{Redis: rdb, Node: "n1", MaxAge: tc.maxAge})
		if err != nil {
			t.Fatal(err)
		}
		before := cnt.Commands()
		var once int64
		for i := range 10 {
			got := series(t, c)
			if len(got) == 0 {
				t.Fatal("no series")
			}
			if i == 0 {
				once = cnt.Commands() - before
			}
		}
		if n := cnt.Commands() - before; n != tc.reads*once {
			t.Errorf("MaxAge %v: 10 scrapes cost %d commands; one read is %d, want %d reads", tc.maxAge, n, once, tc.reads)
		}
	}
}

// slow is a counting collector whose Collect takes took on the fake clock.
type slow struct {
	*counting
	clock *clockwork.FakeClock
	took  time.Duration
}

func (s slow) Collect(ch chan<- prometheus.Metric) {
	s.clock.Advance(s.took)
	s.counting.Collect(ch)
}

// A refresh that took 1 s keeps its snapshot for 10 s, not maxAge (2 s):
// collecting costs at most a tenth of the time however slow it is.
func TestSnapshotAgesSlowRefreshesSlower(t *testing.T) {
	clock := clockwork.NewFakeClock()
	c := slow{counting: newCounting(), clock: clock, took: time.Second}
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewSnapshot(2*time.Second, c).WithClock(clock.Now))
	if v := value(t, reg); v != 1 {
		t.Fatalf("first scrape: collect %v", v)
	}
	// The refresh began 1 s ago; 10 s after its start it may be replaced.
	clock.Advance(9*time.Second - time.Nanosecond)
	if v := value(t, reg); v != 1 {
		t.Fatalf("within 10 times a 1 s refresh: collect %v, want the first", v)
	}
	clock.Advance(time.Nanosecond)
	if v := value(t, reg); v != 2 {
		t.Fatalf("10 s after a 1 s refresh began: collect %v, want 2", v)
	}
}
