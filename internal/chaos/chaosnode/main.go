// Command chaosnode is one worker node of the chaos harness
// (internal/chaos), and the check of what it wrote. It is a test program,
// not part of the storekeeper binary.
//
//	chaosnode [run] --redis URL --node NAME --data DIR --backups DIR --stores a,b \
//	          --ledger FILE [--listen ADDR] [--write-interval 25ms] [--seed N] \
//	          [--min-replicas N] [--webhook url#secret]... [--fast] [--log-level info]
//	chaosnode verify --data DIR --ledger FILE[,FILE…] --stores a,b \
//	          [--restores FILE] [--backups DIR] [--disk-restores=true]
//
// run embeds storekeeper as examples/embed does (store.Open over --data,
// worker.New/Start on --redis as node --node) and writes to every store
// from one goroutine per store, recording each write in the ledger (see
// ledger.go) before and after its commit. SIGTERM or SIGINT stops it
// gracefully (writers, worker Shutdown, registry Close; exit 0); a second
// signal kills it; SIGKILL leaves nothing to clean, which is the point.
// With --listen it prints "listening <addr>" on stdout once bound, and
// serves GET /healthz (200 once the worker started, 503 before and while
// stopping), GET /readyz (as `storekeeper worker`'s: Redis, the worker,
// no store lost to another node) and GET /stats (JSON: per store its state and counts of
// intents, acks, synced acks, errors and skipped ticks), and the harness's
// fault hooks (faults.go): POST /chaos/net (mode=partition|delay|reset|heal
// on the node's links to Redis, each of which goes through a fault proxy
// of its own) and POST /chaos/clock (offset=DURATION, the worker's clock).
//
// verify runs after the node exited: it opens every store read-only with
// Pebble, runs CheckLevels, checks the w/ keys against the ledgers and
// every backup, prints one JSON report on stdout (verify.go) and exits 0
// when there is no violation, 1 when there is one, 2 on a usage or I/O
// error.
//
// pebble is Pebble's command-line tool (cmd/pebble's inspection commands),
// so that the harness can run `pebble db check` on every store without a
// binary from outside the module.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() { os.Exit(dispatch(os.Args[1:], os.Stdout, os.Stderr)) }

const usage = `usage:
  chaosnode [run] --redis URL --node NAME --data DIR --backups DIR --stores a,b --ledger FILE [--listen ADDR] [--fast] …
  chaosnode verify --data DIR --ledger FILE --stores a,b [--restores FILE] [--backups DIR]
  chaosnode pebble db check DIR   (Pebble's own tool; also db lsm, manifest dump, …)
  chaosnode <command> -h   for the flags
`

// dispatch runs the subcommand args name (run when it is left out) and
// returns the exit code.
func dispatch(args []string, stdout, stderr io.Writer) int {
	cmd := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "run":
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		// After the first signal, the next one has its default effect: the
		// process dies at once.
		context.AfterFunc(ctx, stop)
		return runMain(ctx, args, stdout, stderr)
	case "verify":
		return verifyMain(args, stdout, stderr)
	case "pebble":
		return pebbleMain(args, stdout, stderr)
	case "help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "chaosnode: unknown command %q\n%s", cmd, usage)
	return 2
}
