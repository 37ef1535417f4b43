// Command chaos runs storekeeper's soak under random faults (make chaos):
//
//	go run ./internal/chaos/cmd/chaos -duration 10m -seed 42 -report docs/CHAOS.md
//
// It prints the seed first: a failing run's fault schedule is replayed by
// running again with that seed. Exit status 0 when every invariant held,
// 1 when one did not, 2 on a usage error.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"storekeeper/internal/chaos"
)

func main() {
	duration := flag.Duration("duration", 10*time.Minute, "how long load and faults run (then convergence and checks)")
	seed := flag.Int64("seed", 0, "the fault schedule's seed; 0: a random one (printed)")
	minReplicas := flag.Int("min-replicas", 1, "--redis-min-replicas of every node; 0 measures the loss window instead of failing on it")
	dir := flag.String("dir", "", "work directory (kept after the run); empty: a new temporary one")
	report := flag.String("report", "", "write the run's figures to this Markdown file (docs/CHAOS.md); with -min-replicas 0, only the loss-window section of it")
	lossRun := flag.Duration("loss-window-run", 0, "after the run, one more of this length with --redis-min-replicas 0 and only failover faults (the primary killed or paused), which measures and reports how many accepted jobs failovers lose without it (never a failure); 0: none")
	failoversOnly := flag.Bool("failovers-only", false, "draw only the faults that make Sentinel fail over (what the loss-window run does)")
	only := flag.String("faults", "", "draw only these fault kinds, comma-separated (empty: all of "+strings.Join(chaos.FaultKinds, ", ")+")")
	flag.Parse()
	if flag.NArg() > 0 || *duration <= 0 || *minReplicas < 0 {
		flag.Usage()
		os.Exit(2)
	}
	var kinds []string
	for _, k := range strings.Split(*only, ",") {
		if k = strings.TrimSpace(k); k == "" {
			continue
		}
		if !slices.Contains(chaos.FaultKinds, k) {
			fmt.Fprintf(os.Stderr, "-faults: unknown fault %q; the kinds are %s\n", k, strings.Join(chaos.FaultKinds, ", "))
			os.Exit(2)
		}
		kinds = append(kinds, k)
	}
	if *seed == 0 {
		*seed = time.Now().UnixNano() % 1_000_000_000
	}
	keep := *dir != ""
	if !keep {
		d, err := os.MkdirTemp("", "storekeeper-chaos-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		*dir = d
	}
	replay := ""
	if *failoversOnly {
		replay = " -failovers-only"
	}
	if len(kinds) > 0 {
		replay += " -faults " + strings.Join(kinds, ",")
	}
	fmt.Printf("chaos: seed %d (replay: go run ./internal/chaos/cmd/chaos -seed %d -duration %s -min-replicas %d%s); work dir %s\n",
		*seed, *seed, *duration, *minReplicas, replay, *dir)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	opt := chaos.Options{Dir: *dir, Seed: *seed, Duration: *duration, MinReplicas: *minReplicas,
		Nodes: 3, APIs: 2, StoresPerNode: 2, Log: os.Stdout}
	if *failoversOnly {
		opt.Faults = chaos.FailoverFaults
	} else if len(kinds) > 0 {
		opt.Faults = kinds
	}
	res := chaos.Run(ctx, opt)
	res.Print(os.Stdout)
	if *lossRun > 0 && ctx.Err() == nil {
		ldir := filepath.Join(*dir, "loss-window")
		if err := os.MkdirAll(ldir, 0o755); err == nil {
			fmt.Printf("\nchaos: the loss-window run, %s with --redis-min-replicas 0, seed %d\n", *lossRun, *seed)
			lw := chaos.Run(ctx, chaos.Options{Dir: ldir, Seed: *seed, Duration: *lossRun, MinReplicas: 0,
				Nodes: 3, APIs: 2, StoresPerNode: 2, Faults: chaos.FailoverFaults, Log: os.Stdout})
			lw.Print(os.Stdout)
			res.LossWindow = lw
		}
	}
	_, failed := res.Passed()
	if *report != "" {
		write := res.WriteReport
		if *minReplicas == 0 {
			write = res.AppendLossWindow
		}
		if err := write(*report); err != nil {
			fmt.Fprintln(os.Stderr, "report:", err)
		}
	}
	if failed > 0 {
		fmt.Printf("chaos: FAILED; the processes' logs and data are in %s\n", *dir)
		os.Exit(1)
	}
	if !keep {
		_ = os.RemoveAll(*dir)
	}
}
