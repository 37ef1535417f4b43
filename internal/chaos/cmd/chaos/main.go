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
	"syscall"
	"time"

	"storekeeper/internal/chaos"
)

func main() {
	duration := flag.Duration("duration", 10*time.Minute, "how long load and faults run (then convergence and checks)")
	seed := flag.Int64("seed", 0, "the fault schedule's seed; 0: a random one (printed)")
	minReplicas := flag.Int("min-replicas", 1, "--redis-min-replicas of every node; 0 measures the loss window instead of failing on it")
	dir := flag.String("dir", "", "work directory (kept after the run); empty: a new temporary one")
	report := flag.String("report", "", "write the run's figures to this Markdown file (docs/CHAOS.md)")
	flag.Parse()
	if flag.NArg() > 0 || *duration <= 0 || *minReplicas < 0 {
		flag.Usage()
		os.Exit(2)
	}
	if *seed == 0 {
		*seed = time.Now().UnixNano() % 1_000_000_000
	}
	if *dir == "" {
		d, err := os.MkdirTemp("", "storekeeper-chaos-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		*dir = d
	}
	fmt.Printf("chaos: seed %d (replay: go run ./internal/chaos/cmd/chaos -seed %d -duration %s -min-replicas %d); work dir %s\n",
		*seed, *seed, *duration, *minReplicas, *dir)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res := chaos.Run(ctx, chaos.Options{Dir: *dir, Seed: *seed, Duration: *duration, MinReplicas: *minReplicas,
		Nodes: 3, APIs: 2, StoresPerNode: 2, Log: os.Stdout})
	res.Print(os.Stdout)
	if *report != "" {
		if err := res.WriteReport(*report); err != nil {
			fmt.Fprintln(os.Stderr, "report:", err)
		}
	}
	if _, failed := res.Passed(); failed > 0 {
		os.Exit(1)
	}
}
