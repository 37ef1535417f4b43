// Command benchreport runs storekeeper's benchmarks beside their raw
// baselines and writes docs/BENCHMARKS.md: `make bench`.
//
// Every benchmark it knows is a pair of sub-benchmarks, <Name>/storekeeper
// and <Name>/raw, run in the same process on the same data. It builds each
// package's test binary once and runs it several rounds, each round running
// both sides back to back, so drift on a shared machine hits both; the
// report gives the median of the rounds and the ratio of the medians.
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

// pair is one row of the report.
type pair struct {
	pkg       string  // package path, relative to the module root
	name      string  // BenchmarkName without the prefix
	benchtime string  // go test -benchtime
	rounds    int     // how many times to run the pair
	target    float64 // the ratio storekeeper/raw must not exceed
	what      string
}

var pairs = []pair{
	{"./store", "Compact", "1x", 5, 1.05, "full compaction of a churned store (≥150 MiB of sstables), store.Compact(Force) vs db.Compact over the same bounds"},
	{"./store", "Verify", "10x", 5, 1.2, "block checksums of every sstable of that store, store.Verify (checkpoint + files) vs a ValidateBlockChecksums loop"},
	{"./store", "Get", "1s", 5, 1.1, "point read of a present key through the handle vs db.Get (both copy the value)"},
	{"./store", "GetParallel", "1s", 5, 1.1, "the same from every core at once"},
	{"./store", "Set", "1s", 5, 1.1, "unsynced point write through the handle vs db.Set"},
}

func main() {
	out := flag.String("out", "docs/BENCHMARKS.md", "report to write")
	only := flag.String("only", "", "run only the pairs whose name matches this regexp")
	flag.Parse()
	if err := run(*out, *only); err != nil {
		fmt.Fprintln(os.Stderr, "benchreport:", err)
		os.Exit(1)
	}
}

type result struct {
	pair
	sk, raw []float64 // ns/op per round
}

func run(out, only string) error {
	tmp, err := os.MkdirTemp("", "benchreport")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	binaries := map[string]string{}
	var results []result
	for _, p := range pairs {
		if only != "" && !regexp.MustCompile(only).MatchString(p.name) {
			continue
		}
		bin, ok := binaries[p.pkg]
		if !ok {
			bin = filepath.Join(tmp, strings.ReplaceAll(strings.Trim(p.pkg, "./"), "/", "_")+".test")
			if err := sh("go", "test", "-c", "-o", bin, p.pkg); err != nil {
				return err
			}
			binaries[p.pkg] = bin
		}
		r := result{pair: p}
		for round := 1; round <= p.rounds; round++ {
			fmt.Fprintf(os.Stderr, "%s round %d/%d\n", p.name, round, p.rounds)
			cmd := exec.Command(bin, "-test.run", "^$", "-test.bench", "^Benchmark"+p.name+"$", "-test.benchtime", p.benchtime)
			cmd.Dir = p.pkg
			cmd.Stderr = os.Stderr
			b, err := cmd.Output()
			if err != nil {
				return fmt.Errorf("%s: %w\n%s", p.name, err, b)
			}
			sk, raw, err := parse(b, p.name)
			if err != nil {
				return err
			}
			r.sk, r.raw = append(r.sk, sk), append(r.raw, raw)
		}
		results = append(results, r)
	}
	return os.WriteFile(out, report(results), 0o644)
}

var line = regexp.MustCompile(`^Benchmark(\S+?)/(storekeeper|raw)(?:-\d+)?\s+\d+\s+([\d.]+) ns/op`)

func parse(out []byte, name string) (sk, raw float64, err error) {
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		m := line.FindStringSubmatch(sc.Text())
		if m == nil || m[1] != name {
			continue
		}
		v, _ := strconv.ParseFloat(m[3], 64)
		if m[2] == "raw" {
			raw = v
		} else {
			sk = v
		}
	}
	if sk == 0 || raw == 0 {
		return 0, 0, fmt.Errorf("%s: no storekeeper/raw results in:\n%s", name, out)
	}
	return sk, raw, nil
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if n := len(s); n%2 == 1 {
		return s[n/2]
	} else {
		return (s[n/2-1] + s[n/2]) / 2
	}
}

func dur(ns float64) string {
	return time.Duration(ns).Round(time.Duration(max(1, ns/1000))).String()
}

func report(results []result) []byte {
	var b bytes.Buffer
	cpu := cpuModel()
	goVersion, _ := exec.Command("go", "version").Output()
	fmt.Fprintf(&b, "# Benchmarks\n\nWritten by `make bench` (internal/benchreport) on %s: %s, GOMAXPROCS %d, %s.\n\n",
		time.Now().UTC().Format("2006-01-02"), cpu, runtime.GOMAXPROCS(0), strings.TrimSpace(string(goVersion)))
	b.WriteString("Each row is a pair of sub-benchmarks in one test binary: `/storekeeper` goes through storekeeper, `/raw` does the same work with Pebble directly, on the same data. ")
	b.WriteString("The pair runs back to back in every round; the table gives the median per op over the rounds (min–max in brackets) and the ratio of the medians. Lower ratio is better; the target is the ceiling the issue set.\n\n")
	b.WriteString("| benchmark | storekeeper | raw | ratio | target | verdict |\n|---|---|---|---|---|---|\n")
	for _, r := range results {
		sk, raw := median(r.sk), median(r.raw)
		ratio := sk / raw
		verdict := "within target"
		if ratio > r.target {
			verdict = "**over target**"
		}
		fmt.Fprintf(&b, "| %s | %s [%s–%s] | %s [%s–%s] | %.3f | ≤ %.2f | %s |\n", r.name,
			dur(sk), dur(slices.Min(r.sk)), dur(slices.Max(r.sk)),
			dur(raw), dur(slices.Min(r.raw)), dur(slices.Max(r.raw)), ratio, r.target, verdict)
	}
	b.WriteString("\n## What each row measures, and how to reproduce it\n\n")
	for _, r := range results {
		fmt.Fprintf(&b, "- **%s**: %s.\n  `go test -run '^$' -bench '^Benchmark%s$' -benchtime %s -count %d %s`\n", r.name, r.what, r.name, r.benchtime, r.rounds, r.pkg)
	}
	b.WriteString(notes)
	return b.Bytes()
}

const notes = `
## Notes

- The churned fixture (600,000 keys of 300 random bytes, a third overwritten, a seventh deleted, one range delete) is built once into ` + "`$TMPDIR/storekeeper-bench/`" + ` and copied with ` + "`cp -r`" + ` outside the timer for every compaction, so both sides compact identical copies.
- store.Compact's time includes what the raw call leaves out: a flush, waiting for Pebble's table stats, the rule's decision, the free-space preflight, and waiting until Pebble has deleted the obsolete files so that the bytes-after figure is true.
- store.Verify's time includes the hard-linked checkpoint it verifies (so that files a concurrent compaction deletes are never mistaken for corruption); it validates files on GOMAXPROCS goroutines, the raw loop on one.
- Get and Set run with Pebble's default options on both sides (8 MB block cache, about 10 MB of data), so some reads go to the OS page cache; both sides copy the value a Get returns.
- The commands above run the rounds of one side back to back; ` + "`make bench`" + ` alternates the sides round by round.
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
