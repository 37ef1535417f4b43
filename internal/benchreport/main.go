// Command benchreport runs storekeeper's benchmarks beside their raw
// baselines and writes docs/BENCHMARKS.md: `make bench`.
//
// It builds each package's test binary once and runs every benchmark
// several rounds; each round runs all of a benchmark's sub-benchmarks back
// to back (storekeeper, then the raw baseline), so drift on a shared
// machine hits both sides. The report gives medians over the rounds and
// the ratio of the medians.
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// bench is one Benchmark function, run rounds times.
type bench struct {
	pkg, name, benchtime string
	rounds               int
}

// row compares two sub-benchmarks of a bench on one unit.
type row struct {
	label    string
	bench    string
	num, den string  // sub-benchmark names
	unit     string  // "ns/op" or a custom metric
	target   float64 // ceiling for num/den (a floor when higher); 0: reported, no target
	what     string
	higher   bool    // higher is better (throughput): the target is a floor
	limit    float64 // a ceiling for num's own median too, in unit; 0: none
}

var benches = []bench{
	{"./store", "Compact", "1x", 9},
	{"./store", "Verify", "10x", 5},
	{"./store", "Get", "1s", 5},
	{"./store", "GetParallel", "1s", 5},
	{"./store", "Set", "1s", 5},
	{"./store", "BackupFull", "1x", 5},
	{"./store", "BackupIncremental", "1x", 3},
	{"./store", "Restore", "1x", 9},
	{"./store", "Scale", "1x", 3},
	{"./worker", "EnqueueToStart", "300x", 5},
	{"./worker", "Throughput", "3000x", 9},
	{"./internal/e2e", "EnqueueAPI", "5000x", 9},
	{"./internal/e2e", "Dashboard", "300x", 3},
	{"./internal/e2e", "Watchers", "1x", 3},
	{"./internal/e2e", "HistoryFiltered", "1000x", 3},
	{"./offsite", "Upload", "3x", 3},
	{"./offsite", "RestoreFromTarget", "3x", 3},
	{"./ship", "ShipWrite", "1s", 5},
	{"./ship", "ShipLag", "1x", 3},
	{"./ship", "RestoreToMoment", "1x", 3},
}

const sk, raw = "storekeeper", "raw"

var rows = []row{
	{"Compact", "Compact", sk, raw, "ns/op", 1.05, "full compaction of a churned store (≥150 MiB of sstables), store.Compact(Force) vs db.Compact over the same bounds", false, 0},
	{"Verify", "Verify", sk, raw, "ns/op", 1.2, "block checksums of every sstable of that store, store.Verify (checkpoint + files) vs a ValidateBlockChecksums loop", false, 0},
	{"Get", "Get", sk, raw, "ns/op", 1.1, "point read of a present key through the handle vs db.Get (both copy the value)", false, 0},
	{"GetParallel", "GetParallel", sk, raw, "ns/op", 1.1, "the same from every core at once", false, 0},
	{"Set", "Set", sk, raw, "ns/op", 1.1, "unsynced point write through the handle vs db.Set", false, 0},
	{"Backup, full", "BackupFull", sk, raw, "ns/op", 1.8, "full backup of the churned store at rest (its compactions done) vs a plain copy of its directory with each file fsynced", false, 0},
	{"Backup, incremental (1% in one range): time", "BackupIncremental", "range-1pct", "full", "ns/op", 0.15, "backup after rewriting 1% of the keys in one contiguous range and flushing, vs the full backup of the same store", false, 0},
	{"Backup, incremental (1% in one range): new bytes", "BackupIncremental", "range-1pct", "full", "newbytes/op", 0.15, "bytes that backup copied, vs the full backup's", false, 0},
	{"Backup, incremental (1% at random): time", "BackupIncremental", "random-1pct", "full", "ns/op", 0, "the same 1% spread over the whole key space", false, 0},
	{"Backup, incremental (1% at random): new bytes", "BackupIncremental", "random-1pct", "full", "newbytes/op", 0, "", false, 0},
	{"Backup, incremental (1% in one range, compacted): new bytes", "BackupIncremental", "range-1pct-compacted", "full", "newbytes/op", 0, "after the rewritten span is compacted into the bottom level", false, 0},
	{"Backup, incremental (1% at random, compacted): new bytes", "BackupIncremental", "random-1pct-compacted", "full", "newbytes/op", 0, "", false, 0},
	{"Restore", "Restore", sk, raw, "ns/op", 1.5, "restore (fence, stage with hash check, verify, swap, reopen) vs a plain copy of the backup with fsync and a Pebble open", false, 0},
	{"Drill", "Restore", "drill", sk, "ns/op", 2.0, "a restore drill of that backup from the local backups (fetched into a scratch directory with every hash checked; then Pebble's open and CheckLevels while every sstable and the WAL is fingerprinted and compared with the backup's) vs the local restore above", false, 0},
	{"Enqueue→start, p50", "EnqueueToStart", sk, raw, "start-p50-ms", 0, "at low load (one job at a time, a random 0–30 ms apart), from calling enqueue until the handler runs; both sides poll every 20 ms (asynq sleeps ½–1½ of it on empty queues)", false, 0},
	{"Enqueue→start, p99", "EnqueueToStart", sk, raw, "start-p99-ms", 1.2, "the same, 99th percentile; also ≤ 50 ms", false, 50},
	{"Throughput, trivial jobs", "Throughput", sk, raw, "jobs/s", 0.4, "jobs per second, 16 in flight on 4 asynq workers: storekeeper's handler returns at once (enqueue, record, events, history and stats all on) vs raw asynq no-op tasks", true, 0},
	{"Throughput, watched", "Throughput", "watched", raw, "jobs/s", 0, "the same with a tailer reading every event, as the API's WebSocket does", true, 0},
	{"Throughput, verify of an empty store", "Throughput", "verify", raw, "jobs/s", 0, "real verifies (a hard-linked checkpoint, fsynced) of 16 empty stores", true, 0},
	{"API enqueue throughput", "EnqueueAPI", sk, raw, "req/s", 0.3, "POST /api/admin/compact/:store over 1,000 stores in turn from 32 keep-alive HTTP clients (a store's compaction already pending is deduplicated: served, counted apart) vs asynq.Client.Enqueue from 32 goroutines", true, 0},
	{"API enqueue throughput, the HTTP alone", "EnqueueAPI", "http-only", raw, "req/s", 0, "the same requests from the same clients answered by a bare gin handler with storekeeper's own answer to one of them (status, headers and body): no middleware, no Redis; what the HTTP stack alone costs on this machine, beside raw asynq", true, 0},
	{"API enqueue latency, p99", "EnqueueAPI", sk, raw, "req-p99-ms", 0, "the same requests' p99", false, 0},
	{"Watchers: event latency p99", "Watchers", sk, raw, "event-p99-ms", 1.5, "1,000 WebSocket watchers, 200 events/s for 10 s: from the append to the stream until a watcher read it, vs raw Melody broadcasting the same messages (from the Broadcast call)", false, 0},
	{"Watchers, 100 filters each: CPU per frame", "Watchers", "filters-100", sk, "cpu-us/frame", 1.2, "the same 1,000 watchers each with 100 filter values (store= and 99 job=, the events' among them, so each still gets every event) vs with none: CPU this process (server and watchers) spent per frame delivered", false, 0},
	{"Watchers, 100 filters each: event latency p50", "Watchers", "filters-100", sk, "event-p50-ms", 1.2, "the same runs' median event latency", false, 0},
	{"Watchers, 100 filters each: event latency p99", "Watchers", "filters-100", sk, "event-p99-ms", 0, "the same runs' p99 event latency (reported: on a saturated 2-core machine it swings between rounds more than filters could move it)", false, 0},
	{"History by store at 100k entries, limit 500: p99", "HistoryFiltered", "store/limit=500/clients=1", "unfiltered/limit=500/clients=1", "req-p99-ms", 0, "GET /api/history?store=… on a history of 100,000 entries over 99 stores and four kinds, 500 entries a page (a third of the queries paging with before=), one keep-alive client, vs the unfiltered page of the same size: a filtered query reads the store's index stream, one round trip, and the API passes the stored entries on without decoding them (the issue's target: p99 ≤ 5 ms; the baseline shows what a page of 500 entries costs alone)", false, 5},
	{"History by store and kind, limit 500: p99", "HistoryFiltered", "store+kind/limit=500/clients=1", "unfiltered/limit=500/clients=1", "req-p99-ms", 0, "the same by store and kind (about 250 entries match each)", false, 5},
	{"History of an unknown store: p99", "HistoryFiltered", "nosuchstore/limit=500/clients=1", "unfiltered/limit=500/clients=1", "req-p99-ms", 0, "store=nosuchstore: the query that read the whole stream before the indexes (≈0.5 s)", false, 5},
	{"History by store, limit 50: p99", "HistoryFiltered", "store/limit=50/clients=1", "unfiltered/limit=50/clients=1", "req-p99-ms", 0, "the dashboard's page size", false, 5},
	{"History by store, limit 500, 4 clients: p99", "HistoryFiltered", "store/limit=500/clients=4", "unfiltered/limit=500/clients=4", "req-p99-ms", 0, "four clients at once on the 2-core machine that also runs Redis and the clients", false, 0},
	{"History memory per entry: indexes vs stream", "HistoryFiltered", "store/limit=500/clients=1", "store/limit=500/clients=1", "index-B/entry", 0, "Redis memory of the three index streams (by store, by kind, by both: each a copy of the entry under the same id) per history entry; the ratio column is meaningless here, the stream itself is in the next row", false, 0},
	{"Off-site upload of a full backup", "Upload", "offsite", "raw-transfermanager", "ns/op", 1.2, "a full backup of a 150 MiB store uploaded to an S3 server on loopback (gofakes3) by offsite (HEADs, objects through gocloud's Bucket.Upload, manifest, index) vs the AWS SDK's transfer manager uploading the same files to the same server with the same client, 4 at a time", false, 0},
	{"Off-site upload of a full backup, encrypted", "Upload", "offsite-encrypted", "raw-transfermanager", "ns/op", 1.4, "the same with age encryption and HMAC-named objects", false, 0},
	{"Restore from a target onto a new node", "RestoreFromTarget", "offsite", "raw-sdk", "ns/op", 1.3, "that backup restored from the S3 server onto a node that never held the store (its manifest, then the objects straight into the restore's staged copy, 16 at a time, each SHA-256-checked and fsynced; Pebble opens the staged copy; the swap) vs the AWS SDK downloading the same objects 4 at a time, each fsynced, then a Pebble open", false, 0},
	{"PITR: unsynced Set with shipping on", "ShipWrite", "set", "raw-set", "ns/op", 1.3, "a 100-byte handle Set on a registry that keeps the commit log (a stamp in every batch, WALs archived, not recycled) while its shipper reads and sends the log to the S3 server on loopback, vs db.Set with NoSync on raw Pebble (WALs recycled); a Set waits while shipping is more than --ship-max-lag (500 ms) behind", false, 0},
	{"PITR: unsynced Set with shipping on, writes never held", "ShipWrite", "set-unheld", "raw-set", "ns/op", 0, "the same with --ship-max-lag 0: the writer never waits for shipping, which then falls behind it", false, 0},
	{"PITR: unsynced Set with shipping on, values that do not compress", "ShipWrite", "set-random", "raw-set-random", "ns/op", 0, "the same Set, held the same way, with 100-byte values that do not compress (cut from a 32 MiB pool of random bytes, so none repeats within a segment), vs db.Set of the same values on raw Pebble", false, 0},
	{"PITR: unsynced Set, the log kept, no shipper running", "ShipWrite", "set-log-only", "raw-set", "ns/op", 0, "the same Set on a registry that keeps the log, its shipper not running: the write path's own cost (the stamp, the batch, WALs created rather than recycled), apart from the CPU the shipper takes beside it on two cores", false, 0},
	{"PITR: synced 10-key batch with shipping on", "ShipWrite", "batch-sync", "raw-batch-sync", "ns/op", 1.2, "a synced Update of ten 100-byte keys, the same, vs a synced raw batch", false, 0},
	{"PITR: shipping lag p99 at 5 MB/s", "ShipLag", "5MBps", "5MBps", "lag-p99-ms", 0, "from a commit until WaitShipped returns (the write is in a segment on the S3 server), probed every 20 ms for 10 s while a writer commits 10 × 1 KiB unsynced every 2 ms (values that do not compress); default 250 ms interval; the ratio column is meaningless here (target: ≤ 1 s)", false, 1000},
	{"PITR: shipping lag p99 at 20 MB/s", "ShipLag", "20MBps", "20MBps", "lag-p99-ms", 0, "the same with four such writers", false, 0},
	{"PITR: shipping lag p99, sixteen paced writers", "ShipLag", "paced16", "paced16", "lag-p99-ms", 0, "the same with sixteen such writers: about 50 MB/s on two cores, the most the pacing reaches (the MB/s is in the run's output)", false, 0},
	{"PITR: shipping lag p99 at the highest rate", "ShipLag", "max", "max", "lag-p99-ms", 0, "the same with four writers as fast as the store takes them, held to shipping's pace while it is more than --ship-max-lag (500 ms) behind; target ≤ 2 s", false, 2000},
	{"PITR: the highest rate, shipping on", "ShipLag", "max", "max", "MB/s", 0, "what those four writers committed per second over the 10 s, holds included: the highest rate the store sustains with shipping on (the ratio column is meaningless here)", true, 0},
	{"PITR: restore to a moment", "RestoreToMoment", "pitr", "raw", "ns/op", 2.0, "a 20 MiB store's backup plus 100 MiB of shipped log after it (10,000 batches of ten 1 KiB values that do not compress, written as fast as a writer gets them: the issue's hour of writes scaled down) restored to the moment after the last: the backup, then the segments read from the S3 server and replayed into the staged copy, verify, swap; vs restoring the backup alone and applying the same batches, held in memory, to raw Pebble with a flush", false, 0},
	{"History memory per entry: stream", "HistoryFiltered", "store/limit=500/clients=1", "store/limit=500/clients=1", "stream-B/entry", 0, "", false, 0},
}

func main() {
	out := flag.String("out", "docs/BENCHMARKS.md", "report to write")
	only := flag.String("only", "", "run only the benchmarks whose name matches this regexp")
	flag.Parse()
	if err := run(*out, *only); err != nil {
		fmt.Fprintln(os.Stderr, "benchreport:", err)
		os.Exit(1)
	}
}

// results: bench -> sub -> unit -> one value per round.
type results map[string]map[string]map[string][]float64

func (r results) get(bench, sub, unit string) []float64 { return r[bench][sub][unit] }

func run(out, only string) error {
	tmp, err := os.MkdirTemp("", "benchreport")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	binaries := map[string]string{}
	res := results{}
	for _, b := range benches {
		if only != "" && !regexp.MustCompile(only).MatchString(b.name) {
			continue
		}
		bin, ok := binaries[b.pkg]
		if !ok {
			bin = filepath.Join(tmp, strings.ReplaceAll(strings.Trim(b.pkg, "./"), "/", "_")+".test")
			if err := sh("go", "test", "-c", "-o", bin, b.pkg); err != nil {
				return err
			}
			binaries[b.pkg] = bin
		}
		for round := 1; round <= b.rounds; round++ {
			fmt.Fprintf(os.Stderr, "%s round %d/%d\n", b.name, round, b.rounds)
			cmd := exec.Command(bin, "-test.run", "^$", "-test.bench", "^Benchmark"+b.name+"$", "-test.benchtime", b.benchtime, "-test.timeout", "60m")
			cmd.Dir = b.pkg
			cmd.Stderr = os.Stderr
			outb, err := cmd.Output()
			if err != nil {
				return fmt.Errorf("%s: %w\n%s", b.name, err, outb)
			}
			if err := parse(outb, b.name, res); err != nil {
				return err
			}
		}
	}
	return os.WriteFile(out, report(res, only), 0o644)
}

var lineRE = regexp.MustCompile(`^Benchmark([^/\s]+)/(\S+?)(?:-\d+)?\s+\d+\s+(.*)$`)

func parse(out []byte, name string, res results) error {
	found := false
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		m := lineRE.FindStringSubmatch(sc.Text())
		if m == nil || m[1] != name {
			continue
		}
		found = true
		if res[name] == nil {
			res[name] = map[string]map[string][]float64{}
		}
		if res[name][m[2]] == nil {
			res[name][m[2]] = map[string][]float64{}
		}
		f := strings.Fields(m[3])
		for i := 0; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err == nil {
				res[name][m[2]][f[i+1]] = append(res[name][m[2]][f[i+1]], v)
			}
		}
	}
	if !found {
		return fmt.Errorf("%s: no results in:\n%s", name, out)
	}
	return nil
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if n := len(s); n%2 == 1 {
		return s[n/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func format(v float64, unit string) string {
	switch unit {
	case "ns/op":
		return time.Duration(v).Round(time.Duration(max(1, v/1000))).String()
	case "newbytes/op":
		return fmt.Sprintf("%.1f MiB", v/(1<<20))
	case "start-p50-ms", "start-p99-ms", "event-p50-ms", "event-p99-ms", "req-p50-ms", "req-p99-ms":
		return fmt.Sprintf("%.2f ms", v)
	case "jobs/s", "req/s":
		return fmt.Sprintf("%.0f %s", v, unit)
	}
	return fmt.Sprintf("%.4g %s", v, unit)
}

func spread(v []float64, unit string) string {
	return fmt.Sprintf("%s [%s–%s]", format(median(v), unit), format(slices.Min(v), unit), format(slices.Max(v), unit))
}

func report(res results, only string) []byte {
	var b bytes.Buffer
	goVersion, _ := exec.Command("go", "version").Output()
	fmt.Fprintf(&b, "# Benchmarks\n\nWritten by `make bench` (internal/benchreport) on %s: %s, GOMAXPROCS %d, %s.\n\n",
		time.Now().UTC().Format("2006-01-02"), cpuModel(), runtime.GOMAXPROCS(0), strings.TrimSpace(string(goVersion)))
	if only != "" {
		fmt.Fprintf(&b, "Partial run: only benchmarks matching `%s`.\n\n", only)
	}
	b.WriteString("Each benchmark's sub-benchmarks run back to back in one test binary, on the same data, every round: `/storekeeper` goes through storekeeper, `/raw` does the same work with Pebble, the filesystem or asynq directly. ")
	b.WriteString("The table gives the median over the rounds (min–max in brackets) and the ratio of the medians; lower is better, except for throughput (jobs/s), where the target is a floor. The target is the ceiling the issue set; rows without one are reported for understanding.\n\n")
	b.WriteString("| benchmark | measured | baseline | ratio | target | verdict |\n|---|---|---|---|---|---|\n")
	for _, r := range rows {
		num, den := res.get(r.bench, r.num, r.unit), res.get(r.bench, r.den, r.unit)
		if len(num) == 0 || len(den) == 0 {
			continue
		}
		ratio := median(num) / median(den)
		target, verdict := "—", "—"
		if r.target == 0 && r.limit > 0 {
			target, verdict = "≤ "+format(r.limit, r.unit), "within target"
			if median(num) > r.limit {
				verdict = "**missed**"
			}
		}
		if r.target > 0 {
			target, verdict = fmt.Sprintf("≤ %.2f", r.target), "within target"
			if r.higher {
				target = fmt.Sprintf("≥ %.2f", r.target)
			}
			if r.limit > 0 {
				target += fmt.Sprintf(", ≤ %s", format(r.limit, r.unit))
			}
			if !r.higher && ratio > r.target || r.higher && ratio < r.target || r.limit > 0 && median(num) > r.limit {
				verdict = "**missed**"
			}
		}
		fmt.Fprintf(&b, "| %s | %s: %s | %s: %s | %.3f | %s | %s |\n", r.label, r.num, spread(num, r.unit), r.den, spread(den, r.unit), ratio, target, verdict)
	}

	breakdown(&b, res, "BackupFull", sk, "Full backup, where the time goes",
		[]string{"checkpoint", "copy-phase", "hash", "fsync", "validate", "publish"})
	breakdown(&b, res, "Restore", sk, "Restore, where the time goes",
		[]string{"fence", "copy-phase", "hash", "fsync", "verify", "swap", "reopen"})
	if subs := res["Scale"]; len(subs) > 0 {
		b.WriteString("\n## Growth: full backup and restore from 100 MiB to 1 GiB\n\nThe names are the fixtures' sstable sizes before churn settles; the bytes column is what each run actually moved (throughput × time).\n\n| run | bytes | time | throughput |\n|---|---|---|---|\n")
		var names []string
		for n := range subs {
			names = append(names, n)
		}
		slices.SortFunc(names, func(a, b string) int { return compareScale(a, b) })
		for _, n := range names {
			mbps, ns := median(subs[n]["MB/s"]), median(subs[n]["ns/op"])
			fmt.Fprintf(&b, "| %s | %.0f MB | %s | %.0f MB/s |\n", n, mbps*ns/1e9, spread(subs[n]["ns/op"], "ns/op"), mbps)
		}
	}

	pipeline(&b, res)
	apiSection(&b, res)

	b.WriteString("\n## What each row measures, and how to reproduce it\n\n")
	seen := map[string]bool{}
	for _, r := range rows {
		if r.what != "" {
			fmt.Fprintf(&b, "- **%s**: %s.\n", r.label, r.what)
		}
		if seen[r.bench] {
			continue
		}
		seen[r.bench] = true
		for _, bn := range benches {
			if bn.name == r.bench {
				fmt.Fprintf(&b, "  `go test -run '^$' -bench '^Benchmark%s$' -benchtime %s -count %d %s`\n", bn.name, bn.benchtime, bn.rounds, bn.pkg)
			}
		}
	}
	b.WriteString("- **Growth**: `go test -run '^$' -bench '^BenchmarkScale$' -benchtime 1x -count 3 ./store`\n")
	b.WriteString("- **The job pipeline, per job** and **state change → event readable**: from the Throughput and EnqueueToStart runs above.\n")
	b.WriteString("- **The API**: `go test -run '^$' -bench '^BenchmarkDashboard$' -benchtime 300x ./internal/e2e` and the EnqueueAPI and Watchers runs above.\n")
	b.WriteString(notes)
	return b.Bytes()
}

// pipeline writes what one job costs: round trips, CPU, event latency.
func pipeline(b *bytes.Buffer, res results) {
	th := res["Throughput"]
	if len(th) == 0 && len(res["EnqueueToStart"]) == 0 {
		return
	}
	b.WriteString("\n## The job pipeline, per job\n\nMedians over the rounds of the throughput run. A round trip is one command or pipeline a client sends (concurrent enqueue scripts share one: see jobsdb.Client); the commands column counts each command alone, what the round trips would be with no sharing, and the target is judged on it. Storekeeper's round trips are those touching its own keys (the enqueue script, the start and the finish of the attempt), the rest are asynq's. CPU is what the benchmark process (client and worker) and the Redis server spent per job.\n\n")
	b.WriteString("| | round trips | commands | of them storekeeper's | Go CPU | Redis CPU |\n|---|---|---|---|---|---|\n")
	for _, sub := range []string{sk, "watched", "verify", raw} {
		m := th[sub]
		if len(m) == 0 {
			continue
		}
		ours := "—"
		if v := m["ours-rt/job"]; len(v) > 0 {
			ours = fmt.Sprintf("%.2f", median(v))
		}
		fmt.Fprintf(b, "| %s | %.2f | %.2f | %s | %.0f µs | %.0f µs |\n", sub, median(m["rt/job"]), median(m["cmd/job"]), ours, median(m["go-cpu-us/job"]), median(m["redis-cpu-us/job"]))
	}
	if s, r := th[sk]["cmd/job"], th[raw]["cmd/job"]; len(s) > 0 && len(r) > 0 {
		added := median(s) - median(r)
		verdict := "within target"
		if added > 4 {
			verdict = "**missed**"
		}
		fmt.Fprintf(b, "\nRound trips storekeeper adds per job, counting every command as its own: **%.2f** (target ≤ 4): %s.\n", added, verdict)
	}
	b.WriteString("\n| state change → event readable | p50 | p99 | target | verdict |\n|---|---|---|---|---|\n")
	for _, c := range []struct{ label, bench, sub string }{
		{"low load (enqueue→start run)", "EnqueueToStart", sk},
		{"under load (watched throughput run)", "Throughput", "watched"},
	} {
		m := res[c.bench][c.sub]
		if len(m["event-p99-ms"]) == 0 {
			continue
		}
		p99 := median(m["event-p99-ms"])
		verdict := "within target"
		if p99 > 5 {
			verdict = "**missed**"
		}
		fmt.Fprintf(b, "| %s | %.2f ms | %.2f ms | ≤ 5 ms | %s |\n", c.label, median(m["event-p50-ms"]), p99, verdict)
	}
}

// apiSection writes the API's own targets.
func apiSection(b *bytes.Buffer, res results) {
	en, dash, ws := res["EnqueueAPI"][sk], res["Dashboard"][sk], res["Watchers"]
	if len(en) == 0 && len(dash) == 0 && len(ws) == 0 {
		return
	}
	b.WriteString("\n## The API\n\n| measure | value | target | verdict |\n|---|---|---|---|\n")
	check := func(label string, v float64, unit string, limit float64, floor bool) {
		verdict := "within target"
		if floor && v < limit || !floor && v > limit {
			verdict = "**missed**"
		}
		op := "≤"
		if floor {
			op = "≥"
		}
		fmt.Fprintf(b, "| %s | %.2f %s | %s %.2f %s | %s |\n", label, v, unit, op, limit, unit, verdict)
	}
	if len(en) > 0 {
		// Judged on commands, what a request's round trips would be if no
		// autopipelined batch shared them: the stricter reading.
		check("Redis commands per API enqueue (round trips, unshared)", median(en["cmd/req"]), "", 3, false)
		fmt.Fprintf(b, "| Redis round trips per API enqueue, autopipelined batches shared with concurrent requests | %.2f | — | — |\n", median(en["rt/req"]))
		fmt.Fprintf(b, "| share of those enqueues deduplicated | %.2f | — | — |\n", median(en["dedup-share"]))
		cpu := func(sub string) string {
			m := res["EnqueueAPI"][sub]
			return fmt.Sprintf("%.0f + %.0f µs", median(m["go-cpu-us/req"]), median(m["redis-cpu-us/req"]))
		}
		fmt.Fprintf(b, "| CPU per API enqueue, process + Redis: storekeeper; the HTTP alone; raw asynq | %s; %s; %s | — | — |\n", cpu(sk), cpu("http-only"), cpu(raw))
	}
	if len(dash) > 0 {
		check("GET /api/dashboard with 1,000 stores, p99", median(dash["req-p99-ms"]), "ms", 100, false)
	}
	for _, sub := range []string{sk, "filters-100", raw} {
		if v := ws[sub]["delivered"]; len(v) > 0 {
			check("Watchers: share delivered ("+sub+")", slices.Min(v), "", 1, true)
		}
	}
}

// breakdown writes a table of one sub-benchmark's <step>-ms/op metrics.
// overlapNote heads the breakdowns: some steps run in every copier at once.
const overlapNote = "Hash, fsync and (for backups) validate happen inside the copy phase, in every file copier at once (store.fileCopiers), and are summed over the copiers: they can exceed the copy phase and the total, which are wall-clock."

func breakdown(b *bytes.Buffer, res results, bench, sub, title string, steps []string) {
	m := res[bench][sub]
	if len(m) == 0 {
		return
	}
	fmt.Fprintf(b, "\n## %s\n\n%s\n\n| step | ms per op (median) |\n|---|---|\n", title, overlapNote)
	for _, s := range steps {
		if v := m[s+"-ms/op"]; len(v) > 0 {
			fmt.Fprintf(b, "| %s | %.1f |\n", s, median(v))
		}
	}
	fmt.Fprintf(b, "| **total** | %.1f |\n", median(m["ns/op"])/1e6)
}

// compareScale orders "backup-100MiB" before "backup-1GiB", then restores.
func compareScale(a, b string) int {
	size := func(s string) int {
		for i, suffix := range []string{"100MiB", "300MiB", "1GiB"} {
			if strings.HasSuffix(s, suffix) {
				return i
			}
		}
		return 9
	}
	if c := strings.Compare(strings.SplitN(a, "-", 2)[0], strings.SplitN(b, "-", 2)[0]); c != 0 {
		return c
	}
	return size(a) - size(b)
}

const notes = `
## Notes

- Fixtures are churned stores (keys with 300 random bytes each, a third overwritten, a seventh deleted, one range delete; 600,000 keys for the ≥150 MiB store), built once into ` + "`$TMPDIR/storekeeper-bench/`" + ` and copied with ` + "`cp -r`" + ` outside the timer, so both sides work on identical copies.
- store.Compact's time includes what the raw call leaves out: a flush, waiting for Pebble's table stats, the rule's decision, the free-space preflight, and waiting until Pebble has deleted the obsolete files so that the bytes-after figure is true.
- store.Verify's time includes the hard-linked checkpoint it verifies; it validates files on GOMAXPROCS goroutines, the raw loop on one.
- Get and Set run with Pebble's default options on both sides (8 MB block cache, about 10 MB of data), so some reads go to the OS page cache; both sides copy the value a Get returns.
- Backup and restore copy 16 files at once (store.fileCopiers), hashing each with SHA-256 as it passes, and a backup validates each new sstable in its copier; in the breakdowns copy-phase is wall time, and hash, fsync and validate (inside it) are summed over the copiers, so they can exceed it. The plain copy uses io.Copy, which the kernel turns into copy_file_range: no bytes cross user space, and nothing is hashed or validated.
- The number of copiers (16) was chosen by running BenchmarkBackupFull with the limit edited, on a 2-core VM: with one copier per core the full backup took about 2.7× the plain copy, with 8 about 1.9×, with 16 about 1.7× (commit 907f50e). A copy waits on the disk far more than it hashes, and the disk serves several requests at once faster than one. To measure it again: edit store.fileCopiers and run: go test -run '^$' -bench '^BenchmarkBackupFull$' -benchtime 1x -count 5 ./store.
- A backup copies the store's private files (WAL, MANIFEST, OPTIONS) every time; Pebble recycles WAL files, so a WAL is copied whole, stale tail included (up to the memtable size).
- Incremental backups: rewriting 1% of the keys adds one flushed table whichever way the keys are spread, so both cases copy about the same. What differs is compaction: when that table is compacted into the bottom level, a contiguous range rewrites only the few bottom tables it overlaps, while keys spread at random overlap every table, so the next backup after such a compaction copies nearly everything — the compacted rows show it.
- Restore's verify step opens the staged copy with Pebble; its bytes are proven identical to the backup's by SHA-256 while staging, and each sstable's block checksums were validated when the backup first copied it.
- API enqueues go through go-redis's autopipeliner (jobs.ClientConfig.Autopipeline): the enqueue scripts of concurrent requests travel in one write and one read, which raised the API's requests per second about 1.25× when it was introduced (commit 42c0b3e; to measure it again, set cfg.Jobs.Autopipeline to false in api.New and run: go test -run '^$' -bench '^BenchmarkEnqueueAPI$' -benchtime 5000x -count 5 ./internal/e2e); the API table's row of round trips shared with concurrent requests counts what is left. Workers do not use it: in the closed-loop throughput run the hand-over to the flusher cost more than the sharing saved.
- The commands above run the rounds of one sub-benchmark back to back; ` + "`make bench`" + ` alternates them round by round.
`

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH
	}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}

func sh(name string, args ...string) error {
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	return cmd.Run()
}
