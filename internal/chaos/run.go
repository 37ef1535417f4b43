package chaos

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"storekeeper/jobs"
)

// FailoverFaults are the faults that make Sentinel fail over: the
// loss-window run draws only these.
var FailoverFaults = []string{faultKillPrimary, faultPausePrimary}

// Result is what a run found.
type Result struct {
	Options    Options
	Started    time.Time
	Accepted   map[jobs.Kind]int
	Writes     [2]int // acknowledged synced, unsynced
	Faults     []*fault
	Recovery   map[string]time.Duration // longest per fault kind
	FaultCount map[string]int
	P99, P99F  time.Duration // API latency outside and during faults
	Requests   int
	Answers    map[string]int
	CtlRuns    map[string]int
	Converged  time.Duration
	Lost       int // accepted jobs gone (MinReplicas 0 only)
	Invariants []*invariant
	Err        error
	// LossWindow is the extra run with MinReplicas 0, when one was made:
	// its lost jobs are measured, not failed on.
	LossWindow *Result
}

// Passed and Failed count the invariants.
func (r *Result) Passed() (passed, failed int) {
	for _, iv := range r.Invariants {
		if len(iv.Violations) == 0 {
			passed++
		} else {
			failed++
		}
	}
	if r.Err != nil {
		failed++
	}
	return passed, failed
}

// Run starts the cluster, loads it under faults for opt.Duration, lets it
// converge, stops it and checks every invariant.
func Run(ctx context.Context, opt Options) *Result {
	res := &Result{Options: opt, Started: time.Now()}
	c, err := Start(ctx, opt)
	if c != nil {
		defer c.Close()
	}
	if err != nil {
		res.Err = fmt.Errorf("start: %w", err)
		return res
	}
	c.logf("cluster up: redis %s, nodes %d, api %d; seed %d", c.redisURL, len(c.nodes), len(c.apis), opt.Seed)

	var fl *faults
	l := newLoad(c, opt.Seed, func() bool { return fl != nil && fl.active.Load() })
	fl = newFaults(c, l, opt.Seed)
	runCtx, stop := context.WithTimeout(ctx, opt.Duration)
	done := make(chan struct{})
	go func() { l.run(runCtx, 4); close(done) }()
	go fl.fence.sampleStats(runCtx, c, l.storeList)
	fl.run(runCtx)
	stop()
	<-done
	fl.supervise()
	c.logf("faults stopped: %d injected", len(fl.faults()))

	// Every store gets a deep verify: a corrupted sstable nobody read yet
	// is found now, and restored.
	for _, s := range l.storeList {
		l.enqueue(context.Background(), jobs.KindVerify, s, map[string]any{"deep": true})
	}
	k := &checker{c: c, l: l, ctx: context.Background()}
	conv, took := k.converge(60 * time.Second)
	res.Converged = took
	c.logf("converged: %v", conv.Violations)
	// The moment just before the run's last fault (or, with none, before
	// the faults stopped).
	moment := time.Now().Add(-time.Second)
	if all := fl.faults(); len(all) > 0 {
		moment = all[len(all)-1].At.Add(-time.Millisecond)
	}
	pitr := k.restoreToMoment(moment, 90*time.Second)
	c.logf("restored every store to %s: %v", moment.UTC().Format(time.RFC3339Nano), pitr.iv.Violations)
	drills := k.drillsPass(90 * time.Second)
	c.logf("drills: %s %v", drills.Note, drills.Violations)

	// Stop the API nodes, then the workers (gracefully), then read
	// everything back.
	for _, a := range c.apis {
		_ = a.stop(10 * time.Second)
	}
	for _, n := range c.nodes {
		if err := n.stop(30 * time.Second); err != nil {
			c.logf("%v", err)
		}
	}
	if err := k.load(); err != nil {
		res.Err = err
		return res
	}
	terminal, hist, lost := k.acceptedJobs()
	res.Lost = lost
	restores := filepath.Join(opt.Dir, "restores.txt")
	if _, err := k.restoresFile(restores); err != nil {
		res.Err = err
		return res
	}
	pitrFile := filepath.Join(opt.Dir, "pitr.txt")
	if err := pitr.file(k, pitrFile); err != nil {
		res.Err = err
		return res
	}
	res.Invariants = []*invariant{terminal, hist, k.eventSequences(), k.notifications(), k.watchers(), k.writes(restores, pitr, pitrFile), pitr.iv, k.pebbleCheck(), k.fencing(fl.fence), k.offsiteRestorable(3, fl.refusals), drills, conv, k.apiAnswers()}
	summarize(res, c, l, fl)
	return res
}

func summarize(res *Result, c *Cluster, l *load, fl *faults) {
	res.Accepted = map[jobs.Kind]int{}
	for _, a := range l.accepted {
		res.Accepted[a.Kind]++
	}
	for _, n := range c.nodes {
		s, u := ledgerAcks(n.ledger)
		res.Writes[0] += s
		res.Writes[1] += u
	}
	res.Faults = fl.faults()
	res.Recovery, res.FaultCount = map[string]time.Duration{}, map[string]int{}
	for _, f := range res.Faults {
		res.FaultCount[f.Kind]++
		if f.Recovered > res.Recovery[f.Kind] {
			res.Recovery[f.Kind] = f.Recovered
		}
	}
	res.P99, res.P99F = p99(l.lat), p99(l.faultLat)
	res.Answers, res.CtlRuns = l.answers, l.ctlRuns
	for _, n := range l.actions {
		res.Requests += n
	}
}

func p99(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[(len(s)*99)/100]
}

// Print writes the summary and the verdict.
func (r *Result) Print(w io.Writer) {
	fmt.Fprintf(w, "\nchaos run: seed %d, %s of faults, --redis-min-replicas %d\n", r.Options.Seed, r.Options.Duration, r.Options.MinReplicas)
	fmt.Fprintf(w, "  jobs accepted: %s\n", kindCounts(r.Accepted))
	fmt.Fprintf(w, "  writes acknowledged: %d synced, %d unsynced\n", r.Writes[0], r.Writes[1])
	fmt.Fprintf(w, "  API requests: %d; p99 %s outside faults, %s during faults\n", r.Requests, r.P99.Round(time.Millisecond), r.P99F.Round(time.Millisecond))
	fmt.Fprintf(w, "  ctl --wait runs: %v\n", r.CtlRuns)
	fmt.Fprintf(w, "  faults injected (longest recovery):\n")
	for _, k := range sortedKeys(r.FaultCount) {
		fmt.Fprintf(w, "    %-22s %3d  %s\n", k, r.FaultCount[k], r.Recovery[k].Round(time.Millisecond))
	}
	fmt.Fprintf(w, "  converged in %s after the faults\n", r.Converged.Round(time.Millisecond))
	if r.Options.MinReplicas == 0 {
		fmt.Fprintf(w, "  loss window (--redis-min-replicas 0): %d accepted jobs lost\n", r.Lost)
	}
	violations := 0
	for _, iv := range r.Invariants {
		mark := "PASS"
		if len(iv.Violations) > 0 {
			mark = "FAIL"
		}
		violations += len(iv.Violations)
		fmt.Fprintf(w, "  %s  %s (%s)\n", mark, iv.Name, iv.Note)
		for i, v := range iv.Violations {
			if i == 20 {
				fmt.Fprintf(w, "        … %d more\n", len(iv.Violations)-20)
				break
			}
			fmt.Fprintf(w, "        %s\n", v)
		}
	}
	if r.Err != nil {
		fmt.Fprintf(w, "  FAIL  the run: %v\n", r.Err)
	}
	p, f := r.Passed()
	fmt.Fprintf(w, "invariant violations: %d\n%d passed, %d failed\n", violations, p, f)
}

func kindCounts(m map[jobs.Kind]int) string {
	var parts []string
	total := 0
	for k, n := range m {
		parts = append(parts, fmt.Sprintf("%s %d", k, n))
		total += n
	}
	sort.Strings(parts)
	return fmt.Sprintf("%d (%s)", total, strings.Join(parts, ", "))
}
