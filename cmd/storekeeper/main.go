// Command storekeeper runs maintenance jobs for named Pebble stores.
//
// Until the server lands, it has one subcommand, demo, which shows the
// store engine at work: storekeeper demo [--data-dir ./data].
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

const usage = `usage: storekeeper <command> [flags]

commands:
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
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "storekeeper: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}
