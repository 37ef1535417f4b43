package jobmetrics

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"storekeeper/jobs"
	"storekeeper/jobsdb"
)

// Config configures a Collector.
type Config struct {
	Redis redis.UniversalClient // required
	// Node limits the metrics to one worker node: the stores it owns and
	// the finished jobs it ran. Empty: the whole cluster.
	Node string
	// Timeout bounds one scrape's Redis reads (default 5 s).
	Timeout time.Duration
	// RPO, when set, is exported as storekeeper_rpo_seconds, which the
	// alert rules compare each backup target's lag with (--rpo).
	RPO time.Duration
	// RTO, when set, is exported as storekeeper_rto_seconds, which the
	// alert rules compare each store's measured drill duration with
	// (--rto).
	RTO time.Duration
	// MaxAge is how old the values a scrape serves may be: the Collector
	// reads Redis at most once per MaxAge, however often it is scraped
	// (a Snapshot of itself). 0: DefaultMaxAge; negative: on every scrape
	// (for a caller that puts it in a Snapshot of its own).
	MaxAge time.Duration
	// StoreSeries is the most stores for which the per-store series
	// (storekeeper_store_*, storekeeper_backup_*, storekeeper_ship_*,
	// storekeeper_drill_* by store) are exported: above it only the
	// aggregates are (they always are), so that 100,000 stores do not make
	// a million series. 0: DefaultStoreSeries; negative: never.
	StoreSeries int
}

// DefaultStoreSeries is Config.StoreSeries' default.
const DefaultStoreSeries = 10000

// HistoryWindow is how many of the newest finished jobs a scrape reads.
const HistoryWindow = 500

// Collector is a prometheus.Collector over jobs' Redis keys.
type Collector struct {
	cfg  Config
	snap *Snapshot // of fresh{c}; nil when MaxAge is negative
}

// fresh is the Collector reading Redis on every Collect.
type fresh struct{ c *Collector }

func (f fresh) Describe(ch chan<- *prometheus.Desc) { f.c.Describe(ch) }
func (f fresh) Collect(ch chan<- prometheus.Metric) { f.c.collect(ch) }

var _ prometheus.Collector = (*Collector)(nil)

// New returns a Collector; register it once per registry.
func New(cfg Config) (*Collector, error) {
	if cfg.Redis == nil {
		return nil, errors.New("jobmetrics: Redis is required")
	}
	if cfg.Node != "" {
		if err := jobs.ValidateNodeName(cfg.Node); err != nil {
			return nil, err
		}
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.MaxAge == 0 {
		cfg.MaxAge = DefaultMaxAge
	}
	if cfg.StoreSeries == 0 {
		cfg.StoreSeries = DefaultStoreSeries
	}
	c := &Collector{cfg: cfg}
	if cfg.MaxAge > 0 {
		c.snap = NewSnapshot(cfg.MaxAge, fresh{c})
	}
	return c, nil
}

var (
	descJobs = prometheus.NewDesc("storekeeper_jobs_finished", "The newest 500 finished jobs in the history stream (on a worker: those it ran), by kind and status.",
		[]string{"kind", "status"}, nil)
	descDuration = prometheus.NewDesc("storekeeper_job_duration_seconds", "Duration of the finished jobs in the history stream (on a worker: those it ran).",
		[]string{"kind"}, nil)
	descReclaimed = prometheus.NewDesc("storekeeper_compaction_reclaimed_bytes", "Bytes reclaimed by the compactions in the history stream, per store.",
		[]string{"store"}, nil)
	descStoreBytes = prometheus.NewDesc("storekeeper_store_disk_bytes", "Disk bytes of each store (on a worker: of those it owns), as its owner last published.",
		[]string{"store", "node"}, nil)
	descBackupAge = prometheus.NewDesc("storekeeper_backup_age_seconds", "Age of each store's newest good backup.",
		[]string{"store"}, nil)
	descStoreUp = prometheus.NewDesc("storekeeper_store_healthy", "1 when the store is open on a live node, else 0.",
		[]string{"store", "node"}, nil)
	descStoreState = prometheus.NewDesc("storekeeper_store_state", "1 for the state each store's owner last published (open, restoring, corrupt, unavailable, closed), 0 for the others.",
		[]string{"store", "node", "state"}, nil)
	descStoreLost = prometheus.NewDesc("storekeeper_store_lost", "1 for each store a live node has but does not serve because another claim holds its lease (holder: the node that does).",
		[]string{"store", "node", "holder"}, nil)
	descTargetLag = prometheus.NewDesc("storekeeper_backup_target_lag_seconds", "Age of the newest backup of each store on each backup target (when the target has none: of the store's oldest local backup, which it lacks), as the store's owner knows it.",
		[]string{"store", "target"}, nil)
	descTargetFailing = prometheus.NewDesc("storekeeper_backup_target_failing", "1 while uploads of the store's backups to the backup target fail, else 0.",
		[]string{"store", "target"}, nil)
	descShipLag = prometheus.NewDesc("storekeeper_ship_lag_seconds", "Point-in-time recovery: how long ago the oldest committed write of the store the backup target does not hold yet was committed (0 when it holds every write shipped so far), as the store's owner last published it.",
		[]string{"store", "target"}, nil)
	descShipGaps = prometheus.NewDesc("storekeeper_ship_gaps_total", "Point-in-time recovery: gaps the store's owner dropped from its commit log since it started (a target down past --ship-buffer); a restore to a moment inside one is refused.",
		[]string{"store"}, nil)
	descRPO         = prometheus.NewDesc("storekeeper_rpo_seconds", "The recovery point objective (--rpo) the backup targets' lag is held to.", nil, nil)
	descRTO         = prometheus.NewDesc("storekeeper_rto_seconds", "The recovery time objective (--rto) the stores' drills are held to.", nil, nil)
	descRestorable  = prometheus.NewDesc("storekeeper_store_last_restorable_timestamp_seconds", "Creation time of the newest backup of the store a restore drill has proven restorable.", []string{"store"}, nil)
	descDrillTook   = prometheus.NewDesc("storekeeper_drill_duration_seconds", "The measured RTO of the store's last passing drill: from its start to a fetched, fingerprinted, checked copy.", []string{"store", "target"}, nil)
	descDrillFailed = prometheus.NewDesc("storekeeper_drill_failed", "1 when the store's last restore drill failed, else 0.", []string{"store", "target"}, nil)
	// The aggregates, exported whether the per-store series are or not.
	descSeriesOn = prometheus.NewDesc("storekeeper_store_series", "1 while the per-store series are exported, 0 when there are more stores than --metrics-store-series (the alert rules then watch the aggregates).", nil, nil)
	descStores   = prometheus.NewDesc("storekeeper_stores", "Stores per owning node and the state its owner last published (unknown: nothing published yet).",
		[]string{"node", "state"}, nil)
	descUnhealthy = prometheus.NewDesc("storekeeper_stores_unhealthy", "Stores per owning node that are not open on a live node (storekeeper_store_healthy 0).",
		[]string{"node"}, nil)
	descDiskAll   = prometheus.NewDesc("storekeeper_stores_disk_bytes", "Disk bytes of the stores per owning node, as their owners last published.", []string{"node"}, nil)
	descAgeMax    = prometheus.NewDesc("storekeeper_backup_age_seconds_max", "The largest storekeeper_backup_age_seconds: the age of the oldest newest good backup of any store.", nil, nil)
	descNoBackup  = prometheus.NewDesc("storekeeper_stores_without_backup", "Stores with no good backup.", nil, nil)
	descLagMax    = prometheus.NewDesc("storekeeper_backup_target_lag_seconds_max", "The largest storekeeper_backup_target_lag_seconds of any store, per backup target.", []string{"target"}, nil)
	descFailingN  = prometheus.NewDesc("storekeeper_backup_target_failing_stores", "Stores whose uploads to the backup target fail.", []string{"target"}, nil)
	descShipMax   = prometheus.NewDesc("storekeeper_ship_lag_seconds_max", "The largest storekeeper_ship_lag_seconds of any store, per backup target.", []string{"target"}, nil)
	descGapsAll   = prometheus.NewDesc("storekeeper_ship_gaps_all_total", "The sum of storekeeper_ship_gaps_total over the stores.", nil, nil)
	descRestMin   = prometheus.NewDesc("storekeeper_last_restorable_timestamp_seconds_min", "The smallest storekeeper_store_last_restorable_timestamp_seconds: the store proven restorable longest ago.", nil, nil)
	descDrillMax  = prometheus.NewDesc("storekeeper_drill_duration_seconds_max", "The largest storekeeper_drill_duration_seconds, per backup target.", []string{"target"}, nil)
	descDrillBadN = prometheus.NewDesc("storekeeper_drill_failed_stores", "Stores whose last restore drill failed, per backup target.", []string{"target"}, nil)
	descNodeUp    = prometheus.NewDesc("storekeeper_node_up", "1 while the node's heartbeat is live, 0 once it has expired (on a worker: its own node only).",
		[]string{"node"}, nil)
)

// durationBuckets are the job duration histogram's upper bounds: 10 ms to
// about 43 min.
var durationBuckets = prometheus.ExponentialBuckets(0.01, 4, 10)

// Describe sends every metric's description.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descJobs, descDuration, descReclaimed, descStoreBytes, descBackupAge, descStoreUp, descStoreState, descStoreLost, descNodeUp,
		descTargetLag, descTargetFailing, descShipLag, descShipGaps, descRPO, descRTO, descRestorable, descDrillTook, descDrillFailed,
		descSeriesOn, descStores, descUnhealthy, descDiskAll, descAgeMax, descNoBackup, descLagMax, descFailingN, descShipMax, descGapsAll, descRestMin, descDrillMax, descDrillBadN} {
		ch <- d
	}
}

// Collect sends the metrics, from Redis if the last read is MaxAge old;
// what cannot be read is left out of this scrape.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	if c.snap != nil {
		c.snap.Collect(ch)
		return
	}
	c.collect(ch)
}

// collect reads Redis and sends the metrics.
func (c *Collector) collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.Timeout)
	defer cancel()
	c.collectHistory(ctx, ch)
	c.collectStores(ctx, ch)
	if c.cfg.RPO > 0 {
		ch <- prometheus.MustNewConstMetric(descRPO, prometheus.GaugeValue, c.cfg.RPO.Seconds())
	}
	if c.cfg.RTO > 0 {
		ch <- prometheus.MustNewConstMetric(descRTO, prometheus.GaugeValue, c.cfg.RTO.Seconds())
	}
}

func (c *Collector) collectHistory(ctx context.Context, ch chan<- prometheus.Metric) {
	hist, _, err := jobsdb.History(ctx, c.cfg.Redis, jobs.HistoryQuery{Limit: HistoryWindow})
	if err != nil {
		return
	}
	type key struct{ kind, status string }
	counts := map[key]int{}
	durations := map[string][]float64{}
	reclaimed := map[string]float64{}
	for _, h := range hist {
		if c.cfg.Node != "" && h.Node != c.cfg.Node {
			continue
		}
		counts[key{string(h.Kind), string(h.Status)}]++
		durations[string(h.Kind)] = append(durations[string(h.Kind)], float64(h.DurationMS)/1000)
		if h.Status == jobs.StatusCompacted && h.BytesBefore > h.BytesAfter {
			reclaimed[h.Store] += float64(h.BytesBefore - h.BytesAfter)
		}
	}
	for k, n := range counts {
		ch <- prometheus.MustNewConstMetric(descJobs, prometheus.GaugeValue, float64(n), k.kind, k.status)
	}
	for kind, ds := range durations {
		cumulative := map[float64]uint64{}
		sum := 0.0
		for _, d := range ds {
			sum += d
			for _, b := range durationBuckets {
				if d <= b {
					cumulative[b]++
				}
			}
		}
		ch <- prometheus.MustNewConstHistogram(descDuration, uint64(len(ds)), sum, cumulative, kind)
	}
	for st, b := range reclaimed {
		ch <- prometheus.MustNewConstMetric(descReclaimed, prometheus.GaugeValue, b, st)
	}
}

func (c *Collector) collectStores(ctx context.Context, ch chan<- prometheus.Metric) {
	owners, err := jobsdb.StoreOwners(ctx, c.cfg.Redis)
	if err != nil {
		return
	}
	nodes, err := jobsdb.Nodes(ctx, c.cfg.Redis)
	if err != nil {
		return
	}
	up := map[string]bool{}
	for _, n := range nodes {
		up[n.Node] = n.Up
		if c.cfg.Node == "" || n.Node == c.cfg.Node {
			ch <- prometheus.MustNewConstMetric(descNodeUp, prometheus.GaugeValue, b2f(n.Up), n.Node)
			if n.Info != nil {
				for st, holder := range n.Info.Lost {
					ch <- prometheus.MustNewConstMetric(descStoreLost, prometheus.GaugeValue, 1, st, n.Node, holder)
				}
			}
		}
	}
	var names []string
	for name, node := range owners {
		if c.cfg.Node == "" || node == c.cfg.Node {
			names = append(names, name)
		}
	}
	published, err := jobsdb.PublishedStatus(ctx, c.cfg.Redis, names)
	if err != nil {
		return
	}
	perStore := c.cfg.StoreSeries >= len(names)
	ch <- prometheus.MustNewConstMetric(descSeriesOn, prometheus.GaugeValue, b2f(perStore))
	send := func(d *prometheus.Desc, t prometheus.ValueType, v float64, labels ...string) {
		if perStore {
			ch <- prometheus.MustNewConstMetric(d, t, v, labels...)
		}
	}
	agg := newAggregates()
	now := time.Now()
	for i, name := range names {
		node := owners[name]
		var p jobs.StoreStatus
		if raw := published[i]; raw != nil {
			_ = json.Unmarshal(raw, &p)
		}
		healthy := up[node] && p.Stats.State == jobs.StoreOpen
		agg.store(node, p.Stats.State, healthy, p.Stats.DiskBytes)
		send(descStoreBytes, prometheus.GaugeValue, float64(p.Stats.DiskBytes), name, node)
		send(descStoreUp, prometheus.GaugeValue, b2f(healthy), name, node)
		if p.Stats.State != "" { // nothing published yet: no state to report
			for _, st := range jobs.StoreStates {
				send(descStoreState, prometheus.GaugeValue, b2f(p.Stats.State == st), name, node, string(st))
			}
		}
		if b, ok := jobs.NewestGood(p.Backups); ok {
			age := now.Sub(b.CreatedAt).Seconds()
			agg.ageMax = max(agg.ageMax, age)
			send(descBackupAge, prometheus.GaugeValue, age, name)
		} else {
			agg.noBackup++
		}
		for _, t := range p.Targets {
			at := t.BackupAt
			if at.IsZero() && len(p.Backups) > 0 {
				at = p.Backups[len(p.Backups)-1].CreatedAt // newest first: the oldest, which the target lacks too
			}
			if !at.IsZero() {
				lag := now.Sub(at).Seconds()
				maxOf(agg.lagMax, t.Target, lag)
				send(descTargetLag, prometheus.GaugeValue, lag, name, t.Target)
			}
			agg.failing[t.Target] += b2f(!t.FailingSince.IsZero())
			send(descTargetFailing, prometheus.GaugeValue, b2f(!t.FailingSince.IsZero()), name, t.Target)
			if t.ShipLag != nil {
				maxOf(agg.shipMax, t.Target, t.ShipLag.Seconds())
				send(descShipLag, prometheus.GaugeValue, t.ShipLag.Seconds(), name, t.Target)
			}
		}
		if p.ShipGaps > 0 || slices.ContainsFunc(p.Targets, func(t jobs.TargetStatus) bool { return t.ShipLag != nil }) {
			agg.shipping, agg.gaps = true, agg.gaps+float64(p.ShipGaps)
			send(descShipGaps, prometheus.CounterValue, float64(p.ShipGaps), name)
		}
		if d := p.Drill; d != nil {
			if !d.Restorable.IsZero() {
				ts := float64(d.Restorable.UnixMilli()) / 1000
				if agg.restMin == 0 || ts < agg.restMin {
					agg.restMin = ts
				}
				send(descRestorable, prometheus.GaugeValue, ts, name)
			}
			if d.OK {
				maxOf(agg.drillMax, d.Target, d.RTO.Seconds())
				send(descDrillTook, prometheus.GaugeValue, d.RTO.Seconds(), name, d.Target)
			}
			agg.drillBad[d.Target] += b2f(!d.OK)
			send(descDrillFailed, prometheus.GaugeValue, b2f(!d.OK), name, d.Target)
		}
	}
	agg.send(ch)
}

// aggregates are the per-store values summed, counted or maxed over the
// stores a scrape reads, exported whatever Config.StoreSeries says.
type aggregates struct {
	stores            map[[2]string]int // node, state
	unhealthy, disk   map[string]float64
	ageMax, gaps      float64
	restMin           float64 // 0: no store proven restorable
	noBackup          int
	shipping          bool
	lagMax, shipMax   map[string]float64 // by target
	drillMax          map[string]float64
	failing, drillBad map[string]float64 // counts by target
}

func newAggregates() *aggregates {
	return &aggregates{stores: map[[2]string]int{}, unhealthy: map[string]float64{}, disk: map[string]float64{},
		lagMax: map[string]float64{}, shipMax: map[string]float64{}, drillMax: map[string]float64{}, failing: map[string]float64{}, drillBad: map[string]float64{}}
}

func (a *aggregates) store(node string, state jobs.StoreState, healthy bool, disk uint64) {
	if state == "" {
		state = "unknown"
	}
	a.stores[[2]string{node, string(state)}]++
	a.unhealthy[node] += b2f(!healthy)
	a.disk[node] += float64(disk)
}

// maxOf keeps in m the largest v per target.
func maxOf(m map[string]float64, target string, v float64) {
	if old, ok := m[target]; !ok || v > old {
		m[target] = v
	}
}

func (a *aggregates) send(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for k, n := range a.stores {
		gauge(descStores, float64(n), k[0], k[1])
	}
	for node, n := range a.unhealthy {
		gauge(descUnhealthy, n, node)
		gauge(descDiskAll, a.disk[node], node)
	}
	if len(a.stores) > 0 {
		gauge(descAgeMax, a.ageMax)
		gauge(descNoBackup, float64(a.noBackup))
	}
	if a.shipping {
		ch <- prometheus.MustNewConstMetric(descGapsAll, prometheus.CounterValue, a.gaps)
	}
	if a.restMin > 0 {
		gauge(descRestMin, a.restMin)
	}
	for _, m := range []struct {
		d *prometheus.Desc
		v map[string]float64
	}{{descLagMax, a.lagMax}, {descFailingN, a.failing}, {descShipMax, a.shipMax}, {descDrillMax, a.drillMax}, {descDrillBadN, a.drillBad}} {
		for target, v := range m.v {
			gauge(m.d, v, target)
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
