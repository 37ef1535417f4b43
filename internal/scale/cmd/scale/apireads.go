package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"storekeeper/api"
)

// The API node of a -stores run is a process of its own (this program,
// run again with apiNodeEnv set), so its latency is what a separate API
// process on the same machine sees, not this process's goroutines'
// turn among a thousand workers'.
const apiNodeEnv = "STOREKEEPER_SCALE_API_NODE"

// apiRead is one kind of read and what it measured.
type apiRead struct {
	Name           string
	Count, Errors  int
	P50, P99, Max  time.Duration `json:"-"`
	Latencies      []time.Duration
	Bytes          int // the last answer's size
	FirstErrorText string
}

// apiReadsResult is what the API node reports on its stdout.
type apiReadsResult struct {
	Reads []apiRead
	CPU   float64 // the API process's CPU over the window, share of one core
}

// apiNodeArgs is what the parent passes the API node.
type apiNodeArgs struct {
	Redis         string
	Nodes, Stores int
	Window        time.Duration
	Every         time.Duration // one read every Every, the kinds in turn
}

// readKinds are the reads measured, the page's and the CLI's: each
// returns the path and query of one request.
var readKinds = []struct {
	name string
	path func(a apiNodeArgs, r *rand.Rand) string
}{
	{"store list, first page of 100", func(apiNodeArgs, *rand.Rand) string { return "/api/stores?limit=100" }},
	{"store list, one node's stores", func(a apiNodeArgs, r *rand.Rand) string {
		return "/api/stores?limit=100&node=" + fmt.Sprintf("node%04d", r.IntN(a.Nodes))
	}},
	{"one store", func(a apiNodeArgs, r *rand.Rand) string { return "/api/stores/" + randomStore(a, r) }},
	{"history, last 50", func(apiNodeArgs, *rand.Rand) string { return "/api/history?limit=50" }},
	{"one store's history", func(a apiNodeArgs, r *rand.Rand) string { return "/api/history?limit=50&store=" + randomStore(a, r) }},
	{"dashboard, first page of 100", func(apiNodeArgs, *rand.Rand) string { return "/api/dashboard?limit=100" }},
}

func randomStore(a apiNodeArgs, r *rand.Rand) string {
	return fmt.Sprintf("n%04d-s%03d", r.IntN(a.Nodes), r.IntN(a.Stores))
}

// startAPIReads starts the API node on rdb's Redis; wait returns what it
// measured once its window is over.
func startAPIReads(ctx context.Context, rdb *redis.Client, a apiNodeArgs) (wait func() (apiReadsResult, error), err error) {
	a.Redis = rdb.Options().Addr
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	args, err := json.Marshal(a)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, self)
	cmd.Env = append(os.Environ(), apiNodeEnv+"="+string(args))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return func() (apiReadsResult, error) {
		var r apiReadsResult
		if err := cmd.Wait(); err != nil {
			return r, fmt.Errorf("the API node: %w", err)
		}
		if err := json.Unmarshal(out.Bytes(), &r); err != nil {
			return r, fmt.Errorf("the API node's report: %w", err)
		}
		for i := range r.Reads {
			rd := &r.Reads[i]
			if len(rd.Latencies) > 0 {
				rd.P50, rd.P99, rd.Max = quantile(rd.Latencies, 50), quantile(rd.Latencies, 99), slices.Max(rd.Latencies)
			}
		}
		return r, nil
	}, nil
}

// apiNode is the API node's process: an API server on the run's Redis,
// read over loopback HTTP, one read every a.Every with the kinds in
// turn, for a.Window after one warm-up read of each kind. It prints an
// apiReadsResult on stdout.
func apiNode(spec string) error {
	var a apiNodeArgs
	if err := json.Unmarshal([]byte(spec), &a); err != nil {
		return err
	}
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: a.Redis, PoolSize: 64})
	defer rdb.Close()
	const secret = "scale-api-reads-viewer-token-0123456789"
	base, stop, err := serveAPI(ctx, rdb, secret, api.RoleViewer)
	if err != nil {
		return err
	}
	defer stop()
	hc := &http.Client{Timeout: time.Minute}
	get := func(path string) (int, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
		if err != nil {
			return 0, err
		}
		req.Header.Set("Authorization", "Bearer "+secret)
		resp, err := hc.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		n, err := io.Copy(io.Discard, resp.Body)
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("%s: %s", url.PathEscape(path), resp.Status)
		}
		return int(n), err
	}
	rnd := rand.New(rand.NewPCG(1, 2))
	reads := make([]apiRead, len(readKinds))
	for i, k := range readKinds {
		reads[i].Name = k.name
		_, _ = get(k.path(a, rnd)) // warm-up: the first read fills the API's snapshots
	}
	cpu0 := selfCPU()
	started := time.Now()
	tick := time.NewTicker(a.Every)
	defer tick.Stop()
	for i := 0; time.Since(started) < a.Window; i++ {
		<-tick.C
		rd := &reads[i%len(reads)]
		t0 := time.Now()
		n, err := get(readKinds[i%len(reads)].path(a, rnd))
		rd.Count++
		if err != nil {
			rd.Errors++
			if rd.FirstErrorText == "" {
				rd.FirstErrorText = err.Error()
			}
			continue
		}
		rd.Latencies = append(rd.Latencies, time.Since(t0))
		rd.Bytes = n
	}
	res := apiReadsResult{Reads: reads, CPU: (selfCPU() - cpu0).Seconds() / time.Since(started).Seconds()}
	return json.NewEncoder(os.Stdout).Encode(res)
}

// apiReadsTable prints what the API node measured.
func apiReadsTable(label string, r apiReadsResult) {
	fmt.Printf("\nAPI reads during %s (an API process of its own, %.0f%% of a core):\n\n", label, 100*r.CPU)
	fmt.Println("| read | requests | errors | p50 | p99 | max | answer |")
	fmt.Println("|---|---|---|---|---|---|---|")
	for _, rd := range r.Reads {
		fmt.Printf("| %s | %d | %d | %s | %s | %s | %s |\n", rd.Name, rd.Count, rd.Errors, millis(rd.P50), millis(rd.P99), millis(rd.Max), strconv.Itoa(rd.Bytes)+" B")
		if rd.FirstErrorText != "" {
			progress("  %s: first error: %s", rd.Name, rd.FirstErrorText)
		}
	}
}

// millis is d in milliseconds with one decimal (the other tables round to whole ones).
func millis(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 1, 64) + " ms"
}
