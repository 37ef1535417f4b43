// Command storekeeper runs maintenance jobs for named Pebble stores.
//
// storekeeper serve runs the API, the worker and the schedules in one
// process; api and worker run them apart; demo shows the store engine.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"storekeeper/internal/ctl"
	"storekeeper/internal/demo"
)

const usage = `usage: storekeeper <command> [flags]

commands:
  serve   the API, the worker and the schedules in one process
  api     the API only (stores are served by worker processes)
  worker  the worker and schedules only, with /metrics, /healthz, /readyz
  ctl     client commands against a server: stores, compact, backup, verify,
          restore, jobs, history, watch… (storekeeper ctl --help)
  demo    create three churned stores in --data-dir, show their stats,
          compact, verify and back them up (--backup-dir), restore one,
          and print the numbers
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "demo":
		return runDemo(ctx, args[1:], stdout, stderr)
	case "serve", "api", "worker":
		return runServe(ctx, args[0], args[1:], stdout, stderr)
	case "ctl":
		return ctl.Run(ctx, args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage+"\nstorekeeper <command> --help lists a command's flags and their STOREKEEPER_* variables.\n")
		return 0
	default:
		fmt.Fprintf(stderr, "storekeeper: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}

// runDemo is storekeeper demo: the store engine on its own, on three
// churned stores.
func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", "./data", "directory that holds the stores")
	backupDir := fs.String("backup-dir", "./backups", "directory that holds the backups (not inside --data-dir)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := demo.Run(ctx, *dataDir, *backupDir, stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "storekeeper demo: %v\n", err)
		return 1
	}
	return 0
}
